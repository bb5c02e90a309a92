"""2-D sine position encoding of the valid (unpadded) region, DETR-style.

Follows `PositionEmbeddingSine(normalize=True)` of DETR
(facebookresearch/detr, models/position_encoding.py): the row and column
coordinates are cumulative sums of the validity mask, normalised by the valid
extent to [0, 2*pi], so a pixel's encoding depends only on where it sits in the
valid region, never on how much padding follows it.
"""

import math

import jax.numpy as jnp


def downsample_mask(mask: jnp.ndarray, stride: int) -> jnp.ndarray:
  """Validity mask at a feature stride by strided subsampling.

  `mask[:, ::stride, ::stride]` keeps ceil(H / stride) rows, the output size of
  a stack of stride-2 convolutions with padding 1 (torchvision ResNet), and
  equals DETR's nearest-neighbour interpolation when H is a multiple of
  `stride`.

  Args:
    mask: [B, H, W] bool, True on valid pixels.
    stride: power-of-two feature stride.

  Returns:
    [B, ceil(H / stride), ceil(W / stride)] bool.
  """
  return mask[:, ::stride, ::stride]


def sine_position_encoding(mask: jnp.ndarray, dim: int,
                           temperature: float = 10000.0,
                           scale: float = 2 * math.pi,
                           eps: float = 1e-6,
                           dtype=jnp.float32) -> jnp.ndarray:
  """DETR's normalised 2-D sine position encoding.

  Args:
    mask: [B, H, W] bool, True on valid positions (the valid region is assumed
      to be a top-left rectangle, as produced by the input pipeline).
    dim: output channels (even); the first half encodes y, the second x.
    temperature: frequency base.
    scale: range of the normalised coordinates.
    eps: guards the division for an empty mask.
    dtype: output dtype.

  Returns:
    [B, H, W, dim] encoding; values at padded positions are meaningless but
    finite (they are always masked out downstream).
  """
  not_mask = mask.astype(jnp.float32)
  y_embed = jnp.cumsum(not_mask, axis=1)  # [B, H, W]
  x_embed = jnp.cumsum(not_mask, axis=2)
  # Padded columns/rows repeat the last valid cumsum; the normaliser uses the
  # last row/column, which equals the valid extent for a top-left rectangle.
  y_embed = y_embed / (y_embed[:, -1:, :] + eps)
  x_embed = x_embed / (x_embed[:, :, -1:] + eps)
  return sine_point_encoding(jnp.stack([x_embed, y_embed], axis=-1), dim,
                             temperature, scale, dtype)


def cell_centres(mask: jnp.ndarray) -> jnp.ndarray:
  """Normalised (x, y) centres of the cells of a feature map.

  Args:
    mask: [B, H, W] bool, True on valid cells (a top-left rectangle).

  Returns:
    [B, H, W, 2] float32: ((j + 0.5) / W_valid, (i + 0.5) / H_valid), in
    [0, 1] on valid cells, the coordinates of the boxes the model predicts.
  """
  vh = jnp.maximum(jnp.sum(jnp.any(mask, axis=2), axis=1), 1)  # [B]
  vw = jnp.maximum(jnp.sum(jnp.any(mask, axis=1), axis=1), 1)
  h, w = mask.shape[1:]
  y = (jnp.arange(h, dtype=jnp.float32) + 0.5)[None, :] / vh[:, None]
  x = (jnp.arange(w, dtype=jnp.float32) + 0.5)[None, :] / vw[:, None]
  return jnp.stack(jnp.broadcast_arrays(x[:, None, :], y[:, :, None]),
                   axis=-1)


def sine_point_encoding(points: jnp.ndarray, dim: int,
                        temperature: float = 10000.0,
                        scale: float = 2 * math.pi,
                        dtype=jnp.float32) -> jnp.ndarray:
  """Sine encoding of normalised points, in the layout of the map encoding.

  A point (x, y) in [0, 1]^2 gets the channels that `sine_position_encoding`
  gives the feature cell whose normalised cumulative coordinate is (x, y), so
  query anchors and memory positions live in one space (DAB-DETR's
  positional queries).

  Args:
    points: [..., 2] (x, y) in [0, 1] of the valid region.
    dim: output channels (even); the first half encodes y, the second x.
    temperature: frequency base.
    scale: range of the normalised coordinates.
    dtype: output dtype.

  Returns:
    [..., dim].
  """
  if dim % 2:
    raise ValueError(f"dim must be even, got {dim}.")
  num_feats = dim // 2
  i = jnp.arange(num_feats, dtype=jnp.float32)
  dim_t = temperature ** (2 * (i // 2) / num_feats)
  p = points.astype(jnp.float32) * scale
  pos_x = p[..., 0:1] / dim_t
  pos_y = p[..., 1:2] / dim_t

  def interleave(q):
    # DETR: stack(sin(q[..., 0::2]), cos(q[..., 1::2])).flatten().
    return jnp.stack([jnp.sin(q[..., 0::2]), jnp.cos(q[..., 1::2])],
                     axis=-1).reshape(q.shape[:-1] + (-1,))

  return jnp.concatenate([interleave(pos_y), interleave(pos_x)],
                         axis=-1).astype(dtype)
