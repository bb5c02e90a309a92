"""Attention helpers and the post-norm DETR decoder and encoder layers.

Reference: facebookresearch/detr `models/transformer.py`
(`TransformerDecoderLayer.forward_post`, `TransformerEncoderLayer.
forward_post`). Names: attention modules have
`q_proj`/`k_proj`/`v_proj`/`out_proj` Dense layers (d -> d); a PyTorch
`nn.MultiheadAttention.in_proj_weight` [3d, d] splits into the three kernels
(each transposed). Key masks are True on valid keys.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_XAVIER = nn.initializers.xavier_uniform()


def layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
  """PyTorch-style LayerNorm (eps 1e-5)."""
  return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name)


def dropout(x: jnp.ndarray, rate: float, deterministic: bool) -> jnp.ndarray:
  """Inline dropout (an unnamed Dropout submodule, which has no params)."""
  return nn.Dropout(rate)(x, deterministic=deterministic)


def attention_weights(q: jnp.ndarray, k: jnp.ndarray,
                      key_mask: Optional[jnp.ndarray] = None,
                      bias: Optional[jnp.ndarray] = None) -> jnp.ndarray:
  """Softmax attention weights, computed in float32.

  Args:
    q: [B, Nq, H, Dh] queries.
    k: [B, Nk, H, Dh] keys.
    key_mask: [B, Nk] bool, True on valid keys (None: all valid).
    bias: optional [B, H, Nq, Nk] float32 added to the logits.

  Returns:
    [B, H, Nq, Nk] float32 weights; each row sums to 1 over valid keys.
  """
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                      preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, -1e9)
  return jax.nn.softmax(logits, axis=-1)


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention (PyTorch `nn.MultiheadAttention`).

  Attributes:
    num_heads: heads.
    dropout: dropout on the attention weights.
    dtype: compute dtype.
  """
  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, query, key, value, key_mask=None,
               deterministic: bool = True, bias=None):
    """Attends.

    Args:
      query: [B, Nq, D].
      key: [B, Nk, Dk].
      value: [B, Nk, Dk].
      key_mask: [B, Nk] bool, True on valid keys (None: all valid).
      deterministic: disables dropout.
      bias: optional [B, H, Nq, Nk] attention-logit bias.

    Returns:
      [B, Nq, D].
    """
    d = query.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"d_model {d} not divisible by {self.num_heads} heads.")
    dh = d // self.num_heads

    def dense(name):
      return nn.Dense(d, dtype=self.dtype, name=name, kernel_init=_XAVIER)

    b, nq, nk = query.shape[0], query.shape[1], key.shape[1]
    q = dense("q_proj")(query).reshape(b, nq, self.num_heads, dh)
    k = dense("k_proj")(key).reshape(b, nk, self.num_heads, dh)
    v = dense("v_proj")(value).reshape(b, nk, self.num_heads, dh)
    w = attention_weights(q, k, key_mask, bias)
    w = nn.Dropout(self.dropout)(w, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", w.astype(self.dtype), v)
    return dense("out_proj")(out.reshape(b, nq, d))


class MLP(nn.Module):
  """DETR's box-head MLP: ReLU between layers, none after the last.

  Attributes:
    features: widths of every layer (the last is the output width).
    dtype: compute dtype.
  """
  features: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i, f in enumerate(self.features):
      x = nn.Dense(f, dtype=self.dtype, name=f"layers_{i}")(x)
      if i < len(self.features) - 1:
        x = nn.relu(x)
    return x


def with_pos(x: jnp.ndarray, pos: Optional[jnp.ndarray]) -> jnp.ndarray:
  return x if pos is None else x + pos.astype(x.dtype)


class DecoderLayer(nn.Module):
  """Post-norm DETR decoder layer: self-attn, cross-attn, FFN.

  Submodule names are DETR's (`self_attn`, `multihead_attn`, `linear1`,
  `linear2`, `norm1..3`), so `transformer.decoder.layers.{i}.*` of a DETR
  checkpoint maps onto a stack of these.

  Attributes:
    num_heads: attention heads.
    dim_feedforward: FFN hidden width.
    dropout: dropout rate.
    dtype: compute dtype.
  """
  num_heads: int
  dim_feedforward: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tgt, memory, query_pos=None, memory_pos=None,
               memory_mask=None, deterministic: bool = True,
               memory_bias=None):
    """Runs one layer.

    Args:
      tgt: [B, Nq, D] queries.
      memory: [B, Nk, D] encoder memory.
      query_pos: [B or 1, Nq, D] query position embedding (or None).
      memory_pos: [B, Nk, D] memory position encoding (or None).
      memory_mask: [B, Nk] bool, True on valid memory tokens.
      deterministic: disables dropout.
      memory_bias: optional [B, H, Nq, Nk] cross-attention logit bias.

    Returns:
      [B, Nq, D].
    """
    d = tgt.shape[-1]
    drop = functools.partial(dropout, rate=self.dropout,
                             deterministic=deterministic)
    ln = functools.partial(layer_norm, dtype=self.dtype)
    qk = with_pos(tgt, query_pos)
    t2 = MultiHeadAttention(self.num_heads, self.dropout, self.dtype,
                            name="self_attn")(qk, qk, tgt,
                                              deterministic=deterministic)
    tgt = ln("norm1")(tgt + drop(t2))
    t2 = MultiHeadAttention(self.num_heads, self.dropout, self.dtype,
                            name="multihead_attn")(
                                with_pos(tgt, query_pos),
                                with_pos(memory, memory_pos), memory,
                                memory_mask, deterministic=deterministic,
                                bias=memory_bias)
    tgt = ln("norm2")(tgt + drop(t2))
    t2 = nn.relu(nn.Dense(self.dim_feedforward, dtype=self.dtype,
                          name="linear1")(tgt))
    t2 = nn.Dense(d, dtype=self.dtype, name="linear2")(drop(t2))
    return ln("norm3")(tgt + drop(t2))


class EncoderLayer(nn.Module):
  """Post-norm DETR encoder layer: self-attention, FFN.

  Reference: facebookresearch/detr `models/transformer.py`
  (`TransformerEncoderLayer.forward_post`): queries and keys get the position
  encoding, values do not. Submodule names are DETR's (`self_attn`,
  `linear1`, `linear2`, `norm1`, `norm2`).

  Attributes:
    num_heads: attention heads.
    dim_feedforward: FFN hidden width.
    dropout: dropout rate.
    dtype: compute dtype.
  """
  num_heads: int
  dim_feedforward: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, src, pos=None, mask=None, deterministic: bool = True):
    """Runs one layer.

    Args:
      src: [B, M, D] tokens.
      pos: [B, M, D] position encoding (or None).
      mask: [B, M] bool, True on valid tokens (padding is no key).
      deterministic: disables dropout.

    Returns:
      [B, M, D].
    """
    d = src.shape[-1]
    drop = functools.partial(dropout, rate=self.dropout,
                             deterministic=deterministic)
    ln = functools.partial(layer_norm, dtype=self.dtype)
    qk = with_pos(src, pos)
    s2 = MultiHeadAttention(self.num_heads, self.dropout, self.dtype,
                            name="self_attn")(qk, qk, src, mask,
                                              deterministic=deterministic)
    src = ln("norm1")(src + drop(s2))
    s2 = nn.relu(nn.Dense(self.dim_feedforward, dtype=self.dtype,
                          name="linear1")(src))
    s2 = nn.Dense(d, dtype=self.dtype, name="linear2")(drop(s2))
    return ln("norm2")(src + drop(s2))


class TransformerEncoder(nn.Module):
  """DETR's transformer encoder (post-norm layers, no final norm).

  The `model.encoder_type='detr'` alternative to the Ho-Pair Encoder (paper
  Table IV rows a-b).

  Attributes:
    num_layers: encoder layers.
    num_heads: attention heads.
    dim_feedforward: FFN hidden width.
    dropout: dropout rate.
    dtype: compute dtype.
  """
  num_layers: int
  num_heads: int
  dim_feedforward: int
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, src, pos=None, mask=None, train: bool = False):
    """Encodes tokens.

    Args:
      src: [B, M, D] projected backbone features.
      pos: [B, M, D] position encoding (or None).
      mask: [B, M] bool, True on valid tokens.
      train: enables dropout.

    Returns:
      [B, M, D] memory (padded positions hold unspecified values).
    """
    x = src.astype(self.dtype)
    for i in range(self.num_layers):
      x = EncoderLayer(self.num_heads, self.dim_feedforward, self.dropout,
                       self.dtype, name=f"layers_{i}")(
                           x, pos, mask, deterministic=not train)
    return x
