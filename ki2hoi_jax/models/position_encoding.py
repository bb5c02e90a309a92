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
  if dim % 2:
    raise ValueError(f"dim must be even, got {dim}.")
  num_feats = dim // 2
  not_mask = mask.astype(jnp.float32)
  y_embed = jnp.cumsum(not_mask, axis=1)  # [B, H, W]
  x_embed = jnp.cumsum(not_mask, axis=2)
  y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
  x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
  # Padded columns/rows repeat the last valid cumsum; the normaliser uses the
  # last row/column, which equals the valid extent for a top-left rectangle.
  i = jnp.arange(num_feats, dtype=jnp.float32)
  dim_t = temperature ** (2 * (i // 2) / num_feats)  # [F]
  pos_x = x_embed[..., None] / dim_t  # [B, H, W, F]
  pos_y = y_embed[..., None] / dim_t

  def interleave(p):
    # DETR: stack(sin(p[..., 0::2]), cos(p[..., 1::2])).flatten().
    s = jnp.sin(p[..., 0::2])
    c = jnp.cos(p[..., 1::2])
    return jnp.stack([s, c], axis=-1).reshape(p.shape[:-1] + (-1,))

  pos = jnp.concatenate([interleave(pos_y), interleave(pos_x)], axis=-1)
  return pos.astype(dtype)
