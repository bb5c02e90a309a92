"""Instance interactor: GEN-VLKT's instance decoder and its heads.

Design.md component 3. N human queries and N object queries share a learnable
pair embedding P at index i (GEN-VLKT's `pos_guided_embedd`), so human i and
object i form pair i. Both sets go through one stack of post-norm DETR decoder
layers (self-attention over all 2N queries), cross-attending to the encoder
memory V_G with its sine position encoding. Every layer's output passes the
shared final LayerNorm (`norm`) and the shared heads (auxiliary outputs).

Object classifier (our choice, documented): GEN-VLKT's CLIP-initialised head,
  logits = exp(s) * Dense_{E->K+1}(normalize(LN(Dense_{d->E}(h)))),
where the kernel of `obj_visual_projection` is initialised with the
L2-normalised CLIP text embeddings of "a photo of a/an [object]" (columns
0..K-1) and a small random no-object column (K), then trained; `s` is a
learnable log logit scale initialised to log(1/0.07). The text embeddings are
only read at initialisation (pass them to `init`); afterwards the head is an
ordinary trainable layer.
"""

import math
from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from ki2hoi_jax.models import transformer


def l2_normalize(x: jnp.ndarray, axis: int = -1,
                 eps: float = 1e-6) -> jnp.ndarray:
  """x / max(||x||, eps) along `axis` (float32 math, returned in x.dtype).

  Written with rsqrt of a clamped squared norm so that the gradient stays
  finite at x = 0 (the derivative of sqrt at 0 is not).
  """
  xf = x.astype(jnp.float32)
  sq = jnp.sum(xf * xf, axis=axis, keepdims=True)
  return (xf * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))).astype(x.dtype)


class ObjectClassifier(nn.Module):
  """CLIP-initialised object classifier with a no-object class (last).

  Attributes:
    num_classes: K object classes (output is K + 1).
    embed_dim: CLIP joint embedding size E.
    logit_scale_init: initial (linear) logit scale.
    dtype: compute dtype.
  """
  num_classes: int
  embed_dim: int
  logit_scale_init: float = 1 / 0.07
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jnp.ndarray,
               text_embeddings: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """Scores object classes.

    Args:
      h: [..., D] object query features.
      text_embeddings: [K, E] CLIP embeddings of the object prompts; used only
        when the parameters are created.

    Returns:
      [..., K + 1] logits (no-object last).
    """
    k, e = self.num_classes, self.embed_dim

    def kernel_init(key, shape, dtype=jnp.float32):
      noobj = nn.initializers.normal(0.02)(key, (e, 1), dtype)
      if text_embeddings is None:
        cls = l2_normalize(nn.initializers.normal(1.0)(key, (k, e), dtype))
      else:
        if text_embeddings.shape != (k, e):
          raise ValueError(f"object_text_embeddings must be {(k, e)}, got "
                           f"{text_embeddings.shape}")
        cls = l2_normalize(text_embeddings.astype(dtype))
      out = jnp.concatenate([cls.T, noobj], axis=1)
      assert out.shape == shape
      return out

    x = nn.Dense(e, dtype=self.dtype, name="obj_class_fc")(h)
    x = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="obj_class_ln")(x)
    x = l2_normalize(x)
    logits = nn.Dense(k + 1, dtype=self.dtype, kernel_init=kernel_init,
                      name="obj_visual_projection")(x)
    log_scale = self.param("obj_logit_scale", nn.initializers.constant(
        math.log(self.logit_scale_init)), (), jnp.float32)
    return logits * jnp.exp(log_scale).astype(logits.dtype)


class InstanceInteractor(nn.Module):
  """Instance decoder over paired human/object queries, with heads.

  Attributes:
    num_queries: N pairs.
    num_layers: decoder layers.
    num_heads: attention heads.
    dim_feedforward: FFN width.
    dropout: dropout rate.
    num_object_classes: K.
    embed_dim: CLIP embedding size E (object classifier).
    logit_scale_init: initial object logit scale.
    dtype: compute dtype.
  """
  num_queries: int
  num_layers: int
  num_heads: int
  dim_feedforward: int
  dropout: float
  num_object_classes: int
  embed_dim: int
  logit_scale_init: float = 1 / 0.07
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, memory, memory_pos, memory_mask,
               object_text_embeddings=None,
               train: bool = False) -> Dict[str, jnp.ndarray]:
    """Decodes human and object instances.

    Args:
      memory: [B, M, D] encoder memory V_G.
      memory_pos: [B, M, D] its position encoding.
      memory_mask: [B, M] bool, True on valid tokens.
      object_text_embeddings: [K, E] (init only, see ObjectClassifier).
      train: enables dropout.

    Returns:
      dict of per-layer arrays (L = num_layers):
        human_hs, object_hs: [L, B, N, D] normed decoder outputs;
        pair_embed: [N, D] the shared pair embedding P;
        sub_boxes, obj_boxes: [L, B, N, 4] cxcywh in [0, 1];
        human_logits: [L, B, N, 2]; obj_logits: [L, B, N, K + 1].
    """
    b = memory.shape[0]
    n = self.num_queries
    d = memory.shape[-1]

    def emb(name):
      return self.param(name, nn.initializers.normal(1.0), (n, d),
                        jnp.float32)

    query_h, query_o = emb("query_embed_h"), emb("query_embed_o")
    pair = emb("pos_guided_embed")
    query_pos = jnp.concatenate([query_h + pair, query_o + pair], axis=0)
    query_pos = query_pos[None].astype(self.dtype)  # [1, 2N, D]
    tgt = jnp.zeros((b, 2 * n, d), self.dtype)
    final_norm = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")
    hs = []
    for i in range(self.num_layers):
      tgt = transformer.DecoderLayer(
          self.num_heads, self.dim_feedforward, self.dropout, self.dtype,
          name=f"layers_{i}")(tgt, memory, query_pos, memory_pos, memory_mask,
                              deterministic=not train)
      hs.append(final_norm(tgt))
    hs = jnp.stack(hs)  # [L, B, 2N, D]
    human_hs, object_hs = hs[:, :, :n], hs[:, :, n:]

    def box_mlp(name):
      return transformer.MLP((d, d, 4), self.dtype, name=name)

    return dict(
        human_hs=human_hs,
        object_hs=object_hs,
        pair_embed=pair,
        sub_boxes=nn.sigmoid(box_mlp("sub_bbox_embed")(human_hs)
                             .astype(jnp.float32)),
        obj_boxes=nn.sigmoid(box_mlp("obj_bbox_embed")(object_hs)
                             .astype(jnp.float32)),
        human_logits=nn.Dense(2, dtype=self.dtype,
                              name="human_class_embed")(human_hs),
        obj_logits=ObjectClassifier(
            self.num_object_classes, self.embed_dim, self.logit_scale_init,
            self.dtype, name="obj_classifier")(object_hs,
                                               object_text_embeddings),
    )
