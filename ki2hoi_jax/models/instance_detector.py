"""KI2HOI's instance path alone: the detector that DETR-style pretraining trains.

`InstanceDetector` is `KI2HOI` (same fields, same `encode`) with a call that
stops after the instance interactor: backbone, `input_proj`, encoder and
instance interactor, under the same top-level names as in the full model,
so its variables are subtrees of a KI2HOI's (`params/backbone`,
`params/input_proj`, `params/encoder`, `params/instance_interactor`,
`frozen_bn/backbone`, `batch_stats/encoder`) with the same shapes. The CLIP
tower, the verb and interaction decoders and the verb predictor are never
called and have no variables here.

  detector = instance_detector.build_detector(config)
  out = detector.apply(variables, image, mask, train=False)
"""

import dataclasses
from typing import Dict

import flax.linen as nn
import jax.numpy as jnp

from ki2hoi_jax.models import instance_interactor
from ki2hoi_jax.models import ki2hoi

# Top-level modules of the detector, shared with KI2HOI.
MODULES = ("backbone", "input_proj", "encoder", "instance_interactor")


class InstanceDetector(ki2hoi.KI2HOI):
  """KI2HOI up to the instance interactor (fields: `ki2hoi.KI2HOI`)."""

  @nn.compact
  def __call__(self, image: jnp.ndarray, mask: jnp.ndarray, *,
               train: bool = False) -> Dict[str, jnp.ndarray]:
    """Detects people and objects.

    Args:
      image: [B, H, W, 3] ImageNet-normalised, zero in padding.
      mask: [B, H, W] bool, True on valid pixels.
      train: dropout and batch statistics.

    Returns:
      Per-layer float32 arrays (L = instance_decoder_layers, N =
      num_queries): sub_boxes, obj_boxes [L, B, N, 4] (normalised cxcywh),
      human_logits [L, B, N, 2] (person, no-object), obj_logits
      [L, B, N, K+1] (no-object last).
    """
    memory, memory_pos, memory_mask, memory_points = self.encode(
        image, mask, train)
    inst = instance_interactor.InstanceInteractor(
        self.num_queries, self.instance_decoder_layers, self.num_heads,
        self.dim_feedforward, self.dropout, self.num_object_classes,
        self.embed_dim, self.logit_scale_init, self.anchor_queries,
        self.dtype, name="instance_interactor")(
            memory, memory_pos, memory_mask, None, train, memory_points)
    return {k: inst[k].astype(jnp.float32) for k in
            ("sub_boxes", "obj_boxes", "human_logits", "obj_logits")}


def build_detector(config) -> InstanceDetector:
  """The InstanceDetector of `config`'s KI2HOI (`ki2hoi.build_model`)."""
  model = ki2hoi.build_model(config)
  fields = {f.name: getattr(model, f.name)
            for f in dataclasses.fields(ki2hoi.KI2HOI)
            if f.init and f.name not in ("parent", "name")}
  return InstanceDetector(**fields)
