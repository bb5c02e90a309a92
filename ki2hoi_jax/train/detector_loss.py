"""Set-prediction loss of detector pretraining (train/pretrain_detector.py).

The N human queries predict people (box, person vs no-object), the N object
queries objects (box, object class or no-object); there are no pairs to
form, so each side is matched to its own ground truth with the Hungarian
matcher of HOI training (`matching.hungarian_match`, scipy on the host).
Cost: -p(class) * `loss.cost_object_class` + L1 * `loss.cost_bbox` - GIoU *
`loss.cost_giou` (normalised cxcywh). Loss per side and decoder layer (every
layer with `loss.aux_loss`): L1 * `bbox_loss_coef` + (1 - GIoU) *
`giou_loss_coef`, normalised by the ground-truth boxes of the batch, and
DETR's cross-entropy (`losses.weighted_cross_entropy`, unmatched queries ->
no-object with `no_object_weight`) * `human_class_loss_coef` /
`object_class_loss_coef`.
"""

from typing import Dict, Tuple

import jax
import jax.numpy as jnp

from ki2hoi_jax.train import box_ops
from ki2hoi_jax.train import losses
from ki2hoi_jax.train import matching

Array = jnp.ndarray


def set_loss(boxes: Array, logits: Array, gt_boxes: Array, gt_labels: Array,
             gt_mask: Array, loss_config) -> Dict[str, Array]:
  """Hungarian-matched loss terms of one query set (module docstring).

  Args:
    boxes: [B, Q, 4] predicted normalised cxcywh.
    logits: [B, Q, C+1] class logits, no-object last.
    gt_boxes: [B, G, 4] ground-truth normalised cxcywh.
    gt_labels: [B, G] int class in 0..C-1.
    gt_mask: [B, G] bool, True on real boxes.
    loss_config: config.loss (cost weights, `no_object_weight`).

  Returns:
    Unweighted scalar terms `l1`, `giou` (1 - GIoU), `ce`.
  """
  prob = jax.nn.softmax(logits, axis=-1)  # [B, Q, C+1]
  cost_cls = -jnp.take_along_axis(prob, gt_labels[:, None, :], axis=-1)
  xyxy, gt_xyxy = box_ops.cxcywh_to_xyxy(boxes), box_ops.cxcywh_to_xyxy(
      gt_boxes)
  cost = (loss_config.cost_object_class * cost_cls
          + loss_config.cost_bbox * box_ops.pairwise_l1(boxes, gt_boxes)
          - loss_config.cost_giou * box_ops.pairwise_giou(xyxy, gt_xyxy))
  cost = jnp.where(gt_mask[:, None, :], cost, matching.PADDING_COST)
  indices, matched = matching.hungarian_match(cost, gt_mask)  # [B, 2, G]
  num_q = boxes.shape[1]
  # assign[b, g, q] = 1 where GT g is matched to query q.
  assign = jax.nn.one_hot(indices[:, 0], num_q) * matched[..., None]
  pred = jnp.einsum("bgq,bqd->bgd", assign, boxes)  # [B, G, 4]
  m = matched.astype(jnp.float32)
  num = jnp.maximum(m.sum(), 1.0)
  l1 = jnp.sum(jnp.abs(pred - gt_boxes).sum(-1) * m) / num
  giou = box_ops.elementwise_giou(box_ops.cxcywh_to_xyxy(pred), gt_xyxy)
  no_object = logits.shape[-1] - 1
  label_of_query = jnp.einsum("bgq,bg->bq", assign,
                              gt_labels.astype(jnp.float32))
  target = jnp.where(assign.sum(1) > 0,
                     jnp.round(label_of_query).astype(jnp.int32), no_object)
  ce_sum, ce_w = losses.weighted_cross_entropy(
      logits, target, loss_config.no_object_weight,
      jnp.ones(target.shape, jnp.float32))
  return {"l1": l1, "giou": jnp.sum((1.0 - giou) * m) / num,
          "ce": ce_sum / jnp.maximum(ce_w, 1e-6)}


def detection_loss(outputs: Dict[str, Array], targets: Dict[str, Array],
                   loss_config) -> Tuple[Array, Dict[str, Array]]:
  """Weighted loss of both query sets over the decoder layers.

  Args:
    outputs: `InstanceDetector` outputs ([L, B, N, ...] per key).
    targets: `person_boxes`, `object_boxes` [B, G, 4] normalised cxcywh,
      `person_mask`, `object_mask` [B, G] bool, `object_labels` [B, G].
    loss_config: config.loss.

  Returns:
    (loss, metrics of the last layer: `loss_{human,object}_{l1,giou,ce}`).
  """
  c = loss_config
  num_layers = outputs["sub_boxes"].shape[0]
  layers = range(num_layers) if c.aux_loss else [num_layers - 1]
  total, metrics = 0.0, {}
  for i in layers:
    human = set_loss(outputs["sub_boxes"][i], outputs["human_logits"][i],
                     targets["person_boxes"],
                     jnp.zeros_like(targets["object_labels"]),
                     targets["person_mask"], c)
    obj = set_loss(outputs["obj_boxes"][i], outputs["obj_logits"][i],
                   targets["object_boxes"], targets["object_labels"],
                   targets["object_mask"], c)
    total = total + (c.bbox_loss_coef * (human["l1"] + obj["l1"])
                     + c.giou_loss_coef * (human["giou"] + obj["giou"])
                     + c.human_class_loss_coef * human["ce"]
                     + c.object_class_loss_coef * obj["ce"])
    metrics = {**{f"loss_human_{k}": v for k, v in human.items()},
               **{f"loss_object_{k}": v for k, v in obj.items()}}
  metrics["loss"] = total
  return total, metrics
