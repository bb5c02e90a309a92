"""V-COCO role AP (scenario 1 and 2), after the official V-COCO evaluation.

This re-implements `_do_role_eval` of the official evaluation code
(s-gupta/v-coco, `vsrl_eval.py`; docs/datasets.md section 7) on the GEN-VLKT-style
annotation file `annotations/test_vcoco.json`, so that no COCO API or
`vcocodb` is needed. This module owns the (action, role) classes, the box
overlap and VOC AP, the ground-truth and detection arrays of an image, the
per-image matching and the role AP over the test set; the entry point
`vcoco.evaluate`, the predictions-file format and its I/O, the official-format
conversion and the CLI are in `vcoco`.

* Ground truth per image: the GT persons are the boxes with COCO category 1
  (plus any box used as a subject). A person *does* action a when a
  `hoi_annotation` with that subject has a verb class of action a. For
  (action a, role r), the GT role object is the box of the first such
  annotation with verb class `<a>_<r>` and `object_id >= 0`; `object_id == -1`
  means that the role object is missing (occluded / not annotated). A person
  that is the subject of no `hoi_annotation` has no action labels: detections
  matched to it are skipped.
* A detection of (a, r) is one prediction record with a score for the key
  `<a>_<r>` (file format: `vcoco`). Per image, in descending score, its
  person box goes to the GT person of highest IoU; it is a TP when that IoU is
  >= 0.5, the person does a, the person is not yet covered for (a, r), and the
  role is right; else an FP (skipped when that person has no labels).
  Role right: role-box IoU >= 0.5 with the GT role object; when the person has
  no GT role object, scenario 1 needs the prediction to have no role (all-zero
  or all-NaN box) and scenario 2 accepts any box.
* #positives of (a, r) = GT persons doing a. AP = all-point VOC AP (area under
  the monotone precision envelope). The reported mAP is the mean over the 24
  `role_ap_classes` of `metadata.vcoco()`: the 4 agent-only actions have no
  role AP and `point_instr` is excluded (the original script averages it in;
  `per_action` still lists it). Classes without positives get AP NaN (the
  official code would assert) and are left out of the mean.
* IoU: the official `get_overlap`, +1 pixel convention with
  `max(min(x2) - max(x1) + 1, 0)` as intersection width, so boxes that only
  touch overlap a little (unlike the HICO-DET evaluator of docs/datasets.md section 6).

Known differences from the official code, all due to the JSON ground truth:
the converted annotation files store `x2 = x1 + w` (official: `x1 + w - 1`,
clipped to the image), and persons that V-COCO annotated with no action at all
cannot be told apart from unannotated persons, so both are skipped. Ties of
equal scores are ordered stably (image order, then record order), where the
official code uses a reversed quicksort order.
"""

import dataclasses
import functools
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from ki2hoi_jax.data import metadata

PERSON_CATEGORY_ID = 1  # COCO category id of 'person'.
SCENARIOS = ("scenario_1", "scenario_2")

Record = Dict[str, Any]


# ----------------------------------------------------------------- classes


@dataclasses.dataclass(frozen=True)
class RoleClasses:
  """The (action, role) classes that have a role AP.

  Attributes:
    verb_classes: [Cr] verb-class indices that have a role (25 on V-COCO).
    names: [Cr] their names, `<action>_<role>` (the detection keys).
    actions: [Cr] action index of each.
    reported: [Cr] bool, True for the 24 classes averaged into the mAP.
  """
  verb_classes: Tuple[int, ...]
  names: Tuple[str, ...]
  actions: Tuple[int, ...]
  reported: Tuple[bool, ...]

  @property
  def num(self) -> int:
    return len(self.verb_classes)

  @functools.cached_property
  def column(self) -> Dict[str, int]:
    """Detection key -> column index."""
    return {n: i for i, n in enumerate(self.names)}


@functools.lru_cache(maxsize=None)
def role_classes() -> RoleClasses:
  """The 25 V-COCO (action, role) classes, in verb-class order."""
  meta = metadata.vcoco()
  cls = tuple(c for c, r in enumerate(meta.verb_class_role) if r)
  reported = set(meta.role_ap_classes)
  return RoleClasses(
      verb_classes=cls,
      names=tuple(meta.verb_classes[c] for c in cls),
      actions=tuple(meta.verb_class_action[c] for c in cls),
      reported=tuple(c in reported for c in cls))


def agent_key(action_index: int) -> str:
  """Detection key of an action's agent score, e.g. 'hold_agent'."""
  return metadata.vcoco().actions[action_index] + "_agent"


# --------------------------------------------------------------------- IoU


def overlap_plus1(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
  """Pairwise IoU with the +1 pixel convention of the official V-COCO code.

  Args:
    boxes_a: [N, 4] corners (x1, y1, x2, y2).
    boxes_b: [M, 4] corners.

  Returns:
    [N, M] float64 IoU; NaN where a box has NaN coordinates.
  """
  a = np.asarray(boxes_a, np.float64)[:, None, :]
  b = np.asarray(boxes_b, np.float64)[None, :, :]
  return paired_overlap_plus1(a, b)


def paired_overlap_plus1(boxes_a: np.ndarray,
                         boxes_b: np.ndarray) -> np.ndarray:
  """Element-wise IoU (+1 convention) of broadcastable box arrays.

  Args:
    boxes_a: [..., 4] corners.
    boxes_b: [..., 4] corners.

  Returns:
    [...] float64 IoU: intersection width max(min(x2) - max(x1) + 1, 0) (same
    for the height) over the union of the (x2 - x1 + 1)(y2 - y1 + 1) areas.
  """
  a = np.asarray(boxes_a, np.float64)
  b = np.asarray(boxes_b, np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2])
                    - np.maximum(a[..., 0], b[..., 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3])
                    - np.maximum(a[..., 1], b[..., 1]) + 1.0, 0.0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1.0) * (a[..., 3] - a[..., 1] + 1.0)
    area_b = (b[..., 2] - b[..., 0] + 1.0) * (b[..., 3] - b[..., 1] + 1.0)
    return inter / (area_a + area_b - inter)


# ---------------------------------------------------------------------- AP


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
  """All-point VOC AP: area under the monotone precision envelope.

  Args:
    recall: [N] non-decreasing recall after each ranked detection.
    precision: [N] precision after each ranked detection.

  Returns:
    The AP in [0, 1]; 0 for no detections.
  """
  mrec = np.concatenate([[0.0], np.asarray(recall, np.float64), [1.0]])
  mpre = np.concatenate([[0.0], np.asarray(precision, np.float64), [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
  return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def average_precision(scores: np.ndarray, tp: np.ndarray,
                      num_positives: int) -> float:
  """All-point AP of ranked detections.

  Args:
    scores: [N] detection scores (ranked descending, stable for ties).
    tp: [N] bool, True for true positives (the others are false positives).
    num_positives: number of GT instances; 0 gives NaN.

  Returns:
    The AP in [0, 1], or NaN when there are no positives.
  """
  if num_positives <= 0:
    return float("nan")
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  tp = np.asarray(tp, bool)[order]
  ctp = np.cumsum(tp, dtype=np.float64)
  cfp = np.cumsum(~tp, dtype=np.float64)
  recall = ctp / float(num_positives)
  precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
  return voc_ap(recall, precision)


# ------------------------------------------------------------ ground truth


@dataclasses.dataclass
class ImageGroundTruth:
  """V-COCO ground truth of one image, in role-class columns.

  Attributes:
    person_boxes: [G, 4] GT person boxes.
    labelled: [G] bool, False for persons without any action label (skipped).
    actions: [G, A] bool, person does action a (A = 26).
    role_boxes: [G, Cr, 4] GT role-object box per role class (0 where missing).
    has_role: [G, Cr] bool, the role object is annotated.
  """
  person_boxes: np.ndarray
  labelled: np.ndarray
  actions: np.ndarray
  role_boxes: np.ndarray
  has_role: np.ndarray


def image_ground_truth(record: Mapping[str, Any]) -> ImageGroundTruth:
  """Builds the role-AP ground truth of one `test_vcoco.json` record.

  Args:
    record: {'annotations': [{'bbox', 'category_id'}], 'hoi_annotation':
      [{'subject_id', 'object_id' (-1 = no object), 'category_id' (0-based
      verb class)}]}.

  Returns:
    The image's ImageGroundTruth.
  """
  meta = metadata.vcoco()
  rc = role_classes()
  col_of_verb = {v: i for i, v in enumerate(rc.verb_classes)}
  anns = record.get("annotations", [])
  boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
  hois = record.get("hoi_annotation", [])
  person_ids = sorted(
      {i for i, a in enumerate(anns)
       if int(a["category_id"]) == PERSON_CATEGORY_ID}
      | {int(h["subject_id"]) for h in hois})
  row = {ann: g for g, ann in enumerate(person_ids)}
  num = len(person_ids)
  gt = ImageGroundTruth(
      person_boxes=boxes[person_ids].reshape(-1, 4),
      labelled=np.zeros(num, bool),
      actions=np.zeros((num, len(meta.actions)), bool),
      role_boxes=np.zeros((num, rc.num, 4), np.float64),
      has_role=np.zeros((num, rc.num), bool))
  for h in hois:
    g = row[int(h["subject_id"])]
    verb = int(h["category_id"])
    gt.labelled[g] = True
    gt.actions[g, meta.verb_class_action[verb]] = True
    col = col_of_verb.get(verb)
    obj = int(h.get("object_id", -1))
    if col is not None and obj >= 0 and not gt.has_role[g, col]:
      gt.role_boxes[g, col] = boxes[obj]
      gt.has_role[g, col] = True
  return gt


# -------------------------------------------------------------- detections


def detection_arrays(records: Sequence[Mapping[str, Any]]
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Packs one image's detection records into role-class arrays.

  Args:
    records: R dicts of the predictions-file format (`vcoco` docstring).

  Returns:
    person_boxes [R, 4]; scores [R, Cr] (NaN = no detection of that class);
    role_boxes [R, Cr, 4] (NaN = no role object).
  """
  rc = role_classes()
  num = len(records)
  person = np.zeros((num, 4), np.float64)
  scores = np.full((num, rc.num), np.nan, np.float64)
  roles = np.full((num, rc.num, 4), np.nan, np.float64)
  for i, rec in enumerate(records):
    person[i] = rec["person_box"]
    for key, value in rec.items():
      col = rc.column.get(key)
      if col is None:
        continue
      v = np.array([np.nan if x is None else x for x in value], np.float64)
      roles[i, col] = v[:4]
      scores[i, col] = v[4]
  return person, scores, roles


# ---------------------------------------------------------------- matching


def _first_per_person(correct: np.ndarray, rank: np.ndarray, person: np.ndarray,
                      num_persons: int) -> np.ndarray:
  """Correct detections that are the best-ranked correct one of their person.

  Args:
    correct: [R, Cr] bool.
    rank: [R, Cr] rank of each detection within its class (0 = best).
    person: [R] matched GT person.
    num_persons: G.

  Returns:
    [R, Cr] bool true positives (later correct ones are duplicates).
  """
  num, ncls = correct.shape
  first = np.full((ncls, max(num_persons, 1)), num, np.int64)
  r_idx, c_idx = np.nonzero(correct)
  np.minimum.at(first, (c_idx, person[r_idx]), rank[r_idx, c_idx])
  return correct & (rank == first[np.arange(ncls)[None, :], person[:, None]])


def match_image(gt: ImageGroundTruth, person_boxes: np.ndarray,
                scores: np.ndarray, role_boxes: np.ndarray,
                iou_threshold: float = 0.5) -> Dict[str, np.ndarray]:
  """Marks one image's role detections as TP / FP for both scenarios.

  Args:
    gt: the image's ground truth.
    person_boxes: [R, 4] detected person boxes.
    scores: [R, Cr] role scores (NaN = not detected).
    role_boxes: [R, Cr, 4] role boxes (all NaN or all 0 = no role predicted).
    iou_threshold: IoU needed for the person and for the role object.

  Returns:
    'counted' [R, Cr] bool: ranked detections (detected and not skipped);
    'rank' [R, Cr]: processing order within the image per class;
    'scenario_1' / 'scenario_2' [R, Cr] bool: true positives.
  """
  num, ncls = scores.shape
  detected = ~np.isnan(scores)
  order = np.argsort(-np.where(detected, scores, -np.inf), axis=0,
                     kind="stable")
  rank = np.empty_like(order)
  np.put_along_axis(rank, order, np.broadcast_to(np.arange(num)[:, None],
                                                 order.shape), axis=0)
  out = {"counted": detected, "rank": rank}
  num_persons = gt.person_boxes.shape[0]
  if num == 0 or num_persons == 0:  # No GT person: every detection is an FP.
    for s in SCENARIOS:
      out[s] = np.zeros((num, ncls), bool)
    return out
  ious = overlap_plus1(person_boxes, gt.person_boxes)  # [R, G]
  best = np.argmax(ious, axis=1)
  best_iou = ious[np.arange(num), best]
  counted = detected & gt.labelled[best][:, None]
  with np.errstate(invalid="ignore"):
    person_ok = best_iou >= iou_threshold
    role_iou = paired_overlap_plus1(role_boxes, gt.role_boxes[best])
    role_ok = role_iou >= iou_threshold
  no_role = (np.all(role_boxes == 0.0, axis=-1)
             | np.all(np.isnan(role_boxes), axis=-1))
  has_role = gt.has_role[best]
  base = (counted & person_ok[:, None]
          & gt.actions[best][:, np.asarray(role_classes().actions)])
  out["counted"] = counted
  out["scenario_1"] = _first_per_person(
      base & np.where(has_role, role_ok, no_role), rank, best, num_persons)
  out["scenario_2"] = _first_per_person(
      base & np.where(has_role, role_ok, True), rank, best, num_persons)
  return out


# -------------------------------------------------------------- evaluation


@dataclasses.dataclass
class RoleAPResult:
  """Per-class role AP.

  Attributes:
    names: [Cr] role-class names.
    ap: scenario -> [Cr] AP in [0, 1] (NaN without positives).
    num_positives: [Cr] GT persons doing the class's action.
    num_detections: [Cr] ranked detections.
    reported: [Cr] bool, part of the 24-class mean.
  """
  names: Tuple[str, ...]
  ap: Dict[str, np.ndarray]
  num_positives: np.ndarray
  num_detections: np.ndarray
  reported: np.ndarray

  def mean_ap(self, scenario: str) -> float:
    """Mean AP (in %) over the reported classes that have positives."""
    values = self.ap[scenario][self.reported]
    values = values[~np.isnan(values)]
    return float(100.0 * values.mean()) if values.size else float("nan")

  def as_dict(self) -> Dict[str, Any]:
    """{'scenario_1': mAP %, 'scenario_2': mAP %, 'per_action': {...}}."""
    out: Dict[str, Any] = {s: self.mean_ap(s) for s in SCENARIOS}
    out["per_action"] = {
        name: {s: float(100.0 * self.ap[s][i]) for s in SCENARIOS}
        for i, name in enumerate(self.names)}
    return out


def _index_detections(detections: Union[Sequence[Mapping[str, Any]],
                                        Mapping[str, Sequence[Record]]]
                      ) -> Dict[str, List[Record]]:
  if isinstance(detections, Mapping):
    return {k: list(v) for k, v in detections.items()}
  by_name: Dict[str, List[Record]] = {}
  for entry in detections:
    by_name.setdefault(entry["file_name"], []).extend(entry["detections"])
  return by_name


def role_ap(gt_records: Sequence[Mapping[str, Any]],
            detections: Union[Sequence[Mapping[str, Any]],
                              Mapping[str, Sequence[Record]]],
            iou_threshold: float = 0.5) -> RoleAPResult:
  """Role AP of every (action, role) class in both scenarios.

  Args:
    gt_records: the records of `test_vcoco.json` (each with a `file_name`).
    detections: the predictions-file entries (`vcoco` docstring), matched to
      the GT by `file_name`, or a dict file_name -> detection records.
      Detections of images not in `gt_records` are ignored.
    iou_threshold: person and role IoU threshold.

  Returns:
    The RoleAPResult.
  """
  rc = role_classes()
  by_name = _index_detections(detections)
  num_positives = np.zeros(len(metadata.vcoco().actions), np.int64)
  parts = {k: [] for k in ("cls", "score", "image", "rank") + SCENARIOS}
  for image, record in enumerate(gt_records):
    gt = image_ground_truth(record)
    num_positives += gt.actions.sum(axis=0)
    person, scores, roles = detection_arrays(
        by_name.get(record["file_name"], []))
    m = match_image(gt, person, scores, roles, iou_threshold)
    r_idx, c_idx = np.nonzero(m["counted"])
    parts["cls"].append(c_idx)
    parts["score"].append(scores[r_idx, c_idx])
    parts["image"].append(np.full(r_idx.shape, image))
    parts["rank"].append(m["rank"][r_idx, c_idx])
    for s in SCENARIOS:
      parts[s].append(m[s][r_idx, c_idx])
  flat = {k: (np.concatenate(v) if v else np.zeros(0))
          for k, v in parts.items()}
  # Ranking: score descending; ties in image order, then processing order.
  order = np.lexsort((flat["rank"], flat["image"], -flat["score"]))
  flat = {k: v[order] for k, v in flat.items()}
  pos = num_positives[np.asarray(rc.actions)]
  ap = {s: np.full(rc.num, np.nan) for s in SCENARIOS}
  num_dets = np.zeros(rc.num, np.int64)
  for c in range(rc.num):
    sel = flat["cls"] == c
    num_dets[c] = int(sel.sum())
    for s in SCENARIOS:
      ap[s][c] = average_precision(flat["score"][sel],
                                   flat[s][sel].astype(bool), int(pos[c]))
  return RoleAPResult(names=rc.names, ap=ap, num_positives=pos,
                      num_detections=num_dets, reported=np.asarray(rc.reported))
