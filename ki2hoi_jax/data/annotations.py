"""Reader and validator of GEN-VLKT/PPDM annotation files (HICO-DET, V-COCO).

The on-disk layout and record format are those of docs/datasets.md section 2:

  <root>/images/train2015/*.jpg, <root>/images/test2015/*.jpg
  <root>/annotations/trainval_hico.json, <root>/annotations/test_hico.json

(V-COCO: `images/train2014`, `images/val2014`, `trainval_vcoco.json`,
`test_vcoco.json`). Each JSON file is a list with one record per image:
`{"file_name", "annotations": [{"bbox": [x1, y1, x2, y2], "category_id":
coco_id}], "hoi_annotation": [{"subject_id", "object_id", "category_id",
"hoi_category_id"}]}`.

The reader turns every record into an `ImageRecord` of numpy arrays:

* `boxes` [N, 4] float32, absolute pixel `xyxy` in the original image;
* `labels` [N] int32, object index (0..79, COCO-id order of metadata.py);
* `pairs` [M, 4] int32 rows `(subject, object, verb, hoi)`: `subject`/`object`
  index `boxes`; `verb` is the 0-based verb index; `hoi` the 0-based HOI index.
  V-COCO: `object` is -1 for a role without object (its object class is then
  80 = 'no_object'), `verb` is the 0-based verb-class index (the file's
  `category_id`) and `hoi` is the index in `metadata.vcoco().hoi_pairs` of
  (verb class, object class), or -1 when that combination is not one of the
  263 classifier classes (counted as `vcoco_unlisted_hoi`).

Validation (every problem names the file, the record index, `file_name` and
the field; `AnnotationError` is a `DatasetError`, a `ValueError`):

* Malformed JSON, a top level that is not a list, an empty list (`iter_split`),
  a record/box/pair that is not an object, a missing key or a value of the wrong type: error.
* Unknown object category id, verb id outside 1..117 (V-COCO: 0..28), HOI id
  outside 1..600: error.
* `hoi_category_id` inconsistent with (verb, category of the object box):
  error. A missing `hoi_category_id` (HICO-DET) is rebuilt from (verb, object)
  as GEN-VLKT does at test time; if that combination is not one of the 600
  HOIs, error.
* Subject/object index outside `annotations` (V-COCO: object -1 is allowed):
  training split -> the whole image is dropped and counted
  (`index_out_of_range`), as in docs/datasets.md section 3 step 2; test split -> error,
  because the evaluator must see the published ground truth unchanged.
* Training images without any pair are dropped (`no_pairs`, docs/datasets.md section 3
  step 3); test images without pairs are kept (the evaluator uses every
  record).
* Boxes (checked against the image size once the image has been read):
  non-finite coordinates are always an error. A degenerate box (x2 <= x1 or
  y2 <= y1) or a box reaching outside [0, width] x [0, height]:
  `on_bad_box='reject'` -> error; `'clip'` -> clipped to the image and counted
  (`boxes_clipped`, `boxes_degenerate`; degenerate boxes stay in the record and
  the input pipeline drops them together with their pairs, docs/datasets.md section 3);
  `'keep'` -> left untouched (for reading evaluation ground truth).
* Images: a missing file or one that does not decode: `on_bad_image='skip'`
  -> the record is dropped and counted (`image_missing`, `image_corrupt`);
  `'fail'` -> `BadImageError` (an `AnnotationError`). JPEGs are checked with
  TensorFlow's decoder (the one the input pipeline uses); other formats and
  JPEGs TensorFlow cannot read (e.g. CMYK) but Pillow can are re-encoded to
  RGB JPEG (`image_reencoded`).

Each pass over a split logs one summary line (images, pairs, skipped and why).
`check_root` checks the folder layout itself (`DatasetRootError`, a
`DatasetError` and a `FileNotFoundError`).
"""

import collections
import concurrent.futures
import dataclasses
import functools
import io
import json
import logging
import math
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import metadata

try:  # orjson is ~5x faster on the 40 MB HICO-DET training file.
  import orjson  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  orjson = None

DATASETS = ("hico_det", "vcoco")
SPLITS = ("train", "test")
ON_BAD_BOX = ("clip", "reject", "keep")
ON_BAD_IMAGE = ("skip", "fail")
VCOCO_NO_OBJECT = 80  # Object class of V-COCO pairs without an object.

_FILES = {
    "hico_det": {
        "train": ("annotations/trainval_hico.json", "images/train2015"),
        "test": ("annotations/test_hico.json", "images/test2015")},
    "vcoco": {"train": ("annotations/trainval_vcoco.json", "images/train2014"),
              "test": ("annotations/test_vcoco.json", "images/val2014")},
}


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


def split_paths(root: str, split: str, dataset: str = "hico_det"
                ) -> Tuple[str, str]:
  """(annotation JSON path, image folder) of a split under `root`."""
  check_choice("dataset", dataset, DATASETS)
  check_choice("split", split, SPLITS)
  ann, img = _FILES[dataset][split]
  return os.path.join(root, ann), os.path.join(root, img)


def expected_layout(dataset: str = "hico_det") -> List[str]:
  """The files and folders (ending in '/') under a dataset root."""
  check_choice("dataset", dataset, DATASETS)
  files = [_FILES[dataset][split][0] for split in SPLITS]
  return files + [_FILES[dataset][split][1] + "/" for split in SPLITS]


def check_root(root: str, dataset: str = "hico_det", *, name: str = "root",
               full: bool = True) -> None:
  """Checks that `root` is a dataset folder of `dataset` (module docstring).

  Args:
    root: the dataset folder.
    dataset: 'hico_det' | 'vcoco'.
    name: what `root` is called in the message (e.g. 'config.dataset.root').
    full: also check every annotation file and image folder; False checks
      only `root/` and `root/annotations/`.

  Raises:
    DatasetRootError: names `name`, the path, what is wrong and the expected
      layout.
  """
  expected = expected_layout(dataset)
  if not os.path.isdir(root):
    problem = "is not a folder" if os.path.exists(root) else "does not exist"
  elif not os.path.isdir(os.path.join(root, "annotations")):
    problem = "has no annotations/ folder"
  else:
    missing = [p for p in (expected if full else [])
               if not os.path.exists(os.path.join(root, p))]
    if not missing:
      return
    problem = "lacks " + ", ".join(missing)
  raise DatasetRootError(
      f"{name}={root!r} {problem}; expected a {dataset} folder with "
      f"{', '.join(expected)} (README, 'Using the real HICO-DET')")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  """Raises ValueError unless value is one of choices."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


# ----------------------------------------------------------------- JSON level


def load_json(path: str) -> List[Any]:
  """Loads an annotation file and checks that it is a list.

  Raises:
    AnnotationError: missing file, invalid JSON or a top level that is not a
      list.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise AnnotationError(f"{path}: cannot read annotation file: {e}") from e
  try:
    raw = orjson.loads(data) if orjson is not None else json.loads(data)
  except ValueError as e:  # orjson.JSONDecodeError and json's are ValueErrors.
    raise AnnotationError(f"{path}: invalid JSON: {e}") from e
  if not isinstance(raw, list):
    raise AnnotationError(
        f"{path}: top level must be a list of image records, got "
        f"{type(raw).__name__}")
  return raw


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
  meta_h = metadata.hico()
  vcoco = dataset == "vcoco"
  meta_v = metadata.vcoco() if vcoco else None

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
    obj = meta_h.object_index_from_coco(coco_id)
    if obj is None:
      raise AnnotationError(where(field + ".category_id",
                                  f"unknown COCO category id {coco_id}"))
    boxes[i] = bbox
    labels[i] = obj

  pairs = np.zeros((len(hois), 4), np.int32)
  for k, hoi in enumerate(hois):
    field = f"hoi_annotation[{k}]"
    sub = _get(hoi, "subject_id", where, field + ".subject_id", "int")
    obj = _get(hoi, "object_id", where, field + ".object_id", "int")
    verb_id = _get(hoi, "category_id", where, field + ".category_id", "int")
    no_object = vcoco and obj == -1
    bad = [(name, v) for name, v in (("subject_id", sub), ("object_id", obj))
           if not 0 <= v < len(anns)
           and not (name == "object_id" and no_object)]
    if bad:
      name, v = bad[0]
      if train:
        stats.skipped["index_out_of_range"] += 1
        return None
      raise AnnotationError(where(f"{field}.{name}",
                                  f"box index {v} outside the record's "
                                  f"{len(anns)} annotations"))
    if vcoco:
      if not 0 <= verb_id < meta_v.num_verb_classes:
        raise AnnotationError(where(field + ".category_id",
                                    f"verb class {verb_id} outside 0.."
                                    f"{meta_v.num_verb_classes - 1}"))
      verb = verb_id
      obj_class = VCOCO_NO_OBJECT if no_object else int(labels[obj])
      hoi_index = _vcoco_hoi_lookup().get((verb, obj_class), -1)
      if hoi_index < 0:
        stats.counts["vcoco_unlisted_hoi"] += 1
    else:
      if not 1 <= verb_id <= meta_h.num_verbs:
        raise AnnotationError(where(field + ".category_id",
                                    f"verb id {verb_id} outside 1.."
                                    f"{meta_h.num_verbs}"))
      verb = verb_id - 1
      obj_class = int(labels[obj])
      expected = meta_h.hoi_index(verb, obj_class)
      if "hoi_category_id" in hoi:
        hoi_id = _get(hoi, "hoi_category_id", where,
                      field + ".hoi_category_id", "int")
        if not 1 <= hoi_id <= meta_h.num_hois:
          raise AnnotationError(where(field + ".hoi_category_id",
                                      f"HOI id {hoi_id} outside 1.."
                                      f"{meta_h.num_hois}"))
        if hoi_id - 1 != expected:
          v, o = meta_h.hois[hoi_id - 1]
          raise AnnotationError(where(
              field + ".hoi_category_id",
              f"HOI id {hoi_id} is ({meta_h.verbs[v]}, {meta_h.objects[o]}) "
              f"but the pair has verb {meta_h.verbs[verb]} (id {verb_id}) and "
              f"object {meta_h.objects[obj_class]} (box {obj})"))
      elif expected is None:
        raise AnnotationError(where(
            field, f"no hoi_category_id and ({meta_h.verbs[verb]}, "
            f"{meta_h.objects[obj_class]}) is not a HICO-DET HOI"))
      else:
        stats.counts["hoi_id_rebuilt"] += 1
      hoi_index = expected
    if labels.size and labels[sub] != 0:
      stats.counts["non_person_subject"] += 1
    pairs[k] = (sub, obj, verb, hoi_index)

  if train and not len(pairs):
    stats.skipped["no_pairs"] += 1
    return None
  return ImageRecord(index=index, file_name=file_name, boxes=boxes,
                     labels=labels, pairs=pairs)


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


# ----------------------------------------------------------------- images

_JPEG_MAGIC = b"\xff\xd8\xff"


def read_image(path: str) -> Tuple[bytes, int, int, bool]:
  """Reads and checks an image file.

  Args:
    path: image file.

  Returns:
    (JPEG bytes, height, width, re-encoded). The bytes are the file itself
    when it is a JPEG TensorFlow decodes, else an RGB JPEG re-encoding.

  Raises:
    FileNotFoundError: missing file.
    ValueError: the file does not decode.
  """
  with open(path, "rb") as f:
    data = f.read()
  if data.startswith(_JPEG_MAGIC):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      # ratio=8 decodes at 1/8 scale (DCT scaling): fast, yet it reads the
      # whole entropy-coded stream, so truncation and bad data are caught.
      tf.io.decode_jpeg(data, channels=3, ratio=8)
      h, w = (int(v) for v in tf.io.extract_jpeg_shape(data)[:2].numpy())
      return data, h, w, False
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
      pass  # Maybe a JPEG TF cannot convert (CMYK); let Pillow decide.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      rgb = im.convert("RGB")
  except Exception as e:  # Pillow raises many types on bad data.
    raise ValueError(f"cannot decode image {path}: {e}") from e
  out = io.BytesIO()
  rgb.save(out, format="JPEG", quality=95)
  return out.getvalue(), rgb.height, rgb.width, True


def _load_image(record: ImageRecord, image_dir: str, keep_bytes: bool):
  path = os.path.join(image_dir, record.file_name)
  try:
    data, h, w, reencoded = read_image(path)
  except FileNotFoundError:
    return record, None, "image_missing", path
  except (OSError, ValueError) as e:
    return record, None, "image_corrupt", f"{path} ({e})"
  record.height, record.width = h, w
  return record, (data if keep_bytes else b""), ("reencoded" if reencoded
                                                 else ""), path


# ----------------------------------------------------------------- splits


def iter_split(root: str, split: str, dataset: str = "hico_det", *,
               on_bad_box: str = "clip", on_bad_image: str = "skip",
               check_images: bool = True, with_bytes: bool = False,
               num_threads: int = 8, chunk_size: int = 64,
               stats: Optional[SplitStats] = None
               ) -> Iterator[Tuple[ImageRecord, bytes]]:
  """Yields the validated records of a split in file order.

  Args:
    root: dataset folder with images/ and annotations/.
    split: 'train' | 'test'.
    dataset: 'hico_det' | 'vcoco'.
    on_bad_box: 'clip' | 'reject' | 'keep' (module docstring).
    on_bad_image: 'skip' | 'fail'.
    check_images: read every image (size, decodability). When False, images
      are not opened, height/width stay 0 and only the degenerate-box check
      runs.
    with_bytes: also return the (JPEG) image bytes.
    num_threads: threads reading images.
    chunk_size: records read ahead per batch of image reads.
    stats: optional counters to fill (a new one otherwise).

  Yields:
    (record, image bytes or b'').

  Raises:
    AnnotationError: see the module docstring.
  """
  check_choice("on_bad_image", on_bad_image, ON_BAD_IMAGE)
  check_choice("on_bad_box", on_bad_box, ON_BAD_BOX)
  path, image_dir = split_paths(root, split, dataset)
  stats = stats if stats is not None else SplitStats(f"{dataset}/{split}")
  raw = load_json(path)
  if not raw:
    raise AnnotationError(f"{path}: the annotation list is empty ([]); "
                          f"expected one record per {split} image")
  stats.num_records = len(raw)
  train = split == "train"
  records = []
  for i, r in enumerate(raw):
    rec = parse_record(r, i, path=path, dataset=dataset, train=train,
                       stats=stats)
    if rec is not None:
      records.append(rec)
  del raw

  def finish(rec):
    check_boxes(rec, on_bad_box, stats, path=path)
    stats.num_images += 1
    stats.num_pairs += len(rec.pairs)

  if not check_images:
    for rec in records:
      finish(rec)
      yield rec, b""
  else:
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
      for start in range(0, len(records), chunk_size):
        chunk = records[start:start + chunk_size]
        for rec, data, status, where in pool.map(
            lambda r: _load_image(r, image_dir, with_bytes), chunk):
          if data is None:
            if on_bad_image == "fail":
              raise BadImageError(
                  f"{path}: record {rec.index} ({rec.file_name}): field "
                  f"file_name: {status.replace('_', ' ')}: {where} "
                  "(dataset.on_bad_image='fail')")
            logging.warning("%s: skipping record %d: %s: %s", stats.name,
                            rec.index, status, where)
            stats.skipped[status] += 1
            continue
          if status == "reencoded":
            stats.counts["image_reencoded"] += 1
          finish(rec)
          yield rec, data
  logging.info("%s", stats.summary())


def read_split(root: str, split: str, dataset: str = "hico_det", **kwargs
               ) -> Tuple[List[ImageRecord], SplitStats]:
  """All validated records of a split (see `iter_split` for the arguments).

  Returns:
    (records in file order, counters).
  """
  kwargs.pop("with_bytes", None)
  stats = kwargs.pop("stats", None) or SplitStats(f"{dataset}/{split}")
  records = [r for r, _ in iter_split(root, split, dataset, stats=stats,
                                      **kwargs)]
  return records, stats
