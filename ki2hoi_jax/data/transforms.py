"""DETR-style augmentation: parameters and boxes in numpy, pixels in tf.

Mirrors the training transforms of DETR/GEN-VLKT
(https://github.com/facebookresearch/detr/blob/29901c5/datasets/coco.py#L115
and GEN-VLKT's `datasets/hico.py`):

  RandomHorizontalFlip(0.5) -> ColorJitter(j, j, j) -> RandomSelect(
      RandomResize(train_short_sides, max_size),
      [RandomResize(crop_short_sides), RandomSizeCrop(crop_min, crop_max),
       RandomResize(train_short_sides, max_size)])  (each branch p = 0.5)

and at evaluation RandomResize([eval_short_side], max_size). The CLIP branch
gets the augmented image resized (bicubic, short side S) and centre-cropped to
S x S, as CLIP's own preprocessing.

The work is split in two so that the geometry of a whole global batch (needed
to pick its padded bucket shape) is known before any pixel is decoded:

* `sample_train_geometry` / `eval_geometry` (numpy) draw every random choice of
  one example into a `Geometry`; `transform_boxes` (numpy) applies it to the
  boxes.
* `augment_image`, `clip_view`, `normalize_and_pad` (tf) apply the same
  `Geometry` to the pixels.

Box convention here: absolute pixel xyxy with continuous corners (a box
[x1, x2] covers the columns between the two edges), so a flip maps x to w - x
and a resize scales by the size ratio, exactly like DETR.
"""

import dataclasses
from typing import Any, Sequence, Tuple

import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ITU-R 601 luma, as PIL's convert('L') used by torchvision's ColorJitter.
_GRAY = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Random choices of one example (identity = eval / no augmentation).

  Attributes:
    flip: mirror horizontally (first).
    jitter: (brightness, contrast, saturation) factors, 1 = unchanged.
    jitter_order: order in which the three jitter ops run (a permutation).
    crop: take the crop branch (resize1 -> crop_window -> out_size).
    resize1: (h, w) of the first resize of the crop branch.
    crop_window: (top, left, height, width) in resize1 coordinates.
    out_size: (h, w) of the final image.
  """
  flip: bool = False
  jitter: Tuple[float, float, float] = (1.0, 1.0, 1.0)
  jitter_order: Tuple[int, int, int] = (0, 1, 2)
  crop: bool = False
  resize1: Tuple[int, int] = (0, 0)
  crop_window: Tuple[int, int, int, int] = (0, 0, 0, 0)
  out_size: Tuple[int, int] = (0, 0)


def resized_size(height: int, width: int, short_side: int,
                 max_size: int = 0) -> Tuple[int, int]:
  """DETR's `get_size_with_aspect_ratio`: (h, w) with the given short side.

  The short side is reduced when the long side would exceed `max_size`
  (0 = no limit). DETR's rounding can overshoot `max_size` by a pixel or two
  for extreme aspect ratios; here each side is capped at `max_size` so that
  the largest padding bucket always fits.

  Args:
    height: input height.
    width: input width.
    short_side: requested short side.
    max_size: limit of the long side (0 = none).

  Returns:
    (out_height, out_width).
  """
  size = short_side
  if max_size:
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * size > max_size:
      size = int(round(max_size * lo / hi))
  if (width <= height and width == size) or (height <= width and
                                             height == size):
    oh, ow = height, width
  elif width < height:
    ow, oh = size, int(size * height / width)
  else:
    oh, ow = size, int(size * width / height)
  if max_size:
    oh, ow = min(oh, max_size), min(ow, max_size)
  return max(oh, 1), max(ow, 1)


def sample_train_geometry(rng: np.random.Generator, height: int, width: int,
                          cfg: Any) -> Geometry:
  """Draws the training augmentation of one image.

  Args:
    rng: numpy generator (seeded per example by the pipeline).
    height: original height.
    width: original width.
    cfg: `config.dataset` (hflip, color_jitter, crop, crop_short_sides,
      crop_min_size, crop_max_size, train_short_sides, max_size).

  Returns:
    The example's `Geometry`.
  """
  flip = bool(cfg.hflip) and rng.random() < 0.5
  j = float(cfg.color_jitter)
  if j > 0:
    jitter = tuple(float(v) for v in rng.uniform(max(0.0, 1 - j), 1 + j, 3))
    order = tuple(int(v) for v in rng.permutation(3))
  else:
    jitter, order = (1.0, 1.0, 1.0), (0, 1, 2)
  short_sides = list(cfg.train_short_sides)
  if cfg.crop and rng.random() < 0.5:
    s1 = int(rng.choice(list(cfg.crop_short_sides)))
    h1, w1 = resized_size(height, width, s1)
    # RandomSizeCrop(min, max): each side uniform in [min, min(side, max)].
    hi_w, hi_h = min(w1, cfg.crop_max_size), min(h1, cfg.crop_max_size)
    cw = int(rng.integers(min(cfg.crop_min_size, hi_w), hi_w + 1))
    ch = int(rng.integers(min(cfg.crop_min_size, hi_h), hi_h + 1))
    top = int(rng.integers(0, h1 - ch + 1))
    left = int(rng.integers(0, w1 - cw + 1))
    s2 = int(rng.choice(short_sides))
    out = resized_size(ch, cw, s2, cfg.max_size)
    return Geometry(flip, jitter, order, True, (h1, w1), (top, left, ch, cw),
                    out)
  s2 = int(rng.choice(short_sides))
  return Geometry(flip, jitter, order, False, (0, 0), (0, 0, 0, 0),
                  resized_size(height, width, s2, cfg.max_size))


def eval_geometry(height: int, width: int, short_side: int,
                  max_size: int) -> Geometry:
  """Evaluation: resize only (short side `short_side`, long <= max_size)."""
  return Geometry(out_size=resized_size(height, width, short_side, max_size))


def transform_boxes(boxes: np.ndarray, height: int, width: int,
                    geom: Geometry) -> Tuple[np.ndarray, np.ndarray]:
  """Applies clipping and a `Geometry` to boxes, as DETR's transforms.

  Args:
    boxes: [N, 4] absolute xyxy in the original (height, width) image.
    height: original height.
    width: original width.
    geom: the example's geometry.

  Returns:
    (boxes [N, 4] float32 absolute xyxy in the output image, valid [N] bool).
    A box is invalid when it has zero width or height after clipping to the
    image or after the crop (DETR removes those boxes).
  """
  b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
  b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
  b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
  valid = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
  if geom.flip:
    b = np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)
  h, w = height, width
  if geom.crop:
    h1, w1 = geom.resize1
    b *= np.array([w1 / w, h1 / h, w1 / w, h1 / h], np.float32)
    top, left, ch, cw = geom.crop_window
    b -= np.array([left, top, left, top], np.float32)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, cw)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, ch)
    valid &= (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    h, w = ch, cw
  oh, ow = geom.out_size
  b *= np.array([ow / w, oh / h, ow / w, oh / h], np.float32)
  return b.astype(np.float32), valid


def xyxy_to_cxcywh(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
  """[N, 4] absolute xyxy -> [N, 4] cxcywh normalised by (width, height)."""
  b = np.asarray(boxes, np.float32)
  cx = (b[:, 0] + b[:, 2]) / 2 / width
  cy = (b[:, 1] + b[:, 3]) / 2 / height
  return np.stack([cx, cy, (b[:, 2] - b[:, 0]) / width,
                   (b[:, 3] - b[:, 1]) / height], 1).astype(np.float32)


def bucket_sides(max_size: int, num_buckets: int,
                 stride: int = 32) -> Tuple[int, ...]:
  """Padded side lengths: `num_buckets` steps up to max_size (stride multiple).

  Each image side (height and width separately) is padded to the smallest of
  these lengths that holds it, so a batch has one of at most num_buckets**2
  shapes (fewer in practice).

  Args:
    max_size: longest image side produced by the transforms.
    num_buckets: number of lengths.
    stride: every length is a multiple of it (the backbone stride).

  Returns:
    Increasing side lengths; the last one is >= max_size.
  """
  top = -(-max_size // stride) * stride
  sides = sorted({max(stride, -(-int(np.ceil(top * (k + 1) / num_buckets))
                                // stride) * stride)
                  for k in range(max(1, num_buckets))})
  return tuple(sides)


def bucket_shape(height: int, width: int,
                 sides: Sequence[int]) -> Tuple[int, int]:
  """(H, W) padded shape: each side rounded up to a bucket length."""
  def up(x):
    for s in sides:
      if x <= s:
        return s
    raise ValueError(f"image side {x} exceeds the largest bucket {sides[-1]}")
  return up(height), up(width)


# ---------------------------------------------------------------- tf pixels


def decode_jpeg(data: tf.Tensor) -> tf.Tensor:
  """JPEG bytes -> [h, w, 3] float32 in [0, 1]."""
  image = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
  return tf.image.convert_image_dtype(image, tf.float32)


def _grayscale(image: tf.Tensor) -> tf.Tensor:
  return tf.tensordot(image, tf.constant(_GRAY, image.dtype), 1)[..., None]


def color_jitter(image: tf.Tensor, factors: tf.Tensor,
                 order: tf.Tensor) -> tf.Tensor:
  """torchvision ColorJitter(b, c, s) with drawn factors and order.

  Args:
    image: [h, w, 3] float in [0, 1].
    factors: [3] brightness, contrast, saturation factors.
    order: [3] int permutation of (0, 1, 2), the order of the three ops.

  Returns:
    [h, w, 3] in [0, 1].
  """
  def brightness(x):
    return tf.clip_by_value(x * factors[0], 0.0, 1.0)

  def contrast(x):
    mean = tf.reduce_mean(_grayscale(x))
    return tf.clip_by_value((x - mean) * factors[1] + mean, 0.0, 1.0)

  def saturation(x):
    gray = _grayscale(x)
    return tf.clip_by_value((x - gray) * factors[2] + gray, 0.0, 1.0)

  for k in range(3):
    image = tf.switch_case(order[k], [lambda x=image: brightness(x),
                                      lambda x=image: contrast(x),
                                      lambda x=image: saturation(x)])
  return image


def _resize(image: tf.Tensor, size: tf.Tensor, method: str) -> tf.Tensor:
  """Resize with an anti-aliasing filter when shrinking (as PIL does).

  For bilinear enlargement the anti-aliasing kernel gives the same result
  (checked to 1e-7) at ~2.5x the cost, so it is skipped there. Bicubic always
  uses it: its cubic kernel (a = -0.5) is PIL's, the plain one is not.
  """
  if method != "bilinear":
    return tf.image.resize(image, size, method=method, antialias=True)
  shrink = tf.reduce_any(tf.cast(size, tf.int32) < tf.shape(image)[:2])
  return tf.cond(
      shrink,
      lambda: tf.image.resize(image, size, method=method, antialias=True),
      lambda: tf.image.resize(image, size, method=method))


def augment_image(image: tf.Tensor, flip: tf.Tensor, jitter: tf.Tensor,
                  jitter_order: tf.Tensor, crop: tf.Tensor, resize1: tf.Tensor,
                  crop_window: tf.Tensor, out_size: tf.Tensor,
                  use_jitter: bool = True) -> tf.Tensor:
  """Applies a `Geometry` (given as tensors) to the pixels.

  Args:
    image: [h, w, 3] float32 in [0, 1].
    flip: bool scalar.
    jitter: [3] float32 factors.
    jitter_order: [3] int32.
    crop: bool scalar.
    resize1: [2] int32 (crop branch first resize).
    crop_window: [4] int32 (top, left, height, width).
    out_size: [2] int32 final (h, w).
    use_jitter: build the jitter ops at all (False when color_jitter == 0).

  Returns:
    [out_h, out_w, 3] float32 in [0, 1].
  """
  image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  if use_jitter:
    image = color_jitter(image, jitter, jitter_order)

  def crop_branch():
    x = _resize(image, resize1, "bilinear")
    x = x[crop_window[0]:crop_window[0] + crop_window[2],
          crop_window[1]:crop_window[1] + crop_window[3]]
    return _resize(x, out_size, "bilinear")

  image = tf.cond(crop, crop_branch,
                  lambda: _resize(image, out_size, "bilinear"))
  return tf.clip_by_value(image, 0.0, 1.0)


def clip_view(image: tf.Tensor, size: int) -> tf.Tensor:
  """CLIP branch: bicubic resize (short side `size`), centre crop, normalise.

  Args:
    image: [h, w, 3] float32 in [0, 1] (the augmented, unpadded image).
    size: CLIP input resolution S.

  Returns:
    [S, S, 3] float32, CLIP-normalised.
  """
  shape = tf.shape(image)
  h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
  short = tf.minimum(h, w)
  # torchvision Resize(int): long side = int(size * long / short).
  nh = tf.cast(tf.math.floor(size * h / short), tf.int32)
  nw = tf.cast(tf.math.floor(size * w / short), tf.int32)
  nh, nw = tf.maximum(nh, size), tf.maximum(nw, size)
  x = tf.clip_by_value(_resize(image, tf.stack([nh, nw]), "bicubic"), 0., 1.)
  top = tf.cast(tf.math.round((nh - size) / 2), tf.int32)
  left = tf.cast(tf.math.round((nw - size) / 2), tf.int32)
  x = x[top:top + size, left:left + size]
  x = (x - tf.constant(CLIP_MEAN)) / tf.constant(CLIP_STD)
  return tf.ensure_shape(x, [size, size, 3])


def normalize_and_pad(image: tf.Tensor, pad_size: tf.Tensor
                      ) -> Tuple[tf.Tensor, tf.Tensor]:
  """ImageNet normalisation and zero padding at the bottom/right.

  Args:
    image: [h, w, 3] float32 in [0, 1].
    pad_size: [2] int32 (H, W) with H >= h, W >= w.

  Returns:
    (image [H, W, 3] float32, zero in padding; mask [H, W] bool, True on the
    valid pixels).
  """
  x = (image - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)
  shape = tf.shape(image)
  pads = [[0, pad_size[0] - shape[0]], [0, pad_size[1] - shape[1]]]
  x = tf.pad(x, pads + [[0, 0]])
  mask = tf.pad(tf.ones(shape[:2], tf.bool), pads)
  return x, mask
