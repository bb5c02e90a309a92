"""Training of KI2HOI: matching, losses, optimizer, steps, loop.

Modules: `box_ops` (cxcywh/xyxy, GIoU), `matching` (matching costs on the
device, Hungarian assignment on the host with scipy), `losses`, `optimizer`,
`train_step` (pure per-device steps and their pmap wrappers),
`metrics_writer` (TensorBoard, process 0), `startup` (`started`: a run's one
start-up; compilation cache, parameter init), `run_setup` (data, text
embeddings, model, optimizer and state of a run), `eval_hook` (evaluation of
the test split, metric tables) and `trainer` (`train_and_evaluate`,
`evaluate`). Checkpoints live in `ki2hoi_jax.checkpoints`.
"""
