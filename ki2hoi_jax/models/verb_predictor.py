"""Verb predictor / ISR, design.md component 6 (eqs. 12-15).

D = MLP(Proj(Q_inter)) and C = MLP(Proj(V_retrieved)) are mapped to the CLIP
embedding size E (Proj: Dense d -> E; MLP: residual two-layer ReLU MLP in E).
"Concatenate then multiply by W_v^T" equals the sum of two cosine logits
against the same frozen, L2-normalised text embeddings W_v [C, E]:
  logits = exp(s) * (cos(D, W_v) + cos(C, W_v)),
with a learnable log logit scale s initialised to log(logit_scale_init).
The text embeddings are a call argument, so the class list can change between
calls (zero-shot, open vocabulary).
"""

import math
from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp

from ki2hoi_jax.models import instance_interactor
from ki2hoi_jax.models import transformer


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
  """Cosine interaction logits against frozen text embeddings.

  Attributes:
    embed_dim: CLIP embedding size E.
    logit_scale_init: initial (linear) logit scale (1/0.07).
    dtype: compute dtype.
  """
  embed_dim: int
  logit_scale_init: float = 1 / 0.07
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inter_hs, verb_features, text_embeddings
               ) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """Scores interactions.

    Args:
      inter_hs: [..., N, D] interaction query features.
      verb_features: [..., N, D] retrieved verb features.
      text_embeddings: [C, E] interaction-prompt embeddings (normalised here).

    Returns:
      (logits [..., N, C] float32, normalised D features [..., N, E] float32).
    """
    norm = instance_interactor.l2_normalize
    w = norm(text_embeddings.astype(jnp.float32))  # [C, E]
    d_feat = norm(_ResidualProjection(self.embed_dim, self.dtype,
                                      name="inter_projection")(inter_hs)
                  .astype(jnp.float32))
    c_feat = norm(_ResidualProjection(self.embed_dim, self.dtype,
                                      name="verb_projection")(verb_features)
                  .astype(jnp.float32))
    log_scale = self.param("logit_scale", nn.initializers.constant(
        math.log(self.logit_scale_init)), (), jnp.float32)
    logits = jnp.exp(log_scale) * (d_feat @ w.T + c_feat @ w.T)
    return logits, d_feat
