"""Bilinear ROI-Align in JAX (differentiable in features and boxes).

Semantics follow torchvision's `roi_align(aligned=True)` (Mask R-CNN's
ROIAlign): box coordinates are continuous feature-map coordinates where cell
i covers [i, i + 1), so its centre is at i + 0.5; each output bin averages
`sampling_ratio`^2 bilinear samples placed regularly inside the bin.

Differences from torchvision, chosen for padded batches:
* sample coordinates are clamped to the *valid* extent of each image
  (`valid_size`), so padded feature cells never contribute;
* points outside the map are clamped to the border (replicate) instead of
  torchvision's zeroing of points more than one cell outside.

Bilinear sampling on a regular grid is separable, so the op is written as two
small interpolation matrices and one einsum (no gathers): cheap for the
single whole-image ROI the Ho-Pair Encoder uses, and exact.
"""

from typing import Optional, Tuple

import jax.numpy as jnp


def _axis_weights(start: jnp.ndarray, length: jnp.ndarray, num_bins: int,
                  sampling_ratio: int, size: int,
                  valid: jnp.ndarray) -> jnp.ndarray:
  """Averaged bilinear weights along one axis.

  Args:
    start: [...] box start (already shifted by -0.5 when aligned).
    length: [...] box length.
    num_bins: output bins along this axis.
    sampling_ratio: samples per bin along this axis.
    size: feature-map size along this axis.
    valid: [...] number of valid cells along this axis (>= 1).

  Returns:
    [..., num_bins, size] weights; each row sums to 1.
  """
  bin_size = length / num_bins  # [...]
  offs = (jnp.arange(num_bins)[:, None]
          + (jnp.arange(sampling_ratio)[None, :] + 0.5) / sampling_ratio)
  coords = start[..., None, None] + offs * bin_size[..., None, None]
  hi = (valid - 1).astype(coords.dtype)[..., None, None]
  coords = jnp.clip(coords, 0.0, hi)  # [..., bins, samples]
  low = jnp.floor(coords)
  frac = coords - low
  low_i = low.astype(jnp.int32)
  high_i = jnp.minimum(low_i + 1, hi.astype(jnp.int32))
  cells = jnp.arange(size)
  w = ((1.0 - frac)[..., None] * (cells == low_i[..., None])
       + frac[..., None] * (cells == high_i[..., None]))  # [..., bins, s, size]
  return w.mean(axis=-2)


def roi_align(features: jnp.ndarray, boxes: jnp.ndarray,
              output_size: Tuple[int, int], sampling_ratio: int = 2,
              aligned: bool = True,
              valid_size: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Resamples box regions of a feature map to a fixed grid.

  Args:
    features: [B, H, W, C] feature map.
    boxes: [B, R, 4] boxes (x1, y1, x2, y2) in feature-cell units.
    output_size: (out_h, out_w) bins.
    sampling_ratio: samples per bin along each axis (> 0).
    aligned: shift boxes by -0.5 cell (pixel-centre convention, torchvision
      `aligned=True`).
    valid_size: [B, 2] (rows, cols) of valid cells per image; samples are
      clamped to this region. Defaults to the full map.

  Returns:
    [B, R, out_h, out_w, C] in the dtype of `features`.
  """
  if sampling_ratio <= 0:
    raise ValueError("sampling_ratio must be positive (adaptive is not "
                     "supported with static shapes).")
  b, h, w, _ = features.shape
  out_h, out_w = output_size
  boxes = boxes.astype(jnp.float32)
  if valid_size is None:
    valid_size = jnp.tile(jnp.array([[h, w]], jnp.int32), (b, 1))
  valid_size = jnp.maximum(valid_size.astype(jnp.int32), 1)
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = [boxes[..., i] for i in range(4)]
  bw, bh = x2 - x1, y2 - y1
  if not aligned:  # torchvision forces a minimum size of one cell.
    bw, bh = jnp.maximum(bw, 1.0), jnp.maximum(bh, 1.0)
  vh = jnp.broadcast_to(valid_size[:, None, 0], bh.shape)
  vw = jnp.broadcast_to(valid_size[:, None, 1], bw.shape)
  wy = _axis_weights(y1 - offset, bh, out_h, sampling_ratio, h, vh)
  wx = _axis_weights(x1 - offset, bw, out_w, sampling_ratio, w, vw)
  wy = wy.astype(features.dtype)  # [B, R, out_h, H]
  wx = wx.astype(features.dtype)  # [B, R, out_w, W]
  return jnp.einsum("brih,brjw,bhwc->brijc", wy, wx, features)
