"""CLIP's crop scores fused into the detector's outputs at inference.

`config.inference.clip_pair_fusion` (w in [0, 1]; 0 in every paper config)
gives what the detector never trained CLIP's own score of a crop around
each detected pair (the formulas are in models/clip_pair_scores.py). It is
no part of the model: `fuse_clip_crop_scores` takes the model's outputs
(boxes and logits), runs the frozen CLIP image tower on the crops and
returns the outputs with updated scores. Evaluation
(`train.train_step.eval_step`) and prediction (`inference.predictor`) call
it inside their jitted step, after `model.apply`; training never does.

What is fused is named by `vocabulary.clip_fusion_inputs(config,
vocabulary, embed)` (a dict; {} with the fusion off):

  trained_classes [C] bool             untrained interaction columns
  trained_objects [K] bool             untrained objects, scored against
  object_text_embeddings [K, E]          the object prompts
  trained_candidates [H] bool          untrained (verb, object) candidates
  candidate_text_embeddings [H, E]       of trained verbs, scored against
  candidate_columns [H] int              their HOI prompts
"""

import functools
from typing import Any, Dict, Mapping

import jax.numpy as jnp

from ki2hoi_jax.models import clip_pair_scores


def fuse_clip_crop_scores(outputs: Mapping[str, Any], image: jnp.ndarray,
                          mask: jnp.ndarray, text_embeddings: jnp.ndarray,
                          fusion_inputs: Mapping[str, jnp.ndarray],
                          params: Mapping[str, Any], *, model,
                          weight: float, crop_size: int) -> Dict[str, Any]:
  """The model's outputs with CLIP's crop evidence on what never trained.

  Args:
    outputs: `model.apply(...)` outputs at inference (docs/contracts.md):
      `pred_sub_boxes`, `pred_obj_boxes` [B, N, 4], `pred_obj_logits`
      [B, N, K+1], `pred_interaction_logits` [B, N, C].
    image: [B, H, W, 3] the model's ImageNet-normalised input.
    mask: [B, H, W] True on valid pixels.
    text_embeddings: [C, E] the interaction text embeddings the model
      scored.
    fusion_inputs: `vocabulary.clip_fusion_inputs` (module docstring); {}
      returns `outputs` itself.
    params: the model's `params` (`clip_visual`, the interaction and object
      classifiers' logit scales).
    model: the `KI2HOI` that produced `outputs` (its `clip_visual`,
      `frozen_dtype` and `classifier`).
    weight: w (`inference.clip_pair_fusion`), static.
    crop_size: CLIP input resolution S (the model's `clip_image` side).

  Returns:
    A new dict: `outputs` with `pred_interaction_logits` fused on the
    untrained columns, `pred_obj_logits` on the untrained objects, and,
    with `trained_candidates`, `pred_candidate_logits` [B, N, H] (each
    candidate's interaction logit, fused on the untrained ones).

  Raises:
    ValueError: fusion inputs with w <= 0 or a linear classifier, or a mask
      without its text embeddings.
  """
  if not fusion_inputs:
    return outputs
  if weight <= 0 or model.classifier != "clip_text":
    raise ValueError(
        f"CLIP crop fusion inputs need inference.clip_pair_fusion > 0 and "
        f"model.classifier='clip_text' (got w = {weight}, "
        f"{model.classifier!r}).")
  crops = functools.partial(
      clip_pair_scores.crop_embeddings, model.clip_visual,
      params["clip_visual"], image, mask, size=crop_size,
      dtype=model.frozen_dtype)
  out = dict(outputs)
  trained_classes = fusion_inputs.get("trained_classes")
  trained_candidates = fusion_inputs.get("trained_candidates")
  if trained_classes is not None or trained_candidates is not None:
    pair = crops(out["pred_sub_boxes"], out["pred_obj_boxes"])  # [B, N, E]
    scale = jnp.exp(params["verb_predictor"]["logit_scale"])
  if trained_classes is not None:
    out["pred_interaction_logits"] = clip_pair_scores.fuse_untrained(
        out["pred_interaction_logits"],
        scale * clip_pair_scores.cosines(pair, text_embeddings),
        trained_classes, weight)
  if trained_candidates is not None:
    out["pred_candidate_logits"] = _fuse_candidates(
        out["pred_interaction_logits"], pair, scale, fusion_inputs, weight)
  if fusion_inputs.get("trained_objects") is not None:
    out["pred_obj_logits"] = _fuse_objects(
        out["pred_obj_logits"],
        crops(out["pred_obj_boxes"], out["pred_obj_boxes"]),
        params, fusion_inputs, weight)
  return out


def _fuse_candidates(interaction_logits, pair, scale, fusion_inputs, weight):
  """[B, N, H] candidate logits, CLIP-fused on the untrained candidates."""
  text = fusion_inputs.get("candidate_text_embeddings")
  columns = fusion_inputs.get("candidate_columns")
  if text is None or columns is None:
    raise ValueError("trained_candidates needs candidate_text_embeddings "
                     "and candidate_columns")
  return clip_pair_scores.fuse_untrained(
      interaction_logits[..., columns],
      scale * clip_pair_scores.cosines(pair, text),
      fusion_inputs["trained_candidates"], weight)


def _fuse_objects(obj_logits, object_crops, params, fusion_inputs, weight):
  """[B, N, K+1] object logits, CLIP-fused on the untrained objects."""
  text = fusion_inputs.get("object_text_embeddings")
  if text is None:
    raise ValueError("trained_objects needs object_text_embeddings")
  obj_scale = params["instance_interactor"]["obj_classifier"][
      "obj_logit_scale"]
  return clip_pair_scores.fuse_untrained_objects(
      obj_logits,
      jnp.exp(obj_scale) * clip_pair_scores.cosines(object_crops, text),
      fusion_inputs["trained_objects"], weight)
