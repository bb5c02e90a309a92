"""HICO-DET matching and per-class AP over flat arrays (GEN-VLKT protocol).

The array core of the evaluator `hico` (which adds the means, the rare split,
the JSON files and the CLI): the flat arrays of test records and prediction
entries (filled and checked by `hico_inputs`), the matching of detections to
GT pairs, and the 11-point AP of every class. Semantics (docs: docs/datasets.md section 6), identical to the GEN-VLKT python
evaluator:

* Ground truth: every pair of every record of the test JSON becomes (human
  box, object box, HOI class), the class rebuilt from (verb id, category of
  the object box). Images are matched to prediction entries by `file_name`;
  images without an entry keep their GT (misses); an entry for an unknown
  image is an error.
* Predictions: (human box, object box, `hoi_category_id`, score); without
  `hoi_category_id` the class is (verb id, category of the object box), and
  a (verb, object) that is not an HOI is skipped
  (`hico_inputs.flatten_predictions`).
* Matching, per image, predictions in descending score: candidates are the
  GT pairs of the same class with IoU_h >= 0.5 and IoU_o >= 0.5 (+1-pixel
  IoU, touching boxes 0; `boxes.py`); the candidate with the largest
  min(IoU_h, IoU_o) is chosen (first in annotation order on ties). It is a
  TP if that GT pair is still unmatched, otherwise an FP: there is no
  fall-back to the next candidate. No candidate -> FP.
* AP per class: predictions pooled over images, sorted by score, cumulative
  TP/FP, 11-point interpolated AP (thresholds `np.arange(0, 1.1, 0.1)`,
  exactly the reference's float values).

Ties: predictions with equal scores are ordered by image (order of the test
JSON) and then by their position in the entry's `hoi_prediction` list, both
for matching and for the per-class ranking (the reference's order is
unspecified there).

Everything after JSON parsing is vectorised NumPy: one join of predictions to
GT pairs by (image, class), IoUs of all candidate pairs at once, the
"first prediction per chosen GT wins" rule with one sort (exact, because the
chosen GT never depends on which pairs are already matched), and one global
sort for the per-class cumulative TP/FP.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np

from ki2hoi_jax.evaluation import boxes as box_lib

IOU_THRESHOLD = 0.5
# The reference's thresholds, including their float error (0.30000000000000004
# etc.); recall 3/10 is therefore NOT >= its "0.3", as in the reference.
RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """Test-set ground-truth pairs, flattened.

  Attributes:
    file_names: [I] file name of each test record, in file order.
    image: [G] int64 record index of each pair (records in order, pairs in
      annotation order).
    hoi: [G] int64 HOI index 0..599 (rebuilt from verb and object category).
    sub_boxes: [G, 4] float64 human boxes, pixels xyxy.
    obj_boxes: [G, 4] float64 object boxes.
    object_present: [I, 80] bool, object o occurs in a GT pair of image i.
  """
  file_names: Tuple[str, ...]
  image: np.ndarray
  hoi: np.ndarray
  sub_boxes: np.ndarray
  obj_boxes: np.ndarray
  object_present: np.ndarray

  @property
  def num_images(self) -> int:
    return len(self.file_names)


@dataclasses.dataclass(frozen=True)
class Detections:
  """Predicted triplets, flattened in (test-image order, list order).

  Attributes:
    image: [N] int64 test-record index.
    hoi: [N] int64 HOI index 0..599.
    score: [N] float64.
    sub_boxes: [N, 4] float64 human boxes, pixels xyxy.
    obj_boxes: [N, 4] float64 object boxes.
    num_entries: number of per-image prediction entries.
  """
  image: np.ndarray
  hoi: np.ndarray
  score: np.ndarray
  sub_boxes: np.ndarray
  obj_boxes: np.ndarray
  num_entries: int


def descending_order(score: np.ndarray) -> np.ndarray:
  """Indices sorting `score` descending; equal scores keep index order."""
  order = np.argsort(-score)  # Fast; the result is unique without ties.
  s = score[order]
  if s.size > 1 and np.any(s[1:] == s[:-1]):
    order = np.argsort(-score, kind="stable")
  return order


def class_major_order(hoi: np.ndarray, by_score: np.ndarray,
                      num_classes: int) -> np.ndarray:
  """`by_score` re-sorted stably by class (radix sort on int16)."""
  dtype = np.int16 if num_classes < 2**15 else np.int64
  return by_score[np.argsort(hoi[by_score].astype(dtype), kind="stable")]


def match_detections(gt: GroundTruth, det: Detections,
                     num_classes: int = 600,
                     by_score: Optional[np.ndarray] = None) -> np.ndarray:
  """True-positive flag of every detection (docs/datasets.md section 6 matching).

  Args:
    gt: ground truth.
    det: detections (any classes; those without GT come out False).
    num_classes: number of HOI classes.
    by_score: optional precomputed `descending_order(det.score)`.

  Returns:
    [N] bool, True for true positives.
  """
  n = det.score.shape[0]
  key_gt = gt.image * num_classes + gt.hoi
  g_order = np.argsort(key_gt, kind="stable")  # Keeps annotation order.
  g_keys = key_gt[g_order]
  key_det = det.image * num_classes + det.hoi
  start = np.searchsorted(g_keys, key_det, side="left")
  count = np.searchsorted(g_keys, key_det, side="right") - start
  # One row per (detection, GT pair of its image and class).
  pair_det = np.repeat(np.arange(n), count)
  first_pair = np.cumsum(count) - count
  pair_gt = g_order[start[pair_det] + np.arange(pair_det.size) -
                    first_pair[pair_det]]
  iou_h = box_lib.iou_plus1(det.sub_boxes[pair_det], gt.sub_boxes[pair_gt])
  iou_o = box_lib.iou_plus1(det.obj_boxes[pair_det], gt.obj_boxes[pair_gt])
  ok = (iou_h >= IOU_THRESHOLD) & (iou_o >= IOU_THRESHOLD)
  overlap = np.where(ok, np.minimum(iou_h, iou_o), -1.0)
  best_gt = np.full(n, -1, np.int64)
  has = count > 0
  if pair_det.size:
    seg_max = np.full(n, -1.0)
    seg_max[has] = np.maximum.reduceat(overlap, first_pair[has])
    cand = np.flatnonzero(ok & (overlap == seg_max[pair_det]))
    d = pair_det[cand]
    first = np.ones(d.size, bool)
    first[1:] = d[1:] != d[:-1]  # Lowest GT index of the ties.
    best_gt[d[first]] = pair_gt[cand[first]]
  # Processing order: score descending, then image and list position; the
  # chosen GT of a detection does not depend on earlier matches (no
  # fall-back), so a detection is a TP iff it comes first among those that
  # chose the same GT pair.
  if by_score is None:
    by_score = descending_order(det.score)
  chosen = best_gt[by_score]
  idx = np.flatnonzero(chosen >= 0)
  _, first_idx = np.unique(chosen[idx], return_index=True)
  tp = np.zeros(n, bool)
  tp[by_score[idx[first_idx]]] = True
  return tp


def ap_class_sorted(cls: np.ndarray, tp: np.ndarray, num_gt: np.ndarray,
                    recall_thresholds: np.ndarray = RECALL_THRESHOLDS
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """11-point interpolated AP and maximum recall of every class.

  Args:
    cls: [N] class of each detection, sorted by class, then by rank
      (`class_major_order`); every class must have num_gt > 0.
    tp: [N] bool true-positive flags, in the same order.
    num_gt: [C] number of GT pairs of each class.
    recall_thresholds: the 11 recall points of the AP (the python
      protocol's by default; `hico_official` passes MATLAB's).

  Returns:
    ap [C] (0 for classes without detections), max_recall [C] and
    num_detections [C].

  Only the true positives are visited: within the suffix of a class's
  ranking where recall >= t, every false positive has at most the precision
  of the entry before it (same TP count, one rank fewer), and a suffix that
  starts with a false positive is the whole ranking with recall 0. So the
  highest precision at recall >= t is the highest over the true positives
  there (0 if there is none), with the same floating-point values as the
  reference's full curve.
  """
  num_classes = num_gt.shape[0]
  counts = np.bincount(cls, minlength=num_classes)
  starts = np.cumsum(counts) - counts
  pos = np.flatnonzero(tp)  # Positions of the TPs in the sorted order.
  c = cls[pos]
  tp_counts = np.bincount(c, minlength=num_classes)
  tp_starts = np.cumsum(tp_counts) - tp_counts
  tp_cum = np.arange(pos.size) - tp_starts[c] + 1  # Cumulative TP.
  rank = pos - starts[c] + 1  # = cumulative TP + FP.
  rec = tp_cum / num_gt[c]
  prec = tp_cum / rank
  has_tp = tp_counts > 0
  seg = tp_starts[has_tp]
  ap = np.zeros(num_classes)
  max_recall = np.zeros(num_classes)
  if seg.size:
    acc = np.zeros(seg.size)
    for t in recall_thresholds:
      best = np.maximum.reduceat(np.where(rec >= t, prec, -1.0), seg)
      acc = acc + np.where(best < 0, 0.0, best) / 11.
    ap[has_tp] = acc
    max_recall[has_tp] = np.maximum.reduceat(rec, seg)
  return ap, max_recall, counts

