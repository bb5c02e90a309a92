"""mat5_counts: training-instance counts from the bytes of anno_bbox.mat.

Compared with scipy's reading (`hico_official_files._train_instances`) on
files scipy writes (plain and compressed) and on a hand-built file laid out
as MATLAB writes it (doubles narrowed to small integer elements).
"""

import struct

import numpy as np
import pytest
import scipy.io

from ki2hoi_jax.data import hico_mat
from ki2hoi_jax.evaluation import hico_official_files as files
from ki2hoi_jax.evaluation import mat5_counts

PAIR = ([1.0, 1.0, 10.0, 10.0], [21.0, 1.0, 30.0, 10.0])


def _train_records():
  return [
      {"file_name": "t0.jpg", "pairs": [(3, *PAIR), (3, *PAIR), (7, *PAIR)]},
      {"file_name": "t1.jpg", "pairs": []},
      {"file_name": "t2.jpg", "invisible": {7}, "pairs": [(7, *PAIR)]},
      {"file_name": "t3.jpg", "pairs": [(599, *PAIR), (0, *PAIR)]},
  ]


def _scipy_counts(path):
  data = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
  return files._train_instances(data, path, 600)  # pylint: disable=protected-access


@pytest.mark.parametrize("compress", [False, True])
def test_counts_equal_scipys(tmp_path, compress):
  path = str(tmp_path / "anno_bbox.mat")
  train = _train_records()
  test = [{"file_name": "a.jpg", "pairs": [(5, *PAIR)]}]
  scipy.io.savemat(path, {"bbox_train": hico_mat._mat_images(train),  # pylint: disable=protected-access
                          "bbox_test": hico_mat._mat_images(test)},  # pylint: disable=protected-access
                   do_compression=compress)
  counts = mat5_counts.train_instance_counts(path, 600)
  expected = np.zeros(600, np.int64)
  expected[[3, 7, 599, 0]] = [2, 1, 1, 1]  # t2's HOI 7 is invisible.
  np.testing.assert_array_equal(counts, expected)
  np.testing.assert_array_equal(counts, _scipy_counts(path))


def _element(typ, data):
  if len(data) <= 4 and data:  # Small element format.
    return struct.pack("<I", (len(data) << 16) | typ) + data.ljust(4, b"\0")
  return struct.pack("<II", typ, len(data)) + data + b"\0" * (-len(data) % 8)


def _matrix(cls, dims, body, name=b""):
  head = (_element(6, struct.pack("<II", cls, 0)) +
          _element(5, struct.pack(f"<{len(dims)}i", *dims)) +
          _element(1, name))
  return _element(14, head + body)


def _double(values, dims, small_type=2, fmt="B"):
  """A double array stored narrowed, as MATLAB does (uint8 by default)."""
  return _matrix(6, dims, _element(small_type, struct.pack(
      f"<{len(values)}{fmt}", *values)))


def _struct(names, dims, elements, name=b""):
  body = (_element(5, struct.pack("<i", 32)) +
          _element(1, b"".join(n.encode().ljust(32, b"\0") for n in names)))
  body += b"".join(b"".join(e) for e in elements)
  return _matrix(2, dims, body, name)


def test_counts_of_a_matlab_style_file(tmp_path):
  box = _struct(["x1", "y1", "x2", "y2"], (1, 1),
                [[_double([v], (1, 1)) for v in (1, 1, 10, 10)]])
  hoi_names = ["id", "bboxhuman", "bboxobject", "connection", "invis"]
  hois = _struct(hoi_names, (1, 2), [
      [_double([12], (1, 1)), box, box,
       _double([1, 1, 1, 1], (2, 2)), _double([0], (1, 1))],  # 2 pairs.
      [_double([300], (1, 1), small_type=4, fmt="H"), box, box,
       _double([1, 1], (1, 2)), _double([0], (1, 1))],  # uint16 id.
  ])
  name = _matrix(4, (1, 6), _element(4, "t0.jpg".encode("utf-16-le")))
  empty = _element(14, b"")  # An image without HOIs.
  images = _struct(["filename", "hoi"], (1, 2),
                   [[name, hois], [name, empty]], name=b"bbox_train")
  header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + (
      struct.pack("<H", 0x0100) + b"IM")
  path = tmp_path / "anno_bbox.mat"
  path.write_bytes(header + images)
  assert mat5_counts.names(path.read_bytes()) == ["bbox_train"]
  counts = mat5_counts.train_instance_counts(str(path), 600)
  assert counts[11] == 2 and counts[299] == 1 and counts.sum() == 3
  np.testing.assert_array_equal(counts, _scipy_counts(str(path)))


def test_other_files_are_unsupported(tmp_path):
  path = tmp_path / "x.mat"
  path.write_bytes(b"\x89HDF\r\n" + b"\0" * 200)  # A v7.3 (HDF5) file.
  with pytest.raises(mat5_counts.UnsupportedMatFile):
    mat5_counts.train_instance_counts(str(path), 600)
  scipy.io.savemat(str(path), {"other": np.zeros(3)})
  with pytest.raises(mat5_counts.UnsupportedMatFile, match="bbox_train"):
    mat5_counts.train_instance_counts(str(path), 600)
