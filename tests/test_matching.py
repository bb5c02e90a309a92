"""Tests of the Hungarian matcher (train/matching.py) and box_ops."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ki2hoi_jax.train import box_ops
from ki2hoi_jax.train import matching


def _brute_force_cost(cost, valid):
  """Minimum total cost over all injective maps of valid GT -> queries."""
  cols = np.flatnonzero(valid)
  num_q = cost.shape[0]
  if cols.size == 0:
    return 0.0
  n = min(cols.size, num_q)
  best = np.inf
  # Choose which GT columns are matched (all when n == cols.size).
  for chosen in itertools.combinations(cols, n):
    for rows in itertools.permutations(range(num_q), n):
      best = min(best, sum(cost[r, c] for r, c in zip(rows, chosen)))
  return best


def _matched_cost(cost, indices, mask):
  q = indices[0][mask]
  p = indices[1][mask]
  assert len(set(q.tolist())) == len(q), "a query was matched twice"
  return float(cost[q, p].sum())


@pytest.mark.parametrize("num_q,num_p", [(4, 3), (3, 3), (2, 4)])
def test_matches_brute_force_including_padding_and_empty(num_q, num_p):
  rng = np.random.default_rng(num_q * 10 + num_p)
  batch = 4
  cost = rng.normal(size=(batch, num_q, num_p)).astype(np.float32)
  valid = rng.random((batch, num_p)) < 0.7
  valid[0] = False  # Empty ground truth.
  valid[1] = True  # No padding.
  indices, mask = jax.jit(matching.hungarian_match)(cost, valid)
  indices, mask = np.asarray(indices), np.asarray(mask)
  assert indices.shape == (batch, 2, num_p) and indices.dtype == np.int32
  assert mask.shape == (batch, num_p)
  np.testing.assert_array_equal(indices[:, 1], np.tile(np.arange(num_p),
                                                       (batch, 1)))
  for b in range(batch):
    assert not mask[b][~valid[b]].any()
    assert mask[b].sum() == min(valid[b].sum(), num_q)
    np.testing.assert_allclose(
        _matched_cost(cost[b], indices[b], mask[b]),
        _brute_force_cost(cost[b], valid[b]), rtol=1e-5, atol=1e-5)
  assert not mask[0].any()


def test_match_under_vmap_and_pmap_and_timer():
  rng = np.random.default_rng(0)
  cost = rng.normal(size=(8, 2, 5, 3)).astype(np.float32)
  valid = rng.random((8, 2, 3)) < 0.8
  matching.HOST_TIMER.read_and_reset()
  ref_idx, ref_mask = jax.jit(jax.vmap(matching.hungarian_match))(cost, valid)
  idx, mask = jax.pmap(matching.hungarian_match)(cost, valid)
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(ref_idx))
  np.testing.assert_array_equal(np.asarray(mask), np.asarray(ref_mask))
  seconds, calls = matching.HOST_TIMER.read_and_reset()
  assert calls >= 2 and seconds > 0.0


def test_gradient_flows_around_matching():
  outputs, targets = _toy_outputs_targets()

  def loss(logits):
    out = dict(outputs, pred_interaction_logits=logits)
    cost = matching.compute_cost(out, targets)
    idx, mask = matching.hungarian_match(cost, targets["pair_mask"])
    picked = jnp.take_along_axis(logits, idx[:, 0, :, None], axis=1)
    return jnp.sum(picked * mask[..., None])

  g = jax.jit(jax.grad(loss))(outputs["pred_interaction_logits"])
  assert np.isfinite(np.asarray(g)).all()
  assert np.abs(np.asarray(g)).sum() > 0


def _toy_outputs_targets():
  outputs = {
      "pred_sub_boxes": jnp.array([[[0.5, 0.5, 0.2, 0.2],
                                    [0.3, 0.3, 0.2, 0.4]]]),
      "pred_obj_boxes": jnp.array([[[0.55, 0.5, 0.2, 0.2],
                                    [0.7, 0.7, 0.2, 0.2]]]),
      "pred_obj_logits": jnp.array([[[1.0, 0.0, -1.0],
                                     [0.0, 2.0, 0.0]]]),
      "pred_interaction_logits": jnp.array([[[0.0, 1.0, -1.0],
                                             [2.0, -2.0, 0.5]]]),
  }
  targets = {
      "sub_boxes": jnp.array([[[0.55, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]]),
      "obj_boxes": jnp.array([[[0.5, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]]),
      "obj_labels": jnp.array([[1, 0]]),
      "interaction_labels": jnp.array([[[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]),
      "pair_mask": jnp.array([[True, False]]),
  }
  return outputs, targets


def test_cost_terms_by_hand():
  outputs, targets = _toy_outputs_targets()
  cost = np.asarray(matching.compute_cost(
      outputs, targets, cost_interaction=1.0, cost_object_class=1.0,
      cost_bbox=2.5, cost_giou=1.0))
  assert cost.shape == (1, 2, 2)
  # Query 0 vs GT 0.
  p = 1 / (1 + np.exp(-np.array([0.0, 1.0, -1.0])))
  y = np.array([1.0, 0.0, 1.0])
  c_int = -((p @ y) / (2 + 1e-4) + ((1 - p) @ (1 - y)) / (1 + 1e-4)) / 2
  sm = np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum()
  c_cls = -sm[1]
  # Human and object boxes are each shifted by 0.05 in x: L1 0.05 both.
  c_l1 = 0.05
  # Both GIoUs: intersection 0.15*0.2, union 0.05, enclosing 0.05 -> 0.6.
  c_giou = -0.6
  expected = c_int + c_cls + 2.5 * c_l1 + c_giou
  np.testing.assert_allclose(cost[0, 0, 0], expected, rtol=1e-5)
  np.testing.assert_allclose(cost[0, :, 1], matching.PADDING_COST)


def test_no_object_pairs_use_human_terms_only_and_nan_is_bounded():
  outputs, targets = _toy_outputs_targets()
  far = dict(outputs, pred_obj_boxes=jnp.array([[[0.9, 0.9, 0.1, 0.1],
                                                 [0.1, 0.1, 0.1, 0.1]]]))
  no_obj = dict(targets, obj_boxes=jnp.zeros((1, 2, 4)))
  c1 = matching.compute_cost(outputs, no_obj, cost_interaction=0.0,
                             cost_object_class=0.0)
  c2 = matching.compute_cost(far, no_obj, cost_interaction=0.0,
                             cost_object_class=0.0)
  np.testing.assert_allclose(np.asarray(c1), np.asarray(c2))
  # Human-only: L1 0.05 * 2.5 and -GIoU -0.6 for query 0.
  np.testing.assert_allclose(np.asarray(c1)[0, 0, 0], 2.5 * 0.05 - 0.6,
                             rtol=1e-5)
  bad = dict(outputs, pred_obj_logits=jnp.full((1, 2, 3), jnp.nan))
  c3 = np.asarray(matching.compute_cost(bad, targets))
  assert np.isfinite(c3).all() and np.abs(c3).max() <= matching.PADDING_COST


def test_box_ops_by_hand():
  a = jnp.array([[0.5, 0.5, 0.2, 0.2]])
  xyxy = box_ops.cxcywh_to_xyxy(a)
  np.testing.assert_allclose(np.asarray(xyxy), [[0.4, 0.4, 0.6, 0.6]],
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(box_ops.xyxy_to_cxcywh(xyxy)),
                             np.asarray(a), rtol=1e-6)
  b = jnp.array([[0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0]])
  # Disjoint unit boxes 1 apart: IoU 0, enclosing 3, union 2 -> GIoU -1/3.
  g = np.asarray(box_ops.pairwise_giou(b, b))
  np.testing.assert_allclose(g, [[1.0, -1 / 3], [-1 / 3, 1.0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(box_ops.pairwise_iou(b, b)),
                             np.eye(2), atol=1e-6)
  zero = jnp.zeros((1, 4))
  assert np.isfinite(np.asarray(box_ops.elementwise_giou(zero, zero))).all()
