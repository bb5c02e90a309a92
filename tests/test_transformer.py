"""DETR transformer encoder (models/transformer.py) against numpy."""

import jax
import numpy as np

from ki2hoi_jax.models import transformer

B, M, D, H, F = 2, 5, 8, 2, 16


def _dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"])


def _layer_norm(p, x):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(
      p["bias"])


def _attention(p, q_in, k_in, v_in, key_mask):
  def heads(x):
    return x.reshape(x.shape[0], x.shape[1], H, D // H)
  q = heads(_dense(p["q_proj"], q_in))
  k = heads(_dense(p["k_proj"], k_in))
  v = heads(_dense(p["v_proj"], v_in))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D // H)
  logits = np.where(key_mask[:, None, None, :], logits, -1e9)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w = w / w.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", w, v).reshape(q_in.shape)
  return _dense(p["out_proj"], out)


def _reference_layer(p, src, pos, mask):
  """DETR `TransformerEncoderLayer.forward_post` in numpy (no dropout)."""
  qk = src + pos
  src = _layer_norm(p["norm1"], src + _attention(p["self_attn"], qk, qk, src,
                                                 mask))
  ffn = _dense(p["linear2"], np.maximum(_dense(p["linear1"], src), 0.0))
  return _layer_norm(p["norm2"], src + ffn)


def test_encoder_matches_numpy_detr_encoder_and_masks_padding():
  rng = np.random.default_rng(0)
  src = rng.normal(size=(B, M, D)).astype(np.float32)
  pos = rng.normal(size=(B, M, D)).astype(np.float32)
  mask = np.ones((B, M), bool)
  mask[1, 3:] = False  # Two padding tokens in the second example.
  enc = transformer.TransformerEncoder(num_layers=2, num_heads=H,
                                       dim_feedforward=F, dropout=0.1)
  params = enc.init(jax.random.key(0), src, pos, mask)["params"]
  assert set(params) == {"layers_0", "layers_1"}
  assert set(params["layers_0"]) == {"self_attn", "linear1", "linear2",
                                     "norm1", "norm2"}
  out = np.asarray(enc.apply({"params": params}, src, pos, mask))
  ref = src.astype(np.float64)
  for i in range(2):
    ref = _reference_layer(params[f"layers_{i}"], ref, pos, mask)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
  # Padding content is no key: changing it leaves the valid tokens alone.
  junk = src.copy()
  junk[1, 3:] = 100.0
  out2 = np.asarray(enc.apply({"params": params}, junk, pos, mask))
  np.testing.assert_allclose(out2[1, :3], out[1, :3], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out2[0], out[0], rtol=1e-6)
