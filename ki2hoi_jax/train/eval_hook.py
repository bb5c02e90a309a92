"""A run's evaluation: predictions and mAP of the test split, and their text.

`run_evaluation` writes `workdir/eval/step_<N>/predictions.json` (GEN-VLKT
format, or the V-COCO predictions file) and `metrics.json`, and TensorBoard
scalars `eval/mAP_full`, `eval/mAP_rare`, `eval/mAP_non_rare` (plus
`eval/mAP_seen`, `eval/mAP_unseen` in zero-shot runs; V-COCO:
`eval/role_AP_scenario_1/2`; `summarize_eval`). Where the dataset root has
HICO-DET's `anno_bbox.mat`, the official protocol is reported beside the
python one (`eval/official/...`); `config.eval_protocol` picks the one that
drives `eval/mAP` (the best checkpoint) and the headline. With several
processes each host runs its slice of every eval batch and process 0 gathers
the outputs (`multihost_utils.process_allgather`) and computes the mAP.

How metrics read: `metrics_table` (the evaluator's table) and `headline`
(one line of the main numbers), for the trainer's and `main`'s output.
"""

import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import tqdm

from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import splits
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import hico_inputs
from ki2hoi_jax.evaluation import hico_official
from ki2hoi_jax.evaluation import hico_official_files
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.evaluation import vcoco as vcoco_eval
from ki2hoi_jax.evaluation import vcoco_postprocess
from ki2hoi_jax.train import metrics_writer
from ki2hoi_jax.train import run_setup

_EVAL_KEYS = ("image", "mask", "clip_image")


def _test_annotations(config, workdir: str) -> List[Dict[str, Any]]:
  root = input_pipeline.dataset_root(config, workdir)
  path, _ = annotations.split_paths(root, "test", config.dataset.name)
  return annotations.load_json(path)


def official_files(config, workdir: str) -> Tuple[str, str]:
  """Paths of `anno_bbox.mat` and `anno.mat` at the dataset root."""
  root = input_pipeline.dataset_root(config, workdir)
  return (os.path.join(root, "anno_bbox.mat"),
          os.path.join(root, "anno.mat"))


def hico_metrics(config, workdir: str, gt: List[Dict[str, Any]],
                 predictions: List[Dict[str, Any]]) -> Dict[str, Any]:
  """HICO-DET metrics by the python protocol, plus the official one.

  Returns:
    `hico.evaluate`'s metrics, with `hico_official.evaluate`'s under
    'official' when the dataset root has `anno_bbox.mat` (Known-Object
    when it also has `anno.mat`).

  Raises:
    ConfigError: `eval_protocol='official'` without `anno_bbox.mat`, or with
      one whose test images are not those of the test JSON (with 'python'
      the official protocol is then skipped, with a warning).
  """
  split = config.dataset.zero_shot_split
  metrics = dict(hico.evaluate(gt, predictions, zero_shot_split=split))
  anno_bbox, anno = official_files(config, workdir)
  if not os.path.isfile(anno_bbox):
    if config.eval_protocol == "official":
      raise validation.ConfigError(
          f"config.eval_protocol='official' needs {anno_bbox} (HICO-DET's "
          "anno_bbox.mat, docs/datasets.md section 8)")
    return metrics
  truth = hico_official_files.read_anno_bbox(anno_bbox)
  if set(truth.gt.file_names) != {r["file_name"] for r in gt}:
    message = (f"{anno_bbox} lists other test images than the test "
               "annotations JSON")
    if config.eval_protocol == "official":
      raise validation.ConfigError(message)
    logging.warning("%s: the official protocol is not reported.", message)
    return metrics
  labels = (hico_official_files.read_image_labels(anno, truth.gt.file_names)
            if os.path.isfile(anno) else None)
  det = hico_inputs.flatten_predictions(predictions, truth.gt.file_names)
  metrics["official"] = hico_official.evaluate(truth, det, labels,
                                               zero_shot_split=split or None)
  return metrics


def _official_means(metrics: Mapping[str, Any]) -> Dict[str, Any]:
  """The official protocol's Default means, over the classes with test GT.

  On HICO-DET's test set these are the 600-class means the papers report;
  the synthetic test split draws a few of the 600 classes.
  """
  return metrics["official"]["classes_with_gt"]["default"]


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
  if "official" in metrics:
    means = _official_means(metrics)
    for key in ("full", "rare", "non_rare", "seen", "unseen"):
      if key in means:
        out[f"eval/official/mAP_{key}"] = num(means[key])
    if config.eval_protocol == "official":
      out["eval/mAP"] = out["eval/official/mAP_full"]
  return out


def metrics_table(config, metrics: Mapping[str, Any]) -> str:
  """The evaluator's table of `metrics` (HICO-DET means or V-COCO role AP)."""
  if config.dataset.name == "vcoco":
    return f"V-COCO role AP (%):\n{vcoco_eval.format_metrics(metrics)}"
  table = hico.format_table(metrics)
  if "official" in metrics:
    table += "\n" + hico_official.format_table(metrics["official"])
  return table


def headline(config, metrics: Optional[Mapping[str, Any]]) -> str:
  """One line of the main numbers ('n/a' where a mean is undefined)."""
  def num(v):
    return "n/a" if v is None else f"{float(v):.2f}"
  if metrics is None:
    return "n/a"
  if config.dataset.name == "vcoco":
    return (f"role AP S1 {num(metrics['scenario_1'])}, "
            f"S2 {num(metrics['scenario_2'])}")
  if config.eval_protocol == "official":
    m = _official_means(metrics)
    text = f"full mAP {num(m['full'])} (official protocol)"
    if "unseen" in m:
      text += f" (seen {num(m['seen'])}, unseen {num(m['unseen'])})"
    return text
  text = f"full mAP {num(metrics['default']['full'])}"
  if "zero_shot" in metrics:
    z = metrics["zero_shot"]
    text += f" (seen {num(z['seen'])}, unseen {num(z['unseen'])})"
  if "official" in metrics:
    text += f"; official protocol {num(_official_means(metrics)['full'])}"
  return text


def _predict_test_split(config, builder, p_eval_step, state,
                        setup: run_setup.Setup, step: int
                        ) -> List[Dict[str, Any]]:
  """Decoded predictions of every test image (process 0; [] elsewhere)."""
  vcoco = config.dataset.name == "vcoco"
  info = splits.image_info(builder, "test")
  num_steps = input_pipeline.num_eval_steps(config, builder, "test")
  class_inputs = (jnp.asarray(setup.eval_text),
                  jnp.asarray(setup.verb_query_text),
                  {k: jnp.asarray(v) for k, v in
                   setup.eval_clip_fusion.items()})
  predictions: List[Dict[str, Any]] = []
  table = run_setup.eval_candidate_table(config)
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
  return predictions


def run_evaluation(config, workdir: str, builder, p_eval_step, state,
                   setup: run_setup.Setup, step: int,
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
  predictions = _predict_test_split(config, builder, p_eval_step, state,
                                    setup, step)
  if jax.process_index() != 0:
    return None
  gt = _test_annotations(config, workdir)
  out_dir = os.path.join(workdir, "eval", f"step_{step}")
  os.makedirs(out_dir, exist_ok=True)
  if config.dataset.name == "vcoco":
    metrics = vcoco_eval.evaluate(gt, predictions)
    vcoco_eval.save_predictions(os.path.join(out_dir, "predictions.json"),
                                predictions)
  else:
    metrics = hico_metrics(config, workdir, gt, predictions)
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


def broadcast_value(value: Optional[float]) -> float:
  """Process 0's float on every process (the best-checkpoint decision)."""
  if jax.process_count() == 1:
    return float("nan") if value is None else float(value)
  x = np.asarray(np.nan if value is None else value, np.float32)
  return float(multihost_utils.broadcast_one_to_all(x))
