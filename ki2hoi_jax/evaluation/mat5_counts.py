"""Training-instance counts of `anno_bbox.mat`, read straight from its bytes.

Rare / Non-rare of the official protocol depend on `bbox_train`: for each
visible `hoi` entry of each training image, its HOI `id` and the number of
rows of its `connection`. scipy's `loadmat` builds an object for every box
of every image to get there (tens of seconds for HICO-DET's 38,118 training
images); `train_instance_counts` walks the MAT-file v5 elements instead and
skips every box by its byte length, reading only `id`, `invis` and the
dimensions of `connection`.

The format (MathWorks, "MAT-File Format", level 5): a 128-byte header whose
last two bytes say the byte order, then variables, each a `miMATRIX` element
or a `miCOMPRESSED` element holding one (zlib). An element is an 8-byte tag
(type, byte count) and its data padded to 8 bytes, or, for at most 4 bytes of
data, one 8-byte "small" element whose first word packs the count and type.
A `miMATRIX` holds array flags (class in the low byte), dimensions and name;
a struct array then holds the field-name length, the names and, for each
element in column-major order, one `miMATRIX` per field; a numeric array its
real part in any integer or float type (MATLAB narrows doubles to the
smallest type that holds them).

`UnsupportedMatFile` means the file is not laid out as expected (a v7.3 HDF5
file, other field types); the caller reads it with scipy then.
"""

import struct
import zlib
from typing import Any, Iterator, List, Sequence, Tuple

import numpy as np

_MI_MATRIX = 14
_MI_COMPRESSED = 15
_STRUCT_CLASS = 2
# struct format of each numeric data type (miINT8 .. miUINT64).
_FORMATS = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 9: "d",
            12: "q", 13: "Q"}


class UnsupportedMatFile(ValueError):
  """The bytes are not a MAT v5 file laid out as `anno_bbox.mat`."""


class _Reader:
  """Elements of one byte buffer in one byte order (struct, no numpy: the
  walk visits millions of elements)."""

  def __init__(self, buf: bytes, order: str):
    self.buf = buf
    self.order = order
    self._u32 = struct.Struct(order + "I").unpack_from
    self._u32x2 = struct.Struct(order + "II").unpack_from
    self._dims2 = struct.Struct(order + "ii").unpack_from
    self._one = {typ: struct.Struct(order + fmt).unpack_from
                 for typ, fmt in _FORMATS.items()}

  def tag(self, pos: int) -> Tuple[int, int, int, int]:
    """(type, byte count, data start, next element) of the element at pos."""
    (word,) = self._u32(self.buf, pos)
    if word >> 16:  # Small element: count in the high, type in the low half.
      return word & 0xFFFF, word >> 16, pos + 4, pos + 8
    typ, count = self._u32x2(self.buf, pos)
    return typ, count, pos + 8, pos + 8 + ((count + 7) & ~7)

  def numbers(self, pos: int) -> Tuple[Tuple[Any, ...], int]:
    """(values, next element) of a numeric data element at pos."""
    typ, count, start, nxt = self.tag(pos)
    fmt = _FORMATS.get(typ)
    if fmt is None:
      raise UnsupportedMatFile(f"numeric data of type {typ}")
    n = count // struct.calcsize(fmt)
    return struct.unpack_from(f"{self.order}{n}{fmt}", self.buf, start), nxt

  def matrix(self, pos: int) -> Tuple[int, Tuple[int, ...], int, int]:
    """(class, dims, contents start, end) of the miMATRIX element at pos.

    A zero-byte miMATRIX (an empty value) has class 0 and dims (0,).
    """
    typ, count, start, end = self.tag(pos)
    if typ != _MI_MATRIX:
      raise UnsupportedMatFile(f"element of type {typ} where a matrix is")
    if count == 0:
      return 0, (0,), start, end
    _, _, flags_start, pos = self.tag(start)
    cls = self._u32(self.buf, flags_start)[0] & 0xFF
    typ, count, dims_start, nxt = self.tag(pos)
    if typ == 5 and count == 8:  # Two int32 dimensions, the usual case.
      dims = self._dims2(self.buf, dims_start)
    else:
      dims, nxt = self.numbers(pos)
    return cls, dims, self.tag(nxt)[3], end  # Past the array name.

  def fields(self, pos: int, dims: Tuple[int, ...], wanted: Sequence[str]
             ) -> Iterator[List[int]]:
    """For each struct element, the positions of the `wanted` fields' miMATRIX.

    Raises:
      KeyError: a wanted field the struct does not have.
    """
    (size,), pos = self.numbers(pos)
    _, count, start, pos = self.tag(pos)
    raw = self.buf[start:start + count]
    names = [raw[k:k + size].split(b"\0")[0].decode()
             for k in range(0, count, size)]
    slots = [names.index(w) if w in names else None for w in wanted]
    if None in slots:
      raise KeyError(f"struct fields {names} lack one of {list(wanted)}")
    tag = self.tag
    for _ in range(_size(dims)):
      element = []
      for _ in names:
        element.append(pos)
        pos = tag(pos)[3]
      yield [element[k] for k in slots]

  def scalar(self, pos: int) -> float:
    cls, dims, contents, _ = self.matrix(pos)
    if cls == _STRUCT_CLASS or _size(dims) != 1:
      raise UnsupportedMatFile("expected a scalar")
    typ, _, start, _ = self.tag(contents)
    if typ not in self._one:
      raise UnsupportedMatFile(f"numeric data of type {typ}")
    return self._one[typ](self.buf, start)[0]


def _size(dims: Tuple[int, ...]) -> int:
  n = 1
  for d in dims:
    n *= d
  return n


def _variables(data: bytes) -> Iterator[Tuple[_Reader, int]]:
  """(reader, miMATRIX position) of every top-level variable."""
  if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
    raise UnsupportedMatFile("no MAT v5 header")
  top = _Reader(data, "<" if data[126:128] == b"IM" else ">")
  pos = 128
  while pos + 8 <= len(data):
    typ, count, start, nxt = top.tag(pos)
    if typ == _MI_COMPRESSED:
      try:
        inner = zlib.decompress(data[start:start + count])
      except zlib.error as e:
        raise UnsupportedMatFile(f"bad compressed variable ({e})") from e
      yield _Reader(inner, top.order), 0
      pos = start + count  # Compressed elements are not padded.
    else:
      yield top, pos
      pos = nxt


def _name(reader: _Reader, pos: int) -> str:
  """The name of the miMATRIX at pos."""
  _, count, start, _ = reader.tag(pos)
  if count == 0:
    return ""
  pos = reader.tag(start)[3]  # Past the flags.
  pos = reader.tag(pos)[3]  # Past the dimensions.
  _, count, start, _ = reader.tag(pos)
  return reader.buf[start:start + count].decode()


def _count_images(reader: _Reader, pos: int, counts: np.ndarray) -> None:
  cls, dims, contents, _ = reader.matrix(pos)
  if cls != _STRUCT_CLASS:
    raise UnsupportedMatFile("bbox_train is not a struct array")
  totals = [0] * counts.size
  for (hoi_pos,) in reader.fields(contents, dims, ("hoi",)):
    cls, hoi_dims, hoi_contents, _ = reader.matrix(hoi_pos)
    if cls != _STRUCT_CLASS:
      if _size(hoi_dims) == 0:
        continue  # An image without HOIs.
      raise UnsupportedMatFile("hoi is not a struct array")
    for invis, hoi_id, connection in reader.fields(
        hoi_contents, hoi_dims, ("invis", "id", "connection")):
      if reader.scalar(invis):
        continue
      hoi_id = int(reader.scalar(hoi_id))
      if not 1 <= hoi_id <= counts.size:
        raise UnsupportedMatFile(f"hoi id {hoi_id} out of range")
      conn_cls, conn_dims, _, _ = reader.matrix(connection)
      if conn_cls == _STRUCT_CLASS:
        raise UnsupportedMatFile("connection is a struct")
      totals[hoi_id - 1] += conn_dims[0] if _size(conn_dims) else 0
  counts += np.asarray(totals, np.int64)


def train_instance_counts(path: str, num_hois: int) -> np.ndarray:
  """[num_hois] visible training instances per HOI (`bbox_train`).

  Every visible `hoi` entry adds the rows of its `connection` to its HOI,
  as `eval_one.m` counts them.

  Raises:
    UnsupportedMatFile: not a MAT v5 file with a `bbox_train` laid out as
      HICO-DET's (field errors are left to the scipy reader's messages).
    KeyError: a struct without the `hoi`, `id`, `invis` or `connection`
      field.
  """
  with open(path, "rb") as f:
    data = f.read()
  counts = np.zeros(num_hois, np.int64)
  try:
    for reader, pos in _variables(data):
      if _name(reader, pos) == "bbox_train":
        _count_images(reader, pos, counts)
        return counts
  except (struct.error, IndexError) as e:
    raise UnsupportedMatFile(f"truncated element ({e})") from e
  raise UnsupportedMatFile("no variable bbox_train")


def names(data: bytes) -> List[str]:
  """The top-level variable names of MAT v5 bytes (for tests)."""
  return [_name(reader, pos) for reader, pos in _variables(data)]
