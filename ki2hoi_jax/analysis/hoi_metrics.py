"""Per-HOI values of the evaluator's metrics and the class subsets behind them.

`metrics` everywhere is the output of `evaluation.hico.evaluate` (the
`metrics.json` of an evaluation): `metrics['per_hoi']` holds one list of 600
values per key ('ap', 'max_recall', 'num_gt', 'num_predictions', ...), None
for a class without test GT. The masks here select the classes that the
evaluator's means are taken over (rare, unseen, with test GT).
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import boxes
from ki2hoi_jax.evaluation import hico

Records = Sequence[Mapping[str, Any]]


def metrics_split(metrics: Mapping[str, Any]) -> str:
  """The zero-shot split the metrics were computed with ('' if none)."""
  if "zero_shot" in metrics:
    return metrics["zero_shot"]["split"]
  return metrics.get("settings", {}).get("zero_shot_split", "") or ""


def per_hoi(metrics: Mapping[str, Any], key: str) -> np.ndarray:
  """[600] float array of `metrics['per_hoi'][key]` (None -> NaN)."""
  values = metrics["per_hoi"][key]
  return np.array([np.nan if v is None else v for v in values], np.float64)


def has_gt(metrics: Mapping[str, Any]) -> np.ndarray:
  """[600] bool: the class has at least one test GT pair."""
  return np.asarray(metrics["per_hoi"]["num_gt"], np.int64) > 0


def hoi_mask(indices: Sequence[int], n: int) -> np.ndarray:
  """[n] bool, True at `indices`."""
  m = np.zeros(n, bool)
  m[list(indices)] = True
  return m


def unseen_mask(split: str, n: int) -> np.ndarray:
  """[n] bool, True at the unseen HOIs of a zero-shot split ('' = none)."""
  return hoi_mask(metadata.hico().unseen_hois(split), n)


def subset_mean(values: np.ndarray, mask: np.ndarray) -> Optional[float]:
  """Mean of `values[mask]`; None for an empty mask."""
  return float(np.mean(values[mask])) if mask.any() else None


def require_split(metrics: Mapping[str, Any], split: Optional[str]) -> str:
  """`split`, or the metrics' split when None; it must be a known one.

  Raises:
    ValueError: no split (a fully supervised run and `split` None), or an
      unknown split name.
  """
  split = metrics_split(metrics) if split is None else split
  if not split:
    raise ValueError("no zero-shot split: the run is fully supervised; pass "
                     "split='rf_uc' | 'nf_uc' | 'uc' | 'uo' | 'uv' to group "
                     "its classes anyway")
  metadata.hico().unseen_hois(split)  # Raises on an unknown split.
  return split


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


def unseen_pair_localisation(predictions: Records, annotations: Records,
                             split: str) -> Dict[str, int]:
  """How far the detector got on each unseen test pair of a zero-shot split.

  A ground-truth pair of an unseen HOI counts as `object_boxed` when one of
  the image's predicted boxes (any class) covers its object with IoU >=
  0.5, `kept` when one of the image's kept pairs (`hoi_prediction`) covers
  both its human and its object box with IoU >= 0.5, and `kept_right_class`
  when such a pair also has its HOI class (the evaluator's +1 IoU).

  Args:
    predictions: GEN-VLKT prediction records (an evaluation's
      predictions.json).
    annotations: the test annotation records (test_hico.json).
    split: the zero-shot split whose unseen HOIs are counted.

  Returns:
    {'unseen_test_pairs', 'object_boxed', 'kept', 'kept_right_class'}.
  """
  unseen = set(metadata.hico().unseen_hois(split))
  by_name = {p["file_name"]: p for p in predictions}
  out = dict(unseen_test_pairs=0, object_boxed=0, kept=0, kept_right_class=0)
  for record in annotations:
    pred = by_name.get(record["file_name"], {})
    det = np.array([d["bbox"] for d in pred.get("predictions", [])],
                   np.float64).reshape(-1, 4)
    pairs = pred.get("hoi_prediction", [])
    sub = det[[q["subject_id"] for q in pairs]].reshape(-1, 4)
    obj = det[[q["object_id"] for q in pairs]].reshape(-1, 4)
    cls = np.array([q["hoi_category_id"] for q in pairs], np.int64)
    for h in record["hoi_annotation"]:
      if h["hoi_category_id"] - 1 not in unseen:
        continue
      gt_h = np.asarray(record["annotations"][h["subject_id"]]["bbox"],
                        np.float64)
      gt_o = np.asarray(record["annotations"][h["object_id"]]["bbox"],
                        np.float64)
      hit = ((boxes.iou_plus1(sub, gt_h) >= 0.5)
             & (boxes.iou_plus1(obj, gt_o) >= 0.5))
      out["unseen_test_pairs"] += 1
      out["object_boxed"] += int(np.any(boxes.iou_plus1(det, gt_o) >= 0.5))
      out["kept"] += int(hit.any())
      out["kept_right_class"] += int(np.any(
          hit & (cls == h["hoi_category_id"])))
  return out


PERSON_CATEGORY = 1  # COCO category id of a person.


def _object_coco_id(hoi: int) -> int:
  meta = metadata.hico()
  return meta.coco_category_ids[meta.hois[hoi][1]]


# Kinds of `unseen_false_positives`, in the order they are tested.
FALSE_POSITIVE_KINDS = ("duplicate", "loose object box", "object box elsewhere",
                        "object of another class", "human box off",
                        "other verb", "unannotated pair")


def _false_positive_kind(record: Mapping[str, Any], hoi: int,
                         sub: np.ndarray, obj: np.ndarray,
                         gt_pairs: np.ndarray) -> str:
  """The `FALSE_POSITIVE_KINDS` entry of one unmatched prediction of `hoi`.

  `gt_pairs` [G, 8]: the image's ground-truth (human, object) boxes of
  `hoi`, all matched already when the prediction covers one of them.
  """
  anns = record["annotations"]
  gt = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
  category = np.array([a["category_id"] for a in anns], np.int64)
  is_person = category == PERSON_CATEGORY
  is_wanted = category == _object_coco_id(hoi)  # The HOI's object class.
  if np.any((boxes.iou_plus1(gt_pairs[:, :4], sub) >= 0.5)
            & (boxes.iou_plus1(gt_pairs[:, 4:], obj) >= 0.5)):
    return "duplicate"
  object_iou = np.where(is_person, 0.0, boxes.iou_plus1(gt, obj))
  if not np.any(object_iou >= 0.5):
    return ("loose object box" if np.any(object_iou[is_wanted] >= 0.1)
            else "object box elsewhere")
  humans = np.flatnonzero(is_person & (boxes.iou_plus1(gt, sub) >= 0.5))
  objects = np.flatnonzero(object_iou >= 0.5)
  if not np.any(is_wanted[objects]):
    return "object of another class"
  if not len(humans):
    return "human box off"
  annotated = {(h["subject_id"], h["object_id"])
               for h in record["hoi_annotation"]}
  if any((int(h), int(o)) in annotated for h in humans for o in objects):
    return "other verb"
  return "unannotated pair"


def unseen_false_positives(predictions: Records, annotations: Records,
                           split: str) -> Dict[str, int]:
  """What outranks the found unseen pairs of a zero-shot split.

  For each unseen HOI with test pairs, its kept predictions are ranked by
  score and matched greedily to its ground-truth pairs (human and object
  IoU >= 0.5, the evaluator's +1 IoU, each pair once), as AP counts them.
  Every false positive ranked above the class's median true positive (none
  without a true positive) is counted by `FALSE_POSITIVE_KINDS`:
  'duplicate' (covers an already matched pair), 'loose object box' (no
  ground-truth object within IoU 0.5, but one of the HOI's object class
  within 0.1), 'object box elsewhere', 'object of another class', 'human
  box off', 'other verb' (an annotated pair with other HOIs) and
  'unannotated pair'.

  Args:
    predictions: GEN-VLKT prediction records (an evaluation's
      predictions.json).
    annotations: the test annotation records (test_hico.json).
    split: the zero-shot split whose unseen HOIs are counted.

  Returns:
    {'true_positives': int, and one count per kind}.
  """
  by_name = {p["file_name"]: p for p in predictions}
  records = {r["file_name"]: r for r in annotations}
  out = dict.fromkeys(("true_positives",) + FALSE_POSITIVE_KINDS, 0)
  for hoi in sorted(metadata.hico().unseen_hois(split)):
    gt_pairs = {}
    for name, record in records.items():
      boxes_of = [record["annotations"][h["subject_id"]]["bbox"]
                  + record["annotations"][h["object_id"]]["bbox"]
                  for h in record["hoi_annotation"]
                  if h["hoi_category_id"] == hoi + 1]
      if boxes_of:
        gt_pairs[name] = np.array(boxes_of, np.float64)
    if not gt_pairs:
      continue
    ranked = []
    for name, pred in by_name.items():
      det = pred.get("predictions", [])
      ranked += [(q["score"], name, det[q["subject_id"]]["bbox"],
                  det[q["object_id"]]["bbox"])
                 for q in pred.get("hoi_prediction", [])
                 if q["hoi_category_id"] == hoi + 1]
    ranked.sort(key=lambda r: -r[0])
    matched = {name: np.zeros(len(p), bool) for name, p in gt_pairs.items()}
    labels = []
    for _, name, sub, obj in ranked:
      pairs = gt_pairs.get(name, np.zeros((0, 8)))
      hit = ((boxes.iou_plus1(pairs[:, :4], sub) >= 0.5)
             & (boxes.iou_plus1(pairs[:, 4:], obj) >= 0.5))
      free = np.flatnonzero(hit & ~matched.get(name, np.zeros(0, bool)))
      if len(free):
        matched[name][free[0]] = True
        labels.append("true_positives")
      else:
        labels.append(_false_positive_kind(
            records[name], hoi, np.asarray(sub, np.float64),
            np.asarray(obj, np.float64), pairs) if name in records
                      else "object box elsewhere")
    found = [i for i, label in enumerate(labels) if label == "true_positives"]
    out["true_positives"] += len(found)
    if found:
      for label in labels[:found[len(found) // 2]]:
        out[label] += label != "true_positives"
  return out
