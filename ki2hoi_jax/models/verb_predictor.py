"""Verb predictor / ISR, docs/architecture.md component 6 (eqs. 12-15).

D = MLP(Proj(Q_inter)) and C = MLP(Proj(V_retrieved)) are mapped to the CLIP
embedding size E (Proj: Dense d -> E; MLP: residual two-layer ReLU MLP in E).
"Concatenate then multiply by W_v^T" equals the sum of two cosine logits
against the same frozen, L2-normalised text embeddings W_v [C, E]:
  logits = exp(s) * (cos(D, W_v) + cos(C, W_v)),
with a learnable log logit scale s initialised to log(logit_scale_init).
The text embeddings are a call argument, so the class list can change between
calls (zero-shot, open vocabulary).

Ablation switches (paper Table IV):
* no verb features (`verb_features=None`, `model.verb_decoder=False`): no
  `verb_projection`; logits = exp(s) * cos(D, W_v).
* `classifier='linear'` (`model.classifier`): a learned linear head
  `interaction_classifier` (Dense [D, C] -> C, or D alone, with bias; no
  logit scale) replaces the cosine against the text embeddings. It has one
  output per class of the text embeddings given at initialisation (the
  training classes) and cannot score other classes: applying it with a
  different C fails with a parameter-shape error.

The second output is the raw projected interaction feature D (before any L2
normalisation), GEN-VLKT's `inter_memory`, which L_re compares with the CLIP
image embedding.
"""

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from ki2hoi_jax.models import instance_interactor
from ki2hoi_jax.models import transformer

CLASSIFIERS = ("clip_text", "linear")


class _ResidualProjection(nn.Module):
  """x -> p + MLP(p), p = Dense_E(x)."""
  embed_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    p = nn.Dense(self.embed_dim, dtype=self.dtype, name="proj")(x)
    return p + transformer.MLP((self.embed_dim, self.embed_dim), self.dtype,
                               name="mlp")(p)


class VerbPredictor(nn.Module):
  """Interaction logits: cosine against frozen text embeddings (or linear).

  Attributes:
    embed_dim: CLIP embedding size E.
    logit_scale_init: initial (linear) logit scale (1/0.07).
    dtype: compute dtype.
    classifier: 'clip_text' (cosine against the text embeddings) | 'linear'
      (learned linear head over the classes seen at initialisation).
  """
  embed_dim: int
  logit_scale_init: float = 1 / 0.07
  dtype: Any = jnp.float32
  classifier: str = "clip_text"

  @nn.compact
  def __call__(self, inter_hs, verb_features: Optional[jnp.ndarray],
               text_embeddings) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Scores interactions.

    Args:
      inter_hs: [..., N, D] interaction query features.
      verb_features: [..., N, D] retrieved verb features, or None (no verb
        feature learning).
      text_embeddings: [C, E] interaction-prompt embeddings (normalised here;
        'linear' only reads C).

    Returns:
      (logits [..., N, C] float32, raw projected interaction features D
      [..., N, E] float32, not normalised).
    """
    if self.classifier not in CLASSIFIERS:
      raise ValueError(f"classifier must be one of {CLASSIFIERS}, got "
                       f"{self.classifier!r}")
    norm = instance_interactor.l2_normalize
    d_raw = _ResidualProjection(self.embed_dim, self.dtype,
                                name="inter_projection")(inter_hs)
    c_raw = None
    if verb_features is not None:
      c_raw = _ResidualProjection(self.embed_dim, self.dtype,
                                  name="verb_projection")(verb_features)
    d_raw = d_raw.astype(jnp.float32)
    if self.classifier == "linear":
      x = d_raw if c_raw is None else jnp.concatenate(
          [d_raw, c_raw.astype(jnp.float32)], axis=-1)
      logits = nn.Dense(text_embeddings.shape[0], dtype=self.dtype,
                        name="interaction_classifier")(x)
      return logits.astype(jnp.float32), d_raw
    w = norm(text_embeddings.astype(jnp.float32))  # [C, E]
    cos = norm(d_raw) @ w.T
    if c_raw is not None:
      cos = cos + norm(c_raw.astype(jnp.float32)) @ w.T
    log_scale = self.param("logit_scale", nn.initializers.constant(
        math.log(self.logit_scale_init)), (), jnp.float32)
    return jnp.exp(log_scale) * cos, d_raw
