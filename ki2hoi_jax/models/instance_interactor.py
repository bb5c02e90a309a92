"""Instance interactor: GEN-VLKT's instance decoder and its heads.

docs/architecture.md component 3. N human queries and N object queries share a learnable
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

from ki2hoi_jax.models import position_encoding
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


def _inverse_sigmoid(x: jnp.ndarray, eps: float = 1e-5) -> jnp.ndarray:
  x = jnp.clip(x, 0.0, 1.0)
  return jnp.log(jnp.maximum(x, eps) / jnp.maximum(1.0 - x, eps))


def _init_anchor_logits(key, shape):
  """Reference boxes: centres uniform in [0.05, 0.95], sides 0.3 (logits)."""
  centres = jax.random.uniform(key, shape[:-1] + (2,), minval=0.05,
                               maxval=0.95)
  sides = jnp.full(shape[:-1] + (2,), 0.3)
  return _inverse_sigmoid(jnp.concatenate([centres, sides], axis=-1))


def _box_attention_prior(boxes: jnp.ndarray, points: jnp.ndarray,
                         focus: jnp.ndarray) -> jnp.ndarray:
  """Gaussian cross-attention prior around reference boxes (SMCA-DETR).

  Args:
    boxes: [B, Q, 4] cxcywh reference boxes in [0, 1].
    points: [B, M, 2] (x, y) of the memory tokens.
    focus: [H] positive per-head sharpness gamma.

  Returns:
    [B, H, Q, M] float32 logit bias -gamma * (((x - cx) / w)^2 +
    ((y - cy) / h)^2).
  """
  boxes = boxes.astype(jnp.float32)
  centre, size = boxes[..., None, :2], jnp.maximum(boxes[..., None, 2:], 1e-3)
  dist = jnp.sum(jnp.square((points[:, None] - centre) / size), axis=-1)
  return -focus[None, :, None, None] * dist[:, None]


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
    anchor_queries: anchored, spatially modulated queries for training from
      scratch (False: GEN-VLKT's learned query embeddings, which a DETR
      checkpoint initialises). Each human and object query owns a learnable
      reference box; layer l uses the box refined by layer l-1 (DAB-DETR,
      Deformable DETR's iterative refinement, gradients stopped between
      layers): its query position is an MLP of the sine encoding of the box
      centre (the encoding of the memory positions), its cross-attention
      logits get a Gaussian prior -gamma_h * (((x - cx) / w)^2 +
      ((y - cy) / h)^2) with a learnable focus gamma_h per head (SMCA-DETR),
      and it predicts its box as an offset from the reference in logit space.
      Queries thus look near their boxes from the first step, which converges
      far faster without pretrained weights (the demo).
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
  anchor_queries: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, memory, memory_pos, memory_mask,
               object_text_embeddings=None, train: bool = False,
               memory_points=None) -> Dict[str, jnp.ndarray]:
    """Decodes human and object instances.

    Args:
      memory: [B, M, D] encoder memory V_G.
      memory_pos: [B, M, D] its position encoding.
      memory_mask: [B, M] bool, True on valid tokens.
      object_text_embeddings: [K, E] (init only, see ObjectClassifier).
      train: enables dropout.
      memory_points: [B, M, 2] normalised (x, y) of the memory tokens
        (`position_encoding.cell_centres`); needed with `anchor_queries`.

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

    pair = emb("pos_guided_embed")
    sub_mlp = transformer.MLP((d, d, 4), self.dtype, name="sub_bbox_embed")
    obj_mlp = transformer.MLP((d, d, 4), self.dtype, name="obj_bbox_embed")
    final_norm = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")
    if self.anchor_queries:
      if memory_points is None:
        raise ValueError("anchor_queries needs memory_points [B, M, 2].")
      ref = nn.sigmoid(self.param("anchor_boxes", _init_anchor_logits,
                                  (2 * n, 4)))  # Humans, then objects.
      ref = jnp.broadcast_to(ref[None], (b, 2 * n, 4))
      anchor_mlp = transformer.MLP((d, d), self.dtype, name="anchor_mlp")
      log_focus = self.param("attention_log_focus", lambda k, s: jnp.linspace(
          0.0, math.log(8.0), s[0]), (self.num_heads,))
      pair2 = jnp.concatenate([pair, pair], axis=0)[None]
    else:
      query_pos = jnp.concatenate([emb("query_embed_h") + pair,
                                   emb("query_embed_o") + pair], axis=0)
      query_pos = query_pos[None].astype(self.dtype)  # [1, 2N, D]
    tgt = jnp.zeros((b, 2 * n, d), self.dtype)
    hs, box_list = [], []
    for i in range(self.num_layers):
      bias = None
      if self.anchor_queries:
        query_pos = (anchor_mlp(position_encoding.sine_point_encoding(
            ref[..., :2], d, dtype=self.dtype)) + pair2).astype(self.dtype)
        bias = _box_attention_prior(ref, memory_points, jnp.exp(log_focus))
      tgt = transformer.DecoderLayer(
          self.num_heads, self.dim_feedforward, self.dropout, self.dtype,
          name=f"layers_{i}")(tgt, memory, query_pos, memory_pos, memory_mask,
                              deterministic=not train, memory_bias=bias)
      h = final_norm(tgt)
      hs.append(h)
      if self.anchor_queries:
        raw = jnp.concatenate([sub_mlp(h[:, :n]), obj_mlp(h[:, n:])], axis=1)
        box = nn.sigmoid(raw.astype(jnp.float32) + _inverse_sigmoid(ref))
        box_list.append(box)
        ref = jax.lax.stop_gradient(box)
    hs = jnp.stack(hs)  # [L, B, 2N, D]
    human_hs, object_hs = hs[:, :, :n], hs[:, :, n:]
    if self.anchor_queries:
      all_boxes = jnp.stack(box_list)  # [L, B, 2N, 4]
      sub_boxes, obj_boxes = all_boxes[:, :, :n], all_boxes[:, :, n:]
    else:
      sub_boxes = nn.sigmoid(sub_mlp(human_hs).astype(jnp.float32))
      obj_boxes = nn.sigmoid(obj_mlp(object_hs).astype(jnp.float32))

    return dict(
        human_hs=human_hs,
        object_hs=object_hs,
        pair_embed=pair,
        sub_boxes=sub_boxes,
        obj_boxes=obj_boxes,
        human_logits=nn.Dense(2, dtype=self.dtype,
                              name="human_class_embed")(human_hs),
        obj_logits=ObjectClassifier(
            self.num_object_classes, self.embed_dim, self.logit_scale_init,
            self.dtype, name="obj_classifier")(object_hs,
                                               object_text_embeddings),
    )
