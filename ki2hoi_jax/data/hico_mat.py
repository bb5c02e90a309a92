"""Writing HICO-DET's official annotation files `anno_bbox.mat` and `anno.mat`.

The synthetic writer (`synthetic.generate`) calls `write_official_files`, so
the official evaluation protocol (`evaluation.hico_official`) runs on
synthetic data end to end. Layout (docs/datasets.md section 8):

* `anno_bbox.mat`: `bbox_train` / `bbox_test`, 1 x images struct arrays with
  `filename` and `hoi` (1 x K struct array: `id` 1-based HOI, `bboxhuman` /
  `bboxobject` 1 x M struct arrays of `x1 y1 x2 y2` in 1-based inclusive
  pixels, `connection` [pairs, 2] 1-based (human, object) rows, `invis`).
* `anno.mat`: `list_train` / `list_test` (cells of file names),
  `anno_train` / `anno_test` ([600, images]: 1 for each HOI with a pair in
  the image, else -1) and `list_action` (`nname`, `vname` per HOI).
"""

import os
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import scipy.io

from ki2hoi_jax.data import metadata


def _mat_boxes(boxes: np.ndarray) -> np.ndarray:
  """A 1 x M struct array of x1 y1 x2 y2 (doubles)."""
  out = np.empty((1, len(boxes)), dtype=[(c, object) for c in
                                          ("x1", "y1", "x2", "y2")])
  for k, b in enumerate(np.asarray(boxes, np.float64)):
    out[0, k] = tuple(float(v) for v in b)
  return out


def _unique_rows(boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(distinct rows in first-seen order, index of each input row)."""
  distinct, index = [], []
  for b in map(tuple, boxes):
    if b not in distinct:
      distinct.append(b)
    index.append(distinct.index(b))
  return np.asarray(distinct, np.float64).reshape(-1, 4), np.asarray(index)


def _mat_images(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
  """1 x N struct array of images from `{"file_name", "pairs"}` records.

  Each pair is (hoi index, human box, object box), 1-based pixel boxes;
  pairs of one HOI form one `hoi` entry whose boxes are deduplicated, marked
  invisible when the HOI is in the record's optional `invisible` set.
  """
  hoi_dtype = [("id", object), ("bboxhuman", object), ("bboxobject", object),
               ("connection", object), ("invis", object)]
  images = np.empty((1, len(records)), dtype=[("filename", object),
                                              ("hoi", object)])
  for i, rec in enumerate(records):
    by_hoi: Dict[int, List[Tuple[np.ndarray, np.ndarray]]] = {}
    for h, human, obj in rec["pairs"]:
      by_hoi.setdefault(int(h), []).append((human, obj))
    hois = np.empty((1, len(by_hoi)), dtype=hoi_dtype)
    for j, (h, pairs) in enumerate(sorted(by_hoi.items())):
      humans, hi = _unique_rows(np.asarray([p[0] for p in pairs]))
      objects, oi = _unique_rows(np.asarray([p[1] for p in pairs]))
      conn = np.stack([hi + 1, oi + 1], 1).astype(np.float64)
      invis = float(h in rec.get("invisible", ()))
      hois[0, j] = (float(h + 1), _mat_boxes(humans), _mat_boxes(objects),
                    conn, invis)
    images[0, i] = (rec["file_name"], hois)
  return images


def write_anno_bbox(path: str, train: Sequence[Mapping[str, Any]],
                    test: Sequence[Mapping[str, Any]]) -> None:
  """Writes `anno_bbox.mat` from `{"file_name", "pairs"}` records per split.

  `pairs`: (hoi index 0..599, human box, object box), boxes 1-based
  inclusive pixels (the official convention); `invisible` (optional): HOI
  indices written with `invis` = 1.
  """
  scipy.io.savemat(path, {"bbox_train": _mat_images(train),
                          "bbox_test": _mat_images(test)})


def _cell(strings: Sequence[str]) -> np.ndarray:
  out = np.empty((len(strings), 1), dtype=object)
  for k, s in enumerate(strings):
    out[k, 0] = s
  return out


def _image_level_labels(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
  """[600, N]: 1 for each HOI with a pair in the image, else -1."""
  labels = -np.ones((metadata.hico().num_hois, len(records)))
  for i, rec in enumerate(records):
    for h, _, _ in rec["pairs"]:
      labels[int(h), i] = 1.0
  return labels


def write_anno(path: str, train: Sequence[Mapping[str, Any]],
               test: Sequence[Mapping[str, Any]]) -> None:
  """Writes `anno.mat`: file lists, image-level labels and `list_action`."""
  meta = metadata.hico()
  actions = np.empty((len(meta.hois), 1), dtype=[("nname", object),
                                                 ("vname", object)])
  for h, (v, o) in enumerate(meta.hois):
    actions[h, 0] = (meta.objects[o].replace(" ", "_"), meta.verbs[v])
  scipy.io.savemat(path, {
      "list_train": _cell([r["file_name"] for r in train]),
      "list_test": _cell([r["file_name"] for r in test]),
      "anno_train": _image_level_labels(train),
      "anno_test": _image_level_labels(test),
      "list_action": actions,
  })


def _matlab_round(x: float) -> float:
  """MATLAB's `round` (halves away from zero) of one coordinate."""
  whole = float(np.trunc(x))
  return whole + float(np.sign(x)) * float(abs(x - whole) >= 0.5)


def official_records(records: Sequence[Mapping[str, Any]]
                     ) -> List[Dict[str, Any]]:
  """`{"file_name", "pairs"}` records from annotation JSON records.

  Each pair of the JSON (person subject, HOI from `hoi_category_id` or from
  verb and object category) becomes (hoi index, human box, object box) with
  the 0-based float boxes rounded and shifted to 1-based integers.
  """
  meta = metadata.hico()
  out = []
  for rec in records:
    anns = rec["annotations"]
    pairs = []
    for p in rec["hoi_annotation"]:
      if "hoi_category_id" in p:
        h = int(p["hoi_category_id"]) - 1
      else:
        o = meta.object_index_from_coco(anns[p["object_id"]]["category_id"])
        h = meta.hoi_index(p["category_id"] - 1, o)
      box = lambda k: [_matlab_round(v) + 1.0 for v in anns[k]["bbox"]]
      pairs.append((h, box(p["subject_id"]), box(p["object_id"])))
    out.append({"file_name": rec["file_name"], "pairs": pairs})
  return out


def write_official_files(root: str,
                         train_records: Sequence[Mapping[str, Any]],
                         test_records: Sequence[Mapping[str, Any]]) -> None:
  """Writes `root/anno_bbox.mat` and `root/anno.mat` from JSON records.

  `root` is the dataset root, where HICO-DET's release has them
  (`hico_20160224_det/anno_bbox.mat`).
  """
  train = official_records(train_records)
  test = official_records(test_records)
  write_anno_bbox(os.path.join(root, "anno_bbox.mat"), train, test)
  write_anno(os.path.join(root, "anno.mat"), train, test)
