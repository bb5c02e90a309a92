"""Reading HICO-DET test records and prediction entries into flat arrays.

The input side of the evaluator: `load_ground_truth` (test records ->
`hico_ap.GroundTruth`) and `flatten_predictions` (GEN-VLKT / HOICLIP
prediction entries -> `hico_ap.Detections`), with the checks that make a bad
file an `EvaluationInputError` naming the file (or 'annotations' /
'predictions' for in-process records), the image, the entry index and the
item, instead of a TypeError, a KeyError or a silently wrong mAP. The checks
run with NumPy on the flattened arrays; only when one fails does a slow scan
find the item to name. Prediction entries without `hoi_category_id` get the
HOI of (verb id, category of the object box); a (verb, object) that is not
one of the 600 HOIs is skipped with a logged count, as GEN-VLKT's evaluator
does. Matching and AP are in `hico_ap`.
"""

import collections.abc
import functools
import itertools
import logging
import numbers
import operator
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico_ap


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
                      source: str = "annotations") -> hico_ap.GroundTruth:
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
  return hico_ap.GroundTruth(
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


_HOI_KEYS = ("subject_id", "object_id", "category_id", "hoi_category_id",
             "score")


def _entries_by_image(predictions: Any, file_names: Sequence[str],
                      source: str) -> Tuple[List[Any], np.ndarray, np.ndarray]:
  """The prediction entries sorted by test image, each image at most once.

  Returns:
    (entries, [E] test image index of each, [E] position of each in
    `predictions`).
  """
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
  return [predictions[j] for j in order.tolist()], entry_image, order


def _item_lists(entries: Sequence[Mapping[str, Any]], places: _Places
                ) -> Tuple[List[Any], List[Any], np.ndarray, np.ndarray]:
  """(all boxes, all hoi_predictions, [E] boxes and [E] HOIs per entry)."""
  box_lists = [e.get("predictions") or () for e in entries]
  hoi_lists = [e.get("hoi_prediction") or () for e in entries]
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
  return (list(itertools.chain.from_iterable(box_lists)),
          list(itertools.chain.from_iterable(hoi_lists)), n_box, n_hoi)


def _hoi_table(all_hois: List[Any], places: _Places
               ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """[5, N] float64 `_HOI_KEYS` of every hoi_prediction, and `given`.

  `given` is None when every prediction has an `hoi_category_id`, else the
  [N] bool mask of those that have one (the others hold 1.0 there).
  """
  keys = _HOI_KEYS
  try:  # The fast path: one pass over the dicts for all five values.
    table = np.fromiter(
        itertools.chain.from_iterable(map(operator.itemgetter(*keys),
                                          all_hois)),
        np.float64, count=len(keys) * len(all_hois)).reshape(
            -1, len(keys)).T.copy()
    return table, None
  except (KeyError, TypeError, ValueError, OverflowError):
    table = np.stack([_column(all_hois, key, places, "hoi_prediction",
                              default=1.0 if key == keys[3] else None)
                      for key in keys]).reshape(len(keys), -1)
    given = np.fromiter(
        map(operator.methodcaller("__contains__", "hoi_category_id"),
            all_hois), bool, count=len(all_hois))
    return table, given


def _check_hoi_table(table: np.ndarray, limit: np.ndarray,
                     all_hois: List[Any], places: _Places) -> None:
  """Integral ids in range and finite scores; `limit`: [N] boxes per entry."""
  meta = metadata.hico()
  keys, ids = _HOI_KEYS, table[:4]

  def check(bad, key, problem):
    """Raises for the first True of the [len(key), N] `bad`."""
    if np.any(bad):
      for name, row in zip(key, bad):
        places.fail(row, "hoi_prediction", lambda k, name=name: (
            f"{name} {all_hois[k][name]!r} {problem(k)}"))

  check(np.floor(ids) != ids, keys[:4], lambda k: "is not an integer")
  check((ids[:2] < 0) | (ids[:2] >= limit), keys[:2], lambda k: (
      f"refers to a box outside the image's {int(limit[k])} predictions"))
  check((ids[2:3] < 1) | (ids[2:3] > meta.num_verbs), keys[2:3],
        lambda k: f"(verb id) outside 1..{meta.num_verbs}")
  check((ids[3:4] < 1) | (ids[3:4] > meta.num_hois), keys[3:4],
        lambda k: f"outside 1..{meta.num_hois}")
  check(~np.isfinite(table[4:]), keys[4:], lambda k: "is not a finite number")


def _object_classes(category: np.ndarray, obj_box: np.ndarray,
                    box_ids: np.ndarray, all_boxes: List[Any],
                    places: _Places) -> np.ndarray:
  """[N] object index of each prediction's object box, checked.

  `category` [B] holds the boxes' COCO ids, `obj_box` [N] the flat index
  of each prediction's object box and `box_ids` [N] its index in the entry.
  """
  _, coco_lut = _lookup_tables()
  cat = np.take(category, obj_box)
  with np.errstate(invalid="ignore"):  # NaN or huge: not an id, -1 below.
    cat_id = cat.astype(np.int64)
  obj = np.take(coco_lut, cat_id, mode="clip")  # Ends of coco_lut are -1.
  places.fail((obj < 0) | (cat_id != cat), "hoi_prediction", lambda k: (
      f"its object box predictions[{int(box_ids[k])}] has category_id "
      f"{all_boxes[obj_box[k]]['category_id']!r}, not the COCO id of a "
      "HICO-DET object"))
  return obj


def _resolve_hois(verb: np.ndarray, obj: np.ndarray, hoi: np.ndarray,
                  given: Optional[np.ndarray], obj_box: np.ndarray,
                  all_boxes: List[Any], places: _Places) -> np.ndarray:
  """[N] HOI index of each prediction: the given one, checked against
  (verb, object), or the derived one (-1 where none) where none is given."""
  meta = metadata.hico()
  hoi_lut, _ = _lookup_tables()
  # -1 where (verb, object) is not an HOI.
  derived = np.take(hoi_lut, verb * meta.num_objects + obj)

  def mismatch(k):
    v, o = meta.hois[hoi[k]]
    return (f"hoi_category_id {hoi[k] + 1} ({meta.verbs[v]} "
            f"{meta.objects[o]}) does not match category_id {verb[k] + 1} "
            f"(verb {meta.verbs[verb[k]]}) with the object box's category_id "
            f"{all_boxes[obj_box[k]]['category_id']} ({meta.objects[obj[k]]})")
  places.fail(derived != hoi if given is None else given & (derived != hoi),
              "hoi_prediction", mismatch)
  return hoi if given is None else np.where(given, hoi, derived)


def flatten_predictions(predictions: Sequence[Mapping[str, Any]],
                        file_names: Sequence[str],
                        source: str = "predictions") -> hico_ap.Detections:
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
    hico_ap.Detections ordered by test image, then list position.

  Raises:
    EvaluationInputError (a ValueError), whose message names the source,
    the image, its entry and the item: not a list, entries that are not
    objects or lack `file_name`, unknown or duplicate file names, missing
    keys, ids that are not integers, box ids outside the entry's
    `predictions`, boxes that are not 4 finite numbers or are inverted
    (x2 < x1 or y2 < y1), unknown verb, HOI or object category ids, an
    `hoi_category_id` that disagrees with (verb, object), non-finite scores.
  """
  entries, entry_image, order = _entries_by_image(predictions, file_names,
                                                  source)
  places = _Places(source, entries, order)
  all_boxes, all_hois, n_box, n_hoi = _item_lists(entries, places)
  coords = _box_coordinates(all_boxes, places)
  category = _column(all_boxes, "category_id", places, "predictions")
  table, given = _hoi_table(all_hois, places)
  entry_of = np.repeat(np.arange(len(entries)), n_hoi)
  _check_hoi_table(table, np.take(n_box.astype(np.float64), entry_of),
                   all_hois, places)
  # Flat box indices of subject and object, 0-based verb and HOI indices;
  # the scores are copied so that the detections do not keep the table.
  sub_box, obj_box, verb, hoi = table[:4].astype(np.int64)
  score = table[4].copy()
  base = np.take(np.cumsum(n_box) - n_box, entry_of)
  sub_box += base
  obj_box += base
  verb -= 1
  hoi -= 1
  obj = _object_classes(category, obj_box, table[1], all_boxes, places)
  hoi = _resolve_hois(verb, obj, hoi, given, obj_box, all_boxes, places)
  if given is not None and not np.all(hoi >= 0):
    keep = hoi >= 0
    logging.warning(
        "%s: skipped %d of %d hoi_predictions without hoi_category_id whose"
        " (verb, object) is not a HICO-DET HOI (as GEN-VLKT's evaluator)",
        source, int((~keep).sum()), int((~given).sum()))
    entry_of, hoi, score = entry_of[keep], hoi[keep], score[keep]
    sub_box, obj_box = sub_box[keep], obj_box[keep]
  # np.take: several times faster than fancy indexing of rows here.
  return hico_ap.Detections(image=np.take(entry_image, entry_of), hoi=hoi,
                            score=score,
                            sub_boxes=np.take(coords, sub_box, axis=0),
                            obj_boxes=np.take(coords, obj_box, axis=0),
                            num_entries=len(entries))
