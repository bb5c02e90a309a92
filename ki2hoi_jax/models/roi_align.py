"""Bilinear ROI-Align in JAX (differentiable in features and boxes).

Semantics follow torchvision's `roi_align(aligned=True)` (Mask R-CNN's
ROIAlign): box coordinates are continuous feature-map coordinates where cell
i covers [i, i + 1), so its centre is at i + 0.5; each output bin averages a
regular grid of bilinear samples placed inside the bin:

* `sampling_ratio > 0`: `sampling_ratio` samples per bin along each axis;
* `sampling_ratio <= 0` (adaptive, torchvision's default): ceil(box_h /
  out_h) samples per bin along y and ceil(box_w / out_w) along x, per box, so
  a bin reads every feature cell it covers instead of aliasing them.

Under jit the adaptive count is data dependent, so the grid has a static
maximum ceil(size / bins) per axis (the count of a box as long as the map)
and the samples past a box's own count get weight 0; the average divides by
that count, as torchvision does. This is exact for every box no longer than
the feature map along each axis (the whole-image ROI of the Ho-Pair Encoder
is at most the map); a longer box gets the maximum count.

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


def _samples_per_bin(length: jnp.ndarray, num_bins: int, sampling_ratio: int,
                     size: int) -> Tuple[jnp.ndarray, int]:
  """Samples per bin along one axis: (count [...], static maximum).

  Args:
    length: [...] box length.
    num_bins: output bins along this axis.
    sampling_ratio: > 0: fixed count; <= 0: adaptive ceil(length / num_bins).
    size: feature-map size along this axis.

  Returns:
    (count [...] float, the grid size S >= every count).
  """
  if sampling_ratio > 0:
    return jnp.full(length.shape, float(sampling_ratio)), sampling_ratio
  max_samples = max(-(-size // num_bins), 1)
  count = jnp.ceil(length / num_bins)
  # XLA's division need not round correctly (21 / 7 can give 3.0000002):
  # make it the smallest n with n * num_bins >= length (exact products).
  count = jnp.where((count - 1.0) * num_bins >= length, count - 1.0, count)
  count = jnp.where(count * num_bins < length, count + 1.0, count)
  return jnp.clip(count, 0.0, float(max_samples)), max_samples


def _axis_weights(start: jnp.ndarray, length: jnp.ndarray, num_bins: int,
                  sampling_ratio: int, size: int,
                  valid: jnp.ndarray) -> jnp.ndarray:
  """Averaged bilinear weights along one axis.

  Args:
    start: [...] box start (already shifted by -0.5 when aligned).
    length: [...] box length.
    num_bins: output bins along this axis.
    sampling_ratio: samples per bin along this axis (<= 0: adaptive).
    size: feature-map size along this axis.
    valid: [...] number of valid cells along this axis (>= 1).

  Returns:
    [..., num_bins, size] weights; each row sums to 1 (0 for an empty box
    with adaptive sampling, as in torchvision).
  """
  count, num_samples = _samples_per_bin(length, num_bins, sampling_ratio,
                                        size)
  safe = jnp.maximum(count, 1.0)[..., None, None]  # [..., 1, 1]
  bin_size = length / num_bins  # [...]
  samples = jnp.arange(num_samples)
  offs = jnp.arange(num_bins)[:, None] + (samples[None, :] + 0.5) / safe
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
  used = (samples < count[..., None, None]).astype(w.dtype)  # [..., 1, s]
  return (w * used[..., None]).sum(axis=-2) / safe


def roi_align(features: jnp.ndarray, boxes: jnp.ndarray,
              output_size: Tuple[int, int], sampling_ratio: int = 0,
              aligned: bool = True,
              valid_size: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Resamples box regions of a feature map to a fixed grid.

  Args:
    features: [B, H, W, C] feature map.
    boxes: [B, R, 4] boxes (x1, y1, x2, y2) in feature-cell units.
    output_size: (out_h, out_w) bins.
    sampling_ratio: samples per bin along each axis; <= 0 (default):
      adaptive, ceil(box_h / out_h) along y and ceil(box_w / out_w) along x
      per box (torchvision's `sampling_ratio=-1`).
    aligned: shift boxes by -0.5 cell (pixel-centre convention, torchvision
      `aligned=True`).
    valid_size: [B, 2] (rows, cols) of valid cells per image; samples are
      clamped to this region. Defaults to the full map.

  Returns:
    [B, R, out_h, out_w, C] in the dtype of `features`.
  """
  b, h, w, _ = features.shape
  out_h, out_w = output_size
  boxes = boxes.astype(jnp.float32)
  if valid_size is None:
    valid_size = jnp.tile(jnp.array([[h, w]], jnp.int32), (b, 1))
  valid_size = jnp.maximum(valid_size.astype(jnp.int32), 1)
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = [boxes[..., i] - offset for i in range(4)]
  bw, bh = x2 - x1, y2 - y1  # As torchvision: end - start after the shift.
  if not aligned:  # torchvision forces a minimum size of one cell.
    bw, bh = jnp.maximum(bw, 1.0), jnp.maximum(bh, 1.0)
  vh = jnp.broadcast_to(valid_size[:, None, 0], bh.shape)
  vw = jnp.broadcast_to(valid_size[:, None, 1], bw.shape)
  wy = _axis_weights(y1, bh, out_h, sampling_ratio, h, vh)
  wx = _axis_weights(x1, bw, out_w, sampling_ratio, w, vw)
  wy = wy.astype(features.dtype)  # [B, R, out_h, H]
  wx = wx.astype(features.dtype)  # [B, R, out_w, W]
  return jnp.einsum("brih,brjw,bhwc->brijc", wy, wx, features)
