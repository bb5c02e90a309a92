"""HICO-DET matching and per-class AP over flat arrays (GEN-VLKT protocol).

The array core of the evaluator `hico` (which adds the means, the rare split,
the JSON files and the CLI): test records and prediction entries flattened to
arrays, the matching of detections to GT pairs, and the 11-point AP of every
class. Semantics (docs: hico.md section 6), identical to the GEN-VLKT python
evaluator:

* Ground truth: every pair of every record of the test JSON becomes (human
  box, object box, HOI class), the class rebuilt from (verb id, category of
  the object box). Images are matched to prediction entries by `file_name`;
  images without an entry keep their GT (misses); an entry for an unknown
  image is an error.
* Predictions: (human box, object box, `hoi_category_id`, score).
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
import itertools
import operator
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import metadata
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


def load_ground_truth(records: Sequence[Mapping[str, Any]]) -> GroundTruth:
  """Flattens test annotation records (PPDM / GEN-VLKT format).

  Args:
    records: list of `{"file_name", "annotations": [{"bbox", "category_id"}],
      "hoi_annotation": [{"subject_id", "object_id", "category_id", ...}]}`.

  Returns:
    The flattened ground truth.

  Raises:
    ValueError: duplicate file names, box indices outside `annotations`,
      unknown verb or object ids, or a (verb, object) that is not an HOI.
  """
  meta = metadata.hico()
  hoi_lut = np.full((meta.num_verbs, meta.num_objects), -1, np.int64)
  for h, (v, o) in enumerate(meta.hois):
    hoi_lut[v, o] = h
  coco_ids = set(meta.coco_category_ids)
  coco_index = {c: i for i, c in enumerate(meta.coco_category_ids)}
  file_names, image, hoi, sub, obj = [], [], [], [], []
  seen = set()
  for i, rec in enumerate(records):
    name = rec["file_name"]
    if name in seen:
      raise ValueError(f"duplicate file_name {name!r} in the annotations")
    seen.add(name)
    file_names.append(name)
    anns = rec.get("annotations") or []
    for p in rec.get("hoi_annotation") or []:
      s, o, v = p["subject_id"], p["object_id"], p["category_id"]
      if not (0 <= s < len(anns) and 0 <= o < len(anns)):
        raise ValueError(f"{name}: pair {p} refers to a box outside its "
                         f"{len(anns)} annotations")
      cat = anns[o]["category_id"]
      if cat not in coco_ids:
        raise ValueError(f"{name}: unknown object category id {cat}")
      if not 1 <= v <= meta.num_verbs:
        raise ValueError(f"{name}: verb id {v} outside 1..{meta.num_verbs}")
      h = hoi_lut[v - 1, coco_index[cat]]
      if h < 0:
        raise ValueError(f"{name}: ({meta.verbs[v - 1]}, "
                         f"{meta.objects[coco_index[cat]]}) is not a "
                         "HICO-DET HOI class")
      image.append(i)
      hoi.append(h)
      sub.append(anns[s]["bbox"])
      obj.append(anns[o]["bbox"])
  hoi = np.asarray(hoi, np.int64)
  image = np.asarray(image, np.int64)
  present = np.zeros((len(file_names), meta.num_objects), bool)
  present[image, meta.hoi_object[hoi]] = True
  return GroundTruth(
      file_names=tuple(file_names), image=image, hoi=hoi,
      sub_boxes=np.asarray(sub, np.float64).reshape(-1, 4),
      obj_boxes=np.asarray(obj, np.float64).reshape(-1, 4),
      object_present=present)


def _column(items: List[Mapping[str, Any]], key: str, dtype,
            count: int) -> np.ndarray:
  try:
    return np.fromiter(map(operator.itemgetter(key), items), dtype,
                       count=count)
  except KeyError as e:
    raise ValueError(f"a hoi_prediction lacks the key {key!r}") from e


def flatten_predictions(predictions: Sequence[Mapping[str, Any]],
                        file_names: Sequence[str]) -> Detections:
  """Predictions entries (GEN-VLKT format) -> flat arrays.

  Args:
    predictions: list of `{"file_name", "predictions": [{"bbox",
      "category_id"}], "hoi_prediction": [{"subject_id", "object_id",
      "category_id", "hoi_category_id", "score"}]}`.
    file_names: [I] test file names; defines the image order.

  Returns:
    Detections ordered by test image, then list position.

  Raises:
    ValueError: unknown or duplicate file names, ids outside an entry's
      `predictions`, malformed boxes, HOI ids outside 1..600, a verb id that
      does not match the HOI, or non-finite scores.
  """
  meta = metadata.hico()
  index = {name: i for i, name in enumerate(file_names)}
  entry_image = np.empty(len(predictions), np.int64)
  for j, entry in enumerate(predictions):
    i = index.get(entry["file_name"])
    if i is None:
      raise ValueError(f"predictions for {entry['file_name']!r}, which is not "
                       "an image of the annotation file")
    entry_image[j] = i
  order = np.argsort(entry_image, kind="stable")
  entry_image = entry_image[order]
  if entry_image.size > 1 and np.any(entry_image[1:] == entry_image[:-1]):
    dup = entry_image[1:][entry_image[1:] == entry_image[:-1]][0]
    raise ValueError(f"several prediction entries for {file_names[dup]!r}")
  entries = [predictions[j] for j in order.tolist()]

  box_lists = [e.get("predictions") or () for e in entries]
  hoi_lists = [e.get("hoi_prediction") or () for e in entries]
  n_box = np.fromiter(map(len, box_lists), np.int64, count=len(entries))
  n_hoi = np.fromiter(map(len, hoi_lists), np.int64, count=len(entries))
  all_boxes = list(itertools.chain.from_iterable(box_lists))
  bboxes = list(map(operator.itemgetter("bbox"), all_boxes))
  if bboxes and not np.all(
      np.fromiter(map(len, bboxes), np.int64, count=len(bboxes)) == 4):
    raise ValueError("every predicted bbox must have 4 numbers")
  coords = np.fromiter(itertools.chain.from_iterable(bboxes), np.float64,
                       count=4 * len(bboxes)).reshape(-1, 4)
  all_hois = list(itertools.chain.from_iterable(hoi_lists))
  n = len(all_hois)
  sub_id = _column(all_hois, "subject_id", np.int64, n)
  obj_id = _column(all_hois, "object_id", np.int64, n)
  verb_id = _column(all_hois, "category_id", np.int64, n)
  hoi_id = _column(all_hois, "hoi_category_id", np.int64, n)
  score = _column(all_hois, "score", np.float64, n)

  entry_of = np.repeat(np.arange(len(entries)), n_hoi)
  limit = n_box[entry_of]
  bad = (sub_id < 0) | (sub_id >= limit) | (obj_id < 0) | (obj_id >= limit)
  if np.any(bad):
    k = int(np.flatnonzero(bad)[0])
    raise ValueError(f"{entries[entry_of[k]]['file_name']}: hoi_prediction "
                     f"{all_hois[k]} refers to a box outside its "
                     f"{int(limit[k])} predictions")
  if np.any((hoi_id < 1) | (hoi_id > meta.num_hois)):
    raise ValueError(f"hoi_category_id outside 1..{meta.num_hois}")
  hoi = hoi_id - 1
  if np.any(meta.hoi_verb[hoi] != verb_id - 1):
    k = int(np.flatnonzero(meta.hoi_verb[hoi] != verb_id - 1)[0])
    raise ValueError(f"hoi_prediction {all_hois[k]}: category_id (verb id) "
                     "does not match hoi_category_id")
  if not np.all(np.isfinite(score)):
    raise ValueError("non-finite prediction scores")
  box_start = np.cumsum(n_box) - n_box
  base = box_start[entry_of]
  return Detections(image=entry_image[entry_of], hoi=hoi, score=score,
                    sub_boxes=coords[base + sub_id],
                    obj_boxes=coords[base + obj_id],
                    num_entries=len(entries))


def match_detections(gt: GroundTruth, det: Detections,
                     num_classes: int = 600,
                     by_score: Optional[np.ndarray] = None) -> np.ndarray:
  """True-positive flag of every detection (hico.md section 6 matching).

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


def class_average_precision(hoi: np.ndarray, score: np.ndarray,
                            tp: np.ndarray, num_gt: np.ndarray
                            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """11-point interpolated AP and maximum recall of every class.

  Args:
    hoi: [N] class of each detection; every class must have num_gt > 0.
    score: [N] scores (ties keep this order).
    tp: [N] bool true-positive flags.
    num_gt: [C] number of GT pairs of each class.

  Returns:
    ap [C] (0 for classes without detections), max_recall [C] and
    num_detections [C].
  """
  order = class_major_order(hoi, descending_order(score), num_gt.shape[0])
  return ap_class_sorted(hoi[order], tp[order], num_gt)


def ap_class_sorted(cls: np.ndarray, tp: np.ndarray, num_gt: np.ndarray
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`class_average_precision` of detections sorted by (class, rank).

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
    for t in RECALL_THRESHOLDS:
      best = np.maximum.reduceat(np.where(rec >= t, prec, -1.0), seg)
      acc = acc + np.where(best < 0, 0.0, best) / 11.
    ap[has_tp] = acc
    max_recall[has_tp] = np.maximum.reduceat(rec, seg)
  return ap, max_recall, counts

