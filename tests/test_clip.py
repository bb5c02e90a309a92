"""CLIP model (Flax) and frozen text embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ki2hoi_jax.config_lib import base
from configs import demo
from ki2hoi_jax.clip import model as clip_model
from ki2hoi_jax.clip import text_embeddings
from ki2hoi_jax.clip import tokenizer


@pytest.fixture(scope="module")
def demo_clip():
  cfg = demo.get_config().model.clip
  model = clip_model.CLIP.from_config(cfg)
  ids = tokenizer.tokenize(["a photo of a cat"], cfg.context_length)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), ids)
  return cfg, model, variables


def _ids(texts, cfg):
  return jnp.asarray(tokenizer.tokenize(texts, cfg.context_length))


def test_quick_gelu_known_values():
  x = jnp.array([-1.0, 0.0, 2.0])
  expected = x / (1 + np.exp(-1.702 * np.asarray(x)))
  np.testing.assert_allclose(clip_model.quick_gelu(x), expected, rtol=1e-6)


def test_paper_config_parameter_count_and_names():
  cfg = base.get_config().model.clip
  model = clip_model.clip_from_config(cfg)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 224, 224, 3)),
                          jnp.zeros((1, 77), jnp.int32))["params"]
  num = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
  assert num == 151_277_313  # OpenAI ViT-B/32.
  assert sorted(shapes) == ["ln_final", "logit_scale", "positional_embedding",
                            "text_projection", "token_embedding",
                            "transformer", "visual"]
  vis = shapes["visual"]
  assert vis["conv1"]["kernel"].shape == (32, 32, 3, 768)
  assert vis["positional_embedding"].shape == (50, 768)
  assert vis["proj"].shape == (768, 512)
  block = vis["transformer"]["resblocks_11"]
  assert block["attn"]["in_proj"]["kernel"].shape == (768, 2304)
  assert block["mlp"]["c_fc"]["kernel"].shape == (768, 3072)
  assert sorted(block) == ["attn", "ln_1", "ln_2", "mlp"]
  assert shapes["transformer"]["resblocks_11"]["ln_2"]["scale"].shape == (512,)
  assert shapes["logit_scale"].shape == ()


def test_demo_shapes_and_vision_tower(demo_clip):
  cfg, model, variables = demo_clip
  images = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
  tokens, emb = model.apply(variables, images, method=lambda m, x: m.visual(x))
  assert tokens.shape == (2, 1 + 16, 64) and emb.shape == (2, 64)
  # ln_post output: zero mean, unit variance per token (scale 1, bias 0).
  np.testing.assert_allclose(tokens.mean(-1), 0.0, atol=1e-5)
  np.testing.assert_allclose(tokens.var(-1), 1.0, atol=1e-3)
  np.testing.assert_allclose(
      emb, tokens[:, 0] @ variables["params"]["visual"]["proj"], atol=1e-5)
  # The stand-alone tower (the model's `clip_visual`) on the same subtree.
  vis = clip_model.vision_from_config(cfg, name="clip_visual")
  tokens2, emb2 = vis.apply({"params": variables["params"]["visual"]}, images)
  np.testing.assert_array_equal(tokens2, tokens)
  np.testing.assert_array_equal(emb2, emb)
  np.testing.assert_allclose(
      model.apply(variables, images, method=model.encode_image), emb)
  with pytest.raises(ValueError, match="64px"):
    vis.apply({"params": variables["params"]["visual"]},
              jnp.zeros((1, 32, 32, 3)))


def test_text_tower_is_causal_and_pools_eot(demo_clip):
  cfg, model, variables = demo_clip
  ids = _ids(["a photo of a cat", "a photo of a person riding a horse"], cfg)
  emb = model.apply(variables, ids, method=model.encode_text)
  assert emb.shape == (2, 64)
  # Tokens after EOT do not change the embedding (causal mask).
  noisy = ids.at[0, 10:].set(7)
  np.testing.assert_allclose(
      model.apply(variables, noisy, method=model.encode_text)[0], emb[0],
      atol=1e-5)
  # A shorter context gives the same embeddings (positions sliced).
  np.testing.assert_allclose(
      model.apply(variables, ids[:, :12], method=model.encode_text), emb,
      atol=1e-5)
  # Changing a token before EOT does change it.
  changed = ids.at[0, 4].set(2368)
  assert float(jnp.abs(model.apply(variables, changed,
                                   method=model.encode_text)[0]
                       - emb[0]).max()) > 1e-3
  # CLIPTextTransformer on CLIP's text subtree is the same function.
  text = clip_model.text_from_config(cfg)
  sub = text_embeddings.text_params(variables)
  np.testing.assert_array_equal(text.apply({"params": sub}, ids), emb)


def test_logits_are_scaled_cosines(demo_clip):
  cfg, model, variables = demo_clip
  images = jax.random.normal(jax.random.key(2), (2, 64, 64, 3))
  ids = _ids(["a photo of a cat", "a photo of a dog", "a photo"], cfg)
  logits, logits_t = model.apply(variables, images, ids)
  img = np.asarray(model.apply(variables, images, method=model.encode_image))
  txt = np.asarray(model.apply(variables, ids, method=model.encode_text))
  cos = (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (
      txt / np.linalg.norm(txt, axis=1, keepdims=True)).T
  np.testing.assert_allclose(logits, cos / 0.07, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(logits_t, logits.T)


def test_bfloat16_compute(demo_clip):
  cfg, _, variables = demo_clip
  images = jax.random.normal(jax.random.key(3), (2, 64, 64, 3))
  f32 = clip_model.vision_from_config(cfg)
  bf16 = clip_model.vision_from_config(cfg, dtype="bfloat16")
  p = {"params": variables["params"]["visual"]}
  tokens, emb = bf16.apply(p, images)
  assert tokens.dtype == jnp.bfloat16 and emb.dtype == jnp.bfloat16
  jaxpr = str(jax.make_jaxpr(lambda x: bf16.apply(p, x))(images))
  assert "dot_general" in jaxpr and "bf16[2,17,192]" in jaxpr  # q/k/v matmul.
  ref_tokens, ref_emb = f32.apply(p, images)
  np.testing.assert_allclose(np.asarray(emb, np.float32), ref_emb, atol=0.1)
  assert float(jnp.abs(tokens.astype(jnp.float32) - ref_tokens).mean()) < 0.05
  # Parameters stay float32.
  assert all(x.dtype == jnp.float32
             for x in jax.tree_util.tree_leaves(variables["params"]))


def test_compute_text_embeddings(demo_clip):
  cfg, model, variables = demo_clip
  prompts = ["a photo of a cat", "a photo of a dog", "a photo of a person",
             "a photo of a person riding a horse", "a photo of a boat",
             "hello", "a photo of a person holding a cup"]
  emb = text_embeddings.compute_text_embeddings(variables["params"], cfg,
                                                prompts, batch=3)
  assert emb.shape == (7, 64) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
  direct = np.asarray(model.apply(variables, _ids(prompts, cfg),
                                  method=model.encode_text))
  direct = direct / np.linalg.norm(direct, axis=-1, keepdims=True)
  np.testing.assert_allclose(emb, direct, atol=1e-5)
  # Batch size (and the padding of the last batch) does not matter.
  np.testing.assert_allclose(
      text_embeddings.compute_text_embeddings(variables, cfg, prompts), emb,
      atol=1e-5)
  assert text_embeddings.compute_text_embeddings(
      variables["params"], cfg, []).shape == (0, 64)


def test_init_from_pretrained_and_prompt_embeddings(demo_clip, tmp_path):
  from ki2hoi_jax.weights import pretrained  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.models import ki2hoi  # pylint: disable=g-import-not-at-top
  cfg, _, variables = demo_clip
  path = str(tmp_path / "clip.msgpack")
  pretrained.save_checkpoint(path, variables["params"],
                                {"clip": clip_model.clip_kwargs(cfg)})
  config = demo.get_config()
  config.init.clip_checkpoint = path
  abstract = jax.eval_shape(lambda: ki2hoi.build_model(config).init(
      jax.random.key(0), *ki2hoi.dummy_inputs(config), train=False))
  loaded = pretrained.init_from_pretrained(abstract, config)
  np.testing.assert_array_equal(
      loaded["params"]["clip_visual"]["transformer"]["resblocks_1"]["attn"]
      ["in_proj"]["kernel"],
      variables["params"]["visual"]["transformer"]["resblocks_1"]["attn"]
      ["in_proj"]["kernel"])
  assert isinstance(loaded["params"]["verb_decoder"]["norm"]["scale"],
                    jax.ShapeDtypeStruct)  # Untouched.

  prompts = ["a photo of a cat", "a photo of a dog"]
  emb = text_embeddings.prompt_embeddings(config, prompts)
  np.testing.assert_allclose(
      emb, text_embeddings.compute_text_embeddings(variables, cfg, prompts),
      atol=1e-6)

  config.model.clip.vision_layers = 3  # Architecture differs: clear error.
  with pytest.raises(pretrained.CheckpointMismatchError,
                     match="vision_layers=2"):
    pretrained.init_from_pretrained(abstract, config)

  config = demo.get_config()  # No checkpoint: a random text tower.
  emb = text_embeddings.prompt_embeddings(config, prompts)
  assert emb.shape == (2, 64)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
  assert float(emb[0] @ emb[1]) < 0.9999


@pytest.mark.parametrize("style", ["gerund", "bare"])
def test_random_text_tower_is_centred_on_the_prompt_families(style):
  """The random stand-in tower spreads template prompts apart (not CLIP)."""
  from ki2hoi_jax.data import metadata  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  config.model.prompt_style = style  # Centred on the run's own prompts.
  hico = metadata.hico()
  families = (hico.hoi_prompts(style), hico.verb_prompts(style),
              hico.object_prompts())
  params = text_embeddings.text_tower_params(config)
  module = clip_model.text_from_config(config.model.clip)
  raw = [np.asarray(module.apply({"params": params}, _ids(p, config.model
                                                          .clip)))
         for p in families]
  mean = np.mean([r.mean(axis=0) for r in raw], axis=0)
  scale = np.mean([np.linalg.norm(r, axis=-1).mean() for r in raw])
  assert np.linalg.norm(mean) < 1e-3 * scale
  # Without the shift the HOI prompts are nearly parallel (cosine 0.94).
  uncentred = jax.jit(module.init)(jax.random.PRNGKey(config.seed),
                                   _ids(["a"], config.model.clip))["params"]
  for p, expect_max in ((params, 0.4), (uncentred, None)):
    emb = text_embeddings.compute_text_embeddings(p, config.model.clip,
                                                  hico.hoi_prompts(style))
    cos = (emb @ emb.T)[~np.eye(600, dtype=bool)].mean()
    if expect_max is None:
      assert cos > 0.9
    else:
      assert cos < expect_max


def test_trim_token_ids_cuts_after_the_last_eot():
  ids = np.zeros((3, 32), np.int32)
  ids[:, 0] = 49406  # SOT
  ids[0, 1:3] = [320, 49407]  # EOT at position 2.
  ids[1, 1:10] = [320] * 8 + [49407]  # EOT at position 9.
  ids[2, 1:4] = [500, 600, 49407]
  trimmed = text_embeddings.trim_token_ids(ids)
  assert trimmed.shape == (3, 16)  # Position 9 rounded up to 16.
  np.testing.assert_array_equal(trimmed, ids[:, :16])
  assert text_embeddings.trim_token_ids(ids[[0, 2]]).shape == (2, 8)
  # Never longer than the context.
  full = np.full((1, 12), 320, np.int32)
  full[0, -1] = 49407
  assert text_embeddings.trim_token_ids(full).shape == (1, 12)


def test_text_tower_outputs_are_cached_beside_the_compilation_cache(
    demo_clip, tmp_path, monkeypatch):
  cfg, _, variables = demo_clip
  params = variables["params"]
  prompts = ["a photo of a cat", "a photo of a person riding a horse"]
  fresh = text_embeddings.compute_text_embeddings(params, cfg, prompts)
  monkeypatch.setattr(text_embeddings, "cache_folder", lambda: str(tmp_path))
  first = text_embeddings.compute_text_embeddings(params, cfg, prompts)
  [written] = (tmp_path / "text_tower").iterdir()
  np.testing.assert_array_equal(np.load(written), first)
  np.testing.assert_allclose(first, fresh, atol=1e-6)

  def no_tower(*args):
    raise AssertionError("the tower ran although its outputs were cached")
  with monkeypatch.context() as m:
    m.setattr(text_embeddings, "_run_tower", no_tower)
    np.testing.assert_array_equal(
        text_embeddings.compute_text_embeddings(params, cfg, prompts), first)
  # Other parameters, prompts or dtype: other files, other outputs.
  shifted = jax.tree_util.tree_map(lambda x: x, params)
  shifted["ln_final"]["bias"] = shifted["ln_final"]["bias"] + 0.5
  other = text_embeddings.compute_text_embeddings(shifted, cfg, prompts)
  assert not np.allclose(other, first, atol=1e-3)
  text_embeddings.compute_text_embeddings(params, cfg, prompts[:1])
  text_embeddings.compute_text_embeddings(params, cfg, prompts,
                                          dtype=jnp.bfloat16)
  assert len(list((tmp_path / "text_tower").iterdir())) == 4
  # A damaged file is not trusted: the tower runs again and rewrites it.
  written.write_bytes(b"not an array")
  np.testing.assert_array_equal(
      text_embeddings.compute_text_embeddings(params, cfg, prompts), first)
  np.testing.assert_array_equal(np.load(written), first)
