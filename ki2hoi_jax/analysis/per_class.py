"""Per-HOI-class results: AP by training frequency, precision-recall curves.

`per_hoi_ap_sorted_by_frequency` lines up every class with test GT with its
number of training pairs (the data of `plots.plot_per_hoi_ap`);
`precision_recall_curves` re-ranks the predictions of a few classes with the
evaluator's own matching (the data of `plots.plot_precision_recall`).
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from ki2hoi_jax.analysis import hoi_metrics
from ki2hoi_jax.analysis import runs
from ki2hoi_jax.analysis import tables
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import hico_ap
from ki2hoi_jax.evaluation import hico_inputs

Records = hoi_metrics.Records

_FREQUENCY_COLUMNS = (("HOI", np.int64), ("name", "str"),
                      ("train pairs", np.int64), ("AP", np.float64),
                      ("max recall", np.float64), ("test pairs", np.int64),
                      ("unseen", bool))


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

  def table(self, k: Optional[int] = None, title: str = "") -> pd.DataFrame:
    """The first k classes (all with None) as a DataFrame.

    Returns:
      [min(k, M), 7] DataFrame with the columns 'HOI' (index, int64), 'name'
      (str), 'train pairs' (int64), 'AP', 'max recall' (float64, %), 'test
      pairs' (int64) and 'unseen' (bool); `attrs['title']`: `title` or 'AP
      per HOI, most frequent in training first'.
    """
    rows = tuple(
        (int(self.hoi[i]), self.names[i], int(self.train_count[i]),
         float(self.ap[i]), float(self.max_recall[i]), int(self.num_gt[i]),
         bool(self.unseen[i]))
        for i in range(len(self.names) if k is None else
                       min(k, len(self.names))))
    return tables.frame_from_rows(
        title or "AP per HOI, most frequent in training first",
        _FREQUENCY_COLUMNS, rows)


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
    counts = hoi_metrics.hoi_training_counts(train_annotations)
  n = len(metrics["per_hoi"]["num_gt"])
  if counts.shape != (n,):
    raise ValueError(f"training counts of shape {counts.shape}, expected "
                     f"({n},)")
  split = (hoi_metrics.metrics_split(metrics) if zero_shot_split is None
           else zero_shot_split)
  classes = np.flatnonzero(hoi_metrics.has_gt(metrics))
  order = classes[np.argsort(-counts[classes], kind="stable")]
  rare = hoi_metrics.hoi_mask(meta.rare_hois if rare_hois is None
                              else rare_hois, n)
  return PerHoiFrequency(
      hoi=order,
      names=tuple(meta.hoi_name(h) for h in order),
      train_count=counts[order],
      ap=hoi_metrics.per_hoi(metrics, "ap")[order],
      max_recall=hoi_metrics.per_hoi(metrics, "max_recall")[order],
      num_gt=np.asarray(metrics["per_hoi"]["num_gt"], np.int64)[order],
      num_predictions=np.asarray(metrics["per_hoi"]["num_predictions"],
                                 np.int64)[order],
      rare=rare[order],
      unseen=hoi_metrics.unseen_mask(split, n)[order])


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
    """11-point interpolated AP (%), as `hico_ap.ap_class_sorted`."""
    total = 0.0
    for t in hico_ap.RECALL_THRESHOLDS:
      reached = self.recall >= t
      total += self.precision[reached].max() / 11. if reached.any() else 0.0
    return 100.0 * total

  @property
  def max_recall(self) -> float:
    """Highest recall reached (%)."""
    return 100.0 * float(self.recall.max()) if self.recall.size else 0.0


def _as_ground_truth(gt: Union[str, Records, hico_ap.GroundTruth]
                     ) -> hico_ap.GroundTruth:
  if isinstance(gt, hico_ap.GroundTruth):
    return gt
  if isinstance(gt, str):
    gt = hico.load_json(gt)
  return hico_inputs.load_ground_truth(gt)


def _as_detections(predictions: Union[str, Records, hico_ap.Detections],
                   gt: hico_ap.GroundTruth) -> hico_ap.Detections:
  if isinstance(predictions, hico_ap.Detections):
    return predictions
  if isinstance(predictions, str):
    predictions = runs.read_predictions(predictions)
  return hico_inputs.flatten_predictions(predictions, gt.file_names)


def precision_recall_curves(
    gt: Union[str, Records, hico_ap.GroundTruth],
    predictions: Union[str, Records, hico_ap.Detections],
    hoi_indices: Sequence[int]) -> Dict[int, PRCurve]:
  """Precision-recall curves of several HOI classes.

  The true positives come from the evaluator's own matching
  (`hico_ap.match_detections`) run on the detections of the requested classes
  (matching is per (image, class), so this equals matching everything), and
  the ranking is the evaluator's: score descending, ties in test-image order
  then list order.

  Args:
    gt: test annotations: path, records or `hico_ap.GroundTruth`.
    predictions: GEN-VLKT entries: path, list or `hico_ap.Detections` built from
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
  sub = hico_ap.Detections(image=det.image[keep], hoi=det.hoi[keep],
                        score=det.score[keep],
                        sub_boxes=det.sub_boxes[keep],
                        obj_boxes=det.obj_boxes[keep],
                        num_entries=det.num_entries)
  tp = hico_ap.match_detections(gt, sub, meta.num_hois)
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


def precision_recall_curve(gt: Union[str, Records, hico_ap.GroundTruth],
                           predictions: Union[str, Records, hico_ap.Detections],
                           hoi_index: int) -> PRCurve:
  """Precision-recall curve of one HOI class (see `precision_recall_curves`).

  Returns:
    The PRCurve: `recall` and `precision` [N] after each of the class's N
    ranked predictions.
  """
  return precision_recall_curves(gt, predictions, [hoi_index])[int(hoi_index)]
