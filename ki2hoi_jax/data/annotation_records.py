"""One annotation record (HICO-DET, V-COCO): its types and its checks.

A record is one element of an annotation file (docs/datasets.md section 2):
`{"file_name", "annotations": [{"bbox": [x1, y1, x2, y2], "category_id":
coco_id}], "hoi_annotation": [{"subject_id", "object_id", "category_id",
"hoi_category_id"}]}`. `parse_record` turns it into an `ImageRecord` of numpy
arrays:

* `boxes` [N, 4] float32, absolute pixel `xyxy` in the original image;
* `labels` [N] int32, object index (0..79, COCO-id order of metadata.py);
* `pairs` [M, 4] int32 rows `(subject, object, verb, hoi)`: `subject`/`object`
  index `boxes`; `verb` is the 0-based verb index; `hoi` the 0-based HOI index.
  V-COCO: `object` is -1 for a role without object (its object class is then
  80 = 'no_object'), `verb` is the 0-based verb-class index (the file's
  `category_id`) and `hoi` is the index in `metadata.vcoco().hoi_pairs` of
  (verb class, object class), or -1 when that combination is not one of the
  263 classifier classes (counted as `vcoco_unlisted_hoi`).

Checks (every problem names the file, the record index, `file_name` and the
field; `AnnotationError` is a `DatasetError`, a `ValueError`):

* A record/box/pair that is not an object, a missing key or a value of the
  wrong type: error.
* Unknown object category id, verb id outside 1..117 (V-COCO: 0..28), HOI id
  outside 1..600: error.
* `hoi_category_id` inconsistent with (verb, category of the object box):
  error. A missing `hoi_category_id` (HICO-DET) is rebuilt from (verb, object)
  as GEN-VLKT does at test time; if that combination is not one of the 600
  HOIs, error.
* Subject/object index outside `annotations` (V-COCO: object -1 is allowed):
  training split -> the whole image is dropped and counted
  (`index_out_of_range`), as in docs/datasets.md section 3 step 2; test
  split -> error, because the evaluator must see the published ground truth
  unchanged.
* Training images without any pair are dropped (`no_pairs`,
  docs/datasets.md section 3 step 3); test images without pairs are kept
  (the evaluator uses every record).
* Boxes (`check_boxes`, against the image size once the image has been
  read): non-finite coordinates are always an error. A degenerate box
  (x2 <= x1 or y2 <= y1) or a box reaching outside [0, width] x [0, height]:
  `on_bad_box='reject'` -> error; `'clip'` -> clipped to the image and counted
  (`boxes_clipped`, `boxes_degenerate`; degenerate boxes stay in the record
  and the input pipeline drops them together with their pairs,
  docs/datasets.md section 3); `'keep'` -> left untouched (for reading
  evaluation ground truth).

The files, images and splits around the records are read by annotations.py.
"""

import collections
import dataclasses
import functools
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import metadata

ON_BAD_BOX = ("clip", "reject", "keep")
VCOCO_NO_OBJECT = 80  # Object class of V-COCO pairs without an object.


class DatasetError(ValueError):
  """A problem with the dataset a user supplied; the message says what to fix.

  The base of every user-caused dataset error (`AnnotationError`,
  `BadImageError`, `DatasetRootError`), so that an entry point can report
  them in one line.
  """


class AnnotationError(DatasetError):
  """A problem in an annotation file (names file, record and field)."""


class BadImageError(AnnotationError):
  """A missing or undecodable image (raised when on_bad_image='fail')."""


class DatasetRootError(DatasetError, FileNotFoundError):
  """A dataset folder that is missing or lacks the expected layout."""


@dataclasses.dataclass
class ImageRecord:
  """One validated image of a split.

  Attributes:
    index: position of the record in the annotation file (the `image_index`
      of the input pipeline).
    file_name: image file name relative to the split's image folder.
    boxes: [N, 4] float32 absolute pixel xyxy.
    labels: [N] int32 object indices.
    pairs: [M, 4] int32 rows (subject, object, verb, hoi), see module doc.
    height: original image height in pixels (0 if the image was not read).
    width: original image width in pixels (0 if the image was not read).
  """
  index: int
  file_name: str
  boxes: np.ndarray
  labels: np.ndarray
  pairs: np.ndarray
  height: int = 0
  width: int = 0


@dataclasses.dataclass
class SplitStats:
  """Counters of one pass over a split.

  Attributes:
    name: '<dataset>/<split>' for messages.
    num_records: records in the annotation file.
    num_images: records kept.
    num_pairs: pair labels (rows of `pairs`) in the kept records.
    skipped: reason -> number of dropped records.
    counts: other counters (clipped boxes, re-encoded images, ...).
  """
  name: str
  num_records: int = 0
  num_images: int = 0
  num_pairs: int = 0
  skipped: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  counts: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)

  def summary(self) -> str:
    """One line: images, pairs, skipped records by reason, other counters."""
    skipped = sum(self.skipped.values())
    why = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
    other = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if v)
    return (f"{self.name}: {self.num_images} images, {self.num_pairs} pairs "
            f"from {self.num_records} records; skipped {skipped}"
            + (f" ({why})" if why else "") + (f"; {other}" if other else ""))

  def to_dict(self) -> Dict[str, Any]:
    return {"name": self.name, "num_records": self.num_records,
            "num_images": self.num_images, "num_pairs": self.num_pairs,
            "skipped": dict(self.skipped), "counts": dict(self.counts)}


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  """Raises ValueError unless value is one of choices."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


# ----------------------------------------------------------------- records


class _Where:
  """Formats error locations: file, record index, file_name, field."""

  def __init__(self, path: str, index: int, file_name: Optional[str] = None):
    self.path, self.index, self.file_name = path, index, file_name

  def __call__(self, field: str, msg: str) -> str:
    name = f" ({self.file_name})" if self.file_name else ""
    return f"{self.path}: record {self.index}{name}: field {field}: {msg}"


def _is_int(x: Any) -> bool:
  if isinstance(x, bool):
    return False
  if isinstance(x, int):
    return True
  return isinstance(x, float) and x.is_integer()


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _get(obj: Any, key: str, where: _Where, field: str, kind: str) -> Any:
  """obj[key] with a type check; kind in 'int' | 'str' | 'list'."""
  if not isinstance(obj, dict):
    raise AnnotationError(where(
        field.rsplit(".", 1)[0],
        f"expected an object, got {type(obj).__name__}"))
  if key not in obj:
    raise AnnotationError(where(field, "missing key"))
  value = obj[key]
  ok = {"int": _is_int, "str": lambda v: isinstance(v, str),
        "list": lambda v: isinstance(v, list)}[kind](value)
  if not ok:
    raise AnnotationError(where(field, f"expected {kind}, got "
                                f"{type(value).__name__} {value!r:.40}"))
  return int(value) if kind == "int" else value


def parse_record(raw: Any, index: int, *, path: str, dataset: str,
                 train: bool, stats: SplitStats) -> Optional[ImageRecord]:
  """Validates one JSON record (ids, indices, types; boxes are checked later).

  Args:
    raw: the decoded JSON record.
    index: its position in the file.
    path: the annotation file (for messages).
    dataset: 'hico_det' | 'vcoco'.
    train: training split (out-of-range indices and empty records drop the
      image) or test split (out-of-range indices are errors).
    stats: counters updated in place.

  Returns:
    The record, or None when a training record is dropped.

  Raises:
    AnnotationError: see the module docstring.
  """
  where = _Where(path, index)
  if not isinstance(raw, dict):
    raise AnnotationError(where("record", "expected an object, got "
                                f"{type(raw).__name__}"))
  file_name = _get(raw, "file_name", where, "file_name", "str")
  where.file_name = file_name
  anns = _get(raw, "annotations", where, "annotations", "list")
  hois = _get(raw, "hoi_annotation", where, "hoi_annotation", "list")
  boxes, labels = _parse_boxes(anns, where)
  pairs = np.zeros((len(hois), 4), np.int32)
  for k, hoi in enumerate(hois):
    pair = _parse_pair(hoi, f"hoi_annotation[{k}]", labels, where,
                       vcoco=dataset == "vcoco", train=train, stats=stats)
    if pair is None:
      return None
    pairs[k] = pair
  if train and not len(pairs):
    stats.skipped["no_pairs"] += 1
    return None
  return ImageRecord(index=index, file_name=file_name, boxes=boxes,
                     labels=labels, pairs=pairs)


def _parse_boxes(anns: List[Any], where: _Where
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """([N, 4] float32 boxes, [N] int32 object indices) of `annotations`."""
  meta = metadata.hico()
  boxes = np.zeros((len(anns), 4), np.float32)
  labels = np.zeros((len(anns),), np.int32)
  for i, ann in enumerate(anns):
    field = f"annotations[{i}]"
    bbox = _get(ann, "bbox", where, field + ".bbox", "list")
    if len(bbox) != 4 or not all(_is_number(v) for v in bbox):
      raise AnnotationError(where(field + ".bbox",
                                  f"expected 4 numbers, got {bbox!r:.60}"))
    if not all(math.isfinite(v) for v in bbox):
      raise AnnotationError(where(field + ".bbox",
                                  f"non-finite coordinate {bbox!r}"))
    coco_id = _get(ann, "category_id", where, field + ".category_id", "int")
    obj = meta.object_index_from_coco(coco_id)
    if obj is None:
      raise AnnotationError(where(field + ".category_id",
                                  f"unknown COCO category id {coco_id}"))
    boxes[i] = bbox
    labels[i] = obj
  return boxes, labels


def _parse_pair(hoi: Any, field: str, labels: np.ndarray, where: _Where, *,
                vcoco: bool, train: bool, stats: SplitStats
                ) -> Optional[Tuple[int, int, int, int]]:
  """(subject, object, verb, hoi) of one `hoi_annotation` entry.

  `labels` [N] are the record's object indices. Returns None when a box
  index is out of range in a training record (the image is dropped).
  """
  sub = _get(hoi, "subject_id", where, field + ".subject_id", "int")
  obj = _get(hoi, "object_id", where, field + ".object_id", "int")
  verb_id = _get(hoi, "category_id", where, field + ".category_id", "int")
  no_object = vcoco and obj == -1
  bad = [(name, v) for name, v in (("subject_id", sub), ("object_id", obj))
         if not 0 <= v < len(labels)
         and not (name == "object_id" and no_object)]
  if bad:
    name, v = bad[0]
    if train:
      stats.skipped["index_out_of_range"] += 1
      return None
    raise AnnotationError(where(f"{field}.{name}",
                                f"box index {v} outside the record's "
                                f"{len(labels)} annotations"))
  if vcoco:
    obj_class = VCOCO_NO_OBJECT if no_object else int(labels[obj])
    verb, hoi_index = _vcoco_verb_and_hoi(verb_id, obj_class, field, where,
                                          stats)
  else:
    verb, hoi_index = _hico_verb_and_hoi(hoi, verb_id, obj, int(labels[obj]),
                                         field, where, stats)
  if labels.size and labels[sub] != 0:
    stats.counts["non_person_subject"] += 1
  return sub, obj, verb, hoi_index


def _vcoco_verb_and_hoi(verb_id: int, obj_class: int, field: str,
                        where: _Where, stats: SplitStats) -> Tuple[int, int]:
  """(verb class, index in `hoi_pairs` or -1) of a V-COCO pair."""
  meta = metadata.vcoco()
  if not 0 <= verb_id < meta.num_verb_classes:
    raise AnnotationError(where(field + ".category_id",
                                f"verb class {verb_id} outside 0.."
                                f"{meta.num_verb_classes - 1}"))
  hoi_index = _vcoco_hoi_lookup().get((verb_id, obj_class), -1)
  if hoi_index < 0:
    stats.counts["vcoco_unlisted_hoi"] += 1
  return verb_id, hoi_index


def _hico_verb_and_hoi(hoi: Dict[str, Any], verb_id: int, obj: int,
                       obj_class: int, field: str, where: _Where,
                       stats: SplitStats) -> Tuple[int, int]:
  """(0-based verb, 0-based HOI) of a HICO-DET pair, checked or rebuilt."""
  meta = metadata.hico()
  if not 1 <= verb_id <= meta.num_verbs:
    raise AnnotationError(where(field + ".category_id",
                                f"verb id {verb_id} outside 1.."
                                f"{meta.num_verbs}"))
  verb = verb_id - 1
  expected = meta.hoi_index(verb, obj_class)
  if "hoi_category_id" in hoi:
    hoi_id = _get(hoi, "hoi_category_id", where,
                  field + ".hoi_category_id", "int")
    if not 1 <= hoi_id <= meta.num_hois:
      raise AnnotationError(where(field + ".hoi_category_id",
                                  f"HOI id {hoi_id} outside 1.."
                                  f"{meta.num_hois}"))
    if hoi_id - 1 != expected:
      v, o = meta.hois[hoi_id - 1]
      raise AnnotationError(where(
          field + ".hoi_category_id",
          f"HOI id {hoi_id} is ({meta.verbs[v]}, {meta.objects[o]}) "
          f"but the pair has verb {meta.verbs[verb]} (id {verb_id}) and "
          f"object {meta.objects[obj_class]} (box {obj})"))
  elif expected is None:
    raise AnnotationError(where(
        field, f"no hoi_category_id and ({meta.verbs[verb]}, "
        f"{meta.objects[obj_class]}) is not a HICO-DET HOI"))
  else:
    stats.counts["hoi_id_rebuilt"] += 1
  return verb, expected


@functools.lru_cache(maxsize=None)
def _vcoco_hoi_lookup() -> Dict[Tuple[int, int], int]:
  return {tuple(p): i for i, p in enumerate(metadata.vcoco().hoi_pairs)}


def check_boxes(record: ImageRecord, on_bad_box: str, stats: SplitStats, *,
                path: str = "") -> None:
  """Applies the box policy in place (needs record.height/width).

  Args:
    record: a parsed record; when height/width are 0 only the degenerate
      check runs.
    on_bad_box: 'clip' | 'reject' | 'keep'.
    stats: counters updated in place.
    path: annotation file (for messages).

  Raises:
    AnnotationError: a bad box with on_bad_box='reject'.
  """
  check_choice("on_bad_box", on_bad_box, ON_BAD_BOX)
  if on_bad_box == "keep" or not len(record.boxes):
    return
  b = record.boxes
  h, w = record.height, record.width
  degenerate = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
  if h > 0 and w > 0:
    outside = ((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h))
  else:
    outside = np.zeros_like(degenerate)
  if on_bad_box == "reject":
    bad = np.flatnonzero(degenerate | outside)
    if bad.size:
      i = int(bad[0])
      what = "degenerate" if degenerate[i] else f"outside the {w}x{h} image"
      raise AnnotationError(_Where(path, record.index, record.file_name)(
          f"annotations[{i}].bbox", f"box {b[i].tolist()} is {what} "
          "(dataset.on_bad_box='reject')"))
    return
  if outside.any():
    stats.counts["boxes_clipped"] += int(outside.sum())
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
  degenerate = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
  stats.counts["boxes_degenerate"] += int(degenerate.sum())
