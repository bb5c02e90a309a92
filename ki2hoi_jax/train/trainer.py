r"""The training loop, `train_and_evaluate(config, workdir)`, and `evaluate`.

Both assume a started process: `startup.started(config, workdir)` has
validated the config, checked it against the workdir's saved one, initialised
`jax.distributed` when `config.distributed`, taken the workdir lock and
turned on the compilation cache. `main.run` does that once for all the modes
of a run; tests and notebooks that call these functions enter it around them.

Order of work of `train_and_evaluate` (flax imagenet's, big_vision's resume
order):

1. The workdir gets `config.json` (process 0).
2. Data: `run_setup.prepare_data` (process 0 first, the others after a
   barrier), steps per epoch from the selected training images and the
   global micro-batch `batch_size / grad_accum_steps`.
3. `run_setup.build_setup`: text embeddings, model, `init`, pretrained
   weights, optimizer and TrainState; then the latest checkpoint of
   `workdir/checkpoints` if there is one (exact resume: state, optimizer,
   RNG; the input pipeline restarts at that step). An unreadable latest
   checkpoint is skipped with one warning for the newest intact one
   (`Checkpointer.restore`); the `metrics.jsonl` rows of the steps after the
   resumed one are dropped, since they run again.
4. Loop: pmapped train step; every `log_every_steps` the metrics are fetched,
   checked for NaN/Inf (a non-finite loss or gradient norm raises
   FloatingPointError and nothing is saved after the last good checkpoint)
   and written to TensorBoard and the log; checkpoints every
   `checkpoint_every_steps` and at the end; evaluation (`eval_hook`) every
   `eval_every_steps` (0: only at the end), which also keeps the best
   checkpoint by validation mAP in `workdir/checkpoints_best`.

Timing scalars: `step_time` (wall seconds per step between log points),
`images_per_second`, `data_time` (seconds per step waiting for the input
pipeline), `matching_time` (host seconds per step solving the Hungarian
assignments, summed over devices and decoder layers) and `matching_fraction`
(their ratio).
"""

import dataclasses
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np
import tqdm

from ki2hoi_jax.checkpoints import manager as checkpoint_manager
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.train import eval_hook
from ki2hoi_jax.train import matching
from ki2hoi_jax.train import metrics_writer
from ki2hoi_jax.train import run_setup
from ki2hoi_jax.train import train_step as ts

_TRAIN_KEYS = ("image", "mask", "clip_image", "sub_boxes", "obj_boxes",
               "obj_labels", "pair_mask", "image_index")


def _check_finite(history: Sequence[Mapping[str, np.ndarray]],
                  first_step: int, checkpointer) -> None:
  for i, metrics in enumerate(history):
    for key in ("loss", "grad_norm"):
      value = float(metrics[key])
      if not np.isfinite(value):
        latest = checkpointer.latest_step()
        where = (f"step {latest} in {checkpointer.latest.directory}"
                 if latest is not None else "none (no checkpoint was saved)")
        raise FloatingPointError(
            f"Non-finite {key} ({value}) at training step {first_step + i + 1}"
            f"; stopping. The last good checkpoint is {where}; nothing was "
            "saved after it. Lower the learning rate or check the data.")


def _mean_metrics(history: Sequence[Mapping[str, np.ndarray]]
                  ) -> Dict[str, float]:
  return {k: float(np.mean([float(h[k]) for h in history]))
          for k in history[0]}


def _p_eval_step(config, setup: run_setup.Setup):
  return ts.make_p_eval_step(
      flax_model=setup.model,
      table=run_setup.eval_candidate_table(config),
      score_fusion=config.inference.score_fusion,
      top_k=int(config.inference.top_k),
      clip_pair_fusion=float(config.inference.clip_pair_fusion))


@dataclasses.dataclass
class _Run:
  """The fixed parts of a training run: what saves and evaluates its state."""
  config: Any
  workdir: str
  builder: Any
  setup: run_setup.Setup
  checkpointer: checkpoint_manager.Checkpointer
  writer: metrics_writer.MetricsWriter
  p_eval_step: Any
  micro_batch: int

  def save(self, step: int, state: ts.TrainState) -> None:
    """Checkpoints the replicated `state` (its metrics were checked finite)."""
    self.checkpointer.save(step, run_setup.checkpoint_tree(
        ts.unreplicate(state), self.setup.rng), self.config)

  def evaluate(self, step: int, state: ts.TrainState
               ) -> Optional[Dict[str, Any]]:
    """The eval hook on the replicated `state`; keeps the best checkpoint."""
    metrics = eval_hook.run_evaluation(
        self.config, self.workdir, self.builder, self.p_eval_step, state,
        self.setup, step, self.writer)
    value = eval_hook.broadcast_value(
        metrics["summary"]["eval/mAP"] if metrics else None)
    if np.isfinite(value):
      self.checkpointer.save_if_best(step, run_setup.checkpoint_tree(
          ts.unreplicate(state), self.setup.rng), self.config, value)
    return metrics


def _log_train(run: _Run, done: int, history: Sequence[Mapping[str, Any]],
               elapsed: float, data_time: float) -> Dict[str, float]:
  """Scalars of the steps since the last log point, written and logged."""
  num = len(history)
  match_s, _ = matching.HOST_TIMER.read_and_reset()
  scalars = _mean_metrics(history)
  step_time = elapsed / num
  scalars.update({
      "step_time": step_time,
      "images_per_second": run.micro_batch * num / max(elapsed, 1e-9),
      "data_time": data_time / num,
      "matching_time": match_s / num,
      "matching_fraction": match_s / num / max(step_time, 1e-9),
      "epoch": done / run.setup.steps_per_epoch})
  run.writer.write_scalars(done, scalars)
  logging.info(
      "step %d/%d loss %.4f lr %.2e grad_norm %.3f | %.3f s/step, "
      "%.1f img/s, data %.3f s, matching %.4f s (%.1f%%)", done,
      run.setup.total_steps, scalars["loss"],
      scalars.get("lr_default", float("nan")), scalars["grad_norm"],
      step_time, scalars["images_per_second"], scalars["data_time"],
      scalars["matching_time"], 100 * scalars["matching_fraction"])
  return scalars


def make_train_step(config, setup: run_setup.Setup
                    ) -> Tuple[Any, Tuple[str, ...]]:
  """The pmapped train step of `setup` and the batch keys it takes."""
  p_train_step = ts.make_p_train_step(
      flax_model=setup.model, tx=setup.tx, labels=setup.labels,
      loss_config=config.loss, class_indices=setup.train_classes,
      interaction_space=config.model.interaction_space,
      schedules=setup.schedules,
      grad_accum_steps=int(config.optimizer.grad_accum_steps),
      trained_objects=setup.trained_objects)
  label_key = ("hoi_labels" if config.model.interaction_space == "hoi"
               else "verb_labels")
  return p_train_step, _TRAIN_KEYS + (label_key,)


def _train_steps(run: _Run, state: ts.TrainState, start_step: int
                 ) -> Tuple[ts.TrainState, Dict[str, float],
                            Optional[Dict[str, Any]], Optional[int]]:
  """Steps `start_step + 1 .. total`, with their logs, checkpoints and evals.

  Returns:
    (replicated state, last logged train scalars, last eval metrics, the
    step of that evaluation or None).
  """
  cfg, setup, total = run.config, run.setup, run.setup.total_steps
  p_train_step, train_keys = make_train_step(cfg, setup)
  train_iter = (input_pipeline.create_train_iterator(
      cfg, run.builder, start_step=start_step, batch_size=run.micro_batch)
                if start_step < total else iter(()))
  pending: List[Any] = []  # Device metrics not fetched yet.
  to_log: List[Mapping[str, np.ndarray]] = []  # Fetched since the last log.
  last_train: Dict[str, float] = {}
  eval_metrics, evaluated_step = None, None
  bar = tqdm.tqdm(total=total, initial=start_step, desc="train",
                  disable=not (cfg.progress_bar and jax.process_index() == 0),
                  dynamic_ncols=True)
  matching.HOST_TIMER.read_and_reset()
  t_log = time.perf_counter()
  data_time = 0.0
  for step in range(start_step, total):
    t0 = time.perf_counter()
    batch = next(train_iter)
    data_time += time.perf_counter() - t0
    if step + 1 == total:
      # The last batch: the pipeline stops prefetching before the final
      # checkpoint and evaluation, which would share the CPU with it.
      train_iter.close()
    state, metrics = p_train_step(state, {k: batch[k] for k in train_keys},
                                  setup.rng)
    pending.append(metrics)
    done = step + 1
    bar.update(1)
    is_last = done == total
    do_ckpt = done % cfg.checkpoint_every_steps == 0 or is_last
    do_eval = is_last or (cfg.eval_every_steps > 0 and
                          done % cfg.eval_every_steps == 0)
    do_log = done % cfg.log_every_steps == 0 or is_last
    if not (do_log or do_ckpt or do_eval):
      continue
    fetched = [ts.unreplicate(m) for m in jax.device_get(pending)]
    _check_finite(fetched, done - len(fetched), run.checkpointer)
    pending = []
    to_log += fetched
    if do_log:
      last_train = _log_train(run, done, to_log,
                              time.perf_counter() - t_log, data_time)
      bar.set_postfix(loss=f"{last_train['loss']:.4f}")
      to_log, data_time, t_log = [], 0.0, time.perf_counter()
    t_extra = time.perf_counter()
    if do_ckpt:
      run.save(done, state)
    if do_eval:
      eval_metrics, evaluated_step = run.evaluate(done, state), done
    t_log += time.perf_counter() - t_extra  # Not step time.
  bar.close()
  return state, last_train, eval_metrics, evaluated_step


def _resume(setup: run_setup.Setup,
            checkpointer: checkpoint_manager.Checkpointer,
            writer: metrics_writer.MetricsWriter) -> int:
  """Restores the latest checkpoint if there is one; returns its step."""
  start_step = 0
  if checkpointer.latest_step() is not None:
    start_step = run_setup.restore(setup, checkpointer)
    logging.info("Resumed from step %d (%s).", start_step,
                 checkpointer.latest.directory)
  # The steps after `start_step` run again (from step 0: every step, the
  # step-0 evaluation too); their old rows go.
  writer.drop_after(start_step if start_step > 0 else -1)
  return start_step


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains (resuming from `workdir`), evaluates and checkpoints.

  Assumes a started process (`startup.started(config, workdir)`).

  Args:
    config: the experiment config (ki2hoi_jax/config_lib/base.py).
    workdir: run folder: checkpoints, TensorBoard, eval results (and the
      synthetic dataset when `dataset.root` is '').

  Returns:
    {'step': final step, 'train': last logged train metrics, 'eval': last
    eval metrics (process 0; None elsewhere), 'eval_untrained': metrics of
    the step-0 model when `config.eval_at_start` (else None),
    'params_checksum': sha256 of the final parameters}.

  Raises:
    FloatingPointError: a non-finite loss or gradient norm.
    CheckpointError: a checkpoint could not be saved, or none restored.
  """
  checkpoint_manager.write_config(workdir, config)
  writer = metrics_writer.MetricsWriter(workdir)
  builder = run_setup.prepare_data(config, workdir)
  micro_batch = run_setup.micro_batch_size(config)
  steps_per_epoch = input_pipeline.train_steps_per_epoch(config, builder,
                                                         micro_batch)
  if steps_per_epoch <= 0:
    raise ValueError(f"The training set is smaller than one global batch "
                     f"({micro_batch} images); lower config.batch_size.")
  setup = run_setup.build_setup(config, steps_per_epoch)
  checkpointer = checkpoint_manager.Checkpointer(workdir,
                                                 config.keep_checkpoints)
  start_step = _resume(setup, checkpointer, writer)
  logging.info("Training steps %d -> %d (%d per epoch, %d images per step, "
               "%d local devices, %d processes).", start_step,
               setup.total_steps, steps_per_epoch, micro_batch,
               jax.local_device_count(), jax.process_count())
  run = _Run(config=config, workdir=workdir, builder=builder, setup=setup,
             checkpointer=checkpointer, writer=writer,
             p_eval_step=_p_eval_step(config, setup), micro_batch=micro_batch)
  state = ts.replicate(setup.state)
  untrained_metrics = None
  if config.eval_at_start and start_step == 0:
    # The untrained model's numbers: the baseline the run should beat.
    untrained_metrics = eval_hook.run_evaluation(
        config, workdir, builder, run.p_eval_step, state, setup, 0, writer)
  state, last_train, eval_metrics, evaluated_step = _train_steps(
      run, state, start_step)
  final_step = int(ts.unreplicate(state.step))
  if final_step != evaluated_step:  # A finished run restarted: eval again.
    if checkpointer.latest_step() != final_step:
      run.save(final_step, state)
    eval_metrics = run.evaluate(final_step, state)
  checksum = run_setup.params_checksum(ts.unreplicate(state.params))
  jax.block_until_ready(state)
  writer.close()
  checkpointer.close()
  run_setup.barrier("ki2hoi_train_done")
  return {"step": final_step, "train": last_train, "eval": eval_metrics,
          "eval_untrained": untrained_metrics, "params_checksum": checksum}


def evaluate(config, workdir: str, which: str = "auto") -> Optional[Dict]:
  """Restores the best (else latest) checkpoint and evaluates it once.

  Assumes a started process (`startup.started(config, workdir)`).

  Args:
    config: the run config.
    workdir: a training workdir.
    which: 'auto' (best, else latest), 'best' or 'latest'.

  Returns:
    The evaluator's metrics on process 0 (the table is printed), else None.

  Raises:
    FileNotFoundError: no checkpoint in the workdir.
    CheckpointError: the checkpoint could not be restored.
  """
  builder = run_setup.prepare_data(config, workdir)
  steps_per_epoch = max(1, input_pipeline.train_steps_per_epoch(
      config, builder, run_setup.micro_batch_size(config)))
  setup = run_setup.build_setup(config, steps_per_epoch)
  checkpointer = checkpoint_manager.Checkpointer(workdir,
                                                 config.keep_checkpoints)
  use_best = {"auto": checkpointer.best.best_step() is not None,
              "best": True, "latest": False}[which]
  step = run_setup.restore(setup, checkpointer, best=use_best)
  logging.info("Evaluating the %s checkpoint, step %d.",
               "best" if use_best else "latest", step)
  writer = metrics_writer.MetricsWriter(workdir)
  metrics = eval_hook.run_evaluation(
      config, workdir, builder, _p_eval_step(config, setup),
      ts.replicate(setup.state), setup, step, writer)
  writer.close()
  checkpointer.close()
  if metrics is not None:
    print(f"Checkpoint step {step}\n{eval_hook.metrics_table(config, metrics)}")
  return metrics
