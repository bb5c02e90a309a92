"""Training of KI2HOI: matching, losses, optimizer, steps, loop.

Modules: `box_ops` (cxcywh/xyxy, GIoU), `matching` (host Hungarian matching
through `jax.pure_callback`), `losses`, `optimizer`, `train_step` (pure
per-device steps and their pmap wrappers), `metrics_writer` (TensorBoard,
process 0), `startup` (compilation cache, parameter init) and `trainer` (`train_and_evaluate`, `evaluate`). Checkpoints live
in `ki2hoi_jax.checkpoints`.
"""
