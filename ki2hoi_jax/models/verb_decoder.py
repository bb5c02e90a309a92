"""Verb extraction decoder (Query2Label-style), docs/architecture.md component 4.

One query per interaction class attends to the encoder memory V_G and gives
the class's visual verb feature V_verb.

Our interpretation (documented): the query of class c is a learned projection
of the class's frozen, L2-normalised CLIP text embedding,
Q_v[c] = W_q t_c + b_q, rather than a free embedding per class. The decoder is
therefore defined for any class list: the interaction classes can be swapped
at inference (600-way zero-shot evaluation after training on the seen HOIs,
open-vocabulary prompts) and unseen classes get meaningful queries.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ki2hoi_jax.models import instance_interactor
from ki2hoi_jax.models import transformer


class VerbExtractionDecoder(nn.Module):
  """Class queries -> per-class verb features.

  Attributes:
    num_layers: decoder layers.
    num_heads: attention heads.
    dim_feedforward: FFN width.
    dropout: dropout rate.
    dtype: compute dtype.
  """
  num_layers: int
  num_heads: int
  dim_feedforward: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, text_embeddings, memory, memory_pos, memory_mask,
               train: bool = False) -> jnp.ndarray:
    """Extracts verb features.

    Args:
      text_embeddings: [C, E] CLIP text embeddings of the interaction classes
        (any C; normalised here).
      memory: [B, M, D] V_G.
      memory_pos: [B, M, D] its position encoding.
      memory_mask: [B, M] bool, True on valid tokens.
      train: enables dropout.

    Returns:
      [B, C, D] V_verb (after the final LayerNorm).
    """
    b, _, d = memory.shape
    t = instance_interactor.l2_normalize(text_embeddings.astype(jnp.float32))
    queries = nn.Dense(d, dtype=self.dtype, name="query_proj")(t)  # [C, D]
    tgt = jnp.broadcast_to(queries[None], (b,) + queries.shape)
    for i in range(self.num_layers):
      tgt = transformer.DecoderLayer(
          self.num_heads, self.dim_feedforward, self.dropout, self.dtype,
          name=f"layers_{i}")(tgt, memory, None, memory_pos, memory_mask,
                              deterministic=not train)
    return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="norm")(tgt)
