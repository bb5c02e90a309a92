"""Ho-Pair Encoder: shapes, padding invariance, synced BN, linear attention."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ki2hoi_jax.models import ho_pair_encoder
from ki2hoi_jax.models import transformer

KEY = jax.random.key(0, impl="unsafe_rbg")  # Fast to compile on CPU.


def _maps(rng, valid_hw=(3, 4), canvas_hw=(5, 6), d=8, batch=2):
  valid = rng.normal(size=(batch,) + valid_hw + (d,)).astype(np.float32)
  zero = np.zeros((batch,) + canvas_hw + (d,), np.float32)
  zero[:, :valid_hw[0], :valid_hw[1]] = valid
  junk = rng.normal(size=zero.shape).astype(np.float32) * 10
  junk[:, :valid_hw[0], :valid_hw[1]] = valid
  mask = np.zeros((batch,) + canvas_hw, bool)
  mask[:, :valid_hw[0], :valid_hw[1]] = True
  return valid, zero, junk, mask


def test_masked_batch_norm_statistics():
  x = np.arange(2 * 2 * 3 * 1, dtype=np.float32).reshape(2, 2, 3, 1)
  mask = np.array([[[1, 1, 0], [0, 0, 0]], [[1, 0, 0], [1, 0, 0]]], bool)
  bn = ho_pair_encoder.MaskedBatchNorm()
  variables = bn.init(KEY, x, mask, use_running_average=False)
  y, state = bn.apply(variables, x, mask, use_running_average=False,
                      mutable=["batch_stats"])
  vals = x[..., 0][mask]  # 0, 1, 6, 9
  mean, var = vals.mean(), vals.var()
  np.testing.assert_allclose(y[..., 0][mask], (vals - mean)
                             / np.sqrt(var + 1e-5), rtol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["mean"], [0.1 * mean],
                             rtol=1e-5)
  np.testing.assert_allclose(state["batch_stats"]["var"],
                             [0.9 + 0.1 * var], rtol=1e-5)


@pytest.mark.parametrize("norm", ["batch", "masked"])
def test_encoder_shapes_and_padding_invariance(norm):
  rng = np.random.default_rng(0)
  valid, zero, junk, mask = _maps(rng)
  enc = ho_pair_encoder.HoPairEncoder(num_layers=2, mlp_ratio=2, norm=norm)
  variables = jax.jit(enc.init, static_argnums=3)(KEY, zero, mask, False)
  assert set(variables["params"]) == {"layers_0", "layers_1", "norm"}
  assert set(variables["params"]["layers_0"]) == {
      "local_encoder", "global_local", "attn", "mlp_norm", "fc1", "fc2"}
  assert ("batch_stats" in variables) == (norm == "batch")
  assert variables["params"]["layers_0"]["fc1"]["kernel"].shape == (8, 16)

  @functools.partial(jax.jit, static_argnums=2)
  def run(x, m, train):
    return enc.apply(variables, x, m, train, mutable=["batch_stats"])[0]

  for train in (True, False):
    ref = run(valid, np.ones(valid.shape[:3], bool), train)
    out_zero = run(zero, mask, train)
    out_junk = run(junk, mask, train)
    assert out_zero.shape == zero.shape
    np.testing.assert_allclose(out_zero[:, :3, :4], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out_junk[:, :3, :4], ref, rtol=1e-4, atol=1e-4)


def test_batch_norm_syncs_across_devices():
  """pmap over 2 devices with axis_name == one call over the whole batch."""
  rng = np.random.default_rng(1)
  _, x, _, mask = _maps(rng, batch=4)
  mask[2:, 2:] = False  # Different valid regions per device.
  enc = ho_pair_encoder.HoPairEncoder(num_layers=1, mlp_ratio=2,
                                      norm="batch")
  variables = jax.jit(enc.init, static_argnums=3)(KEY, x, mask, False)
  whole, state = jax.jit(lambda x, m: enc.apply(
      variables, x, m, True, mutable=["batch_stats"]))(x, mask)
  synced = ho_pair_encoder.HoPairEncoder(num_layers=1, mlp_ratio=2,
                                         norm="batch", axis_name="batch")
  per_dev, dev_state = jax.pmap(
      lambda x, m: synced.apply(variables, x, m, True,
                                mutable=["batch_stats"]),
      axis_name="batch", devices=jax.devices()[:2])(
          x.reshape(2, 2, *x.shape[1:]), mask.reshape(2, 2, *mask.shape[1:]))
  np.testing.assert_allclose(per_dev.reshape(whole.shape)[mask],
                             np.asarray(whole)[mask], rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree_util.tree_leaves(dev_state),
                  jax.tree_util.tree_leaves(state)):
    np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a[1], b, rtol=1e-4, atol=1e-5)


def test_additive_attention_masks_padded_tokens():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(1, 6, 8)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 0, 0]], bool)
  attn = ho_pair_encoder.EfficientAdditiveAttention()
  variables = attn.init(KEY, x, mask)
  out = attn.apply(variables, x, mask)
  x2 = x.copy()
  x2[:, 4:] = 100.0
  np.testing.assert_allclose(attn.apply(variables, x2, mask)[:, :4],
                             out[:, :4], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(attn.apply(variables, x[:, :4])[:, :4],
                             out[:, :4], rtol=1e-5, atol=1e-5)


def _flops(fn, n, d=32):
  x = jax.ShapeDtypeStruct((1, n, d), jnp.float32)
  cost = jax.jit(fn).lower(x).compile().cost_analysis()
  if isinstance(cost, list):  # Older JAX returned one dict per device.
    cost = cost[0]
  return cost["flops"]


def test_additive_attention_flops_linear_softmax_quadratic():
  d = 32
  additive = ho_pair_encoder.EfficientAdditiveAttention()
  softmax = transformer.MultiHeadAttention(num_heads=1)
  x0 = jnp.zeros((1, 8, d))
  pa = additive.init(KEY, x0)
  ps = softmax.init(KEY, x0, x0, x0)
  f_add = lambda x: additive.apply(pa, x)
  f_sm = lambda x: softmax.apply(ps, x, x, x)
  # Large N so the N^2 term dominates the softmax attention's N d^2 terms.
  n = 1024
  r_add = _flops(f_add, 2 * n) / _flops(f_add, n)
  r_sm = _flops(f_sm, 4 * n) / _flops(f_sm, 2 * n)
  print(f"FLOP ratio when tokens double: additive {r_add:.3f}, "
        f"softmax {r_sm:.3f}")
  assert abs(r_add - 2.0) < 0.05
  assert r_sm > 3.5
