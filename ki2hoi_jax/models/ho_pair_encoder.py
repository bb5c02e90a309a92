"""Ho-Pair Encoder: local encoders + global context formers (eqs. 1-3).

Replaces DETR's transformer encoder (docs/architecture.md component 2). Each layer is

* local encoder (eq. 1):  x + PW2(GELU(PW1(Norm(DWConv3x3(x)))));
* global context former: a second local block (eq. 2), then SwiftFormer's
  efficient additive attention (linear in the number of tokens) and an MLP
  block, each with a residual (eq. 3):
    q = W_q x, k = W_k x, alpha = softmax_tokens((q . w_a) / sqrt(d)),
    g = sum_i alpha_i q_i, attn(x) = W_out(W_p(g * k) + q),
    x <- x + attn(x);  x <- x + MLP(Norm(x)).

Padding: inputs of the depth-wise convs are multiplied by the mask (a conv at
the border of the valid region then sees zeros, as it would on an unpadded
map), the norms compute statistics over valid positions only, and the
additive-attention softmax ignores padded tokens, so the valid-region output
does not depend on what the padded positions hold.

Norm (`norm`): 'batch' is a padding-aware batch norm whose statistics are
synced over `axis_name` (sum and count psummed across devices; running
averages in the `batch_stats` collection, momentum 0.9 = PyTorch 0.1);
'masked' is a per-sample norm over the valid positions and all channels
(a masked GroupNorm with one group), which needs no cross-device sync and no
running statistics. A final LayerNorm (`norm`) closes the encoder.

Reference for the attention: Shaker et al., SwiftFormer (ICCV'23),
`EfficientAdditiveAttnetion` in Amshaker/SwiftFormer `models/swiftformer.py`
(which L2-normalises q and k and normalises alpha; we use the softmax written
in docs/architecture.md).
"""

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ki2hoi_jax.models import transformer


def _masked_moments(x, mask, axes, axis_name=None):
  """Mean and biased variance of x over `axes` at valid positions (float32)."""
  x = x.astype(jnp.float32)
  m = mask[..., None].astype(jnp.float32)
  m = jnp.broadcast_to(m, x.shape[:-1] + (1,))
  s = jnp.sum(x * m, axis=axes)
  n = jnp.sum(jnp.broadcast_to(m, x.shape), axis=axes)
  if axis_name is not None:
    s, n = jax.lax.psum((s, n), axis_name)
  mean = s / jnp.maximum(n, 1.0)
  keep = tuple(slice(None) if i not in axes else None
               for i in range(x.ndim))
  centred = (x - mean[keep]) * m
  ss = jnp.sum(centred * centred, axis=axes)
  if axis_name is not None:
    ss = jax.lax.psum(ss, axis_name)
  return mean, ss / jnp.maximum(n, 1.0), keep


class MaskedBatchNorm(nn.Module):
  """Batch norm over valid positions, synced across devices.

  Attributes:
    momentum: running-average decay (0.9 = PyTorch momentum 0.1).
    epsilon: variance epsilon.
    axis_name: pmap/shard_map axis to psum statistics over (None: local).
    dtype: compute dtype.
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, use_running_average: bool):
    """x [B, H, W, C], mask [B, H, W] -> [B, H, W, C]."""
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,),
                            jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      initializing = self.is_initializing()
      axis_name = None if initializing else self.axis_name
      mean, var, _ = _masked_moments(x, mask, (0, 1, 2), axis_name)
      if not initializing:
        ra_mean.value = (self.momentum * ra_mean.value
                         + (1 - self.momentum) * mean)
        ra_var.value = (self.momentum * ra_var.value
                        + (1 - self.momentum) * var)
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    return ((x.astype(jnp.float32) - mean) * mul + bias).astype(self.dtype)


class MaskedNorm(nn.Module):
  """Per-sample norm over valid positions and channels (masked GroupNorm(1)).

  Attributes:
    epsilon: variance epsilon.
    dtype: compute dtype.
  """
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, use_running_average: bool = False):
    """x [B, H, W, C], mask [B, H, W] -> [B, H, W, C]."""
    del use_running_average  # Same computation in training and inference.
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    mean, var, keep = _masked_moments(x, mask, (1, 2, 3))
    xn = (x.astype(jnp.float32) - mean[keep]) * jax.lax.rsqrt(
        var[keep] + self.epsilon)
    return (xn * scale + bias).astype(self.dtype)


def _make_norm(kind: str, axis_name, dtype, name):
  if kind == "batch":
    return MaskedBatchNorm(axis_name=axis_name, dtype=dtype, name=name)
  if kind == "masked":
    return MaskedNorm(dtype=dtype, name=name)
  raise ValueError(f"Unknown encoder norm {kind!r}: 'batch' | 'masked'.")


class LocalBlock(nn.Module):
  """x + PW2(GELU(PW1(Norm(DWConv3x3(x))))) (eqs. 1 and 2).

  Attributes:
    mlp_ratio: hidden width of the point-wise MLP, in multiples of d.
    norm: 'batch' | 'masked'.
    axis_name: device axis of the synced batch norm.
    dropout: dropout on the residual branch.
    dtype: compute dtype.
  """
  mlp_ratio: int = 4
  norm: str = "batch"
  axis_name: Optional[str] = None
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool = False):
    """x [B, H, W, D], mask [B, H, W] -> [B, H, W, D]."""
    d = x.shape[-1]
    y = x * mask[..., None].astype(x.dtype)
    y = nn.Conv(d, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=d,
                dtype=self.dtype, name="dwconv")(y)
    y = _make_norm(self.norm, self.axis_name, self.dtype, "norm")(
        y, mask, use_running_average=not train)
    y = nn.Dense(self.mlp_ratio * d, dtype=self.dtype, name="pwconv1")(y)
    y = nn.gelu(y, approximate=False)
    y = nn.Dense(d, dtype=self.dtype, name="pwconv2")(y)
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return x + y


class EfficientAdditiveAttention(nn.Module):
  """SwiftFormer's additive attention: O(N d) instead of O(N^2 d).

  Attributes:
    dtype: compute dtype.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None):
    """x [B, N, D], mask [B, N] (True valid) -> [B, N, D]."""
    d = x.shape[-1]
    q = nn.Dense(d, dtype=self.dtype, name="to_query")(x)
    k = nn.Dense(d, dtype=self.dtype, name="to_key")(x)
    w_a = self.param("w_g", nn.initializers.normal(1.0), (d,), jnp.float32)
    logits = jnp.einsum("bnd,d->bn", q.astype(jnp.float32), w_a) / math.sqrt(d)
    if mask is not None:
      logits = jnp.where(mask, logits, -1e9)
    alpha = jax.nn.softmax(logits, axis=-1)  # [B, N]
    g = jnp.einsum("bn,bnd->bd", alpha.astype(self.dtype), q)  # [B, D]
    out = nn.Dense(d, dtype=self.dtype, name="proj")(g[:, None, :] * k) + q
    return nn.Dense(d, dtype=self.dtype, name="final")(out)


class EncoderLayer(nn.Module):
  """Local encoder + global context former.

  Attributes:
    mlp_ratio: hidden width multiple of the point-wise MLPs.
    norm: 'batch' | 'masked'.
    axis_name: device axis of the synced batch norm.
    dropout: dropout on residual branches.
    dtype: compute dtype.
  """
  mlp_ratio: int = 4
  norm: str = "batch"
  axis_name: Optional[str] = None
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool = False):
    """x [B, H, W, D], mask [B, H, W] -> [B, H, W, D]."""
    kw = dict(mlp_ratio=self.mlp_ratio, norm=self.norm,
              axis_name=self.axis_name, dropout=self.dropout,
              dtype=self.dtype)
    x = LocalBlock(**kw, name="local_encoder")(x, mask, train)
    x = LocalBlock(**kw, name="global_local")(x, mask, train)
    b, h, w, d = x.shape
    tokens = x.reshape(b, h * w, d)
    flat_mask = mask.reshape(b, h * w)
    drop = functools.partial(transformer.dropout, rate=self.dropout,
                             deterministic=not train)
    tokens = tokens + drop(EfficientAdditiveAttention(
        self.dtype, name="attn")(tokens, flat_mask))
    x = tokens.reshape(b, h, w, d)
    y = _make_norm(self.norm, self.axis_name, self.dtype, "mlp_norm")(
        x, mask, use_running_average=not train)
    y = nn.Dense(self.mlp_ratio * d, dtype=self.dtype, name="fc1")(y)
    y = nn.Dense(d, dtype=self.dtype, name="fc2")(nn.gelu(y,
                                                          approximate=False))
    return x + drop(y)


class HoPairEncoder(nn.Module):
  """Stack of Ho-Pair Encoder layers over a 2-D feature map.

  Attributes:
    num_layers: encoder layers.
    mlp_ratio: hidden width multiple of the point-wise MLPs.
    norm: 'batch' (synced, padding-aware) | 'masked' (per-sample).
    axis_name: device axis of the synced batch norm (None: no sync).
    dropout: dropout on residual branches.
    dtype: compute dtype.
  """
  num_layers: int = 3
  mlp_ratio: int = 4
  norm: str = "batch"
  axis_name: Optional[str] = None
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, train: bool = False):
    """Encodes a feature map.

    Args:
      x: [B, H, W, D] projected backbone features V_F.
      mask: [B, H, W] bool, True on valid positions.
      train: batch statistics and dropout.

    Returns:
      [B, H, W, D] memory V_G (padded positions hold unspecified values).
    """
    x = x.astype(self.dtype)
    for i in range(self.num_layers):
      x = EncoderLayer(self.mlp_ratio, self.norm, self.axis_name,
                       self.dropout, self.dtype, name=f"layers_{i}")(
                           x, mask, train)
    return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(x)
