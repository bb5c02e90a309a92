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
* Predictions: (human box, object box, `hoi_category_id`, score); without
  `hoi_category_id` the class is (verb id, category of the object box), and
  a (verb, object) that is not an HOI is skipped (`flatten_predictions`).
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

import collections.abc
import dataclasses
import functools
import itertools
import logging
import numbers
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


class EvaluationInputError(ValueError):
  """Malformed evaluator input (annotation records or prediction entries).

  The message starts with the source (a file path, or 'annotations' /
  'predictions' for records passed in-process) and names the image and the
  position of the offending item where one applies.
  """


def check_entry_list(data: Any, source: str, what: str) -> None:
  """Raises `EvaluationInputError` unless `data` is a list (of `what`)."""
  if isinstance(data, (str, bytes, Mapping)) or not isinstance(
      data, collections.abc.Sequence):
    raise EvaluationInputError(f"{source}: expected a JSON list of {what}, "
                               f"got {type(data).__name__}")


def _entry_name(entry: Any, j: int, source: str, what: str) -> str:
  """The `file_name` of the j-th entry of `source`, checked."""
  if not isinstance(entry, (dict, collections.abc.Mapping)):
    raise EvaluationInputError(f"{source}: {what} {j} is not a JSON object "
                               f"({type(entry).__name__})")
  if "file_name" not in entry:
    raise EvaluationInputError(f"{source}: {what} {j} has no 'file_name'")
  name = entry["file_name"]
  if not isinstance(name, str):
    raise EvaluationInputError(f"{source}: {what} {j}: file_name {name!r} "
                               "is not a string")
  return name


@functools.lru_cache(maxsize=None)
def _lookup_tables() -> Tuple[np.ndarray, np.ndarray]:
  """(hoi_lut, coco_lut), both -1 where there is none.

  hoi_lut: [117 * 80] HOI index of (verb v, object o) at v * 80 + o.
  coco_lut: [max COCO id + 2] object index of a COCO category id; its first
  and last entries are -1, so that out-of-range ids clipped onto them are
  unknown.
  """
  meta = metadata.hico()
  hoi_lut = np.full(meta.num_verbs * meta.num_objects, -1, np.int64)
  for h, (v, o) in enumerate(meta.hois):
    hoi_lut[v * meta.num_objects + o] = h
  coco_lut = np.full(max(meta.coco_category_ids) + 2, -1, np.int64)
  coco_lut[list(meta.coco_category_ids)] = np.arange(meta.num_objects)
  return hoi_lut, coco_lut


def _is_index(value: Any) -> bool:
  """An int (numpy ones included), not a bool or an integral float."""
  return type(value) is int or (  # pylint: disable=unidiomatic-typecheck
      isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _pair_hoi(p: Mapping[str, Any], anns: Sequence[Mapping[str, Any]]
              ) -> Tuple[int, Optional[str]]:
  """(HOI index, None) of a GT pair, or (-1, what is wrong with it)."""
  meta = metadata.hico()
  hoi_lut, coco_lut = _lookup_tables()
  s, o, v = p["subject_id"], p["object_id"], p["category_id"]
  if not (_is_index(s) and _is_index(o)):
    return -1, f"subject_id {s!r} and object_id {o!r} must be integers"
  if not (0 <= s < len(anns) and 0 <= o < len(anns)):
    return -1, f"pair {p} refers to a box outside its {len(anns)} annotations"
  cat = anns[o]["category_id"]
  c = coco_lut[cat] if _is_index(cat) and 0 <= cat < coco_lut.size else -1
  if c < 0:
    return -1, f"unknown object category id {cat!r}"
  if not (_is_index(v) and 1 <= v <= meta.num_verbs):
    return -1, f"verb id {v!r} outside 1..{meta.num_verbs}"
  h = int(hoi_lut[(v - 1) * meta.num_objects + c])
  if h < 0:
    return -1, (f"({meta.verbs[v - 1]}, {meta.objects[c]}) is not a HICO-DET "
                "HOI class")
  return h, None


def load_ground_truth(records: Sequence[Mapping[str, Any]],
                      source: str = "annotations") -> GroundTruth:
  """Flattens test annotation records (PPDM / GEN-VLKT format).

  Args:
    records: list of `{"file_name", "annotations": [{"bbox", "category_id"}],
      "hoi_annotation": [{"subject_id", "object_id", "category_id", ...}]}`.
    source: the name of `records` in error messages (the file path).

  Returns:
    The flattened ground truth.

  Raises:
    EvaluationInputError (a ValueError): not a list, records that are not
      objects or lack `file_name`, duplicate file names, box indices that
      are not integers or lie outside `annotations`, unknown verb or object
      ids, or a (verb, object) that is not an HOI.
  """
  meta = metadata.hico()
  hoi_lut, coco_lut = (lut.tolist() for lut in _lookup_tables())
  check_entry_list(records, source, "annotation records")
  num_verbs, num_objects, max_coco = (meta.num_verbs, meta.num_objects,
                                      len(coco_lut))
  file_names, image, hoi, sub, obj = [], [], [], [], []
  seen = set()
  for i, rec in enumerate(records):
    name = _entry_name(rec, i, source, "record")
    if name in seen:
      raise EvaluationInputError(
          f"{source}: duplicate file_name {name!r} in the annotations")
    seen.add(name)
    file_names.append(name)
    anns = rec.get("annotations") or []
    n = len(anns)
    for k, p in enumerate(rec.get("hoi_annotation") or []):
      s, o, v = p["subject_id"], p["object_id"], p["category_id"]
      # Fast path for plain ints; `_pair_hoi` checks and explains the rest.
      h = -1
      if (type(s) is type(o) is type(v) is int and 0 <= s < n and 0 <= o < n
          and 1 <= v <= num_verbs):
        cat = anns[o]["category_id"]
        c = coco_lut[cat] if type(cat) is int and 0 <= cat < max_coco else -1
        if c >= 0:
          h = hoi_lut[(v - 1) * num_objects + c]
      if h < 0:
        h, problem = _pair_hoi(p, anns)
        if problem:
          raise EvaluationInputError(
              f"{source}: image {name!r} (record {i}), hoi_annotation[{k}]: "
              f"{problem}")
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


class _Places:
  """Names the prediction entries and their items in error messages."""

  def __init__(self, source: str, entries: Sequence[Mapping[str, Any]],
               file_index: np.ndarray):
    self.source = source
    self.entries = entries
    self.file_index = file_index  # Position of each entry in the file.
    self.start = {}

  def set_counts(self, n_box: np.ndarray, n_hoi: np.ndarray) -> None:
    """Numbers of `predictions` boxes and `hoi_prediction`s per entry."""
    self.start = {"predictions": np.cumsum(n_box) - n_box,
                  "hoi_prediction": np.cumsum(n_hoi) - n_hoi}

  def entry(self, e: int) -> str:
    return (f"{self.source}: image {self.entries[e]['file_name']!r} "
            f"(entry {int(self.file_index[e])})")

  def item(self, kind: str, k: int) -> str:
    """'<source>: image '<name>' (entry j), <kind>[i]' of flat item k."""
    start = self.start[kind]
    e = int(np.searchsorted(start, k, side="right")) - 1
    return f"{self.entry(e)}, {kind}[{k - int(start[e])}]"

  def fail(self, bad: np.ndarray, kind: str, problem) -> None:
    """Raises for the first True of `bad`; problem(k) describes item k."""
    if np.any(bad):
      k = int(np.argmax(bad))
      raise EvaluationInputError(f"{self.item(kind, k)}: {problem(k)}")


def _is_number(value: Any) -> bool:
  """Whether `value` converts to float64 as the flattening does."""
  try:
    np.fromiter((value,), np.float64, count=1)
  except (TypeError, ValueError, OverflowError):
    return False
  return True


def _column(items: List[Any], key: str, places: _Places, kind: str,
            default: Optional[float] = None) -> np.ndarray:
  """[len(items)] float64 values of `key` (`default` where absent)."""
  get = (operator.itemgetter(key) if default is None
         else operator.methodcaller("get", key, default))
  try:
    return np.fromiter(map(get, items), np.float64, count=len(items))
  except (KeyError, TypeError, ValueError, OverflowError) as e:
    for k, item in enumerate(items):
      if not isinstance(item, Mapping):
        problem = f"is not a JSON object ({type(item).__name__})"
      elif key not in item:
        if default is not None:
          continue
        problem = f"lacks the key {key!r}"
      elif not _is_number(item[key]):
        problem = f"{key} {item[key]!r} is not a number"
      else:
        continue
      raise EvaluationInputError(f"{places.item(kind, k)}: {problem}") from e
    raise EvaluationInputError(f"{places.source}: {e}") from e


def _box_coordinates(all_boxes: List[Any], places: _Places) -> np.ndarray:
  """[B, 4] float64 `bbox` of every box, each 4 finite numbers, x1 <= x2,
  y1 <= y2 (zero width or height allowed)."""
  kind = "predictions"
  try:
    bboxes = list(map(operator.itemgetter("bbox"), all_boxes))
    lengths = set(map(len, bboxes))
  except (KeyError, TypeError):
    lengths = None
  if lengths is None or lengths - {4}:
    for k, box in enumerate(all_boxes):
      if not isinstance(box, Mapping):
        problem = f"is not a JSON object ({type(box).__name__})"
      elif "bbox" not in box:
        problem = "lacks the key 'bbox'"
      elif not (isinstance(box["bbox"], (list, tuple))
                and len(box["bbox"]) == 4):
        problem = f"bbox {box['bbox']!r} is not 4 numbers [x1, y1, x2, y2]"
      else:
        continue
      raise EvaluationInputError(f"{places.item(kind, k)}: {problem}")
  try:
    coords = np.fromiter(itertools.chain.from_iterable(bboxes), np.float64,
                         count=4 * len(bboxes)).reshape(-1, 4)
  except (TypeError, ValueError, OverflowError) as e:
    k = next(k for k, b in enumerate(bboxes)
             if not all(map(_is_number, b)))
    raise EvaluationInputError(f"{places.item(kind, k)}: bbox {bboxes[k]!r} "
                               "is not 4 numbers") from e
  if not np.isfinite(coords).all():
    places.fail(~np.isfinite(coords).all(axis=1), kind,
                lambda k: f"bbox {bboxes[k]!r} is not 4 finite numbers")
  places.fail((coords[:, 2] < coords[:, 0]) | (coords[:, 3] < coords[:, 1]),
              kind, lambda k: f"bbox {bboxes[k]!r} is inverted (x2 < x1 or "
              "y2 < y1; boxes are [x1, y1, x2, y2] in pixels)")
  return coords


def flatten_predictions(predictions: Sequence[Mapping[str, Any]],
                        file_names: Sequence[str],
                        source: str = "predictions") -> Detections:
  """Predictions entries (GEN-VLKT format) -> flat arrays.

  `hoi_category_id` may be absent (GEN-VLKT / HOICLIP files carry only the
  verb `category_id`): the HOI is then (verb, object class of the `object_id`
  box's COCO `category_id`). Such a prediction whose (verb, object) is not
  one of the 600 HOIs is skipped, as GEN-VLKT's evaluator ignores it; the
  number skipped is logged. Where `hoi_category_id` is present, it must be
  that same HOI.

  Args:
    predictions: list of `{"file_name", "predictions": [{"bbox",
      "category_id"}], "hoi_prediction": [{"subject_id", "object_id",
      "category_id", ["hoi_category_id"], "score"}]}`; ids as in
      docs/contracts.md "Predictions" (verb and HOI ids 1-based, box
      categories COCO ids).
    file_names: [I] test file names; defines the image order.
    source: the name of `predictions` in error messages (the file path).

  Returns:
    Detections ordered by test image, then list position.

  Raises:
    EvaluationInputError (a ValueError), whose message names the source,
    the image, its entry and the item: not a list, entries that are not
    objects or lack `file_name`, unknown or duplicate file names, missing
    keys, ids that are not integers, box ids outside the entry's
    `predictions`, boxes that are not 4 finite numbers or are inverted
    (x2 < x1 or y2 < y1), unknown verb, HOI or object category ids, an
    `hoi_category_id` that disagrees with (verb, object), non-finite scores.
  """
  meta = metadata.hico()
  hoi_lut, coco_lut = _lookup_tables()
  check_entry_list(predictions, source, "per-image prediction entries")
  index = {name: i for i, name in enumerate(file_names)}
  entry_image = np.empty(len(predictions), np.int64)
  for j, entry in enumerate(predictions):
    try:
      i = index.get(entry["file_name"])
    except (KeyError, TypeError):  # Checked below.
      i = None
    if i is None:
      name = _entry_name(entry, j, source, "entry")
      raise EvaluationInputError(
          f"{source}: entry {j} has predictions for {name!r}, which is not "
          "an image of the annotation file")
    entry_image[j] = i
  order = np.argsort(entry_image, kind="stable")
  entry_image = entry_image[order]
  if entry_image.size > 1 and np.any(entry_image[1:] == entry_image[:-1]):
    dup = entry_image[1:][entry_image[1:] == entry_image[:-1]][0]
    raise EvaluationInputError(
        f"{source}: several prediction entries for {file_names[dup]!r} "
        f"(entries {sorted(order[entry_image == dup].tolist())})")
  entries = [predictions[j] for j in order.tolist()]

  box_lists = [e.get("predictions") or () for e in entries]
  hoi_lists = [e.get("hoi_prediction") or () for e in entries]
  places = _Places(source, entries, order)
  for key, lists in (("predictions", box_lists),
                     ("hoi_prediction", hoi_lists)):
    if not set(map(type, lists)) <= {list, tuple}:
      e = next(e for e, x in enumerate(lists)
               if not isinstance(x, (list, tuple)))
      raise EvaluationInputError(f"{places.entry(e)}: {key} is not a list "
                                 f"({type(lists[e]).__name__})")
  n_box = np.fromiter(map(len, box_lists), np.int64, count=len(entries))
  n_hoi = np.fromiter(map(len, hoi_lists), np.int64, count=len(entries))
  places.set_counts(n_box, n_hoi)
  all_boxes = list(itertools.chain.from_iterable(box_lists))
  coords = _box_coordinates(all_boxes, places)
  category = _column(all_boxes, "category_id", places, "predictions")
  all_hois = list(itertools.chain.from_iterable(hoi_lists))
  kind = "hoi_prediction"
  keys = ("subject_id", "object_id", "category_id", "hoi_category_id",
          "score")
  try:  # The fast path: one pass over the dicts for all five values.
    table = np.fromiter(
        itertools.chain.from_iterable(map(operator.itemgetter(*keys),
                                          all_hois)),
        np.float64, count=len(keys) * len(all_hois)).reshape(
            -1, len(keys)).T.copy()
    given = None  # Every prediction has an hoi_category_id.
  except (KeyError, TypeError, ValueError, OverflowError):
    table = np.stack([_column(all_hois, key, places, kind,
                              default=1.0 if key == keys[3] else None)
                      for key in keys]).reshape(len(keys), -1)
    given = np.fromiter(
        map(operator.methodcaller("__contains__", "hoi_category_id"),
            all_hois), bool, count=len(all_hois))
  # [4, N] subject, object, verb and HOI ids; the scores are copied so that
  # the detections do not keep the whole table.
  ids, score = table[:4], table[4].copy()

  def check(bad, key, problem):
    """Raises for the first True of the [len(key), N] `bad`."""
    if np.any(bad):
      for name, row in zip(key, bad):
        places.fail(row, kind, lambda k, name=name: (
            f"{name} {all_hois[k][name]!r} {problem(k)}"))

  check(np.floor(ids) != ids, keys[:4], lambda k: "is not an integer")
  entry_of = np.repeat(np.arange(len(entries)), n_hoi)
  limit = np.take(n_box.astype(np.float64), entry_of)
  check((ids[:2] < 0) | (ids[:2] >= limit), keys[:2], lambda k: (
      f"refers to a box outside the image's {int(limit[k])} predictions"))
  check((ids[2:3] < 1) | (ids[2:3] > meta.num_verbs), keys[2:3],
        lambda k: f"(verb id) outside 1..{meta.num_verbs}")
  check((ids[3:4] < 1) | (ids[3:4] > meta.num_hois), keys[3:4],
        lambda k: f"outside 1..{meta.num_hois}")
  check(~np.isfinite(table[4:]), keys[4:], lambda k: "is not a finite number")

  # Box indices of subject and object, verb and HOI index.
  sub_box, obj_box, verb, hoi = ids.astype(np.int64)
  base = np.take(np.cumsum(n_box) - n_box, entry_of)
  sub_box += base
  obj_box += base
  verb -= 1
  hoi -= 1
  cat = np.take(category, obj_box)
  with np.errstate(invalid="ignore"):  # NaN or huge: not an id, -1 below.
    cat_id = cat.astype(np.int64)
  obj = np.take(coco_lut, cat_id, mode="clip")  # Ends of coco_lut are -1.
  places.fail((obj < 0) | (cat_id != cat), kind, lambda k: (
      f"its object box predictions[{int(ids[1, k])}] has category_id "
      f"{all_boxes[obj_box[k]]['category_id']!r}, not the COCO id of a "
      "HICO-DET object"))
  # -1 where (verb, object) is not an HOI.
  derived = np.take(hoi_lut, verb * meta.num_objects + obj)

  def mismatch(k):
    v, o = meta.hois[hoi[k]]
    return (f"hoi_category_id {hoi[k] + 1} ({meta.verbs[v]} "
            f"{meta.objects[o]}) does not match category_id {verb[k] + 1} "
            f"(verb {meta.verbs[verb[k]]}) with the object box's category_id "
            f"{all_boxes[obj_box[k]]['category_id']} ({meta.objects[obj[k]]})")
  places.fail(derived != hoi if given is None else given & (derived != hoi),
              kind, mismatch)
  if given is not None:
    hoi = np.where(given, hoi, derived)
    keep = hoi >= 0
    if not np.all(keep):
      logging.warning(
          "%s: skipped %d of %d hoi_predictions without hoi_category_id whose"
          " (verb, object) is not a HICO-DET HOI (as GEN-VLKT's evaluator)",
          source, int((~keep).sum()), int((~given).sum()))
      entry_of, hoi, score = entry_of[keep], hoi[keep], score[keep]
      sub_box, obj_box = sub_box[keep], obj_box[keep]
  # np.take: several times faster than fancy indexing of rows here.
  return Detections(image=np.take(entry_image, entry_of), hoi=hoi,
                    score=score, sub_boxes=np.take(coords, sub_box, axis=0),
                    obj_boxes=np.take(coords, obj_box, axis=0),
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

