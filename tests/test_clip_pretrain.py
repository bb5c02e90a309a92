"""The synthetic-knowledge CLIP: corpus, loss, a short pretraining, loading."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

import demo_utils  # tests/ is on sys.path (pytest rootdir conftest).
from configs import demo
from ki2hoi_jax.checkpoints import manager as checkpoint_manager
from ki2hoi_jax.clip import corpus as corpus_lib
from ki2hoi_jax.clip import pretrain
from ki2hoi_jax.clip import text_embeddings
from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.data import metadata
from ki2hoi_jax.inference import predict
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.weights import pretrained


def test_corpus_is_deterministic_and_disjoint_from_the_dataset_seeds():
  a = corpus_lib.web_corpus(0, corpus_lib.WEB_SPLIT, 6, 128, 32)
  b = corpus_lib.web_corpus(0, corpus_lib.WEB_SPLIT, 6, 128, 32)
  np.testing.assert_array_equal(a.images, b.images)
  assert a.captions == b.captions
  # The HICO-format writer draws image i of split k from [seed, k, i]
  # (k = 0 train, 1 test): the corpus and held-out split ids differ.
  assert {corpus_lib.WEB_SPLIT, corpus_lib.HELD_OUT_SPLIT}.isdisjoint({0, 1})
  assert a.images.shape[1:] == (32, 32, 3) and a.images.dtype == np.uint8
  assert a.targets.shape == (len(a.images), len(a.captions))
  assert a.targets.any(1).all()  # Every image has a caption.
  # Pair crops carry HOI and verb prompts, object crops the object prompt.
  for n in np.flatnonzero(a.kinds == "object"):
    caps = [a.captions[j] for j in np.flatnonzero(a.targets[n])]
    assert caps == [metadata.object_prompt(corpus_lib.renderer_objects()[
        a.obj[n]])]
  n = int(np.flatnonzero(a.kinds == "pair")[0])
  verb, obj = corpus_lib.renderer_hois()[a.hoi[n]]
  caps = {a.captions[j] for j in np.flatnonzero(a.targets[n])}
  assert {metadata.hoi_prompt(verb, obj), metadata.verb_prompt(verb)} <= caps


def test_corpus_captions_in_the_prompt_style():
  """The CLIP is captioned in the style of the detector it serves."""
  gerund = corpus_lib.web_corpus(0, corpus_lib.WEB_SPLIT, 4, 128, 16)
  bare = corpus_lib.web_corpus(0, corpus_lib.WEB_SPLIT, 4, 128, 16,
                               prompt_style="bare")
  np.testing.assert_array_equal(gerund.images, bare.images)
  assert len(gerund.captions) == len(bare.captions)
  n = int(np.flatnonzero(bare.kinds == "pair")[0])
  verb, obj = corpus_lib.renderer_hois()[bare.hoi[n]]
  caps = {bare.captions[j] for j in np.flatnonzero(bare.targets[n])}
  assert {metadata.hoi_prompt(verb, obj, "bare"),
          metadata.verb_prompt(verb, "bare")} <= caps
  assert metadata.hoi_prompt(verb, obj) not in caps
  assert corpus_lib.pair_captions(["ride"], "horse") == [
      "a photo of a person riding a horse",
      "a photo of a person riding something"]


def test_corpus_covers_unseen_hois_of_every_split():
  corpus = corpus_lib.web_corpus(0, corpus_lib.WEB_SPLIT, 400, 128, 16)
  hico = metadata.hico()
  captions = set(corpus.captions)
  for split in metadata.ZERO_SHOT_SPLITS:
    unseen = {(hico.verbs[hico.hois[h][0]], hico.objects[hico.hois[h][1]])
              for h in hico.unseen_hois(split)}
    renderer_unseen = unseen & set(corpus_lib.renderer_hois())
    assert renderer_unseen, split
    assert {metadata.hoi_prompt(v, o) for v, o in renderer_unseen} <= captions
    assert {metadata.verb_prompt(v) for v, _ in renderer_unseen} <= captions


def test_contrastive_loss_known_values():
  img = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
  txt = jnp.asarray([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  targets = jnp.asarray([[True, False, False], [False, True, True]])
  scale = jnp.log(10.0)
  got = float(pretrain.contrastive_loss(img, txt, targets, scale))
  s = 10.0 * np.array([[1.0, 0.0, 2 ** -0.5], [0.0, 1.0, 2 ** -0.5]])
  log_i2t = s - np.log(np.exp(s).sum(1, keepdims=True))
  i2t = -(log_i2t[0, 0] + 0.5 * (log_i2t[1, 1] + log_i2t[1, 2])) / 2
  log_t2i = s - np.log(np.exp(s).sum(0, keepdims=True))
  t2i = -(log_t2i[0, 0] + log_t2i[1, 1] + log_t2i[1, 2]) / 3
  assert got == pytest.approx(0.5 * (i2t + t2i), rel=1e-5)


@pytest.fixture(scope="module")
def short_pretraining(tmp_path_factory):
  config = demo.get_config()
  out = str(tmp_path_factory.mktemp("clip") / "synthetic_clip.msgpack")
  figure = pretrain.run(config, out, steps=300, batch_size=64, seed=0,
                        num_images=200, num_held_out=80, progress=False)
  return config, out, figure


def test_short_pretraining_beats_chance_on_held_out_crops(short_pretraining):
  config, out, figure = short_pretraining
  with open(pretrain.accuracy_path(out)) as f:
    assert json.load(f) == figure
  world = config.dataset.synthetic_world
  assert figure["world"] == world == "compositional"  # The demo config's.
  assert figure["hoi"]["num_prompts"] == len(corpus_lib.renderer_hois(world))
  assert figure["prompt_style"] == "gerund"  # The demo config's.
  assert figure["object"]["chance"] == pytest.approx(
      100.0 / len(corpus_lib.renderer_objects(world)))
  # A wide margin over chance after 300 steps (measured, world 'basic': HOI
  # 59 %, chance 4.1 %; objects 98 %, chance 12.5 %).
  assert figure["hoi"]["accuracy"] > 2.5 * figure["hoi"]["chance"]
  assert figure["object"]["accuracy"] > 4 * figure["object"]["chance"]


def test_checkpoint_loads_through_the_strict_clip_path(short_pretraining):
  config, out, _ = short_pretraining
  meta = pretrained.load_checkpoint_meta(out)
  assert meta["format"] == "ki2hoi_jax/clip" and meta["covers"] == [""]
  config.init.clip_checkpoint = out
  # The text tower of a run (trainer, predict) and the image tower that
  # `init_from_pretrained` places at params/clip_visual.
  text = text_embeddings.clip_text_params(config)
  params, _ = pretrained.load_checkpoint(out)
  np.testing.assert_array_equal(text["text_projection"],
                                params["text_projection"])
  target = {"params": {"clip_visual": jax.tree.map(
      np.zeros_like, params["visual"])}}
  loaded = pretrained.load_pretrained(target, out, prefix="params/clip_visual",
                                      source_prefix="visual")
  np.testing.assert_array_equal(
      loaded["params"]["clip_visual"]["proj"], params["visual"]["proj"])
  wrong = demo.get_config()
  wrong.init.clip_checkpoint = out
  wrong.model.clip.embed_dim = 32
  with pytest.raises(pretrained.CheckpointMismatchError, match="embed_dim"):
    text_embeddings.clip_text_params(wrong)


def test_a_synthetic_clip_made_with_other_settings_is_stale(short_pretraining,
                                                            tmp_path):
  _, out, _ = short_pretraining
  config = demo.get_config()
  config.init.synthetic_clip_steps = 300  # The fixture's settings.
  config.init.synthetic_clip_images = 200
  assert pretrain.stale_settings(config, out) == []
  config.model.prompt_style = "bare"
  config.seed = 1
  stale = pretrain.stale_settings(config, out)
  assert len(stale) == 2 and "prompt_style 'gerund'" in stale[1]
  assert pretrain.stale_settings(config, str(tmp_path / "none.msgpack")) == [
      "missing"]


def test_unseen_verb_prompts_stay_distinct_from_the_seen(short_pretraining):
  """No collapse: the text tower tells the unseen verbs of 'uv' apart."""
  config, out, _ = short_pretraining
  config.init.clip_checkpoint = out
  params = text_embeddings.clip_text_params(config)
  hico = metadata.hico()
  unseen = {hico.verbs[v] for v in hico.unseen_verbs["uv"]}
  verbs = sorted({v for v, _ in corpus_lib.renderer_hois(
      config.dataset.synthetic_world)})
  new = [v for v in verbs if v in unseen]
  old = [v for v in verbs if v not in unseen]
  assert new == ["dribble", "ride", "wear"]
  emb = np.asarray(text_embeddings.class_embeddings(
      params, config, [metadata.verb_prompt(v) for v in new + old]))
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  cos = emb[:len(new)] @ emb[len(new):].T
  # Largest cosine to a seen verb's prompt, measured on world 'basic':
  # after the fixture's 300 steps ride 0.50, wear 0.59; after 80 steps 0.82
  # and 0.97 (nearly collapsed); the 1,500-step CLIP of the demo 0.47 and
  # 0.42; the random, centred tower 0.75 and 0.89.
  assert cos.max() < 0.8, dict(zip(new, cos.max(1)))


def _random_demo_checkpoint(config, workdir):
  """A demo-model checkpoint with small random weights (no training)."""
  model = ki2hoi.build_model(config)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), *ki2hoi.dummy_inputs(config, 1, (64, 64))))
  variables = demo_utils.random_variables(dict(shapes))
  ckpt = checkpoint_manager.Checkpointer(workdir)
  ckpt.save(1, {"step": np.int32(1), "params": variables["params"],
                "batch_stats": variables.get("batch_stats", {}),
                "opt_state": {"count": np.int32(0)},
                "model_state": {k: v for k, v in variables.items()
                                if k not in ("params", "batch_stats")}},
            config)
  ckpt.close()


def test_predict_scores_with_the_clip_checkpoint_given(short_pretraining,
                                                      tmp_path):
  """`predict --config=... --config.init.clip_checkpoint=F` embeds with F."""
  _, out, _ = short_pretraining
  config = demo.get_config()
  config.init.synthetic_clip_steps = 0
  workdir = str(tmp_path / "run")
  _random_demo_checkpoint(config, workdir)
  image = str(tmp_path / "scene.png")
  Image.fromarray(np.random.default_rng(1).integers(
      0, 255, (96, 128, 3), np.uint8)).save(image)

  def scores(clip_checkpoint):
    config.init.clip_checkpoint = clip_checkpoint
    folder = str(tmp_path / f"pred{len(clip_checkpoint)}")
    predict.run(config, workdir, [image], folder, score_threshold=0.0,
                top_k=5)
    with open(os.path.join(folder, "scene.json")) as f:
      return [t["rank_score"] for t in json.load(f)["triplets"]]

  random_clip, synthetic = scores(""), scores(out)
  assert len(synthetic) == 5
  assert not np.allclose(random_clip, synthetic)
  # A config whose CLIP differs from the trained run's stops before any
  # weights are read (the saved-config check), naming the field.
  config.model.clip.embed_dim = 32
  with pytest.raises(validation.ConfigError, match="model.clip.embed_dim"):
    scores(out)
