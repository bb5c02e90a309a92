r"""HICO-DET mAP (python evaluator protocol of GEN-VLKT/HOICLIP), vectorised.

  python -m ki2hoi_jax.evaluation.hico \
      --annotations hico_20160224_det/annotations/test_hico.json \
      --predictions preds.json [--zero_shot_split rf_uc|nf_uc|uc|uo|uv] \
      [--train_annotations trainval_hico.json] [--output metrics.json] \
      [--compat_averaging_bug]

Semantics (docs: hico.md section 6; README "Evaluation"), identical to the
GEN-VLKT python evaluator after its Aug-2023 averaging fix:

* Ground truth: every pair of every record of the test JSON becomes (human
  box, object box, HOI class), the class rebuilt from (verb id, category of
  the object box). Images are matched to prediction entries by `file_name`;
  images without an entry keep their GT (misses); an entry for an unknown
  image is an error.
* Predictions: (human box, object box, `hoi_category_id`, score). Classes
  with no GT pair in the test set are ignored.
* Matching, per image, predictions in descending score: candidates are the
  GT pairs of the same class with IoU_h >= 0.5 and IoU_o >= 0.5 (+1-pixel
  IoU, touching boxes 0; `boxes.py`); the candidate with the largest
  min(IoU_h, IoU_o) is chosen (first in annotation order on ties). It is a
  TP if that GT pair is still unmatched, otherwise an FP: there is no
  fall-back to the next candidate. No candidate -> FP.
* AP per class: predictions pooled over images, sorted by score, cumulative
  TP/FP, 11-point interpolated AP (thresholds `np.arange(0, 1.1, 0.1)`,
  exactly the reference's float values).
* Means: unweighted over the classes with at least one test GT (a class with
  GT but no prediction has AP 0). Full / Rare / Non-rare (rare = fewer than
  10 training instances); with a zero-shot split also Full / Seen / Unseen.
  `compat_averaging_bug=True` reproduces the pre-fix GEN-VLKT (and HOICLIP)
  averaging: classes without any prediction drop out of the Rare/Non-rare
  (Unseen/Seen) means but count as 0 in Full.
* Known object (KO): for an HOI with object o, only predictions in images
  whose GT pairs include object o are kept; GT unchanged. (The official KO
  mode uses image-level object labels; this is the closest substitute
  available from the JSON files.)

Ties: predictions with equal scores are ordered by image (order of the test
JSON) and then by their position in the entry's `hoi_prediction` list, both
for matching and for the per-class ranking (the reference's order is
unspecified there).

NOTE: the numbers published by GEN-VLKT, HOICLIP and KI2HOI come from the
official MATLAB evaluation of HICO-DET; this python protocol is for monitoring
and can differ slightly from them (GEN-VLKT issue #10, PPDM issue #5).

Everything after JSON parsing is vectorised NumPy: one join of predictions to
GT pairs by (image, class), IoUs of all candidate pairs at once, the
"first prediction per chosen GT wins" rule with one sort (exact, because the
chosen GT never depends on which pairs are already matched), and one global
sort for the per-class cumulative TP/FP.
"""

import argparse
import contextlib
import dataclasses
import gc
import itertools
import logging
import operator
import sys
import time
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import orjson

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import boxes as box_lib

IOU_THRESHOLD = 0.5
RARE_MAX_COUNT = 10  # Rare: fewer than this many training instances.
# The reference's thresholds, including their float error (0.30000000000000004
# etc.); recall 3/10 is therefore NOT >= its "0.3", as in the reference.
RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)
PERSON_COCO_ID = 1
ZERO_SHOT_CHOICES = tuple(metadata.ZERO_SHOT_SPLITS) + (
    "uc0", "uc1", "uc2", "uc3", "uc4")

_MATLAB_NOTE = (
    "Published HICO-DET numbers (GEN-VLKT, HOICLIP, KI2HOI papers and READMEs)"
    " come from the official MATLAB evaluation; this python protocol "
    "(GEN-VLKT's evaluator, after its 2023 averaging fix) is for monitoring "
    "and can differ slightly from them.")


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


def _coco_lookup(meta: metadata.HicoMeta) -> np.ndarray:
  lut = np.full(max(meta.coco_category_ids) + 1, -1, np.int64)
  lut[list(meta.coco_category_ids)] = np.arange(meta.num_objects)
  return lut


@contextlib.contextmanager
def _gc_paused():
  """Pauses the cyclic garbage collector (restored on exit).

  Parsing and flattening create millions of small containers; without this,
  repeated full collections over them cost more than the work itself.
  """
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def load_json(path: str) -> Any:
  """Reads a JSON file with orjson."""
  with open(path, "rb") as f:
    data = f.read()
  with _gc_paused():
    return orjson.loads(data)


def _descending_order(score: np.ndarray) -> np.ndarray:
  """Indices sorting `score` descending; equal scores keep index order."""
  order = np.argsort(-score)  # Fast; the result is unique without ties.
  s = score[order]
  if s.size > 1 and np.any(s[1:] == s[:-1]):
    order = np.argsort(-score, kind="stable")
  return order


def _class_major_order(hoi: np.ndarray, by_score: np.ndarray,
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
    by_score: optional precomputed `_descending_order(det.score)`.

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
    by_score = _descending_order(det.score)
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
  order = _class_major_order(hoi, _descending_order(score), num_gt.shape[0])
  return _ap_class_sorted(hoi[order], tp[order], num_gt)


def _ap_class_sorted(cls: np.ndarray, tp: np.ndarray, num_gt: np.ndarray
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


def hoi_instance_counts(records: Iterable[Mapping[str, Any]]) -> np.ndarray:
  """[600] number of annotated pairs of each HOI (for the rare split).

  Counted as GEN-VLKT does over the unfiltered training JSON: one count per
  pair with a person subject box, class from (verb, object box category).
  Pairs with box indices outside `annotations` are skipped (and logged).
  """
  meta = metadata.hico()
  coco_index = {c: i for i, c in enumerate(meta.coco_category_ids)}
  counts = np.zeros(meta.num_hois, np.int64)
  skipped = 0
  for rec in records:
    anns = rec.get("annotations") or []
    for p in rec.get("hoi_annotation") or []:
      s, o = p["subject_id"], p["object_id"]
      if not (0 <= s < len(anns) and 0 <= o < len(anns)):
        skipped += 1
        continue
      if anns[s]["category_id"] != PERSON_COCO_ID:
        continue
      obj = coco_index.get(anns[o]["category_id"])
      h = None if obj is None else meta.hoi_index(p["category_id"] - 1, obj)
      if h is not None:
        counts[h] += 1
  if skipped:
    logging.warning("rare split: skipped %d training pairs that refer to a "
                    "missing box", skipped)
  return counts


def rare_hois_from_annotations(records: Iterable[Mapping[str, Any]]
                               ) -> Tuple[int, ...]:
  """HOIs with fewer than 10 training instances (0 included)."""
  return tuple(np.flatnonzero(
      hoi_instance_counts(records) < RARE_MAX_COUNT).tolist())


def _mean(values: np.ndarray) -> Optional[float]:
  """Mean in percent; None (JSON null) for an empty set."""
  return float(np.mean(values) * 100.0) if values.size else None


def _split_means(ap: np.ndarray, has_gt: np.ndarray, has_det: np.ndarray,
                 in_subset: np.ndarray, compat_averaging_bug: bool
                 ) -> Tuple[Optional[float], Optional[float], Optional[float]]:
  """(Full, subset, complement) mAP in percent."""
  eligible = has_det if compat_averaging_bug else np.ones_like(has_gt)
  sub = has_gt & in_subset & eligible
  rest = has_gt & ~in_subset & eligible
  return _mean(ap[has_gt]), _mean(ap[sub]), _mean(ap[rest])


def _percent_list(values: np.ndarray, has_gt: np.ndarray) -> List[Any]:
  return [float(v) * 100.0 if g else None for v, g in zip(values, has_gt)]


def evaluate(gt_records: Union[Sequence[Mapping[str, Any]], GroundTruth],
             predictions: Union[Sequence[Mapping[str, Any]], Detections],
             zero_shot_split: Optional[str] = None,
             rare_hois: Optional[Sequence[int]] = None,
             compat_averaging_bug: bool = False) -> Dict[str, Any]:
  """HICO-DET mAP in the default, known-object and zero-shot settings.

  Args:
    gt_records: test annotation records (or a `GroundTruth`).
    predictions: prediction entries (or `Detections` built from the same
      ground truth).
    zero_shot_split: '' / None, or 'rf_uc' | 'nf_uc' | 'uc' | 'uo' | 'uv'
      (also 'uc0'..'uc4'): adds the Seen/Unseen means.
    rare_hois: rare HOI indices; None = `metadata.hico().rare_hois` (138).
    compat_averaging_bug: reproduce the pre-2023 GEN-VLKT / HOICLIP means.

  Returns:
    `{"default": {"full", "rare", "non_rare"}, "known_object": {...},
    ["zero_shot": {"split", "full", "seen", "unseen"}], "mean_max_recall",
    "known_object_mean_max_recall", "per_hoi": {"ap", "max_recall",
    "ap_known_object", "max_recall_known_object", "num_gt",
    "num_predictions"}, "counts": {...}, "settings": {...}}`. All mAP, AP
    and recall values are in percent; per-HOI values are None for classes
    without GT, means over an empty set are None.
  """
  meta = metadata.hico()
  num_classes = meta.num_hois
  with _gc_paused():
    gt = (gt_records if isinstance(gt_records, GroundTruth)
          else load_ground_truth(gt_records))
    det = (predictions if isinstance(predictions, Detections)
           else flatten_predictions(predictions, gt.file_names))
  num_gt = np.bincount(gt.hoi, minlength=num_classes)
  has_gt = num_gt > 0

  by_score = _descending_order(det.score)
  tp = match_detections(gt, det, num_classes, by_score)
  order = _class_major_order(det.hoi, by_score, num_classes)
  evaluated = has_gt[det.hoi]
  known = evaluated & gt.object_present[det.image, meta.hoi_object[det.hoi]]
  # Known-object filtering removes whole (image, class) groups, so the
  # matching of the kept detections is unchanged.
  sel = order[evaluated[order]]
  ap, max_rec, n_det = _ap_class_sorted(det.hoi[sel], tp[sel], num_gt)
  sel = order[known[order]]
  ap_ko, max_rec_ko, n_det_ko = _ap_class_sorted(det.hoi[sel], tp[sel],
                                                 num_gt)

  rare = np.zeros(num_classes, bool)
  rare[list(meta.rare_hois if rare_hois is None else rare_hois)] = True
  full, r, nr = _split_means(ap, has_gt, n_det > 0, rare,
                             compat_averaging_bug)
  full_ko, r_ko, nr_ko = _split_means(ap_ko, has_gt, n_det_ko > 0, rare,
                                      compat_averaging_bug)
  out = {
      "default": {"full": full, "rare": r, "non_rare": nr},
      "known_object": {"full": full_ko, "rare": r_ko, "non_rare": nr_ko},
  }
  if zero_shot_split:
    unseen = metadata.indices_to_mask(meta.unseen_hois(zero_shot_split),
                                      num_classes)
    z_full, z_unseen, z_seen = _split_means(ap, has_gt, n_det > 0, unseen,
                                            compat_averaging_bug)
    out["zero_shot"] = {"split": zero_shot_split, "full": z_full,
                        "seen": z_seen, "unseen": z_unseen}
  out["mean_max_recall"] = _mean(max_rec[has_gt])
  out["known_object_mean_max_recall"] = _mean(max_rec_ko[has_gt])
  out["per_hoi"] = {
      "ap": _percent_list(ap, has_gt),
      "max_recall": _percent_list(max_rec, has_gt),
      "ap_known_object": _percent_list(ap_ko, has_gt),
      "max_recall_known_object": _percent_list(max_rec_ko, has_gt),
      "num_gt": num_gt.tolist(),
      "num_predictions": n_det.tolist(),
  }
  out["counts"] = {
      "images": gt.num_images,
      "images_with_predictions": det.num_entries,
      "gt_pairs": int(gt.hoi.size),
      "classes_with_gt": int(has_gt.sum()),
      "predictions": int(det.score.size),
      "predictions_evaluated": int(evaluated.sum()),
      "true_positives": int(tp[evaluated].sum()),
  }
  out["settings"] = {"zero_shot_split": zero_shot_split or "",
                     "compat_averaging_bug": bool(compat_averaging_bug),
                     "num_rare": int((rare & has_gt).sum())}
  return out


def format_table(metrics: Mapping[str, Any]) -> str:
  """A readable table of the means in `metrics` (percent)."""
  def f(v):
    return "   n/a" if v is None else f"{v:6.2f}"
  lines = [f"HICO-DET mAP (%)      {'Full':>6}  {'Rare':>6}  {'Non-rare':>8}"]
  for key, name in (("default", "Default"), ("known_object", "Known object")):
    m = metrics[key]
    lines.append(f"{name:<20}  {f(m['full'])}  {f(m['rare'])}  "
                 f"  {f(m['non_rare'])}")
  if "zero_shot" in metrics:
    z = metrics["zero_shot"]
    lines.append(f"{'Zero-shot ' + z['split']:<20}  {'Full':>6}  "
                 f"{'Unseen':>6}  {'Seen':>8}")
    lines.append(f"{'':<20}  {f(z['full'])}  {f(z['unseen'])}  "
                 f"  {f(z['seen'])}")
  c = metrics.get("counts", {})
  ko_recall = metrics.get("known_object_mean_max_recall")
  lines.append(f"Mean max recall: {f(metrics.get('mean_max_recall'))} "
               f"(known object {f(ko_recall)})")
  if c:
    lines.append(f"{c['images']} images ({c['images_with_predictions']} with "
                 f"predictions), {c['gt_pairs']} GT pairs in "
                 f"{c['classes_with_gt']} classes, {c['predictions']} "
                 f"predictions ({c['predictions_evaluated']} of classes with "
                 f"GT, {c['true_positives']} TP)")
  if metrics.get("settings", {}).get("compat_averaging_bug"):
    lines.append("NOTE: --compat_averaging_bug: classes without predictions "
                 "are left out of the Rare/Non-rare (Unseen/Seen) means.")
  lines.append("NOTE: " + _MATLAB_NOTE)
  return "\n".join(lines)


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m ki2hoi_jax.evaluation.hico",
      description=("HICO-DET mAP (Default, Known-object and zero-shot "
                   "settings) of a GEN-VLKT-format predictions file. "
                   + _MATLAB_NOTE))
  parser.add_argument("--annotations", required=True,
                      help="test_hico.json (PPDM/GEN-VLKT format).")
  parser.add_argument("--predictions", required=True,
                      help="Predictions JSON: list of {file_name, predictions,"
                      " hoi_prediction}.")
  parser.add_argument("--zero_shot_split", default="",
                      choices=("",) + ZERO_SHOT_CHOICES,
                      help="Also report Full/Seen/Unseen for this split.")
  parser.add_argument("--train_annotations", default="",
                      help="trainval_hico.json: recompute the rare set (< 10 "
                      "training pairs) from it instead of the packaged list.")
  parser.add_argument("--output", default="",
                      help="Write all metrics (incl. per-HOI AP) as JSON.")
  parser.add_argument("--compat_averaging_bug", action="store_true",
                      help="Reproduce the pre-2023 GEN-VLKT/HOICLIP averaging:"
                      " classes without predictions drop out of the Rare/"
                      "Non-rare (Unseen/Seen) means but count 0 in Full.")
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """CLI entry point; returns the exit status."""
  args = _parse_args(argv)
  t0, c0 = time.perf_counter(), time.process_time()
  gt_records = load_json(args.annotations)
  predictions = load_json(args.predictions)
  rare = None
  if args.train_annotations:
    rare = rare_hois_from_annotations(load_json(args.train_annotations))
  t1, c1 = time.perf_counter(), time.process_time()
  metrics = evaluate(gt_records, predictions,
                     zero_shot_split=args.zero_shot_split or None,
                     rare_hois=rare,
                     compat_averaging_bug=args.compat_averaging_bug)
  t2, c2 = time.perf_counter(), time.process_time()
  metrics["settings"]["rare_source"] = (
      args.train_annotations if args.train_annotations else "metadata")
  print(format_table(metrics))
  if args.output:
    with open(args.output, "wb") as f:
      f.write(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    print(f"metrics written to {args.output}")
  print(f"(read JSON {t1 - t0:.2f} s wall / {c1 - c0:.2f} s CPU, evaluation "
        f"{t2 - t1:.2f} s wall / {c2 - c1:.2f} s CPU)", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
