"""Reader of GEN-VLKT/PPDM annotation files (HICO-DET, V-COCO).

The on-disk layout is that of docs/datasets.md section 2:

  <root>/images/train2015/*.jpg, <root>/images/test2015/*.jpg
  <root>/annotations/trainval_hico.json, <root>/annotations/test_hico.json

(V-COCO: `images/train2014`, `images/val2014`, `trainval_vcoco.json`,
`test_vcoco.json`). Each JSON file is a list with one record per image; the
record format, the `ImageRecord` it becomes and the checks of each record
and its boxes are in annotation_records.py (whose names this module also
exports, e.g. `annotations.AnnotationError`).

File-level checks (each problem names the file; `AnnotationError` is a
`DatasetError`, a `ValueError`):

* Malformed JSON, a top level that is not a list, an empty list
  (`iter_split`): error.
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

import concurrent.futures
import io
import json
import logging
import os
from typing import Any, Iterator, List, Optional, Tuple

from ki2hoi_jax.data import annotation_records as records_lib

try:  # orjson is ~5x faster on the 40 MB HICO-DET training file.
  import orjson  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  orjson = None

DATASETS = ("hico_det", "vcoco")
SPLITS = ("train", "test")
ON_BAD_IMAGE = ("skip", "fail")

# The record level (annotation_records.py), under the names callers use.
ON_BAD_BOX = records_lib.ON_BAD_BOX
VCOCO_NO_OBJECT = records_lib.VCOCO_NO_OBJECT
DatasetError = records_lib.DatasetError
AnnotationError = records_lib.AnnotationError
BadImageError = records_lib.BadImageError
DatasetRootError = records_lib.DatasetRootError
ImageRecord = records_lib.ImageRecord
SplitStats = records_lib.SplitStats
check_choice = records_lib.check_choice
parse_record = records_lib.parse_record
check_boxes = records_lib.check_boxes

_FILES = {
    "hico_det": {
        "train": ("annotations/trainval_hico.json", "images/train2015"),
        "test": ("annotations/test_hico.json", "images/test2015")},
    "vcoco": {"train": ("annotations/trainval_vcoco.json", "images/train2014"),
              "test": ("annotations/test_vcoco.json", "images/val2014")},
}


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
    on_bad_box: 'clip' | 'reject' | 'keep' (annotation_records.py).
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
    AnnotationError: see the docstrings of this module and of
      annotation_records.py.
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
