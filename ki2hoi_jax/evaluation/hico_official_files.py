"""Reading HICO-DET's official `.mat` files; writing `detections_XX.mat`.

Reads, with scipy.io, the files of the official evaluation and writes the
detection files the MATLAB code scores (docs/datasets.md section 8; the
annotation files are written by `data.hico_mat`):

* `anno_bbox.mat`: struct arrays `bbox_train` / `bbox_test`, one element per
  image with `filename` and `hoi`, a struct array of `id` (1-based HOI),
  `bboxhuman` / `bboxobject` (struct arrays of `x1 y1 x2 y2`, 1-based
  inclusive pixels), `connection` ([K, 2] 1-based (human, object) rows, one
  GT pair each) and `invis` (1: the HOI is not visible; skipped).
* `anno.mat`: `list_test` / `list_train` (cells of file names) and
  `anno_test` / `anno_train` ([600, images] image-level labels, 1 =
  positive), which decide the Known-Object setting.
* `detections_XX.mat` (XX = 01..80, COCO object order): `all_boxes`, rows
  [human box, object box, image id, action index within the object,
  score x 1000], the layout of GEN-VLKT's converter for the MATLAB code.

A malformed file raises `OfficialFileError` naming the file and the field.
"""

import dataclasses
import hashlib
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import scipy.io

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico_ap
from ki2hoi_jax.evaluation import mat5_counts

# Rows GEN-VLKT's converter keeps per HOI class (best first).
MAX_DETECTIONS_PER_HOI = 19999
SCORE_SCALE = 1000.0  # The converter writes score x 1000.


class OfficialFileError(ValueError):
  """A missing or malformed official `.mat` file; names the file and field."""


@dataclasses.dataclass(frozen=True)
class OfficialGroundTruth:
  """The test split of `anno_bbox.mat`, flattened.

  Attributes:
    gt: visible test GT pairs as `hico_ap.GroundTruth`, 1-based pixel boxes,
      in (image, HOI entry, connection row) order; `file_names` are those of
      `bbox_test` in file order.
    train_instances: [600] visible training instances of each HOI (the
      connections of `bbox_train`), which decide Rare (< 10).
  """
  gt: hico_ap.GroundTruth
  train_instances: np.ndarray


def _load(path: str, variables: Optional[Sequence[str]] = None
          ) -> Dict[str, Any]:
  """The variables of a .mat file (all when `variables` is None)."""
  if not os.path.isfile(path):
    raise OfficialFileError(f"{path}: no such file")
  try:
    return scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False,
                            variable_names=variables)
  except Exception as e:  # scipy raises several types for corrupt files.
    raise OfficialFileError(f"{path}: not a readable .mat file ({e})") from e


def _field(struct: Any, name: str, where: str) -> Any:
  if not hasattr(struct, name):
    raise OfficialFileError(f"{where}: missing field '{name}'")
  return getattr(struct, name)


def _elements(value: Any) -> List[Any]:
  """The elements of a MATLAB struct or cell array, in MATLAB order."""
  return list(np.asarray(value, dtype=object).ravel(order="F"))


def _number(value: Any, where: str) -> float:
  arr = np.asarray(value, dtype=np.float64).ravel()
  if arr.size != 1:
    raise OfficialFileError(f"{where}: expected one number, got {arr.size}")
  return float(arr[0])


def _text(value: Any, where: str) -> str:
  arr = np.asarray(value).ravel()
  if arr.size != 1 or not isinstance(arr[0], str):
    raise OfficialFileError(f"{where}: expected a string")
  return str(arr[0])


def _boxes(structs: Any, where: str) -> np.ndarray:
  """[M, 4] x1 y1 x2 y2 of a struct array of boxes."""
  rows = []
  for k, b in enumerate(_elements(structs)):
    rows.append([_number(_field(b, c, f"{where}({k + 1})"),
                         f"{where}({k + 1}).{c}")
                 for c in ("x1", "y1", "x2", "y2")])
  return np.asarray(rows, np.float64).reshape(-1, 4)


def _checked_entries(image: Any, where: str, num_hois: int
                     ) -> List[Tuple[int, np.ndarray, np.ndarray]]:
  """`_visible_entries` with every field checked; errors name the field."""
  out = []
  for j, hoi in enumerate(_elements(_field(image, "hoi", where))):
    w = f"{where}.hoi({j + 1})"
    if _number(_field(hoi, "invis", w), f"{w}.invis"):
      continue
    hoi_id = int(_number(_field(hoi, "id", w), f"{w}.id"))
    if not 1 <= hoi_id <= num_hois:
      raise OfficialFileError(f"{w}.id: {hoi_id} is not in 1..{num_hois}")
    humans = _boxes(_field(hoi, "bboxhuman", w), f"{w}.bboxhuman")
    objects = _boxes(_field(hoi, "bboxobject", w), f"{w}.bboxobject")
    conn = np.asarray(_field(hoi, "connection", w), np.float64).reshape(-1, 2)
    conn = conn.astype(np.int64) - 1
    if conn.size and (conn.min() < 0 or conn[:, 0].max() >= len(humans) or
                      conn[:, 1].max() >= len(objects)):
      raise OfficialFileError(f"{w}.connection: a row refers to a box that "
                              "is not in bboxhuman / bboxobject")
    out.append((hoi_id - 1, humans[conn[:, 0]], objects[conn[:, 1]]))
  return out


def _fast_boxes(structs: np.ndarray) -> np.ndarray:
  return np.array([[b.x1.item(), b.y1.item(), b.x2.item(), b.y2.item()]
                   for b in structs.ravel(order="F")],
                  np.float64).reshape(-1, 4)


def _visible_entries(image: Any, where: str, num_hois: int
                     ) -> List[Tuple[int, np.ndarray, np.ndarray]]:
  """(HOI index, human boxes, object boxes) of each visible `hoi` entry.

  One row of boxes per `connection` row, entries in file order. A fast path
  reads well-formed images; anything unexpected is re-read by the checked
  path, whose error names the field.
  """
  try:
    out = []
    for hoi in image.hoi.ravel(order="F"):
      if hoi.invis.item():
        continue
      h = int(hoi.id.item()) - 1
      humans, objects = _fast_boxes(hoi.bboxhuman), _fast_boxes(hoi.bboxobject)
      conn = hoi.connection.reshape(-1, 2).astype(np.int64) - 1
      if not 0 <= h < num_hois or (conn.size and (
          conn.min() < 0 or conn[:, 0].max() >= len(humans) or
          conn[:, 1].max() >= len(objects))):
        raise ValueError("out of range")
      out.append((h, humans[conn[:, 0]], objects[conn[:, 1]]))
    return out
  except (AttributeError, ValueError, TypeError, IndexError):
    return _checked_entries(image, where, num_hois)


def _split(data: Mapping[str, Any], name: str, path: str) -> List[Any]:
  if name not in data:
    raise OfficialFileError(f"{path}: missing variable '{name}'")
  return _elements(data[name])


def default_cache_dir() -> str:
  """`$KI2HOI_CACHE_DIR`, else `$XDG_CACHE_HOME/ki2hoi_jax` (~/.cache/...)."""
  if os.environ.get("KI2HOI_CACHE_DIR"):
    return os.environ["KI2HOI_CACHE_DIR"]
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(root, "ki2hoi_jax")


_FORMAT = 1  # Version of the cached arrays' layout.


def _cache_path(path: str, cache_dir: str) -> str:
  """The cache file of `path`: keyed by its absolute path, size and mtime."""
  st = os.stat(path)
  key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{_FORMAT}"
  digest = hashlib.sha256(key.encode()).hexdigest()[:24]
  return os.path.join(cache_dir, f"anno_bbox_{digest}.npz")


def read_anno_bbox(path: str, cache_dir: Optional[str] = None
                   ) -> OfficialGroundTruth:
  """Reads `anno_bbox.mat` (test pairs and training instance counts).

  Parsing the file's nested structs takes scipy seconds per 10,000 images,
  so the arrays are kept in `cache_dir` (an `.npz` per file, keyed by its
  path, size and modification time) and read from there next time.

  Args:
    path: the file.
    cache_dir: where parsed files are kept; None: `default_cache_dir()`;
      '': no cache.

  Raises:
    OfficialFileError: missing file, variable or field; a bad `connection`.
  """
  if not os.path.isfile(path):
    raise OfficialFileError(f"{path}: no such file")
  cache_dir = default_cache_dir() if cache_dir is None else cache_dir
  cached = _cache_path(path, cache_dir) if cache_dir else ""
  if cached and os.path.isfile(cached):
    with np.load(cached) as z:
      return _ground_truth(tuple(z["file_names"].tolist()), z["image"],
                           z["hoi"], z["sub_boxes"], z["obj_boxes"],
                           z["train_instances"])
  truth = _parse_anno_bbox(path)
  if cached:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{cached}.{os.getpid()}.tmp.npz"
    gt = truth.gt
    np.savez(tmp, file_names=np.asarray(gt.file_names, dtype=str),
             image=gt.image, hoi=gt.hoi, sub_boxes=gt.sub_boxes,
             obj_boxes=gt.obj_boxes, train_instances=truth.train_instances)
    os.replace(tmp, cached)  # Atomic: readers never see half a file.
  return truth


def _ground_truth(names: Tuple[str, ...], image: np.ndarray, hoi: np.ndarray,
                  sub: np.ndarray, obj: np.ndarray, train_instances: np.ndarray
                  ) -> OfficialGroundTruth:
  present = np.zeros((len(names), metadata.hico().num_objects), bool)
  present[image, metadata.hico().hoi_object[hoi]] = True
  return OfficialGroundTruth(
      gt=hico_ap.GroundTruth(file_names=names, image=image, hoi=hoi,
                             sub_boxes=sub, obj_boxes=obj,
                             object_present=present),
      train_instances=train_instances)


def _parse_anno_bbox(path: str) -> OfficialGroundTruth:
  """`read_anno_bbox` without the cache."""
  num_hois = metadata.hico().num_hois
  try:  # Skips every box of bbox_train (module mat5_counts).
    counts = mat5_counts.train_instance_counts(path, num_hois)
    data = _load(path, ["bbox_test"])
  except (mat5_counts.UnsupportedMatFile, KeyError):
    data, counts = _load(path), None  # scipy reads it all (and names errors).
  names, image, hoi, sub, obj = [], [], [], [], []
  for i, rec in enumerate(_split(data, "bbox_test", path)):
    where = f"{path}: bbox_test({i + 1})"
    names.append(_text(_field(rec, "filename", where), f"{where}.filename"))
    # A HOI listed twice keeps its last entry, as the MATLAB code does.
    by_hoi = {h: (hb, ob) for h, hb, ob in _visible_entries(rec, where,
                                                            num_hois)}
    for h, (humans, objects) in sorted(by_hoi.items()):
      image += [i] * len(humans)
      hoi += [h] * len(humans)
      sub.append(humans)
      obj.append(objects)
  if counts is None:
    counts = _train_instances(data, path, num_hois)
  return _ground_truth(
      tuple(names), np.asarray(image, np.int64), np.asarray(hoi, np.int64),
      np.concatenate(sub or [np.zeros((0, 4))]),
      np.concatenate(obj or [np.zeros((0, 4))]), counts)


def _train_instances(data: Mapping[str, Any], path: str, num_hois: int
                     ) -> np.ndarray:
  """[600] visible training instances from scipy's `bbox_train`."""
  counts = np.zeros(num_hois, np.int64)
  for i, rec in enumerate(_split(data, "bbox_train", path)):
    for h, humans, _ in _visible_entries(rec, f"{path}: bbox_train({i + 1})",
                                         num_hois):
      counts[h] += len(humans)  # Every visible entry counts.
  return counts


def read_image_labels(path: str, file_names: Sequence[str]) -> np.ndarray:
  """`anno_test` of `anno.mat` as [600, images] bool (1 = positive).

  Raises:
    OfficialFileError: missing variables, a shape that is not [600, images],
      or `list_test` naming other images than `file_names` (anno_bbox.mat).
  """
  data = _load(path)
  labels = np.asarray(data.get("anno_test", np.zeros((0, 0))), np.float64)
  if "anno_test" not in data:
    raise OfficialFileError(f"{path}: missing variable 'anno_test'")
  num_hois = metadata.hico().num_hois
  if labels.shape != (num_hois, len(file_names)):
    raise OfficialFileError(
        f"{path}: anno_test has shape {labels.shape}, expected "
        f"({num_hois}, {len(file_names)}) (HOIs x test images of "
        "anno_bbox.mat)")
  listed = [_text(v, f"{path}: list_test") for v in
            _split(data, "list_test", path)]
  if listed != list(file_names):
    raise OfficialFileError(f"{path}: list_test does not list the test "
                            "images of anno_bbox.mat in the same order")
  return labels == 1


def _object_hoi_ranges() -> List[Tuple[int, int]]:
  """(first, last) 0-based HOI index of each object (COCO order).

  The HOIs of an object are contiguous in the official order.
  """
  hoi_object = metadata.hico().hoi_object
  ranges = []
  for o in range(metadata.hico().num_objects):
    idx = np.flatnonzero(hoi_object == o)
    if idx.size == 0 or idx[-1] - idx[0] + 1 != idx.size:
      raise ValueError(f"HOIs of object {o} are not contiguous")
    ranges.append((int(idx[0]), int(idx[-1])))
  return ranges


def ranked_per_class(det: hico_ap.Detections, num_classes: int
                     ) -> np.ndarray:
  """Indices of the detections the converter keeps, class by class.

  Per HOI class, the detections sorted by descending `score x 1000` (ties
  keep the (image, list) order of `det`), cut at `MAX_DETECTIONS_PER_HOI`.

  Returns:
    [K] int64 indices into `det`, class-major, best first.
  """
  conf = det.score * SCORE_SCALE
  order = hico_ap.class_major_order(det.hoi, hico_ap.descending_order(conf),
                                    num_classes)
  cls = det.hoi[order]
  counts = np.bincount(cls, minlength=num_classes)
  rank = np.arange(order.size) - (np.cumsum(counts) - counts)[cls]
  return order[rank < MAX_DETECTIONS_PER_HOI]


def export_detections(out_dir: str, det: hico_ap.Detections) -> List[str]:
  """Writes `detections_01.mat` .. `detections_80.mat` for the MATLAB code.

  Args:
    out_dir: created if missing.
    det: detections with 0-based pixel boxes; `det.image` indexes the test
      images of anno_bbox.mat (written as the 1-based image id).

  Returns:
    The written paths.
  """
  os.makedirs(out_dir, exist_ok=True)
  meta = metadata.hico()
  kept = ranked_per_class(det, meta.num_hois)
  paths = []
  for o, (first, last) in enumerate(_object_hoi_ranges()):
    sel = kept[(det.hoi[kept] >= first) & (det.hoi[kept] <= last)]
    rows = np.concatenate([
        det.sub_boxes[sel], det.obj_boxes[sel],
        (det.image[sel] + 1)[:, None].astype(np.float64),
        (det.hoi[sel] - first)[:, None].astype(np.float64),
        (det.score[sel] * SCORE_SCALE)[:, None]], axis=1)
    path = os.path.join(out_dir, f"detections_{o + 1:02d}.mat")
    scipy.io.savemat(path, {"all_boxes": rows})
    paths.append(path)
  return paths


def read_exported_detections(out_dir: str) -> hico_ap.Detections:
  """Reads `detections_XX.mat` files back (scores divided by 1000).

  Returns:
    `hico_ap.Detections` in (image, file row) order, 0-based boxes.

  Raises:
    OfficialFileError: a missing file, or `all_boxes` not [rows, 11].
  """
  parts = []
  for o, (first, last) in enumerate(_object_hoi_ranges()):
    path = os.path.join(out_dir, f"detections_{o + 1:02d}.mat")
    data = _load(path)
    if "all_boxes" not in data:
      raise OfficialFileError(f"{path}: missing variable 'all_boxes'")
    rows = np.asarray(data["all_boxes"], np.float64)
    if rows.size == 0:
      continue
    if rows.ndim != 2 or rows.shape[1] != 11:
      raise OfficialFileError(f"{path}: all_boxes has shape {rows.shape}, "
                              "expected (rows, 11)")
    if np.any(rows[:, 9] > last - first) or np.any(rows[:, 9] < 0):
      raise OfficialFileError(f"{path}: all_boxes column 10 (action index) "
                              f"outside 0..{last - first}")
    parts.append(np.concatenate([rows, first + rows[:, 9:10]], axis=1))
  rows = np.concatenate(parts) if parts else np.zeros((0, 12))
  rows = rows[np.argsort(rows[:, 8], kind="stable")]
  return hico_ap.Detections(
      image=rows[:, 8].astype(np.int64) - 1, hoi=rows[:, 11].astype(np.int64),
      score=rows[:, 10] / SCORE_SCALE, sub_boxes=rows[:, 0:4],
      obj_boxes=rows[:, 4:8], num_entries=int(np.unique(rows[:, 8]).size))

