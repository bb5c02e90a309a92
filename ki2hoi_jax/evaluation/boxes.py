"""Box helpers shared by post-processing and the HICO-DET / V-COCO evaluators.

All functions are NumPy, float64 unless stated, and use absolute pixel
`[x1, y1, x2, y2]` boxes except `cxcywh_to_xyxy`.

IoU follows the "+1 pixel" convention of the GEN-VLKT/HOICLIP python evaluator
and the official HICO-DET MATLAB code (docs: docs/datasets.md section 6):

  area         = (x2 - x1 + 1) * (y2 - y1 + 1)
  intersection = (min(x2) - max(x1) + 1) * (min(y2) - max(y1) + 1)
  IoU          = intersection / (area_a + area_b - intersection)

except that the IoU is 0 when `min(x2) - max(x1) <= 0` or
`min(y2) - max(y1) <= 0`: boxes that only touch (or a zero-width box, even
against itself) do not overlap. The arithmetic is done in the same order as
the reference python evaluator, so results are bit-identical to it.
"""

import numpy as np


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
  """(cx, cy, w, h) -> (x1, y1, x2, y2), same dtype and leading shape.

  Args:
    boxes: [..., 4] centre/size boxes.

  Returns:
    [..., 4] corner boxes.
  """
  boxes = np.asarray(boxes)
  cx, cy, w, h = np.moveaxis(boxes, -1, 0)
  return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h],
                  axis=-1)


def iou_plus1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Element-wise (+1 convention) IoU of broadcastable box arrays.

  Args:
    a: [..., 4] boxes `[x1, y1, x2, y2]` (pixels).
    b: [..., 4] boxes, broadcastable against `a`.

  Returns:
    [...] float64 IoU in [0, 1]; 0 where the boxes do not strictly overlap.
  """
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  ax1, ay1, ax2, ay2 = a[..., 0], a[..., 1], a[..., 2], a[..., 3]
  bx1, by1, bx2, by2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
  sum_area = ((ax2 - ax1 + 1) * (ay2 - ay1 + 1) +
              (bx2 - bx1 + 1) * (by2 - by1 + 1))
  left = np.maximum(ay1, by1)  # Names as in the reference (y first).
  right = np.minimum(ay2, by2)
  top = np.maximum(ax1, bx1)
  bottom = np.minimum(ax2, bx2)
  overlap = (left < right) & (top < bottom)
  inter = (right - left + 1) * (bottom - top + 1)
  # Where the boxes overlap, both have positive extent, so the union > 0.
  out = np.zeros(np.broadcast(sum_area, inter).shape, np.float64)
  np.divide(inter, sum_area - inter, out=out, where=overlap)
  return out


def pairwise_iou_plus1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(+1 convention) IoU of every box of `a` with every box of `b`.

  Args:
    a: [N, 4] boxes `[x1, y1, x2, y2]`.
    b: [M, 4] boxes.

  Returns:
    [N, M] float64 IoU matrix.
  """
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  return iou_plus1(a[:, None, :], b[None, :, :])
