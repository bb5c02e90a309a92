"""Interaction representation decoder, docs/architecture.md component 5 (eqs. 7-11).

Each layer updates the pair queries Q_inter:
  1. self-attention (MHSA) + Add & LayerNorm (`norm1`);
  2. cross-attention to V_sp (CLIP tokens projected to d_model, `clip_attn`)
     and to V_G (encoder memory with its position encoding, `multihead_attn`);
     the two outputs are summed, then Add & LayerNorm (`norm2`);
  3. verb retrieval: V_verb has one row per interaction class and Q_inter one
     per pair, so each pair reads its verb feature by cross-attention from
     Q_inter to V_verb (`verb_attn`); [Q_inter, retrieved] are concatenated
     along channels and an FFN (2D -> F -> D, `linear1`/`linear2`) maps back
     to d_model, then Add & LayerNorm (`norm3`).
Every layer's query output passes the shared final LayerNorm (`norm`).

Ablation switches (paper Table IV): `clip_attention=False` drops step 2's
cross-attention to V_sp (no `clip_attn`; `norm2` adds the V_G branch alone);
`verb_retrieval=False` drops step 3's retrieval (no `verb_attn`; the FFN maps
Q_inter alone, D -> F -> D) and the layers return no verb features.
"""

import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from ki2hoi_jax.models import transformer


class InteractionDecoderLayer(nn.Module):
  """One interaction representation decoder layer (post-norm).

  Attributes:
    num_heads: attention heads.
    dim_feedforward: FFN width.
    dropout: dropout rate.
    dtype: compute dtype.
    clip_attention: cross-attend to V_sp (`clip_attn`).
    verb_retrieval: retrieve per-pair verb features from V_verb
      (`verb_attn`) and concatenate them before the FFN.
  """
  num_heads: int
  dim_feedforward: int
  dropout: float
  dtype: Any = jnp.float32
  clip_attention: bool = True
  verb_retrieval: bool = True

  @nn.compact
  def __call__(self, tgt, query_pos, clip_tokens, memory, memory_pos,
               memory_mask, verb_features, train: bool = False
               ) -> Tuple[jnp.ndarray, Optional[jnp.ndarray]]:
    """Runs one layer.

    Args:
      tgt: [B, N, D] pair queries.
      query_pos: [1 or B, N, D] pair embedding P.
      clip_tokens: [B, T, D] V_sp (unused, may be None, without
        `clip_attention`).
      memory: [B, M, D] V_G.
      memory_pos: [B, M, D] position encoding of V_G.
      memory_mask: [B, M] bool, True on valid tokens.
      verb_features: [B, C, D] V_verb (unused, may be None, without
        `verb_retrieval`).
      train: enables dropout.

    Returns:
      (updated queries [B, N, D], retrieved verb features [B, N, D] or None
      without `verb_retrieval`).
    """
    det = not train
    d = tgt.shape[-1]
    drop = functools.partial(transformer.dropout, rate=self.dropout,
                             deterministic=det)
    ln = functools.partial(transformer.layer_norm, dtype=self.dtype)

    def attn(name):
      return transformer.MultiHeadAttention(self.num_heads, self.dropout,
                                            self.dtype, name=name)

    qk = transformer.with_pos(tgt, query_pos)
    tgt = ln("norm1")(tgt + drop(attn("self_attn")(qk, qk, tgt,
                                                   deterministic=det)))
    q = transformer.with_pos(tgt, query_pos)
    cross = attn("multihead_attn")(
        q, transformer.with_pos(memory, memory_pos), memory, memory_mask,
        deterministic=det)
    if self.clip_attention:
      cross = attn("clip_attn")(q, clip_tokens, clip_tokens,
                                deterministic=det) + cross
    tgt = ln("norm2")(tgt + drop(cross))
    retrieved, y = None, tgt
    if self.verb_retrieval:
      q = transformer.with_pos(tgt, query_pos)
      retrieved = attn("verb_attn")(q, verb_features, verb_features,
                                    deterministic=det)
      y = jnp.concatenate([tgt, retrieved.astype(tgt.dtype)], axis=-1)
    y = nn.relu(nn.Dense(self.dim_feedforward, dtype=self.dtype,
                         name="linear1")(y))
    y = nn.Dense(d, dtype=self.dtype, name="linear2")(drop(y))
    return ln("norm3")(tgt + drop(y)), retrieved


class InteractionRepresentationDecoder(nn.Module):
  """Stack of interaction decoder layers with intermediate outputs.

  Attributes:
    num_layers: decoder layers.
    num_heads: attention heads.
    dim_feedforward: FFN width.
    dropout: dropout rate.
    dtype: compute dtype.
    clip_attention: as in InteractionDecoderLayer.
    verb_retrieval: as in InteractionDecoderLayer.
  """
  num_layers: int
  num_heads: int
  dim_feedforward: int
  dropout: float
  dtype: Any = jnp.float32
  clip_attention: bool = True
  verb_retrieval: bool = True

  @nn.compact
  def __call__(self, tgt, query_pos, clip_tokens, memory, memory_pos,
               memory_mask, verb_features, train: bool = False
               ) -> Tuple[jnp.ndarray, Optional[jnp.ndarray]]:
    """Decodes interaction features (arguments as InteractionDecoderLayer).

    Returns:
      (normed query outputs [L, B, N, D], retrieved verb features
       [L, B, N, D] or None without `verb_retrieval`) for every layer.
    """
    final_norm = transformer.layer_norm("norm", self.dtype)
    hs, verbs = [], []
    for i in range(self.num_layers):
      tgt, retrieved = InteractionDecoderLayer(
          self.num_heads, self.dim_feedforward, self.dropout, self.dtype,
          self.clip_attention, self.verb_retrieval,
          name=f"layers_{i}")(tgt, query_pos, clip_tokens, memory,
                              memory_pos, memory_mask, verb_features, train)
      hs.append(final_norm(tgt))
      verbs.append(retrieved)
    return jnp.stack(hs), (jnp.stack(verbs) if self.verb_retrieval else None)
