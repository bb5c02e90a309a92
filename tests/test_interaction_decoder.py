"""Interaction decoder and verb predictor switches (Table IV ablations).

A switched-off part equals the full module with that part's contribution
zeroed, using the same parameters otherwise.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ki2hoi_jax.models import interaction_decoder
from ki2hoi_jax.models import verb_predictor

B, N, T, M, Cv, D, F, E, C = 2, 3, 4, 5, 6, 8, 16, 12, 7


def _inputs(rng):
  def r(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)
  mask = np.ones((B, M), bool)
  mask[0, -1] = False
  return dict(tgt=r(B, N, D), query_pos=r(1, N, D), clip_tokens=r(B, T, D),
              memory=r(B, M, D), memory_pos=r(B, M, D),
              memory_mask=jnp.asarray(mask), verb_features=r(B, Cv, D))


def _zero_out_proj(params, name):
  params = flax.core.unfreeze(params)
  proj = params[name]["out_proj"]
  proj["kernel"] = jnp.zeros_like(proj["kernel"])
  proj["bias"] = jnp.zeros_like(proj["bias"])
  return params


def test_layer_without_clip_attention_equals_zeroed_clip_branch():
  inputs = _inputs(np.random.default_rng(0))
  full = interaction_decoder.InteractionDecoderLayer(2, F, 0.0)
  params = full.init(jax.random.key(0), **inputs)["params"]
  off = interaction_decoder.InteractionDecoderLayer(2, F, 0.0,
                                                    clip_attention=False)
  off_params = off.init(jax.random.key(0), **dict(inputs, clip_tokens=None))[
      "params"]
  assert "clip_attn" in params and "clip_attn" not in off_params
  assert set(off_params) == set(params) - {"clip_attn"}
  ref, ref_verbs = full.apply({"params": _zero_out_proj(params, "clip_attn")},
                              **inputs)
  kept = {k: v for k, v in params.items() if k != "clip_attn"}
  out, verbs = off.apply({"params": kept}, **dict(inputs, clip_tokens=None))
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(verbs, ref_verbs, rtol=1e-5, atol=1e-6)
  # And the CLIP branch does contribute when it is on.
  with_clip, _ = full.apply({"params": params}, **inputs)
  assert not np.allclose(with_clip, ref, atol=1e-3)


def test_layer_without_verb_retrieval_equals_zeroed_retrieval():
  inputs = _inputs(np.random.default_rng(1))
  full = interaction_decoder.InteractionDecoderLayer(2, F, 0.0)
  params = flax.core.unfreeze(full.init(jax.random.key(0), **inputs)["params"])
  off = interaction_decoder.InteractionDecoderLayer(2, F, 0.0,
                                                    verb_retrieval=False)
  off_params = off.init(jax.random.key(0),
                        **dict(inputs, verb_features=None))["params"]
  assert set(off_params) == set(params) - {"verb_attn"}
  assert off_params["linear1"]["kernel"].shape == (D, F)
  assert params["linear1"]["kernel"].shape == (2 * D, F)
  # Retrieved features 0: the FFN reads only the first D rows of linear1.
  ref, _ = full.apply({"params": _zero_out_proj(params, "verb_attn")},
                      **inputs)
  kept = {k: v for k, v in params.items() if k != "verb_attn"}
  kept["linear1"] = dict(kept["linear1"],
                         kernel=params["linear1"]["kernel"][:D])
  out, verbs = off.apply({"params": kept}, **dict(inputs, verb_features=None))
  assert verbs is None
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_decoder_stack_switches_keep_query_shapes():
  inputs = _inputs(np.random.default_rng(2))
  dec = interaction_decoder.InteractionRepresentationDecoder(
      2, 2, F, 0.0, clip_attention=False, verb_retrieval=False)
  hs, verbs = dec.init_with_output(
      jax.random.key(0), **dict(inputs, clip_tokens=None,
                                verb_features=None))[0]
  assert hs.shape == (2, B, N, D) and verbs is None


def _predictor_inputs(rng):
  return (jnp.asarray(rng.normal(size=(2, B, N, D)), jnp.float32),
          jnp.asarray(rng.normal(size=(2, B, N, D)), jnp.float32),
          jnp.asarray(rng.normal(size=(C, E)), jnp.float32))


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _projection(p, x):
  """_ResidualProjection in numpy: p = Dense(x); p + MLP(p)."""
  def dense(q, y):
    return y @ np.asarray(q["kernel"], np.float64) + np.asarray(q["bias"])
  h = dense(p["proj"], np.asarray(x, np.float64))
  mlp = p["mlp"]
  return h + dense(mlp["layers_1"], np.maximum(dense(mlp["layers_0"], h), 0))


def test_verb_predictor_cosine_logits_and_raw_features_match_numpy():
  hs, verbs, text = _predictor_inputs(np.random.default_rng(3))
  pred = verb_predictor.VerbPredictor(E, logit_scale_init=10.0)
  params = pred.init(jax.random.key(0), hs, verbs, text)["params"]
  logits, raw = pred.apply({"params": params}, hs, verbs, text)
  d = _projection(params["inter_projection"], hs)
  c = _projection(params["verb_projection"], verbs)
  w = _unit(text)
  np.testing.assert_allclose(raw, d, rtol=1e-4, atol=1e-5)  # Not normalised.
  np.testing.assert_allclose(logits, 10.0 * (_unit(d) @ w.T + _unit(c) @ w.T),
                             rtol=1e-4, atol=1e-4)
  # Without verb features: D alone, no verb_projection.
  off_params = pred.init(jax.random.key(0), hs, None, text)["params"]
  assert set(off_params) == set(params) - {"verb_projection"}
  logits, _ = pred.apply({"params": params}, hs, None, text)
  np.testing.assert_allclose(logits, 10.0 * _unit(d) @ w.T, rtol=1e-4,
                             atol=1e-4)


@pytest.mark.parametrize("with_verbs", [True, False])
def test_verb_predictor_linear_head_matches_numpy(with_verbs):
  hs, verbs, text = _predictor_inputs(np.random.default_rng(4))
  verbs = verbs if with_verbs else None
  pred = verb_predictor.VerbPredictor(E, classifier="linear")
  params = pred.init(jax.random.key(0), hs, verbs, text)["params"]
  assert "logit_scale" not in params
  head = params["interaction_classifier"]
  assert head["kernel"].shape == ((2 if with_verbs else 1) * E, C)
  logits, raw = pred.apply({"params": params}, hs, verbs, text)
  x = _projection(params["inter_projection"], hs)
  np.testing.assert_allclose(raw, x, rtol=1e-4, atol=1e-5)
  if with_verbs:
    x = np.concatenate([x, _projection(params["verb_projection"], verbs)], -1)
  np.testing.assert_allclose(
      logits, x @ np.asarray(head["kernel"]) + np.asarray(head["bias"]),
      rtol=1e-4, atol=1e-4)
  # The text embeddings are not read, only their count.
  same, _ = pred.apply({"params": params}, hs, verbs, 3.0 * text + 1.0)
  np.testing.assert_allclose(same, logits, rtol=1e-6)
