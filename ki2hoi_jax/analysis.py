"""Analysis of an evaluated HICO-DET run (the logic of experiments/*.ipynb).

The notebooks `experiments/evaluate.ipynb` and `experiments/zero_shot.ipynb`
only call this module; everything here is tested in tests/test_analysis.py.

A training workdir holds (train/trainer.py, train/checkpointing.py):

  config.json                      the run's config
  eval/step_<N>/metrics.json       `evaluation.hico.evaluate` output (+ summary)
  eval/step_<N>/predictions.json   GEN-VLKT-format predictions of the test set
  predictions/<stem>.json, .png    `predict.py` outputs (mode 'predict')
  synthetic_<dataset>/             the synthetic dataset when dataset.root is ''

All AP and recall values are in percent, as in the evaluator's metrics. Only
HICO-DET runs are supported (V-COCO metrics have another layout). The
trainer (TensorFlow input pipeline, ~6 s to import) is imported only when
`ensure_evaluated` has to evaluate a checkpoint. Figures are plain
`matplotlib.figure.Figure`s on the Agg canvas (no pyplot state); in a
notebook, `%matplotlib inline` displays them.
"""

import dataclasses
import functools
import json
import os
import re
from typing import (Any, Dict, List, Mapping, Optional, Sequence, Tuple,
                    Union)

from matplotlib import figure
from matplotlib import patches
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np
from PIL import Image

from ki2hoi_jax import predict
from ki2hoi_jax import visualize
from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import postprocess

_STEP_DIR = re.compile(r"^step_(\d+)$")
# Colours of the plots (matplotlib's tab10).
_SEEN_COLOUR = "#1f77b4"
_RARE_COLOUR = "#ff7f0e"
_UNSEEN_COLOUR = "#d62728"

Records = Sequence[Mapping[str, Any]]


# --------------------------------------------------------------------- tables


def _format_cell(value: Any) -> str:
  if value is None:
    return "n/a"
  if isinstance(value, (bool, np.bool_)):
    return "yes" if value else "no"
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    return "n/a" if not np.isfinite(value) else f"{float(value):.2f}"
  return str(value)


@dataclasses.dataclass(frozen=True)
class Table:
  """A small table: raw values in `rows`, printable as text or markdown.

  Notebooks display it as markdown (`_repr_markdown_`); `str()` is the
  fixed-width text version. Floats print with 2 decimals, None / NaN as
  'n/a'.

  Attributes:
    title: caption ('' for none).
    header: column names.
    rows: one tuple of raw values per row (same length as `header`).
  """
  title: str
  header: Tuple[str, ...]
  rows: Tuple[Tuple[Any, ...], ...]

  def column(self, name: str) -> List[Any]:
    """The raw values of the column called `name`."""
    i = self.header.index(name)
    return [row[i] for row in self.rows]

  def cells(self) -> List[List[str]]:
    """The formatted rows."""
    return [[_format_cell(v) for v in row] for row in self.rows]

  def numeric_columns(self) -> List[bool]:
    """Right-aligned columns: all but the first whose values are numbers."""
    def number(v):
      return v is None or (isinstance(v, (int, float, np.integer,
                                          np.floating)) and
                           not isinstance(v, (bool, np.bool_)))
    return [i > 0 and all(number(row[i]) for row in self.rows)
            for i in range(len(self.header))]

  def markdown(self) -> str:
    """GitHub-flavoured markdown (title in bold above the table)."""
    def line(items):
      return "| " + " | ".join(s.replace("|", "\\|") for s in items) + " |"
    out = [f"**{self.title}**", ""] if self.title else []
    out.append(line(self.header))
    out.append("|" + "|".join("---:" if right else "---"
                              for right in self.numeric_columns()) + "|")
    out += [line(row) for row in self.cells()]
    return "\n".join(out)

  def text(self) -> str:
    """Fixed-width text: numeric columns right-aligned, the others left."""
    cells = self.cells()
    widths = [max([len(h)] + [len(r[i]) for r in cells])
              for i, h in enumerate(self.header)]
    right = self.numeric_columns()
    def line(items):
      return "  ".join(s.rjust(w) if r else s.ljust(w)
                       for s, w, r in zip(items, widths, right)).rstrip()
    out = [self.title] if self.title else []
    out.append(line(self.header))
    out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells]
    return "\n".join(out)

  def __str__(self) -> str:
    return self.text()

  def _repr_markdown_(self) -> str:
    return self.markdown()


# --------------------------------------------------------------------- runs


def resolve_workdir(workdir: str, root: Optional[str] = None) -> str:
  """Absolute path of `workdir`; a relative one is taken from `root`.

  Args:
    workdir: a run folder, e.g. 'workdirs/demo'.
    root: folder of relative paths (the repository root in the notebooks);
      None = the current directory.

  Returns:
    The absolute path (it need not exist).
  """
  workdir = os.path.expanduser(workdir)
  if not os.path.isabs(workdir) and root is not None:
    workdir = os.path.join(root, workdir)
  return os.path.abspath(workdir)


def dataset_root(config, workdir: str) -> str:
  """The dataset folder of a run (`<workdir>/synthetic_<name>` if no root)."""
  return input_pipeline.dataset_root(config, workdir)


def annotations_path(config, workdir: str, split: str) -> str:
  """Annotation JSON of 'train' or 'test' (hico.md section 2 layout)."""
  path, _ = annotations.split_paths(dataset_root(config, workdir), split,
                                    config.dataset.name)
  return path


def eval_steps(workdir: str) -> List[int]:
  """Steps with an evaluation (`eval/step_<N>/metrics.json`), ascending."""
  folder = os.path.join(workdir, "eval")
  if not os.path.isdir(folder):
    return []
  steps = []
  for name in os.listdir(folder):
    m = _STEP_DIR.match(name)
    if m and os.path.isfile(os.path.join(folder, name, "metrics.json")):
      steps.append(int(m.group(1)))
  return sorted(steps)


def read_predictions(path: str) -> List[Dict[str, Any]]:
  """A GEN-VLKT predictions file (`postprocess.read_predictions`)."""
  return postprocess.read_predictions(path)


def load_config(workdir: str):
  """The run's config from `<workdir>/config.json` (over configs/base.py).

  Raises:
    FileNotFoundError: the workdir has no config.json.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not a training "
                            "workdir (python -m ki2hoi_jax.main writes it)")
  with open(path) as f:
    saved = json.load(f)
  return predict.config_from_saved(saved)


@dataclasses.dataclass
class Run:
  """One evaluation of a training run.

  Attributes:
    workdir: absolute path of the run folder.
    config: the run's config (ml_collections.ConfigDict).
    step: training step of the evaluation.
    eval_dir: `<workdir>/eval/step_<step>`.
    metrics: the evaluator's metrics (`metrics.json`).
    predictions_path: the GEN-VLKT-format predictions of that evaluation.
    test_annotations: path of the test annotation JSON.
    train_annotations: path of the (unfiltered) training annotation JSON.
  """
  workdir: str
  config: Any
  step: int
  eval_dir: str
  metrics: Dict[str, Any]
  predictions_path: str
  test_annotations: str
  train_annotations: str

  @property
  def zero_shot_split(self) -> str:
    """The run's zero-shot split ('' for a fully supervised run)."""
    return metrics_split(self.metrics)

  @functools.cached_property
  def predictions(self) -> List[Dict[str, Any]]:
    """The prediction entries (read on first use)."""
    return read_predictions(self.predictions_path)

  @functools.cached_property
  def ground_truth(self) -> hico.GroundTruth:
    """The flattened test ground truth (read on first use)."""
    return hico.load_ground_truth(hico.load_json(self.test_annotations))

  @functools.cached_property
  def detections(self) -> hico.Detections:
    """The flattened predictions, in the order of `ground_truth`."""
    return hico.flatten_predictions(self.predictions,
                                    self.ground_truth.file_names)

  def describe(self) -> str:
    """One paragraph: where everything comes from."""
    c = self.metrics.get("counts", {})
    split = self.zero_shot_split or "none (fully supervised)"
    return (f"Run {self.workdir}\n  evaluation of step {self.step}: "
            f"{self.eval_dir}\n  dataset {self.config.dataset.name} "
            f"({dataset_root(self.config, self.workdir)}), zero-shot split: "
            f"{split}\n  {c.get('images', '?')} test images, "
            f"{c.get('gt_pairs', '?')} GT pairs in "
            f"{c.get('classes_with_gt', '?')} classes, "
            f"{c.get('predictions', '?')} predictions")


def load_run(workdir: str, step: Optional[int] = None) -> Run:
  """The latest (or a given) evaluation of a workdir.

  Args:
    workdir: training workdir.
    step: evaluation step; None = the latest.

  Returns:
    The Run (predictions and ground truth are read lazily).

  Raises:
    FileNotFoundError: no config.json, or no evaluation (of that step).
  """
  workdir = os.path.abspath(workdir)
  config = load_config(workdir)
  steps = eval_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"no evaluation in {workdir}/eval (run "
                            "analysis.ensure_evaluated or mode 'eval')")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise FileNotFoundError(f"no evaluation of step {step} in {workdir}/eval"
                            f" (have {steps})")
  eval_dir = os.path.join(workdir, "eval", f"step_{step}")
  with open(os.path.join(eval_dir, "metrics.json")) as f:
    metrics = json.load(f)
  if "default" not in metrics:
    raise ValueError(f"{eval_dir}/metrics.json is not a HICO-DET evaluation")
  return Run(workdir=workdir, config=config, step=int(step),
             eval_dir=eval_dir, metrics=metrics,
             predictions_path=os.path.join(eval_dir, "predictions.json"),
             test_annotations=annotations_path(config, workdir, "test"),
             train_annotations=annotations_path(config, workdir, "train"))


def ensure_evaluated(workdir: str, config=None) -> Run:
  """`load_run`, after evaluating the checkpoint when no evaluation exists.

  Args:
    workdir: training workdir with a checkpoint.
    config: run config; None = the workdir's config.json.

  Returns:
    The latest evaluation.
  """
  workdir = os.path.abspath(workdir)
  if not eval_steps(workdir):
    from ki2hoi_jax.train import trainer  # pylint: disable=g-import-not-at-top
    trainer.evaluate(config if config is not None else load_config(workdir),
                     workdir)
  return load_run(workdir)


# ---------------------------------------------------------- metrics helpers


def metrics_split(metrics: Mapping[str, Any]) -> str:
  """The zero-shot split the metrics were computed with ('' if none)."""
  if "zero_shot" in metrics:
    return metrics["zero_shot"]["split"]
  return metrics.get("settings", {}).get("zero_shot_split", "") or ""


def per_hoi(metrics: Mapping[str, Any], key: str) -> np.ndarray:
  """[600] float array of `metrics['per_hoi'][key]` (None -> NaN)."""
  values = metrics["per_hoi"][key]
  return np.array([np.nan if v is None else v for v in values], np.float64)


def _has_gt(metrics: Mapping[str, Any]) -> np.ndarray:
  return np.asarray(metrics["per_hoi"]["num_gt"], np.int64) > 0


def _mask(indices: Sequence[int], n: int) -> np.ndarray:
  m = np.zeros(n, bool)
  m[list(indices)] = True
  return m


def _unseen_mask(split: str, n: int) -> np.ndarray:
  return _mask(metadata.hico().unseen_hois(split), n)


def _subset_mean(values: np.ndarray, mask: np.ndarray) -> Optional[float]:
  return float(np.mean(values[mask])) if mask.any() else None


def map_tables(metrics: Mapping[str, Any],
               rare_hois: Optional[Sequence[int]] = None) -> Dict[str, Table]:
  """mAP tables of the default, known-object and (if any) zero-shot settings.

  Each table has the columns of its setting (Full / Rare / Non-rare, or
  Full / Seen / Unseen) and the rows 'mAP (%)' (the evaluator's means),
  'mean max recall (%)' and 'classes' (with test GT), the last two computed
  from the per-HOI values.

  Args:
    metrics: `hico.evaluate` output.
    rare_hois: the rare set the metrics used; None = metadata (138).

  Returns:
    {'default': Table, 'known_object': Table[, 'zero_shot': Table]}.
  """
  n = len(metrics["per_hoi"]["num_gt"])
  has_gt = _has_gt(metrics)
  rare = _mask(metadata.hico().rare_hois if rare_hois is None else rare_hois,
               n)

  def table(title, means, columns, subsets, recall_key):
    recall = per_hoi(metrics, recall_key)
    masks = [has_gt & s for s in subsets]
    rows = (("mAP (%)",) + tuple(means[c] for c in columns),
            ("mean max recall (%)",) + tuple(_subset_mean(recall, m)
                                             for m in masks),
            ("classes",) + tuple(int(m.sum()) for m in masks))
    header = ("",) + tuple({"full": "Full", "rare": "Rare",
                            "non_rare": "Non-rare", "seen": "Seen",
                            "unseen": "Unseen"}[c] for c in columns)
    return Table(title, header, rows)

  everything = np.ones(n, bool)
  out = {
      "default": table("Default setting", metrics["default"],
                       ("full", "rare", "non_rare"),
                       (everything, rare, ~rare), "max_recall"),
      "known_object": table("Known-object setting", metrics["known_object"],
                            ("full", "rare", "non_rare"),
                            (everything, rare, ~rare),
                            "max_recall_known_object"),
  }
  if "zero_shot" in metrics:
    z = metrics["zero_shot"]
    unseen = _unseen_mask(z["split"], n)
    out["zero_shot"] = table(f"Zero-shot setting ({z['split']})", z,
                             ("full", "seen", "unseen"),
                             (everything, ~unseen, unseen), "max_recall")
  return out


def hoi_training_counts(train_annotations: Union[str, Records]) -> np.ndarray:
  """[600] annotated training pairs per HOI (unfiltered file, as the rare set).

  Args:
    train_annotations: path of trainval_hico.json or its records.
  """
  records = (hico.load_json(train_annotations)
             if isinstance(train_annotations, str) else train_annotations)
  return hico.hoi_instance_counts(records)


def most_frequent_test_hois(metrics: Mapping[str, Any], k: int) -> List[int]:
  """The k HOIs with the most test GT pairs (ties: lower index first)."""
  num_gt = np.asarray(metrics["per_hoi"]["num_gt"], np.int64)
  order = np.argsort(-num_gt, kind="stable")
  return [int(h) for h in order[:k] if num_gt[h] > 0]


@dataclasses.dataclass(frozen=True)
class PerHoiFrequency:
  """Per-HOI results of the classes with test GT, by training frequency.

  Sorted by `train_count` descending (ties: lower HOI index first).

  Attributes:
    hoi: [M] HOI indices.
    names: M names 'verb object'.
    train_count: [M] annotated training pairs (unfiltered training file).
    ap: [M] AP (%).
    max_recall: [M] maximum recall (%).
    num_gt: [M] test GT pairs.
    num_predictions: [M] predictions of the class.
    rare: [M] bool, in the rare set.
    unseen: [M] bool, unseen in the zero-shot split (all False without one).
  """
  hoi: np.ndarray
  names: Tuple[str, ...]
  train_count: np.ndarray
  ap: np.ndarray
  max_recall: np.ndarray
  num_gt: np.ndarray
  num_predictions: np.ndarray
  rare: np.ndarray
  unseen: np.ndarray

  def table(self, k: Optional[int] = None, title: str = "") -> Table:
    """The first k classes (all with None) as a Table."""
    rows = tuple(
        (int(self.hoi[i]), self.names[i], int(self.train_count[i]),
         float(self.ap[i]), float(self.max_recall[i]), int(self.num_gt[i]),
         bool(self.unseen[i]))
        for i in range(len(self.names) if k is None else
                       min(k, len(self.names))))
    return Table(title or "AP per HOI, most frequent in training first",
                 ("HOI", "name", "train pairs", "AP", "max recall",
                  "test pairs", "unseen"), rows)


def per_hoi_ap_sorted_by_frequency(
    metrics: Mapping[str, Any], train_annotations: Union[str, Records,
                                                         np.ndarray],
    zero_shot_split: Optional[str] = None,
    rare_hois: Optional[Sequence[int]] = None) -> PerHoiFrequency:
  """AP of each HOI with test GT, sorted by its training frequency.

  Args:
    metrics: `hico.evaluate` output.
    train_annotations: trainval JSON path, its records, or [600] counts.
      The counts are those of the unfiltered file (the rare definition): in a
      zero-shot run the model never saw the labels of the unseen classes.
    zero_shot_split: split marking `unseen`; None = the metrics' split.
    rare_hois: rare set; None = metadata (138).

  Returns:
    The sorted per-HOI results.
  """
  meta = metadata.hico()
  if isinstance(train_annotations, np.ndarray):
    counts = np.asarray(train_annotations, np.int64)
  else:
    counts = hoi_training_counts(train_annotations)
  n = len(metrics["per_hoi"]["num_gt"])
  if counts.shape != (n,):
    raise ValueError(f"training counts of shape {counts.shape}, expected "
                     f"({n},)")
  split = metrics_split(metrics) if zero_shot_split is None else zero_shot_split
  classes = np.flatnonzero(_has_gt(metrics))
  order = classes[np.argsort(-counts[classes], kind="stable")]
  rare = _mask(meta.rare_hois if rare_hois is None else rare_hois, n)
  return PerHoiFrequency(
      hoi=order,
      names=tuple(meta.hoi_name(h) for h in order),
      train_count=counts[order],
      ap=per_hoi(metrics, "ap")[order],
      max_recall=per_hoi(metrics, "max_recall")[order],
      num_gt=np.asarray(metrics["per_hoi"]["num_gt"], np.int64)[order],
      num_predictions=np.asarray(metrics["per_hoi"]["num_predictions"],
                                 np.int64)[order],
      rare=rare[order],
      unseen=_unseen_mask(split, n)[order])


# ------------------------------------------------------ precision / recall


@dataclasses.dataclass(frozen=True)
class PRCurve:
  """Precision-recall curve of one HOI class (evaluator's ranking).

  Attributes:
    hoi: HOI index.
    name: 'verb object'.
    recall: [N] recall after each ranked prediction (fraction, not %).
    precision: [N] precision after each ranked prediction.
    score: [N] scores, descending (ties in test-image / list order).
    tp: [N] bool true-positive flags.
    num_gt: test GT pairs of the class.
  """
  hoi: int
  name: str
  recall: np.ndarray
  precision: np.ndarray
  score: np.ndarray
  tp: np.ndarray
  num_gt: int

  @property
  def ap(self) -> float:
    """11-point interpolated AP (%), as `hico.class_average_precision`."""
    total = 0.0
    for t in hico.RECALL_THRESHOLDS:
      reached = self.recall >= t
      total += self.precision[reached].max() / 11. if reached.any() else 0.0
    return 100.0 * total

  @property
  def max_recall(self) -> float:
    """Highest recall reached (%)."""
    return 100.0 * float(self.recall.max()) if self.recall.size else 0.0


def _as_ground_truth(gt: Union[str, Records, hico.GroundTruth]
                     ) -> hico.GroundTruth:
  if isinstance(gt, hico.GroundTruth):
    return gt
  if isinstance(gt, str):
    gt = hico.load_json(gt)
  return hico.load_ground_truth(gt)


def _as_detections(predictions: Union[str, Records, hico.Detections],
                   gt: hico.GroundTruth) -> hico.Detections:
  if isinstance(predictions, hico.Detections):
    return predictions
  if isinstance(predictions, str):
    predictions = read_predictions(predictions)
  return hico.flatten_predictions(predictions, gt.file_names)


def precision_recall_curves(
    gt: Union[str, Records, hico.GroundTruth],
    predictions: Union[str, Records, hico.Detections],
    hoi_indices: Sequence[int]) -> Dict[int, PRCurve]:
  """Precision-recall curves of several HOI classes.

  The true positives come from the evaluator's own matching
  (`hico.match_detections`) run on the detections of the requested classes
  (matching is per (image, class), so this equals matching everything), and
  the ranking is the evaluator's: score descending, ties in test-image order
  then list order.

  Args:
    gt: test annotations: path, records or `hico.GroundTruth`.
    predictions: GEN-VLKT entries: path, list or `hico.Detections` built from
      the same ground truth.
    hoi_indices: HOI classes (each with at least one test GT pair).

  Returns:
    {hoi index: PRCurve}, in the order given.

  Raises:
    ValueError: a class without test GT (recall is undefined).
  """
  meta = metadata.hico()
  gt = _as_ground_truth(gt)
  det = _as_detections(predictions, gt)
  hoi_indices = [int(h) for h in hoi_indices]
  num_gt = np.bincount(gt.hoi, minlength=meta.num_hois)
  for h in hoi_indices:
    if not 0 <= h < meta.num_hois:
      raise ValueError(f"HOI index {h} outside [0, {meta.num_hois})")
    if num_gt[h] == 0:
      raise ValueError(f"HOI {h} ({meta.hoi_name(h)}) has no test GT pair")
  keep = np.isin(det.hoi, hoi_indices)
  sub = hico.Detections(image=det.image[keep], hoi=det.hoi[keep],
                        score=det.score[keep],
                        sub_boxes=det.sub_boxes[keep],
                        obj_boxes=det.obj_boxes[keep],
                        num_entries=det.num_entries)
  tp = hico.match_detections(gt, sub, meta.num_hois)
  out = {}
  for h in hoi_indices:
    idx = np.flatnonzero(sub.hoi == h)
    idx = idx[np.argsort(-sub.score[idx], kind="stable")]
    hits = tp[idx]
    cum_tp = np.cumsum(hits)
    rank = np.arange(1, idx.size + 1)
    out[h] = PRCurve(hoi=h, name=meta.hoi_name(h),
                     recall=cum_tp / float(num_gt[h]),
                     precision=cum_tp / rank.astype(np.float64),
                     score=sub.score[idx], tp=hits, num_gt=int(num_gt[h]))
  return out


def precision_recall_curve(gt: Union[str, Records, hico.GroundTruth],
                           predictions: Union[str, Records, hico.Detections],
                           hoi_index: int) -> PRCurve:
  """Precision-recall curve of one HOI class (see `precision_recall_curves`).

  Returns:
    The PRCurve: `recall` and `precision` [N] after each of the class's N
    ranked predictions.
  """
  return precision_recall_curves(gt, predictions, [hoi_index])[int(hoi_index)]


# ---------------------------------------------------------------- zero-shot


@dataclasses.dataclass(frozen=True)
class GroupStats:
  """AP statistics of a group of HOI classes (those with test GT).

  Attributes:
    name: 'full', 'seen' or 'unseen'.
    hoi: [M] HOI indices.
    ap: [M] AP (%).
    max_recall: [M] maximum recall (%).
  """
  name: str
  hoi: np.ndarray
  ap: np.ndarray
  max_recall: np.ndarray

  @property
  def num_classes(self) -> int:
    return int(self.hoi.size)

  @property
  def mean_ap(self) -> Optional[float]:
    return float(np.mean(self.ap)) if self.ap.size else None

  @property
  def median_ap(self) -> Optional[float]:
    return float(np.median(self.ap)) if self.ap.size else None

  @property
  def mean_max_recall(self) -> Optional[float]:
    return float(np.mean(self.max_recall)) if self.ap.size else None

  @property
  def num_nonzero(self) -> int:
    """Classes with AP > 0 (at least one true positive)."""
    return int(np.count_nonzero(self.ap > 0))


def _require_split(metrics: Mapping[str, Any], split: Optional[str]) -> str:
  split = metrics_split(metrics) if split is None else split
  if not split:
    raise ValueError("no zero-shot split: the run is fully supervised; pass "
                     "split='rf_uc' | 'nf_uc' | 'uc' | 'uo' | 'uv' to group "
                     "its classes anyway")
  metadata.hico().unseen_hois(split)  # Raises on an unknown split.
  return split


def seen_unseen_summary(metrics: Mapping[str, Any],
                        split: Optional[str] = None) -> Dict[str, GroupStats]:
  """Per-class AP of the full / seen / unseen classes with test GT.

  The means equal the evaluator's zero-shot Full / Seen / Unseen mAPs (without
  `compat_averaging_bug`).

  Args:
    metrics: `hico.evaluate` output.
    split: zero-shot split; None = the metrics' split.

  Returns:
    {'full': GroupStats, 'seen': ..., 'unseen': ...}.
  """
  split = _require_split(metrics, split)
  n = len(metrics["per_hoi"]["num_gt"])
  has_gt = _has_gt(metrics)
  unseen = _unseen_mask(split, n)
  ap = per_hoi(metrics, "ap")
  rec = per_hoi(metrics, "max_recall")
  out = {}
  for name, mask in (("full", has_gt), ("seen", has_gt & ~unseen),
                     ("unseen", has_gt & unseen)):
    idx = np.flatnonzero(mask)
    out[name] = GroupStats(name, idx, ap[idx], rec[idx])
  return out


def summary_table(summary: Mapping[str, GroupStats], title: str = "") -> Table:
  """`seen_unseen_summary` as a Table (one row per group)."""
  rows = tuple((g.name, g.num_classes, g.mean_ap, g.median_ap,
                g.mean_max_recall, g.num_nonzero)
               for g in summary.values())
  return Table(title or "Seen vs unseen classes (AP %)",
               ("classes", "count", "mAP", "median AP", "mean max recall",
                "AP > 0"), rows)


_RANKING_HEADER = ("rank", "HOI", "verb", "object", "AP", "max recall",
                   "test pairs", "predictions")


def transfer_ranking(metrics: Mapping[str, Any], split: Optional[str] = None,
                     k: int = 10) -> Dict[str, Table]:
  """The unseen classes that transfer best and worst.

  Only unseen classes with test GT are ranked. 'best': AP descending, then
  max recall descending, then HOI index; 'worst': AP ascending, then max
  recall ascending, then HOI index.

  Args:
    metrics: `hico.evaluate` output.
    split: zero-shot split; None = the metrics' split.
    k: rows per table (fewer when there are fewer unseen classes).

  Returns:
    {'best': Table, 'worst': Table} with the columns rank, HOI (index),
    verb, object, AP, max recall, test pairs, predictions.
  """
  split = _require_split(metrics, split)
  meta = metadata.hico()
  group = seen_unseen_summary(metrics, split)["unseen"]
  num_gt = np.asarray(metrics["per_hoi"]["num_gt"], np.int64)
  num_pred = np.asarray(metrics["per_hoi"]["num_predictions"], np.int64)
  best = np.lexsort((group.hoi, -group.max_recall, -group.ap))
  worst = np.lexsort((group.hoi, group.max_recall, group.ap))

  def table(order, title):
    rows = []
    for rank, i in enumerate(order[:k], 1):
      h = int(group.hoi[i])
      v, o = meta.hois[h]
      rows.append((rank, h, meta.verbs[v], meta.objects[o],
                   float(group.ap[i]), float(group.max_recall[i]),
                   int(num_gt[h]), int(num_pred[h])))
    return Table(title, _RANKING_HEADER, tuple(rows))

  return {"best": table(best, f"Unseen classes ({split}) that transfer best"),
          "worst": table(worst,
                         f"Unseen classes ({split}) that transfer worst")}


def unseen_ap_by(metrics: Mapping[str, Any], by: str = "verb",
                 split: Optional[str] = None) -> Table:
  """Mean AP of the unseen classes grouped by verb or object.

  Rows sorted by mean AP descending (ties: name). Useful for UV (unseen
  verbs) and UO (unseen objects).

  Args:
    metrics: `hico.evaluate` output.
    by: 'verb' or 'object'.
    split: zero-shot split; None = the metrics' split.

  Returns:
    Table with columns (verb|object, classes, mAP, mean max recall).
  """
  if by not in ("verb", "object"):
    raise ValueError(f"by must be 'verb' or 'object', got {by!r}")
  split = _require_split(metrics, split)
  meta = metadata.hico()
  group = seen_unseen_summary(metrics, split)["unseen"]
  keys = (meta.hoi_verb if by == "verb" else meta.hoi_object)[group.hoi]
  names = meta.verbs if by == "verb" else meta.objects
  rows = []
  for key in np.unique(keys):
    m = keys == key
    rows.append((names[key], int(m.sum()), float(np.mean(group.ap[m])),
                 float(np.mean(group.max_recall[m]))))
  rows.sort(key=lambda r: (-r[2], r[0]))
  return Table(f"Unseen classes ({split}) by {by}",
               (by, "classes", "mAP", "mean max recall"), tuple(rows))


# -------------------------------------------------------------------- plots


def _figure(width: float, height: float, ncols: int = 1):
  """A Figure on the Agg canvas and its axes (no pyplot)."""
  fig = figure.Figure(figsize=(width, height), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.subplots(1, ncols)
  return fig, axes


def plot_per_hoi_ap(freq: PerHoiFrequency, title: str = ""):
  """Bars of AP per HOI, most frequent in training on the left.

  Bars are coloured by group (seen non-rare / rare / unseen); a line on a
  second (log) axis shows the training pair count.

  Returns:
    The matplotlib Figure.
  """
  n = len(freq.names)
  fig, ax = _figure(max(6.0, min(16.0, 0.25 * n + 4.0)), 4.0)
  x = np.arange(n)
  colours = [(_UNSEEN_COLOUR if u else _RARE_COLOUR if r else _SEEN_COLOUR)
             for u, r in zip(freq.unseen, freq.rare)]
  ax.bar(x, freq.ap, color=colours, width=0.8)
  ax.set_xlabel("HOI classes with test GT, by training frequency (rank)")
  ax.set_ylabel("AP (%)")
  ax.set_ylim(0, max(1.0, float(np.nanmax(freq.ap)) * 1.1 if n else 1.0))
  if n <= 40:
    ax.set_xticks(x)
    ax.set_xticklabels(freq.names, rotation=90, fontsize=7)
  ax2 = ax.twinx()
  ax2.plot(x, np.maximum(freq.train_count, 0.5), color="black", lw=1,
           marker="." if n <= 100 else None)
  ax2.set_yscale("log")
  ax2.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax2.yaxis.set_minor_formatter(ticker.NullFormatter())
  ax2.set_ylabel("training pairs")
  handles = [patches.Patch(color=_SEEN_COLOUR, label="seen, non-rare"),
             patches.Patch(color=_RARE_COLOUR, label="rare"),
             patches.Patch(color=_UNSEEN_COLOUR, label="unseen")]
  ax.legend(handles=handles, loc="upper right", fontsize=8)
  ax.set_title(title or f"AP per HOI ({n} classes)")
  return fig


def plot_precision_recall(curves: Mapping[int, PRCurve], title: str = ""):
  """Precision-recall curves, one line per class (AP in the legend).

  Each line goes through the (recall, precision) point after each of the
  class's ranked predictions.

  Returns:
    The matplotlib Figure.
  """
  fig, ax = _figure(6.0, 4.5)
  for curve in curves.values():
    label = f"{curve.name} (AP {curve.ap:.1f}, {curve.num_gt} GT)"
    if curve.recall.size:
      ax.plot(curve.recall, curve.precision, label=label,
              marker="." if curve.recall.size <= 100 else None)
    else:
      ax.plot([], [], label=label + ", no predictions")
  ax.set_xlim(-0.02, 1.04)
  ax.set_ylim(-0.02, 1.04)
  ax.set_xlabel("recall")
  ax.set_ylabel("precision")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper right")
  ax.set_title(title or "Precision-recall")
  return fig


def plot_seen_unseen(summary: Mapping[str, GroupStats], title: str = ""):
  """Mean AP bars (left) and per-class AP box plots (right) of each group.

  Returns:
    The matplotlib Figure.
  """
  fig, (ax1, ax2) = _figure(9.0, 4.0, ncols=2)
  groups = [g for g in summary.values()]
  names = [f"{g.name}\n({g.num_classes})" for g in groups]
  colours = [{"unseen": _UNSEEN_COLOUR, "seen": _SEEN_COLOUR}.get(
      g.name, "grey") for g in groups]
  means = [0.0 if g.mean_ap is None else g.mean_ap for g in groups]
  ax1.bar(np.arange(len(groups)), means, color=colours)
  for i, m in enumerate(means):
    ax1.text(i, m, f"{m:.2f}", ha="center", va="bottom", fontsize=9)
  ax1.set_xticks(np.arange(len(groups)))
  ax1.set_xticklabels(names)
  ax1.set_ylabel("mAP (%)")
  ax1.set_ylim(0, max(1.0, max(means) * 1.2))
  ax1.set_title("mean AP")
  data = [g.ap if g.ap.size else np.zeros(0) for g in groups]
  ax2.boxplot(data, showmeans=True)
  top = max([float(np.max(d)) for d in data if d.size] + [1.0])
  ax2.set_ylim(-0.02 * top, 1.1 * top)
  ax2.set_xticks(np.arange(1, len(groups) + 1))
  ax2.set_xticklabels(names)
  ax2.set_ylabel("AP (%)")
  ax2.set_title("AP per class")
  fig.suptitle(title or "Seen vs unseen")
  return fig


# -------------------------------------------------------- prediction grid


@dataclasses.dataclass
class PredictionGrid:
  """Annotated test images tiled into one image.

  Attributes:
    image: the grid (PIL, RGB).
    records: the predict outputs shown (`{"image", "width", "height",
      "triplets", "json"}`), in grid order.
  """
  image: Image.Image
  records: List[Dict[str, Any]]

  def caption(self) -> str:
    """One line per image: file name and number of triplets, in grid order."""
    return "\n".join(
        f"{i + 1}. {os.path.basename(r['image'])}: {len(r['triplets'])} "
        "triplet(s)" for i, r in enumerate(self.records))

  def _repr_png_(self):
    return self.image._repr_png_()  # pylint: disable=protected-access


def read_predict_outputs(out_dir: str) -> List[Dict[str, Any]]:
  """The `predict.py` records (`<stem>.json`) of a folder, sorted by name.

  Each record gets a 'json' key with its path. Other JSON files are skipped.
  """
  if not os.path.isdir(out_dir):
    return []
  records = []
  for name in sorted(os.listdir(out_dir)):
    if not name.endswith(".json"):
      continue
    path = os.path.join(out_dir, name)
    with open(path) as f:
      record = json.load(f)
    if isinstance(record, dict) and "triplets" in record and (
        "image" in record):
      record["json"] = path
      records.append(record)
  return records


def draw_record(record: Mapping[str, Any], max_triplets: int = 5,
                min_score: float = 0.0, cell: int = 320) -> Image.Image:
  """The image of a predict record with its best triplets drawn.

  The original image is read from `record['image']` (relative paths are
  tried against the record's folder too); when it is gone, the PNG that
  predict wrote beside the JSON (already annotated) is used.

  Args:
    record: a `read_predict_outputs` record.
    max_triplets: draw at most this many (they are sorted by score).
    min_score: skip triplets below this (normalised) score.
    cell: the image is resized so that its longer side has this many
      pixels before drawing (labels stay legible in the grid).

  Returns:
    The annotated RGB image.
  """
  path = record["image"]
  folder = os.path.dirname(record.get("json", ""))
  candidates = [path] if os.path.isabs(path) else [
      path, os.path.join(folder, path)]
  for p in candidates:
    if os.path.isfile(p):
      with Image.open(p) as im:
        image = im.convert("RGB")
      # Resized to the cell first, so that labels keep their size in the grid.
      scale = cell / max(image.size)
      image = image.resize((max(1, round(image.width * scale)),
                            max(1, round(image.height * scale))),
                           Image.BICUBIC)
      triplets = []
      for t in record["triplets"]:
        if t["score"] >= min_score:
          t = dict(t)
          t["human_box"] = [v * scale for v in t["human_box"]]
          t["object_box"] = [v * scale for v in t["object_box"]]
          triplets.append(t)
      return visualize.draw_triplets(image, triplets,
                                     max_triplets=max_triplets,
                                     min_short_side=0)
  png = os.path.splitext(record.get("json", ""))[0] + ".png"
  if os.path.isfile(png):
    with Image.open(png) as im:
      return im.convert("RGB")
  raise FileNotFoundError(f"neither the image {path} nor {png} exists")


def prediction_grid(workdir: str, n: int = 6, columns: int = 3,
                    cell: int = 320, out_dir: Optional[str] = None,
                    score_threshold: Optional[float] = None,
                    max_triplets: int = 5) -> PredictionGrid:
  """Predictions of the workdir's checkpoint on test images, tiled.

  Reads the predict outputs in `out_dir`; when it holds fewer than `n`
  records, first runs `predict.run` (best checkpoint, else latest) on the
  first `n` test images of the run's dataset (`predict.default_images`),
  writing `<stem>.json` / `<stem>.png` there.

  Args:
    workdir: training workdir.
    n: images in the grid.
    columns: grid columns.
    cell: thumbnail size (pixels).
    out_dir: predict output folder; None = `<workdir>/predictions` (where
      `main.py` mode 'predict' writes).
    score_threshold: threshold of a new predict run and of drawing; None =
      the run's `config.predict.score_threshold` for a new run and no extra
      filter on existing records.
    max_triplets: triplets drawn per image.

  Returns:
    The PredictionGrid (displayable in a notebook).
  """
  workdir = os.path.abspath(workdir)
  out_dir = out_dir or os.path.join(workdir, "predictions")
  records = read_predict_outputs(out_dir)
  if len(records) < n:
    config = load_config(workdir)
    images = predict.default_images(config, workdir, limit=n)
    summary = predict.run(None, workdir, images, out_dir,
                          score_threshold=score_threshold)
    if summary.failed:
      raise RuntimeError(summary.text())
    records = read_predict_outputs(out_dir)
  records = records[:n]
  min_score = 0.0 if score_threshold is None else float(score_threshold)
  tiles = [draw_record(r, max_triplets=max_triplets, min_score=min_score,
                       cell=cell) for r in records]
  return PredictionGrid(visualize.image_grid(tiles, columns=columns,
                                             cell=cell), records)
