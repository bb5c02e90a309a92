"""Hungarian matching of pair queries to ground-truth HOI pairs.

The cost matrix is built on the device in JAX ([B, Q, P], `config_cost`);
the assignment is solved on the host with
`scipy.optimize.linear_sum_assignment` (`assign_on_host`). The HOI train step
calls it between its two device programs (train_step.py); the synthetic
detector's pretraining calls it inside its step through `jax.pure_callback`
(`hungarian_match`). Only integer indices go back to the devices.

Cost (GEN-VLKT's `HungarianMatcherHOI`, YueLiao/gen-vlkt `models/matcher.py`),
for query q and GT pair p:

* interaction:
  `-(p_q . y_p / sum(y_p) + (1 - p_q) . (1 - y_p) / sum(1 - y_p)) / 2` with `p_q = sigmoid(interaction logits)` and `y_p` the multi-hot GT labels
  (the mean probability of the positive classes and of the negative classes);
* object class: `-softmax(object logits)[q, label_p]`;
* box L1: `max(L1(human_q, human_p), L1(object_q, object_p))`;
* GIoU: `max(-GIoU(human_q, human_p), -GIoU(object_q, object_p))`.

Pairs without an object box (V-COCO agent-only / no-object roles: the object
box is all zero) use the human terms alone (GEN-VLKT ignores their object box
cost the same way). Padded GT columns get a large bounded cost and are sliced
off on the host (scenic's `slicer`), and the cost goes through `nan_to_num`.

Matching result convention: `indices [B, 2, P]` int32, where
`indices[b, 0, j]` is the query matched to GT pair j and `indices[b, 1, j] = j`,
and `mask [B, P]` bool is True where GT pair j is valid and matched. Entries
with mask False hold query 0 and must be ignored.
"""

import threading
import time
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from ki2hoi_jax.train import box_ops

# Cost of padded GT columns and the bound of every finite cost entry.
PADDING_COST = 1e5
_CLASS_EPS = 1e-4


class HostTimer:
  """Thread-safe accumulator of the seconds spent in host matching.

  `assign_on_host` runs in the train loop's thread, or as a callback in
  XLA's host threads (one per device under pmap): the total is CPU seconds
  summed over devices; `calls` counts its calls.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self.seconds = 0.0
    self.calls = 0

  def add(self, seconds: float) -> None:
    with self._lock:
      self.seconds += seconds
      self.calls += 1

  def read_and_reset(self) -> Tuple[float, int]:
    """Returns (seconds, calls) since the last reset and resets them."""
    with self._lock:
      out = (self.seconds, self.calls)
      self.seconds, self.calls = 0.0, 0
    return out


HOST_TIMER = HostTimer()


def assign_on_host(cost: np.ndarray, valid: np.ndarray):
  """Solves the assignment for every leading index (adds to HOST_TIMER).

  Args:
    cost: [..., Q, P] float cost.
    valid: [..., P] bool, valid GT columns.

  Returns:
    ([..., 2, P] int32 indices, [..., P] bool mask), see the module docstring.
  """
  start = time.perf_counter()
  cost = np.asarray(cost)
  valid = np.asarray(valid)
  lead = cost.shape[:-2]
  num_q, num_p = cost.shape[-2:]
  cost = cost.reshape((-1, num_q, num_p))
  valid = valid.reshape((-1, num_p))
  indices = np.zeros((cost.shape[0], 2, num_p), np.int32)
  indices[:, 1, :] = np.arange(num_p, dtype=np.int32)
  mask = np.zeros((cost.shape[0], num_p), bool)
  for b in range(cost.shape[0]):
    cols = np.flatnonzero(valid[b])
    if cols.size == 0:
      continue
    rows, matched = scipy.optimize.linear_sum_assignment(cost[b][:, cols])
    indices[b, 0, cols[matched]] = rows
    mask[b, cols[matched]] = True
  HOST_TIMER.add(time.perf_counter() - start)
  return indices.reshape(lead + (2, num_p)), mask.reshape(lead + (num_p,))


def hungarian_match(cost: jnp.ndarray,
                    valid: jnp.ndarray) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """Optimal one-to-one assignment of queries to valid GT pairs (on the host).

  Works under jit, pmap and vmap (the callback loops over leading dimensions
  on the host); no gradient flows through it.

  Args:
    cost: [B, Q, P] float cost of assigning query q to GT pair p.
    valid: [B, P] bool, valid (unpadded) GT pairs.

  Returns:
    indices: [B, 2, P] int32 (matched query, GT index) per GT pair.
    mask: [B, P] bool, True where the GT pair is valid and matched.
  """
  cost = jax.lax.stop_gradient(cost.astype(jnp.float32))
  valid = jax.lax.stop_gradient(valid.astype(bool))
  num_p = cost.shape[-1]
  out_shapes = (
      jax.ShapeDtypeStruct(cost.shape[:-2] + (2, num_p), jnp.int32),
      jax.ShapeDtypeStruct(valid.shape, jnp.bool_),
  )
  return jax.pure_callback(assign_on_host, out_shapes, cost, valid,
                           vmap_method="broadcast_all")


def object_box_exists(obj_boxes: jnp.ndarray) -> jnp.ndarray:
  """[..., 4] -> [...] bool, False for all-zero (no-object) boxes."""
  return jnp.any(obj_boxes != 0, axis=-1)


def compute_cost(outputs: Dict[str, jnp.ndarray],
                 targets: Dict[str, jnp.ndarray],
                 *,
                 cost_interaction: float = 1.0,
                 cost_object_class: float = 1.0,
                 cost_bbox: float = 2.5,
                 cost_giou: float = 1.0) -> jnp.ndarray:
  """Matching cost between pair queries and GT pairs (module docstring).

  Args:
    outputs: `pred_sub_boxes` [B, Q, 4], `pred_obj_boxes` [B, Q, 4] (cxcywh),
      `pred_obj_logits` [B, Q, K+1], `pred_interaction_logits` [B, Q, C].
    targets: `sub_boxes` [B, P, 4], `obj_boxes` [B, P, 4] (cxcywh, all zero
      for no-object pairs), `obj_labels` [B, P] int, `interaction_labels`
      [B, P, C] multi-hot, `pair_mask` [B, P] bool.
    cost_interaction: weight of the interaction term.
    cost_object_class: weight of the object-class term.
    cost_bbox: weight of the L1 term.
    cost_giou: weight of the GIoU term.

  Returns:
    [B, Q, P] float32 cost, bounded by PADDING_COST; padded columns equal it.
  """
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  prob = jax.nn.sigmoid(f32(outputs["pred_interaction_logits"]))  # [B, Q, C]
  labels = f32(targets["interaction_labels"])  # [B, P, C]
  pos = jnp.einsum("bqc,bpc->bqp", prob, labels) / (
      labels.sum(-1)[:, None, :] + _CLASS_EPS)
  neg = jnp.einsum("bqc,bpc->bqp", 1.0 - prob, 1.0 - labels) / (
      (1.0 - labels).sum(-1)[:, None, :] + _CLASS_EPS)
  cost_int = -(pos + neg) / 2.0  # [B, Q, P]

  obj_prob = jax.nn.softmax(f32(outputs["pred_obj_logits"]), axis=-1)
  obj_labels = targets["obj_labels"].astype(jnp.int32)  # [B, P]
  cost_cls = -jnp.take_along_axis(obj_prob, obj_labels[:, None, :], axis=-1)

  pred_sub = f32(outputs["pred_sub_boxes"])
  pred_obj = f32(outputs["pred_obj_boxes"])
  gt_sub = f32(targets["sub_boxes"])
  gt_obj = f32(targets["obj_boxes"])
  has_obj = object_box_exists(gt_obj)[:, None, :]  # [B, 1, P]
  l1_sub = box_ops.pairwise_l1(pred_sub, gt_sub)
  l1_obj = jnp.where(has_obj, box_ops.pairwise_l1(pred_obj, gt_obj), 0.0)
  cost_l1 = jnp.maximum(l1_sub, l1_obj)
  giou_sub = -box_ops.pairwise_giou(box_ops.cxcywh_to_xyxy(pred_sub),
                                    box_ops.cxcywh_to_xyxy(gt_sub))
  giou_obj = -box_ops.pairwise_giou(box_ops.cxcywh_to_xyxy(pred_obj),
                                    box_ops.cxcywh_to_xyxy(gt_obj))
  cost_g = jnp.maximum(giou_sub, jnp.where(has_obj, giou_obj, giou_sub))

  cost = (cost_interaction * cost_int + cost_object_class * cost_cls +
          cost_bbox * cost_l1 + cost_giou * cost_g)
  cost = jnp.nan_to_num(cost, nan=PADDING_COST, posinf=PADDING_COST,
                        neginf=-PADDING_COST)
  cost = jnp.clip(cost, -PADDING_COST, PADDING_COST)
  valid = targets["pair_mask"].astype(bool)[:, None, :]
  return jnp.where(valid, cost, PADDING_COST)


def config_cost(outputs: Dict[str, jnp.ndarray],
                targets: Dict[str, jnp.ndarray], loss_config) -> jnp.ndarray:
  """`compute_cost` with the weights of `loss_config` (config.loss).

  Returns:
    [B, Q, P] float32 cost, no gradient.
  """
  return jax.lax.stop_gradient(compute_cost(
      outputs, targets,
      cost_interaction=loss_config.cost_interaction,
      cost_object_class=loss_config.cost_object_class,
      cost_bbox=loss_config.cost_bbox,
      cost_giou=loss_config.cost_giou))


def match(outputs: Dict[str, jnp.ndarray], targets: Dict[str, jnp.ndarray],
          loss_config) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """`config_cost`, then the matching inside a traced function (callback).

  Returns:
    indices [B, 2, P] int32 and mask [B, P] bool (see `hungarian_match`).
  """
  return hungarian_match(config_cost(outputs, targets, loss_config),
                         targets["pair_mask"])
