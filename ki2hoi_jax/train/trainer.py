r"""The training loop: `train_and_evaluate(config, workdir)` and `evaluate`.

Order of work (flax imagenet's `train_and_evaluate`, big_vision's resume order):

1. `jax.distributed.initialize` when `config.distributed` (if `main` has not);
   the workdir lock (`checkpoints.workdir_lock`: one run per workdir, a
   second one stops with `WorkdirLockedError`; process 0); the workdir gets
   `config.json` (process 0).
2. Data: `input_pipeline.prepare_dataset` (process 0 first, the others after a
   barrier), steps per epoch from the selected training images and the
   global micro-batch `batch_size / grad_accum_steps`.
3. Text embeddings, once, with the CLIP text tower (converted checkpoint, or
   the random tower of `clip_text.clip_text_params`, the one `predict`
   uses): the training interaction classifier holds the seen classes only
   (vocabulary_lib.interaction_class_indices), evaluation all classes (with
   `model.classifier='linear'` the training classes only:
   `vocabulary.evaluation_vocabulary`).
4. Model (`build_model(config, axis_name='batch')`), `init` with the object
   prompt embeddings (`startup.init_variables`; the workdir's compilation
   cache, `startup.enable_compilation_cache`, is on from the start), pretrained CLIP/DETR weights (`weights.pretrained.
   init_from_pretrained`), optimizer and TrainState; then the latest
   checkpoint of `workdir/checkpoints` if there is one (exact resume: state,
   optimizer, RNG; the input pipeline restarts at that step). An unreadable
   latest checkpoint is skipped with one warning for the newest intact one
   (`Checkpointer.restore`); the `metrics.jsonl` rows of the steps after the
   resumed one are dropped, since they run again.
5. Loop: pmapped train step; every `log_every_steps` the metrics are fetched,
   checked for NaN/Inf (a non-finite loss or gradient norm raises
   FloatingPointError and nothing is saved after the last good checkpoint)
   and written to TensorBoard and the log; checkpoints every
   `checkpoint_every_steps` and at the end; evaluation every
   `eval_every_steps` (0: only at the end), which also keeps the best
   checkpoint by validation mAP in `workdir/checkpoints_best`.

Evaluation writes `workdir/eval/step_<N>/predictions.json` (GEN-VLKT format,
or the V-COCO predictions file) and `metrics.json`, and TensorBoard scalars
`eval/mAP_full`, `eval/mAP_rare`, `eval/mAP_non_rare` (plus
`eval/mAP_seen`, `eval/mAP_unseen` in zero-shot runs; V-COCO:
`eval/role_AP_scenario_1/2`). With several processes each host runs its slice
of every eval batch and process 0 gathers the outputs
(`multihost_utils.process_allgather`) and computes the mAP.

Timing scalars: `step_time` (wall seconds per step between log points),
`images_per_second`, `data_time` (seconds per step waiting for the input
pipeline), `matching_time` (host seconds per step inside the Hungarian
callbacks, summed over devices and decoder layers) and `matching_fraction`
(their ratio).
"""

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import logging
from flax import traverse_util
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import tqdm

from ki2hoi_jax.checkpoints import manager as checkpoint_manager
from ki2hoi_jax.checkpoints import workdir_lock
from ki2hoi_jax.clip import text_embeddings as clip_text
from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import splits
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.evaluation import vcoco as vcoco_eval
from ki2hoi_jax.evaluation import vcoco_postprocess
from ki2hoi_jax.evaluation import vocabulary as vocabulary_lib
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.train import matching
from ki2hoi_jax.train import metrics_writer
from ki2hoi_jax.train import optimizer
from ki2hoi_jax.train import startup
from ki2hoi_jax.train import train_step as ts
from ki2hoi_jax.weights import pretrained

_TRAIN_KEYS = ("image", "mask", "clip_image", "sub_boxes", "obj_boxes",
               "obj_labels", "pair_mask", "image_index")
_EVAL_KEYS = ("image", "mask", "clip_image")


# ------------------------------------------------------------------- set-up


def maybe_initialize_distributed(config) -> None:
  """`jax.distributed.initialize` from the config (or the environment)."""
  if not config.distributed or jax.distributed.is_initialized():
    return
  kwargs = {}
  if config.coordinator_address:
    kwargs["coordinator_address"] = config.coordinator_address
  if config.num_processes > 0:
    kwargs["num_processes"] = int(config.num_processes)
  if config.process_id >= 0:
    kwargs["process_id"] = int(config.process_id)
  jax.distributed.initialize(**kwargs)
  logging.info("Process %d of %d, %d local devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count())


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def prepare_data(config, workdir: str):
  """The dataset builder; process 0 builds it while the others wait."""
  builder = None
  if jax.process_index() == 0:
    builder = input_pipeline.prepare_dataset(config, workdir)
  _barrier("ki2hoi_prepare_dataset")
  if builder is None:
    builder = input_pipeline.prepare_dataset(config, workdir)
  return builder


def micro_batch_size(config) -> int:
  """Global images per train step (batch_size / grad_accum_steps)."""
  return int(config.batch_size) // int(config.optimizer.grad_accum_steps)


def interaction_prompts(config) -> List[str]:
  """Prompts of all interaction classes (the evaluation classifier).

  In `config.model.prompt_style` (`vocabulary.closed_vocabulary`).
  """
  return list(vocabulary_lib.closed_vocabulary(config).prompts)


def eval_candidate_table(config) -> Optional[postprocess.CandidateTable]:
  """Candidates the eval step scores (None on V-COCO: host-side)."""
  if config.dataset.name == "vcoco":
    return None
  return vocabulary_lib.evaluation_vocabulary(config).table


def object_prompts(config) -> List[str]:
  """'a photo of a/an [object]' for the K object classes."""
  return [metadata.object_prompt(o)
          for o in vocabulary_lib.training_objects(config.dataset.name)]


@dataclasses.dataclass
class Setup:
  """Everything the loop and the eval hook need besides the data.

  Attributes:
    model: the KI2HOI module (synced BN over 'batch').
    state: host TrainState (step 0, or restored).
    rng: base PRNG key of dropout.
    labels: flat parameter labels.
    tx: optimizer of the trainable subtree.
    train_classes: [C_train] label columns of the training classifier.
    eval_text: [C_eval, E] text embeddings of the evaluated interaction
      classes (all; the training classes with `model.classifier='linear'`).
    verb_query_text: [C_q, E] text embeddings of the verb decoder's class
      queries at evaluation (`vocabulary.verb_query_prompts`).
    eval_clip_fusion: the model's keyword arguments of
      `inference.clip_pair_fusion` at evaluation
      (`vocabulary.clip_fusion_inputs`; {}: off).
    schedules: learning-rate schedules by parameter group.
    steps_per_epoch: train steps per epoch.
    total_steps: train steps of the run.
  """
  model: Any
  state: ts.TrainState
  rng: jnp.ndarray
  labels: Dict[str, str]
  tx: Any
  train_classes: np.ndarray
  eval_text: np.ndarray
  verb_query_text: np.ndarray
  eval_clip_fusion: Dict[str, np.ndarray]
  schedules: Dict[str, Any]
  steps_per_epoch: int
  total_steps: int


def build_setup(config, steps_per_epoch: int) -> Setup:
  """Text embeddings, model variables, optimizer and the step-0 state."""
  clip_params = clip_text.clip_text_params(config)
  prompts = interaction_prompts(config)
  eval_text = np.asarray(clip_text.class_embeddings(clip_params, config,
                                                    prompts))
  obj_text = clip_text.class_embeddings(clip_params, config,
                                        object_prompts(config))
  train_classes = vocabulary_lib.interaction_class_indices(config, "train")
  train_text = eval_text[train_classes]
  def embed(texts):
    return clip_text.class_embeddings(clip_params, config, texts)
  verb_query_text = vocabulary_lib.verb_query_embeddings(
      config, prompts, eval_text, embed)
  eval_clip_fusion = vocabulary_lib.clip_fusion_inputs(
      config, vocabulary_lib.evaluation_vocabulary(config), embed)
  if eval_clip_fusion:
    logging.info(
        "CLIP crop fusion at evaluation (w = %g): %s untrained interaction "
        "columns, %s untrained objects, %s untrained (verb, object) "
        "candidates.", config.inference.clip_pair_fusion,
        *(int((~np.asarray(eval_clip_fusion[k])).sum())
          if k in eval_clip_fusion else 0
          for k in ("trained_classes", "trained_objects",
                    "trained_candidates")))
  if config.model.classifier == "linear":  # Its head scores these only.
    eval_text = train_text
  logging.info("Interaction classifier: %d training classes, %d at "
               "evaluation (verb decoder queries at evaluation: %d, %s).",
               len(train_classes), len(eval_text), len(verb_query_text),
               config.model.verb_queries)

  model = ki2hoi.build_model(config, axis_name=ts.AXIS_NAME)
  rng = jax.random.PRNGKey(int(config.seed))
  init_rng, rng = jax.random.split(rng)
  image, mask, clip_image, _ = ki2hoi.dummy_inputs(config)
  variables = startup.init_variables(
      model, init_rng, image, mask, clip_image, jnp.asarray(train_text),
      jnp.asarray(obj_text), train=False)
  variables = pretrained.init_from_pretrained(variables, config)
  variables = ki2hoi.with_text_embeddings(variables, train_text)
  labels = optimizer.flat_labels(ki2hoi.param_labels(
      variables["params"], int(config.model.backbone_frozen_stages)))
  tx = optimizer.make_optimizer(config, labels, steps_per_epoch)
  state = ts.create_train_state(variables, tx, labels)
  state = jax.device_get(state)
  counts = ki2hoi.param_breakdown(variables["params"],
                                  int(config.model.backbone_frozen_stages))
  logging.info("Parameters: %s", counts)
  return Setup(model=model, state=state, rng=rng, labels=labels, tx=tx,
               train_classes=train_classes, eval_text=eval_text,
               verb_query_text=verb_query_text,
               eval_clip_fusion=eval_clip_fusion,
               schedules=optimizer.learning_rate_schedules(config,
                                                           steps_per_epoch),
               steps_per_epoch=steps_per_epoch,
               total_steps=optimizer.num_train_steps(steps_per_epoch, config))


def _checkpoint_tree(state: ts.TrainState, rng) -> Dict[str, Any]:
  items = ts.checkpoint_items(state)
  items["rng"] = np.asarray(rng)
  return items


def restore(setup: Setup, checkpointer: checkpoint_manager.Checkpointer,
            best: bool = False, step: Optional[int] = None) -> int:
  """Restores `setup.state` and `setup.rng` in place; returns the step."""
  target = _checkpoint_tree(setup.state, setup.rng)
  items = checkpointer.restore(target, step=step, best=best)
  setup.state = ts.restore_items(setup.state, items)
  setup.rng = jnp.asarray(items["rng"])
  return int(items["step"])


def params_checksum(params: Mapping[str, Any]) -> str:
  """sha256 of every parameter's bytes in name order (host arrays)."""
  h = hashlib.sha256()
  flat = traverse_util.flatten_dict(params, sep="/")
  for name, value in sorted(flat.items()):
    h.update(name.encode())
    h.update(np.ascontiguousarray(np.asarray(value)).tobytes())
  return h.hexdigest()


# --------------------------------------------------------------- evaluation


def _test_annotations(config, workdir: str) -> List[Dict[str, Any]]:
  root = input_pipeline.dataset_root(config, workdir)
  path, _ = annotations.split_paths(root, "test", config.dataset.name)
  return annotations.load_json(path)


def _gather(tree: Any) -> Any:
  """Host outputs of every process, flattened to [N, ...] (process order)."""
  if jax.process_count() > 1:
    tree = multihost_utils.process_allgather(tree)
  return jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[
      (3 if jax.process_count() > 1 else 2):]), tree)


def summarize_eval(config, metrics: Mapping[str, Any]) -> Dict[str, float]:
  """TensorBoard scalars and the best-checkpoint value of eval metrics."""
  def num(v):
    return float("nan") if v is None else float(v)
  if config.dataset.name == "vcoco":
    out = {"eval/role_AP_scenario_1": num(metrics["scenario_1"]),
           "eval/role_AP_scenario_2": num(metrics["scenario_2"])}
    out["eval/mAP"] = out["eval/role_AP_scenario_1"]
    return out
  d = metrics["default"]
  out = {"eval/mAP_full": num(d["full"]), "eval/mAP_rare": num(d["rare"]),
         "eval/mAP_non_rare": num(d["non_rare"])}
  if "zero_shot" in metrics:
    z = metrics["zero_shot"]
    out["eval/mAP_seen"] = num(z["seen"])
    out["eval/mAP_unseen"] = num(z["unseen"])
  out["eval/mAP"] = out["eval/mAP_full"]
  return out


def run_evaluation(config, workdir: str, builder, p_eval_step, state,
                   setup: Setup, step: int,
                   writer: Optional[metrics_writer.MetricsWriter] = None
                   ) -> Optional[Dict[str, Any]]:
  """The eval hook: predictions and mAP of the test split.

  Args:
    config: the run config.
    workdir: the run folder (results in workdir/eval/step_<step>/).
    builder: dataset builder.
    p_eval_step: `ts.make_p_eval_step(...)`.
    state: replicated TrainState.
    setup: the class inputs of the evaluated model: `eval_text`,
      `verb_query_text`, `eval_clip_fusion`.
    step: training step (folder name and TensorBoard step).
    writer: metrics writer (process 0) or None.

  Returns:
    The evaluator's metrics dict on process 0 (None elsewhere), with the
    scalars of `summarize_eval` under 'summary'.
  """
  start = time.perf_counter()
  vcoco = config.dataset.name == "vcoco"
  info = splits.image_info(builder, "test")
  num_steps = input_pipeline.num_eval_steps(config, builder, "test")
  class_inputs = (jnp.asarray(setup.eval_text),
                  jnp.asarray(setup.verb_query_text),
                  {k: jnp.asarray(v) for k, v in
                   setup.eval_clip_fusion.items()})
  predictions: List[Dict[str, Any]] = []
  table = eval_candidate_table(config)
  is_main = jax.process_index() == 0
  bar = tqdm.tqdm(total=num_steps, desc=f"eval step {step}",
                  disable=not (config.progress_bar and is_main),
                  dynamic_ncols=True, leave=False)
  for batch in input_pipeline.create_eval_iterator(config, builder,
                                                   split="test"):
    out = p_eval_step(state, {k: batch[k] for k in _EVAL_KEYS},
                      *class_inputs)
    out = jax.device_get(out)
    out["image_index"] = batch["image_index"]
    out["orig_size"] = batch["orig_size"]
    out = _gather(out)
    bar.update(1)
    if not is_main:
      continue
    names = [info[int(i)][0] if i >= 0 else None for i in out["image_index"]]
    if vcoco:
      predictions += vcoco_postprocess.postprocess_from_config(
          out, out["orig_size"], names, config)
    else:
      inf = config.inference
      predictions += postprocess.decode_predictions(
          out, out["pred_sub_boxes"], out["pred_obj_boxes"], out["orig_size"],
          names, table, nms=inf.nms, nms_threshold=inf.nms_threshold,
          nms_alpha=inf.nms_alpha, nms_beta=inf.nms_beta)
  bar.close()
  if not is_main:
    return None
  gt = _test_annotations(config, workdir)
  out_dir = os.path.join(workdir, "eval", f"step_{step}")
  os.makedirs(out_dir, exist_ok=True)
  if vcoco:
    metrics = vcoco_eval.evaluate(gt, predictions)
    vcoco_eval.save_predictions(os.path.join(out_dir, "predictions.json"),
                                predictions)
  else:
    metrics = hico.evaluate(gt, predictions,
                            zero_shot_split=config.dataset.zero_shot_split)
    postprocess.write_predictions(os.path.join(out_dir, "predictions.json"),
                                  predictions)
  metrics = dict(metrics)
  metrics["summary"] = summarize_eval(config, metrics)
  metrics["step"] = int(step)
  metrics["eval_seconds"] = time.perf_counter() - start
  with open(os.path.join(out_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=1, default=float)
  if writer is not None:
    writer.write_scalars(step, metrics["summary"])
    writer.flush()
  logging.info("Evaluation at step %d (%.1f s): %s", step,
               metrics["eval_seconds"],
               ", ".join(f"{k} {v:.2f}" for k, v in
                         metrics["summary"].items()))
  return metrics


def _broadcast_value(value: Optional[float]) -> float:
  """Process 0's float on every process (the best-checkpoint decision)."""
  if jax.process_count() == 1:
    return float("nan") if value is None else float(value)
  x = np.asarray(np.nan if value is None else value, np.float32)
  return float(multihost_utils.broadcast_one_to_all(x))


# --------------------------------------------------------------------- loop


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


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains (resuming from `workdir`), evaluates and checkpoints.

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
    WorkdirLockedError: another run holds `workdir`.
    CheckpointError: a checkpoint could not be saved, or none restored.
  """
  maybe_initialize_distributed(config)  # The lock is process 0's.
  with workdir_lock.hold(workdir, "train"):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  validation.validate(config)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  startup.enable_compilation_cache(config, workdir)
  checkpoint_manager.write_config(workdir, config)
  writer = metrics_writer.MetricsWriter(workdir)

  builder = prepare_data(config, workdir)
  micro_batch = micro_batch_size(config)
  steps_per_epoch = input_pipeline.train_steps_per_epoch(config, builder,
                                                         micro_batch)
  if steps_per_epoch <= 0:
    raise ValueError(f"The training set is smaller than one global batch "
                     f"({micro_batch} images); lower config.batch_size.")
  setup = build_setup(config, steps_per_epoch)
  checkpointer = checkpoint_manager.Checkpointer(workdir,
                                                 config.keep_checkpoints)
  start_step = 0
  if checkpointer.latest_step() is not None:
    start_step = restore(setup, checkpointer)
    logging.info("Resumed from step %d (%s).", start_step,
                 checkpointer.latest.directory)
  # The steps after `start_step` run again (from step 0: every step, the
  # step-0 evaluation too); their old rows go.
  writer.drop_after(start_step if start_step > 0 else -1)
  total = setup.total_steps
  logging.info("Training steps %d -> %d (%d per epoch, %d images per step, "
               "%d local devices, %d processes).", start_step, total,
               steps_per_epoch, micro_batch, jax.local_device_count(),
               jax.process_count())

  model, cfg = setup.model, config
  p_train_step = ts.make_p_train_step(
      flax_model=model, tx=setup.tx, labels=setup.labels,
      loss_config=cfg.loss, class_indices=setup.train_classes,
      interaction_space=cfg.model.interaction_space,
      schedules=setup.schedules,
      grad_accum_steps=int(cfg.optimizer.grad_accum_steps))
  p_eval_step = ts.make_p_eval_step(
      flax_model=model,
      table=eval_candidate_table(cfg),
      score_fusion=cfg.inference.score_fusion, top_k=int(cfg.inference.top_k))
  state = ts.replicate(setup.state)
  rng = setup.rng
  label_key = ("hoi_labels" if cfg.model.interaction_space == "hoi"
               else "verb_labels")
  train_keys = _TRAIN_KEYS + (label_key,)

  def save(step: int) -> None:
    # Every metric up to `step` was fetched and checked finite before this.
    checkpointer.save(step, _checkpoint_tree(ts.unreplicate(state), rng),
                      config)

  def evaluate_now(step: int) -> Optional[Dict[str, Any]]:
    metrics = run_evaluation(config, workdir, builder, p_eval_step, state,
                             setup, step, writer)
    value = _broadcast_value(
        metrics["summary"]["eval/mAP"] if metrics else None)
    if np.isfinite(value):
      checkpointer.save_if_best(step, _checkpoint_tree(ts.unreplicate(state),
                                                       rng), config, value)
    return metrics

  untrained_metrics = None
  if cfg.eval_at_start and start_step == 0:
    # The untrained model's numbers: the baseline the run should beat.
    untrained_metrics = run_evaluation(config, workdir, builder, p_eval_step,
                                       state, setup, 0, writer)
  train_iter = (input_pipeline.create_train_iterator(
      config, builder, start_step=start_step, batch_size=micro_batch)
                if start_step < total else iter(()))
  pending: List[Any] = []  # Device metrics not fetched yet.
  to_log: List[Mapping[str, np.ndarray]] = []  # Fetched since the last log.
  last_train: Dict[str, float] = {}
  eval_metrics = None
  evaluated_step = None
  bar = tqdm.tqdm(total=total, initial=start_step, desc="train",
                  disable=not (cfg.progress_bar and is_main),
                  dynamic_ncols=True)
  matching.HOST_TIMER.read_and_reset()
  t_log = time.perf_counter()
  data_time = 0.0
  for step in range(start_step, total):
    t0 = time.perf_counter()
    batch = next(train_iter)
    data_time += time.perf_counter() - t0
    state, metrics = p_train_step(state, {k: batch[k] for k in train_keys},
                                  rng)
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
    _check_finite(fetched, done - len(fetched), checkpointer)
    pending = []
    to_log += fetched
    if do_log:
      elapsed = time.perf_counter() - t_log
      num = len(to_log)
      match_s, _ = matching.HOST_TIMER.read_and_reset()
      scalars = _mean_metrics(to_log)
      step_time = elapsed / num
      scalars.update({
          "step_time": step_time,
          "images_per_second": micro_batch * num / max(elapsed, 1e-9),
          "data_time": data_time / num,
          "matching_time": match_s / num,
          "matching_fraction": match_s / num / max(step_time, 1e-9),
          "epoch": done / steps_per_epoch})
      writer.write_scalars(done, scalars)
      last_train = scalars
      bar.set_postfix(loss=f"{scalars['loss']:.4f}")
      logging.info(
          "step %d/%d loss %.4f lr %.2e grad_norm %.3f | %.3f s/step, "
          "%.1f img/s, data %.3f s, matching %.4f s (%.1f%%)", done, total,
          scalars["loss"], scalars.get("lr_default", float("nan")),
          scalars["grad_norm"], step_time, scalars["images_per_second"],
          scalars["data_time"], scalars["matching_time"],
          100 * scalars["matching_fraction"])
      to_log, data_time, t_log = [], 0.0, time.perf_counter()
    t_extra = time.perf_counter()
    if do_ckpt:
      save(done)
    if do_eval:
      eval_metrics = evaluate_now(done)
      evaluated_step = done
    t_log += time.perf_counter() - t_extra  # Not step time.
  bar.close()
  final_step = int(ts.unreplicate(state.step))
  if final_step != evaluated_step:  # A finished run restarted: eval again.
    if checkpointer.latest_step() != final_step:
      save(final_step)
    eval_metrics = evaluate_now(final_step)
  checksum = params_checksum(ts.unreplicate(state.params))
  jax.block_until_ready(state)
  writer.close()
  checkpointer.close()
  _barrier("ki2hoi_train_done")
  return {"step": final_step, "train": last_train, "eval": eval_metrics,
          "eval_untrained": untrained_metrics, "params_checksum": checksum}


def evaluate(config, workdir: str, which: str = "auto") -> Optional[Dict]:
  """Restores the best (else latest) checkpoint and evaluates it once.

  Args:
    config: the run config.
    workdir: a training workdir.
    which: 'auto' (best, else latest), 'best' or 'latest'.

  Returns:
    The evaluator's metrics on process 0 (the table is printed), else None.

  Raises:
    FileNotFoundError: no checkpoint in the workdir.
    WorkdirLockedError: another run holds `workdir`.
    CheckpointError: the checkpoint could not be restored.
  """
  maybe_initialize_distributed(config)  # The lock is process 0's.
  with workdir_lock.hold(workdir, "eval"):
    return _evaluate(config, workdir, which)


def _evaluate(config, workdir: str, which: str) -> Optional[Dict]:
  validation.validate(config)
  startup.enable_compilation_cache(config, workdir)
  builder = prepare_data(config, workdir)
  steps_per_epoch = max(1, input_pipeline.train_steps_per_epoch(
      config, builder, micro_batch_size(config)))
  setup = build_setup(config, steps_per_epoch)
  checkpointer = checkpoint_manager.Checkpointer(workdir,
                                                 config.keep_checkpoints)
  use_best = {"auto": checkpointer.best.best_step() is not None,
              "best": True, "latest": False}[which]
  step = restore(setup, checkpointer, best=use_best)
  logging.info("Evaluating the %s checkpoint, step %d.",
               "best" if use_best else "latest", step)
  p_eval_step = ts.make_p_eval_step(
      flax_model=setup.model,
      table=eval_candidate_table(config),
      score_fusion=config.inference.score_fusion,
      top_k=int(config.inference.top_k))
  writer = metrics_writer.MetricsWriter(workdir)
  metrics = run_evaluation(config, workdir, builder, p_eval_step,
                           ts.replicate(setup.state), setup, step, writer)
  writer.close()
  checkpointer.close()
  if metrics is not None:
    if config.dataset.name == "vcoco":
      print(f"Checkpoint step {step}\nV-COCO role AP (%):\n"
            f"{vcoco_eval.format_metrics(metrics)}")
    else:
      print(f"Checkpoint step {step}\n{hico.format_table(metrics)}")
  return metrics
