"""Training losses of KI2HOI (docs/architecture.md "Training recipe"), GEN-VLKT style.

Pure functions that return `(loss, metrics)`. Terms (weights in config.loss):

| term | what | normalised by |
|---|---|---|
| `loss_sub_bbox`, `loss_obj_bbox` | L1 of matched boxes (cxcywh, summed over 4 coords) | matched pairs (object: matched pairs with an object box) |
| `loss_sub_giou`, `loss_obj_giou` | 1 - GIoU of matched boxes | same |
| `loss_obj_ce` | object CE over all queries, unmatched -> no-object (last class), no-object weight `no_object_weight`; with `trained_objects` the softmax runs over those objects and no-object only | sum of CE weights (DETR's weighted mean) |
| `loss_human_ce` | [person, no-object] CE, same convention | sum of CE weights |
| `loss_interaction` | GEN-VLKT `_neg_loss` focal loss on sigmoid interaction logits over all queries (unmatched -> all negative) | number of positive labels |
| `loss_re` | L_re (`loss.reconstruction`: l1, l2, l1+l2 or none) between the interaction feature and stop_gradient(`clip_image_embedding`), form below | elements |

The interaction focal loss is GEN-VLKT's `_neg_loss` (CornerNet-style focal
loss on sigmoid probabilities): for probability p and binary label y,
`-[y * alpha * (1-p)^gamma * log p + (1-y) * (1-alpha) * p^gamma * log(1-p)]`
summed and divided by the number of positive labels (at least 1). GEN-VLKT
clamps p to [1e-4, 1 - 1e-4]; here log p and log(1-p) are computed with
`log_sigmoid` instead (no clamp, stable for large logits).

Auxiliary decoder layers are matched separately and their terms get the suffix
`_aux_{i}`.

L_re form (`loss.reconstruction_form`):
* 'raw_all_layers' (default; GEN-VLKT's mimic loss `loss_feat_mimic`, i.e.
  `F.l1_loss(mean_q(inter_memory), clip_model.encode_image(...))` on every
  decoder layer): each layer's raw `interaction_clip_feature` (mean over
  queries of the projected interaction features, not normalised) against the
  raw CLIP image embedding; `loss_re` for the final layer and `loss_re_aux_{i}`
  for the auxiliary ones (when `loss.aux_loss`), each weighted by
  `reconstruction_loss_coef`.
* 'unit_last_layer' (docs/architecture.md eq. 16 as first read): the final layer's
  `interaction_clip_feature_unit` (mean over queries of the L2-normalised
  projected features) against the L2-normalised CLIP image embedding;
  `loss_re` only.

Cross-device normalisation: every count (matched pairs, positive labels, CE
weights, L_re elements) is summed over `axis_name`, and each device returns
`local_sum * num_devices / global_count`, so that the mean over devices (what
`lax.pmean` of the gradients and metrics gives) equals the loss of the global
batch computed on one device. With `axis_name=None` it is the plain loss.

Padding convention: GT pairs carry `pair_mask` (False = padding); examples
with `image_index < 0` are padding images and contribute to no term.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ki2hoi_jax.models import instance_interactor
from ki2hoi_jax.train import box_ops
from ki2hoi_jax.train import matching

Array = jnp.ndarray

# Loss term -> the config.loss field with its weight.
LOSS_COEFS = {
    "loss_sub_bbox": "bbox_loss_coef",
    "loss_obj_bbox": "bbox_loss_coef",
    "loss_sub_giou": "giou_loss_coef",
    "loss_obj_giou": "giou_loss_coef",
    "loss_obj_ce": "object_class_loss_coef",
    "loss_human_ce": "human_class_loss_coef",
    "loss_interaction": "interaction_loss_coef",
    "loss_re": "reconstruction_loss_coef",
}

RECONSTRUCTION_FORMS = ("raw_all_layers", "unit_last_layer")


# ----------------------------------------------------------------- classes


def make_targets(batch: Dict[str, Array], class_indices: np.ndarray,
                 interaction_space: str) -> Dict[str, Array]:
  """Per-device training targets from a batch (docs/contracts.md).

  Args:
    batch: `sub_boxes`, `obj_boxes` [B, P, 4], `obj_labels` [B, P],
      `hoi_labels` [B, P, 600] or `verb_labels` [B, P, V], `pair_mask` [B, P]
      and optionally `image_index` [B] (-1 = padding image).
    class_indices: [C] columns of the training classifier.
    interaction_space: 'hoi' or 'verb'.

  Returns:
    `sub_boxes`, `obj_boxes`, `obj_labels`, `interaction_labels` [B, P, C],
    `pair_mask` [B, P] (False also for every pair of a padding image) and
    `example_mask` [B].
  """
  key = "hoi_labels" if interaction_space == "hoi" else "verb_labels"
  labels = jnp.take(jnp.asarray(batch[key], jnp.float32),
                    jnp.asarray(class_indices), axis=-1)
  pair_mask = jnp.asarray(batch["pair_mask"], bool)
  if "image_index" in batch:
    example_mask = jnp.asarray(batch["image_index"]) >= 0
  else:
    example_mask = jnp.ones(pair_mask.shape[:1], bool)
  return {
      "sub_boxes": jnp.asarray(batch["sub_boxes"], jnp.float32),
      "obj_boxes": jnp.asarray(batch["obj_boxes"], jnp.float32),
      "obj_labels": jnp.asarray(batch["obj_labels"], jnp.int32),
      "interaction_labels": labels,
      "pair_mask": pair_mask & example_mask[:, None],
      "example_mask": example_mask,
  }


# ------------------------------------------------------------- primitives


def _normalise(local_sum: Array, local_count: Array,
               axis_name: Optional[str]) -> Array:
  """local_sum * num_devices / max(global count, 1) (module docstring)."""
  local_count = jax.lax.stop_gradient(jnp.asarray(local_count, jnp.float32))
  if axis_name is None:
    return local_sum / jnp.maximum(local_count, 1.0)
  total = jax.lax.psum(local_count, axis_name)
  num_devices = jax.lax.psum(1.0, axis_name)
  return local_sum * num_devices / jnp.maximum(total, 1.0)


def weighted_cross_entropy(logits: Array, target: Array,
                           no_object_weight: float,
                           weight: Array) -> Tuple[Array, Array]:
  """DETR's cross-entropy with a down-weighted no-object (last) class.

  Args:
    logits: [..., N] class logits; class N - 1 is no-object.
    target: [...] int class index.
    no_object_weight: weight of examples whose target is N - 1.
    weight: [...] extra 0/1 weight (padding images get 0).

  Returns:
    (sum of weighted CE, sum of weights): the loss is their ratio.
  """
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  ce = -jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
  no_object = logits.shape[-1] - 1
  w = jnp.where(target == no_object, no_object_weight, 1.0) * weight
  return jnp.sum(w * ce), jnp.sum(w)


def focal_loss(logits: Array, labels: Array, alpha: float, gamma: float,
               weight: Array) -> Tuple[Array, Array]:
  """GEN-VLKT `_neg_loss` focal loss on sigmoid logits (module docstring).

  Args:
    logits: [..., C] interaction logits.
    labels: [..., C] binary targets.
    alpha: weight of positives (negatives get 1 - alpha).
    gamma: focusing exponent.
    weight: [...] 0/1 weight of each row (padding images get 0).

  Returns:
    (sum of the loss, number of positive labels).
  """
  x = jnp.asarray(logits, jnp.float32)
  prob = jax.nn.sigmoid(x)
  pos = (labels >= 0.5).astype(jnp.float32) * weight[..., None]
  neg = (labels < 0.5).astype(jnp.float32) * weight[..., None]
  pos_loss = alpha * jax.nn.log_sigmoid(x) * (1.0 - prob) ** gamma * pos
  neg_loss = (1.0 - alpha) * jax.nn.log_sigmoid(-x) * prob ** gamma * neg
  return -jnp.sum(pos_loss + neg_loss), jnp.sum(pos)


def _gather_queries(x: Array, query_index: Array) -> Array:
  """[B, Q, ...] gathered at [B, P] query indices -> [B, P, ...]."""
  idx = query_index.reshape(query_index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def _scatter_to_queries(values: Array, query_index: Array, mask: Array,
                        num_queries: int, fill) -> Array:
  """Per-GT values [B, P, ...] placed at their matched queries -> [B, Q, ...].

  Unmatched queries get `fill`; masked-out entries are dropped.
  """
  batch = values.shape[0]
  out = jnp.full((batch, num_queries) + values.shape[2:], fill, values.dtype)
  idx = jnp.where(mask, query_index, num_queries)  # Out of range -> dropped.
  rows = jnp.broadcast_to(jnp.arange(batch)[:, None], idx.shape)
  return out.at[rows, idx].set(values, mode="drop")


# --------------------------------------------------------------- per layer


def layer_losses(outputs: Dict[str, Array], targets: Dict[str, Array],
                 indices: Array, mask: Array, loss_config,
                 axis_name: Optional[str],
                 trained_objects: Optional[np.ndarray] = None
                 ) -> Dict[str, Array]:
  """Unweighted loss terms of one decoder layer.

  Args:
    outputs: `pred_sub_boxes`, `pred_obj_boxes` [B, Q, 4], `pred_obj_logits`
      [B, Q, K+1], `pred_human_logits` [B, Q, 2], `pred_interaction_logits`
      [B, Q, C].
    targets: from `make_targets`.
    indices: [B, 2, P] matching (matching.py convention).
    mask: [B, P] bool, matched valid GT pairs.
    loss_config: config.loss.
    axis_name: pmap axis of the cross-device normalisation, or None.
    trained_objects: optional [K] bool, the objects the object
      cross-entropy scores (`loss.object_classes='trained'`); the others
      are left out of its softmax, so they get no gradient from it.

  Returns:
    Dict of scalar terms (see the module docstring) and `obj_accuracy`.
  """
  query = indices[:, 0, :]  # [B, P]
  num_q = outputs["pred_sub_boxes"].shape[1]
  maskf = mask.astype(jnp.float32)
  has_obj = matching.object_box_exists(targets["obj_boxes"])
  obj_maskf = maskf * has_obj.astype(jnp.float32)
  example_w = targets["example_mask"].astype(jnp.float32)
  terms = {}

  # Boxes of the matched queries.
  for name in ("sub", "obj"):
    pred = _gather_queries(
        jnp.asarray(outputs[f"pred_{name}_boxes"], jnp.float32), query)
    gt = targets[f"{name}_boxes"]
    m = maskf if name == "sub" else obj_maskf
    l1 = jnp.sum(jnp.abs(pred - gt), axis=-1)
    giou = box_ops.elementwise_giou(box_ops.cxcywh_to_xyxy(pred),
                                    box_ops.cxcywh_to_xyxy(gt))
    terms[f"loss_{name}_bbox"] = _normalise(jnp.sum(l1 * m), jnp.sum(m),
                                            axis_name)
    terms[f"loss_{name}_giou"] = _normalise(jnp.sum((1.0 - giou) * m),
                                            jnp.sum(m), axis_name)

  # Object classes: unmatched queries -> no-object (last class).
  obj_logits = outputs["pred_obj_logits"]
  no_object = obj_logits.shape[-1] - 1
  if trained_objects is not None:
    scored = np.append(np.asarray(trained_objects, bool), True)
    if scored.shape != (obj_logits.shape[-1],):
      raise ValueError(f"trained_objects must be [{no_object}] bool, got "
                       f"{np.shape(trained_objects)}")
    obj_logits = jnp.where(scored, obj_logits,
                           jnp.finfo(obj_logits.dtype).min)
  target_cls = _scatter_to_queries(targets["obj_labels"], query, mask, num_q,
                                   no_object)
  w = jnp.broadcast_to(example_w[:, None], target_cls.shape)
  ce_sum, ce_w = weighted_cross_entropy(obj_logits, target_cls,
                                        loss_config.no_object_weight, w)
  terms["loss_obj_ce"] = _normalise(ce_sum, ce_w, axis_name)
  correct = (jnp.argmax(_gather_queries(obj_logits, query), -1) ==
             targets["obj_labels"]).astype(jnp.float32)
  terms["obj_accuracy"] = _normalise(jnp.sum(correct * maskf), jnp.sum(maskf),
                                     axis_name)

  # Human score: [person, no-object].
  target_h = _scatter_to_queries(jnp.zeros_like(query), query, mask, num_q, 1)
  ce_sum, ce_w = weighted_cross_entropy(outputs["pred_human_logits"], target_h,
                                        loss_config.no_object_weight, w)
  terms["loss_human_ce"] = _normalise(ce_sum, ce_w, axis_name)

  # Interactions: unmatched queries have all-zero targets.
  target_int = _scatter_to_queries(targets["interaction_labels"], query, mask,
                                   num_q, 0.0)
  fl_sum, num_pos = focal_loss(outputs["pred_interaction_logits"], target_int,
                               loss_config.focal_alpha,
                               loss_config.focal_gamma, w)
  terms["loss_interaction"] = _normalise(fl_sum, num_pos, axis_name)
  return terms


def reconstruction_loss(feature: Array, clip_embedding: Array, kind: str,
                        example_mask: Array,
                        axis_name: Optional[str]) -> Array:
  """L_re between the interaction feature and the frozen CLIP embedding.

  The distance only: the caller picks raw or unit vectors
  (`loss.reconstruction_form`, module docstring).

  Args:
    feature: [B, E] interaction feature (`interaction_clip_feature` or
      `interaction_clip_feature_unit`).
    clip_embedding: [B, E] CLIP image embedding, raw or normalised like
      `feature` (gradient stopped here).
    kind: 'l1' (mean |d|), 'l2' (mean d^2) or 'l1+l2' (their sum).
    example_mask: [B] bool, False for padding images.
    axis_name: pmap axis of the normalisation, or None.

  Returns:
    Scalar loss.
  """
  diff = (jnp.asarray(feature, jnp.float32) -
          jax.lax.stop_gradient(jnp.asarray(clip_embedding, jnp.float32)))
  m = example_mask.astype(jnp.float32)[:, None]
  count = jnp.sum(m) * diff.shape[-1]
  total = 0.0
  if kind in ("l1", "l1+l2"):
    total = total + _normalise(jnp.sum(jnp.abs(diff) * m), count, axis_name)
  if kind in ("l2", "l1+l2"):
    total = total + _normalise(jnp.sum(diff**2 * m), count, axis_name)
  if kind not in ("l1", "l2", "l1+l2"):
    raise ValueError(f"unknown reconstruction loss {kind!r}")
  return total


# ------------------------------------------------------------------- total


def layer_outputs(outputs: Dict[str, Any], use_aux: bool
                  ) -> List[Tuple[str, Dict[str, Array]]]:
  """(metric suffix, outputs) of each layer whose loss counts, final first."""
  layers = [("", outputs)]
  if use_aux:
    for i, aux in enumerate(outputs.get("aux_outputs", None) or ()):
      layers.append((f"_aux_{i}", aux))
  return layers


def compute_losses(
    outputs: Dict[str, Any],
    targets: Dict[str, Array],
    loss_config,
    axis_name: Optional[str] = "batch",
    matches: Optional[Sequence[Tuple[Array, Array]]] = None,
    trained_objects: Optional[np.ndarray] = None,
) -> Tuple[Array, Dict[str, Array]]:
  """Weighted sum of all terms of all decoder layers.

  Args:
    outputs: model outputs (docs/contracts.md), incl. `aux_outputs`.
    targets: from `make_targets`.
    loss_config: config.loss.
    axis_name: pmap axis name, or None outside pmap.
    matches: optional precomputed (indices, mask) per layer (final first, then
      the auxiliary layers); computed with `matching.match` when None.
    trained_objects: optional [K] bool, the objects of the object
      cross-entropy (`layer_losses`); None: all.

  Returns:
    (loss, metrics): the scalar loss (per-device share, see the module
    docstring) and every unweighted term plus `loss` and `num_pairs`.
  """
  layers = layer_outputs(outputs, loss_config.aux_loss)
  kind, form = loss_config.reconstruction, loss_config.reconstruction_form
  if form not in RECONSTRUCTION_FORMS:
    raise ValueError(f"loss.reconstruction_form must be one of "
                     f"{RECONSTRUCTION_FORMS}, got {form!r}")
  if matches is None:
    matches = [matching.match(out, targets, loss_config) for _, out in layers]
  if len(matches) != len(layers):
    raise ValueError(f"{len(matches)} matches for {len(layers)} layers")
  metrics = {}
  total = 0.0
  for (suffix, out), (indices, mask) in zip(layers, matches):
    terms = layer_losses(out, targets, indices, mask, loss_config, axis_name,
                         trained_objects)
    if kind != "none" and form == "raw_all_layers":
      terms["loss_re"] = reconstruction_loss(
          out["interaction_clip_feature"], outputs["clip_image_embedding"],
          kind, targets["example_mask"], axis_name)
    for name, value in terms.items():
      metrics[name + suffix] = value
      if name in LOSS_COEFS:
        total = total + getattr(loss_config, LOSS_COEFS[name]) * value
  if kind != "none" and form == "unit_last_layer":
    metrics["loss_re"] = reconstruction_loss(
        outputs["interaction_clip_feature_unit"],
        instance_interactor.l2_normalize(jnp.asarray(
            outputs["clip_image_embedding"], jnp.float32)),
        kind, targets["example_mask"], axis_name)
    total = total + loss_config.reconstruction_loss_coef * metrics["loss_re"]
  num_pairs = jnp.sum(matches[0][1].astype(jnp.float32))
  if axis_name is not None:  # The mean over devices is the global count.
    num_pairs = num_pairs * jax.lax.psum(1.0, axis_name)
  metrics["num_pairs"] = num_pairs
  metrics["loss"] = total
  return total, metrics
