"""Box utilities in jax.numpy: format conversion, IoU and generalised IoU.

Boxes inside the model and the losses are normalised `cxcywh` (DETR convention,
docs/contracts.md). GIoU follows Rezatofighi et al., CVPR 2019, as in DETR's
`util/box_ops.py` (facebookresearch/detr@29901c5): both boxes are turned into
corners, and degenerate boxes (zero area) get a small epsilon so that the
function stays finite for all-zero padding boxes (their IoU and GIoU are 0).
"""

import jax.numpy as jnp

_EPS = 1e-9  # Lower bound of denominators (all-zero padding boxes).


def cxcywh_to_xyxy(boxes: jnp.ndarray) -> jnp.ndarray:
  """[..., 4] (cx, cy, w, h) -> [..., 4] (x1, y1, x2, y2)."""
  cx, cy, w, h = jnp.split(boxes, 4, axis=-1)
  return jnp.concatenate(
      [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_cxcywh(boxes: jnp.ndarray) -> jnp.ndarray:
  """[..., 4] (x1, y1, x2, y2) -> [..., 4] (cx, cy, w, h)."""
  x1, y1, x2, y2 = jnp.split(boxes, 4, axis=-1)
  return jnp.concatenate(
      [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)


def box_area(boxes: jnp.ndarray) -> jnp.ndarray:
  """[..., 4] xyxy -> [...] area (negative widths count as 0)."""
  w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  return w * h


def _iou_and_union(a: jnp.ndarray, b: jnp.ndarray):
  """IoU and union of broadcastable xyxy boxes [..., 4] -> ([...], [...])."""
  lt = jnp.maximum(a[..., :2], b[..., :2])
  rb = jnp.minimum(a[..., 2:], b[..., 2:])
  wh = jnp.maximum(rb - lt, 0.0)
  inter = wh[..., 0] * wh[..., 1]
  union = box_area(a) + box_area(b) - inter
  return inter / jnp.maximum(union, _EPS), union


def _giou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  iou, union = _iou_and_union(a, b)
  lt = jnp.minimum(a[..., :2], b[..., :2])
  rb = jnp.maximum(a[..., 2:], b[..., 2:])
  wh = jnp.maximum(rb - lt, 0.0)
  enclosing = wh[..., 0] * wh[..., 1]
  return iou - (enclosing - union) / jnp.maximum(enclosing, _EPS)


def elementwise_giou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """GIoU of corresponding boxes.

  Args:
    a: [..., 4] xyxy boxes.
    b: [..., 4] xyxy boxes (same shape as `a`, or broadcastable).

  Returns:
    [...] generalised IoU in [-1, 1].
  """
  return _giou(a, b)


def pairwise_giou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """GIoU between every box of `a` and every box of `b`.

  Args:
    a: [..., N, 4] xyxy boxes.
    b: [..., M, 4] xyxy boxes.

  Returns:
    [..., N, M] generalised IoU.
  """
  return _giou(a[..., :, None, :], b[..., None, :, :])


def pairwise_iou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """IoU between every box of `a` [..., N, 4] and `b` [..., M, 4] (xyxy)."""
  return _iou_and_union(a[..., :, None, :], b[..., None, :, :])[0]


def pairwise_l1(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """L1 distance of every pair: [..., N, D] x [..., M, D] -> [..., N, M]."""
  return jnp.sum(jnp.abs(a[..., :, None, :] - b[..., None, :, :]), axis=-1)
