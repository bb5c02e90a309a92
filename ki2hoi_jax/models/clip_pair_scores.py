"""CLIP's own view of each detected pair, for classes never trained.

A zero-shot detector scores an unseen class only through its text embedding:
the interaction feature, trained on seen classes alone, must land near a
prompt it was never pulled towards. On a small model it lands near the seen
class it looks like (a rider's feature near "sitting on"), although the
frozen CLIP itself tells the two apart. `config.inference.clip_pair_fusion`
(w in [0, 1], 0 = off, the paper's pipeline) adds CLIP's evidence at
inference, for the classes outside the training classifier only:

  p_clip = softmax_c(s * cos(CLIP(crop of the pair), t_c))       over classes
  p      = sigmoid(logit)^(1 - w) * p_clip^w                      untrained c
  p      = sigmoid(logit)                                         trained c

where the crop is a square around the union of the pair's predicted boxes
(10 % margin, shifted inside the image, as the synthetic CLIP's corpus crops
in clip/pretrain.py), t_c the same L2-normalised text embeddings the cosine
classifier scores and s that classifier's learned logit scale. The result is
returned as a logit, so post-processing and score fusion are unchanged.

Object classes outside the training split (the unseen objects of 'uo', new
objects of an open vocabulary) are the same problem on the object side: the
detector was trained to call them background, so its object classifier
gives them almost nothing. They get CLIP's score of the object box's crop
(`fuse_untrained_objects`), with the same w:

  q   = softmax_k(s_o * cos(CLIP(crop of the object box), t_k))  over objects
  p_k = (1 - p_no_object)^(1 - w) * q_k^w                         untrained k
  p_k = softmax(object logits)_k                                  otherwise

renormalised over the K + 1 outputs: the detector says whether an object is
there, CLIP which untrained object it is. s_o is the object classifier's
learned logit scale, t_k the object prompts' text embeddings.

In the 'verb' interaction space a third case: a (verb, object) candidate
that never had a training label although its verb did (the unseen HOIs of
'rf_uc', 'nf_uc', 'uc', 'uo'; `vocabulary.trained_candidate_mask`) is scored
by its trained verb's column. Such candidates get the first formula on
their own, with c running over the candidates' HOI prompts ("a photo of a
person standing on a chair") instead of the verb prompts; those scores are
`pred_candidate_logits` [B, Q, H], which post-processing reads in place of
the verb columns.

This module scores crops; `evaluation/clip_fusion.py` applies it to the
model's outputs. Training never runs it (no gradient, no cost); evaluation
pays one CLIP image-tower pass per query and side.
"""

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from ki2hoi_jax.data import transforms
from ki2hoi_jax.models import instance_interactor
from ki2hoi_jax.models import roi_align

CROP_MARGIN = 0.1  # As clip/pretrain.py's corpus crops.


def union_crop_boxes(sub_boxes: jnp.ndarray, obj_boxes: jnp.ndarray,
                     valid_hw: jnp.ndarray, margin: float = CROP_MARGIN
                     ) -> jnp.ndarray:
  """Square crop windows around each pair's union box, in pixels.

  Args:
    sub_boxes, obj_boxes: [B, Q, 4] cxcywh, normalised by the valid image.
    valid_hw: [B, 2] valid (unpadded) image height and width in pixels.
    margin: crop margin, a fraction of the union's larger side per side.

  Returns:
    [B, Q, 4] (x1, y1, x2, y2): side max(w, h) * (1 + 2 margin) + 1, moved
    inside the image where it fits, cut at its border where it does not.
  """
  vh = valid_hw[:, None, 0].astype(jnp.float32)
  vw = valid_hw[:, None, 1].astype(jnp.float32)

  def xyxy(b):
    cx, cy, w, h = (b[..., i] for i in range(4))
    return (cx - w / 2) * vw, (cy - h / 2) * vh, (cx + w / 2) * vw, (
        cy + h / 2) * vh

  s, o = xyxy(sub_boxes), xyxy(obj_boxes)
  x1, y1 = jnp.minimum(s[0], o[0]), jnp.minimum(s[1], o[1])
  x2, y2 = jnp.maximum(s[2], o[2]), jnp.maximum(s[3], o[3])
  side = jnp.maximum(x2 - x1, y2 - y1) * (1 + 2 * margin) + 1
  left = jnp.clip((x1 + x2 - side) / 2, 0.0, jnp.maximum(vw - side, 0.0))
  top = jnp.clip((y1 + y2 - side) / 2, 0.0, jnp.maximum(vh - side, 0.0))
  return jnp.stack([left, top, jnp.minimum(left + side, vw),
                    jnp.minimum(top + side, vh)], axis=-1)


def pair_crops(image: jnp.ndarray, mask: jnp.ndarray, sub_boxes: jnp.ndarray,
               obj_boxes: jnp.ndarray, size: int) -> jnp.ndarray:
  """CLIP inputs of every pair: [B, Q, size, size, 3], CLIP-normalised.

  Args:
    image: [B, H, W, 3] ImageNet-normalised detector input, zero padding
      below and right of the valid region.
    mask: [B, H, W] True on valid pixels.
    sub_boxes, obj_boxes: [B, Q, 4] predicted boxes (cxcywh, normalised).
    size: CLIP input resolution S.
  """
  valid_hw = jnp.stack([mask[:, :, 0].sum(-1), mask[:, 0, :].sum(-1)], -1)
  boxes = union_crop_boxes(sub_boxes, obj_boxes, valid_hw)
  rgb = (image * jnp.asarray(transforms.IMAGENET_STD)
         + jnp.asarray(transforms.IMAGENET_MEAN))
  clip_in = (rgb - jnp.asarray(transforms.CLIP_MEAN)) / jnp.asarray(
      transforms.CLIP_STD)
  return roi_align.roi_align(clip_in.astype(jnp.float32), boxes,
                             (size, size), sampling_ratio=0,
                             valid_size=valid_hw)


def crop_embeddings(clip_visual: nn.Module, clip_params: Mapping[str, Any],
                    image: jnp.ndarray, mask: jnp.ndarray,
                    sub_boxes: jnp.ndarray, obj_boxes: jnp.ndarray, size: int,
                    dtype: Any = jnp.float32) -> jnp.ndarray:
  """[B, Q, E] unit CLIP embedding of the crop around each pair's boxes.

  Args:
    clip_visual: the CLIP image tower (`KI2HOI.clip_visual`), mapping
      [N, S, S, 3] to (tokens, embedding [N, E]).
    clip_params: its parameters (`params['clip_visual']` of the detector).
    image, mask: the detector input, as in `pair_crops`.
    sub_boxes, obj_boxes: [B, Q, 4] predicted boxes (cxcywh, normalised);
      the object box twice gives the object's own crop.
    size: CLIP input resolution S.
    dtype: the tower's input dtype (`KI2HOI.frozen_dtype`).
  """
  b, q = sub_boxes.shape[:2]
  crops = pair_crops(image, mask, sub_boxes, obj_boxes, size)
  _, emb = clip_visual.apply({"params": clip_params},
                             crops.reshape(b * q, size, size, 3).astype(dtype))
  return instance_interactor.l2_normalize(
      emb.astype(jnp.float32)).reshape(b, q, -1)


def cosines(unit_embeddings: jnp.ndarray, text: jnp.ndarray) -> jnp.ndarray:
  """[B, Q, C] cosines of [B, Q, E] unit embeddings with [C, E] text."""
  return unit_embeddings @ instance_interactor.l2_normalize(
      jnp.asarray(text, jnp.float32)).T


def fuse_untrained(logits: jnp.ndarray, crop_logits: jnp.ndarray,
                   trained: jnp.ndarray, weight: float) -> jnp.ndarray:
  """Detector logits with CLIP's crop evidence on the untrained classes.

  Args:
    logits: [B, Q, C] interaction logits of the detector.
    crop_logits: [B, Q, C] s * cos(crop embedding, text embedding).
    trained: [C] bool, True for the training classifier's classes (kept).
    weight: w in [0, 1] (module docstring).

  Returns:
    [B, Q, C] logits whose sigmoid is the fused probability.
  """
  log_p = ((1.0 - weight) * jax.nn.log_sigmoid(logits)
           + weight * jax.nn.log_softmax(crop_logits, axis=-1))
  log_p = jnp.minimum(log_p, -1e-6)  # A probability below 1: finite logit.
  fused = log_p - jnp.log(-jnp.expm1(log_p))
  return jnp.where(jnp.asarray(trained, bool), logits, fused)


def fuse_untrained_objects(obj_logits: jnp.ndarray, crop_logits: jnp.ndarray,
                           trained: jnp.ndarray, weight: float
                           ) -> jnp.ndarray:
  """Object logits with CLIP's crop evidence on the untrained objects.

  Args:
    obj_logits: [B, Q, K + 1] object logits of the detector (last:
      no-object).
    crop_logits: [B, Q, K] s_o * cos(object-crop embedding, object text
      embedding).
    trained: [K] bool, True for the objects of the training split (kept
      before the renormalisation).
    weight: w in [0, 1] (module docstring).

  Returns:
    [B, Q, K + 1] logits: log-probabilities whose softmax is the fused,
    renormalised distribution.
  """
  log_p = jax.nn.log_softmax(obj_logits, axis=-1)
  log_fg = jnp.log(-jnp.expm1(jnp.minimum(log_p[..., -1:], -1e-6)))
  log_q = jax.nn.log_softmax(crop_logits, axis=-1)
  fused = (1.0 - weight) * log_fg + weight * log_q  # [B, Q, K]
  keep = jnp.concatenate([jnp.asarray(trained, bool), jnp.ones((1,), bool)])
  log_p = jnp.where(keep, log_p, jnp.pad(fused, ((0, 0), (0, 0), (0, 1))))
  return jax.nn.log_softmax(log_p, axis=-1)
