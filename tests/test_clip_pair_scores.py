"""CLIP's crop score for untrained classes (inference.clip_pair_fusion)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ki2hoi_jax.clip import corpus
from ki2hoi_jax.data import transforms
from ki2hoi_jax.evaluation import clip_fusion
from ki2hoi_jax.models import clip_pair_scores

import test_ki2hoi as tk


def _cxcywh(x1, y1, x2, y2, w, h):
  return [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]


@pytest.mark.parametrize("sub,obj", [
    ((40, 30, 60, 90), (55, 60, 90, 95)),  # Inside.
    ((2, 5, 20, 40), (10, 30, 30, 60)),  # Near the left border: moved in.
    ((0, 0, 150, 20), (100, 10, 160, 40)),  # Wider than tall image: cut.
])
def test_crop_window_is_the_corpus_crop(sub, obj):
  """The window equals clip/corpus.py's crop of the union box."""
  h, w = 100, 160
  boxes = clip_pair_scores.union_crop_boxes(
      jnp.asarray([[_cxcywh(*sub, w, h)]]),
      jnp.asarray([[_cxcywh(*obj, w, h)]]),
      jnp.asarray([[h, w]]))
  got = np.asarray(boxes)[0, 0]
  # The corpus' window, read off an image whose pixels hold their coordinates.
  ys, xs = np.mgrid[0:h, 0:w]
  coords = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8)
  union = corpus.union_box(sub, obj)
  side = max(union[2] - union[0], union[3] - union[1]) * 1.2 + 1
  crop = corpus.square_crop(coords, union, int(side) + 1)
  # Resizing may blur the first/last columns; the window spans them.
  assert abs(got[0] - crop[..., 0].min()) <= 1.5, (got, crop[..., 0].min())
  assert abs(got[1] - crop[..., 1].min()) <= 1.5
  assert abs(got[2] - 1 - crop[..., 0].max()) <= 1.5
  assert abs(got[3] - 1 - crop[..., 1].max()) <= 1.5
  assert 0 <= got[0] < got[2] <= w and 0 <= got[1] < got[3] <= h


def test_pair_crops_read_the_window_in_clip_normalisation():
  """A crop of a two-colour image shows the colour of its window only."""
  h, w, pad = 40, 80, 16
  rgb = np.zeros((1, h + pad, w + pad, 3), np.float32)
  rgb[:, :h, :w // 2] = (1.0, 0.0, 0.0)
  rgb[:, :h, w // 2:w] = (0.0, 0.0, 1.0)
  image = (rgb - transforms.IMAGENET_MEAN) / transforms.IMAGENET_STD
  mask = np.zeros((1, h + pad, w + pad), bool)
  mask[:, :h, :w] = True
  image[~mask] = 0.0
  # A pair inside the blue half: the window (side 1.2 x 14 + 1) stays there.
  sub = jnp.asarray([[_cxcywh(50, 12, 60, 26, w, h)]])
  obj = jnp.asarray([[_cxcywh(58, 14, 64, 20, w, h)]])
  crops = np.asarray(clip_pair_scores.pair_crops(
      jnp.asarray(image), jnp.asarray(mask), sub, obj, 8))
  assert crops.shape == (1, 1, 8, 8, 3)
  blue = ((np.array([0.0, 0.0, 1.0]) - transforms.CLIP_MEAN)
          / transforms.CLIP_STD)
  np.testing.assert_allclose(crops[0, 0], np.broadcast_to(blue, (8, 8, 3)),
                             atol=1e-4)


def test_fusion_keeps_trained_classes_and_mixes_the_others():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32) * 3
  crop = rng.normal(size=(2, 3, 5)).astype(np.float32) * 3
  trained = np.array([True, False, True, False, False])
  for w in (0.0, 0.5, 1.0):
    fused = np.asarray(clip_pair_scores.fuse_untrained(
        jnp.asarray(logits), jnp.asarray(crop), trained, w))
    np.testing.assert_array_equal(fused[..., trained], logits[..., trained])
    p_det = 1 / (1 + np.exp(-logits))
    e = np.exp(crop - crop.max(-1, keepdims=True))
    p_clip = e / e.sum(-1, keepdims=True)
    want = p_det ** (1 - w) * p_clip ** w
    np.testing.assert_allclose((1 / (1 + np.exp(-fused)))[..., ~trained],
                               want[..., ~trained], rtol=1e-4, atol=1e-6)


def _models_and_inputs(seed):
  """(model, variables, rng, image, mask, clip_image, interaction text) of
  the tiny test model."""
  model, variables, _ = tk._built(3)
  rng = np.random.default_rng(seed)
  image, mask, clip_image = tk._inputs(rng)
  return (model, variables, rng, image, mask, clip_image,
          tk._text(rng, tk.C))


def _fused(model, variables, image, mask, clip_image, text, **fusion_inputs):
  """The tiny model's inference outputs with CLIP's crop scores, w = 0.5."""
  out = tk._apply(model, variables, image, mask, clip_image, text)
  return clip_fusion.fuse_clip_crop_scores(
      out, image, mask, text, fusion_inputs, variables["params"],
      model=model, weight=0.5, crop_size=clip_image.shape[1])


def _model_takes_no_fusion_inputs(model, variables, image, mask, clip_image,
                                  text, **fusion_inputs):
  """Training runs the model alone: it has no fusion arguments."""
  with pytest.raises(TypeError):
    tk._apply(model, variables, image, mask, clip_image, text, train=True,
              **fusion_inputs)


def test_crop_fusion_changes_only_untrained_classes():
  (model, variables, _, image, mask, clip_image,
   text) = _models_and_inputs(4)
  trained = jnp.asarray([True, True, False, True, False])
  plain = tk._apply(model, variables, image, mask, clip_image, text)
  fused = _fused(model, variables, image, mask, clip_image, text,
                 trained_classes=trained)
  a, b = (np.asarray(o["pred_interaction_logits"]) for o in (plain, fused))
  np.testing.assert_allclose(b[..., [0, 1, 3]], a[..., [0, 1, 3]], rtol=1e-6)
  assert np.abs(b[..., [2, 4]] - a[..., [2, 4]]).min() > 1e-4
  # No mask, or training: the detector's logits alone.
  unmasked = _fused(model, variables, image, mask, clip_image, text)
  np.testing.assert_allclose(
      np.asarray(unmasked["pred_interaction_logits"]), a, rtol=1e-6)
  _model_takes_no_fusion_inputs(model, variables, image, mask, clip_image,
                                text, trained_classes=trained)


def test_trained_class_mask_is_false_exactly_on_unseen_verbs():
  from configs import demo
  from ki2hoi_jax.data import metadata
  from ki2hoi_jax.evaluation import vocabulary
  config = demo.get_config()  # 'uv', verb space.
  prompts = vocabulary.closed_vocabulary(config).prompts
  mask = vocabulary.trained_class_mask(config, prompts)
  assert mask.shape == (117,)
  np.testing.assert_array_equal(
      np.flatnonzero(~mask), sorted(metadata.hico().unseen_verbs["uv"]))
  # Open vocabulary: a new prompt is untrained, a training one is not.
  new = vocabulary.trained_class_mask(
      config, [prompts[int(np.flatnonzero(mask)[0])],
               "a photo of a person juggling"])
  np.testing.assert_array_equal(new, [True, False])
  # Fully supervised: every class trained, no mask (no crop pass).
  config.dataset.zero_shot_split = ""
  assert vocabulary.trained_class_mask(config, prompts) is None


def test_object_fusion_keeps_trained_objects_and_gives_the_others_clip():
  """Untrained k: (1 - p_no_object)^(1-w) q_k^w, then renormalised."""
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32) * 3  # K = 4.
  crop = rng.normal(size=(2, 3, 4)).astype(np.float32) * 3
  trained = np.array([True, False, True, False])
  for w in (0.0, 0.5, 1.0):
    fused = np.asarray(clip_pair_scores.fuse_untrained_objects(
        jnp.asarray(logits), jnp.asarray(crop), trained, w))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    q = np.exp(crop) / np.exp(crop).sum(-1, keepdims=True)
    want = p.copy()
    want[..., :4][..., ~trained] = ((1 - p[..., 4:]) ** (1 - w)
                                    * q ** w)[..., ~trained]
    want /= want.sum(-1, keepdims=True)
    got = np.exp(fused) / np.exp(fused).sum(-1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  # Trained objects keep their ratios to each other and to no-object.
  np.testing.assert_allclose(got[..., 0] / got[..., 4],
                             p[..., 0] / p[..., 4], rtol=1e-5)


def test_crop_fusion_changes_only_untrained_objects():
  (model, variables, rng, image, mask, clip_image,
   text) = _models_and_inputs(5)
  k = model.num_object_classes
  obj_text = tk._text(rng, k)
  trained = jnp.arange(k) % 2 == 0
  plain = tk._apply(model, variables, image, mask, clip_image, text)
  fused = _fused(model, variables, image, mask, clip_image, text,
                 object_text_embeddings=obj_text, trained_objects=trained)
  a, b = (np.asarray(jax.nn.softmax(o["pred_obj_logits"], -1))
          for o in (plain, fused))
  even = np.flatnonzero(np.asarray(trained))
  odd = np.flatnonzero(~np.asarray(trained))
  # Renormalised: trained objects and no-object keep their ratios.
  np.testing.assert_allclose(b[..., even] / b[..., -1:],
                             a[..., even] / a[..., -1:], rtol=1e-4)
  assert np.abs(b[..., odd] - a[..., odd]).min() > 1e-5
  np.testing.assert_allclose(np.asarray(fused["pred_interaction_logits"]),
                             np.asarray(plain["pred_interaction_logits"]),
                             rtol=1e-6)
  _model_takes_no_fusion_inputs(model, variables, image, mask, clip_image,
                                text, trained_objects=trained)


def test_trained_object_mask_is_false_exactly_on_unseen_objects():
  from configs import demo
  from ki2hoi_jax.data import metadata
  from ki2hoi_jax.evaluation import vocabulary
  config = demo.get_config()
  objects = vocabulary.training_objects("hico")
  for split in ("", "uv", "rf_uc", "nf_uc", "uc"):  # Every object seen.
    config.dataset.zero_shot_split = split
    assert vocabulary.trained_object_mask(config, objects) is None, split
  config.dataset.zero_shot_split = "uo"
  mask = vocabulary.trained_object_mask(config, objects)
  meta = metadata.hico()
  unseen = {meta.hois[h][1] for h in meta.unseen_hois("uo")}
  assert len(unseen) == 12  # GEN-VLKT's UO: 12 of the 80 objects.
  np.testing.assert_array_equal(np.flatnonzero(~mask), sorted(unseen))
  # An open vocabulary's new object is untrained, a training one is not.
  np.testing.assert_array_equal(
      vocabulary.trained_object_mask(config, ["bicycle", "skateboard",
                                              "unicycle"]),
      [True, False, False])


def test_crop_fusion_changes_only_untrained_candidates():
  """'verb' space: pred_candidate_logits are the candidates' columns, CLIP
  fused where `trained_candidates` is False, absent in training."""
  (model, variables, rng, image, mask, clip_image,
   text) = _models_and_inputs(6)
  columns = jnp.asarray([0, 0, 1, 2, 4, 4], jnp.int32)  # H = 6.
  trained = jnp.asarray([True, False, True, True, False, True])
  kwargs = dict(candidate_text_embeddings=tk._text(rng, 6),
                candidate_columns=columns, trained_candidates=trained)
  plain = tk._apply(model, variables, image, mask, clip_image, text)
  fused = _fused(model, variables, image, mask, clip_image, text, **kwargs)
  a = np.asarray(plain["pred_interaction_logits"])[..., np.asarray(columns)]
  b = np.asarray(fused["pred_candidate_logits"])
  assert b.shape == a.shape == (2, model.num_queries, 6)
  keep = np.asarray(trained)
  np.testing.assert_allclose(b[..., keep], a[..., keep], rtol=1e-6)
  assert np.abs(b[..., ~keep] - a[..., ~keep]).min() > 1e-4
  # The interaction logits themselves are unchanged (no untrained column).
  np.testing.assert_allclose(np.asarray(fused["pred_interaction_logits"]),
                             np.asarray(plain["pred_interaction_logits"]),
                             rtol=1e-6)
  assert "pred_candidate_logits" not in tk._apply(
      model, variables, image, mask, clip_image, text, train=True)
  _model_takes_no_fusion_inputs(model, variables, image, mask, clip_image,
                                text, **kwargs)


def test_trained_candidate_mask_is_false_on_unseen_pairs_of_trained_verbs():
  from configs import demo
  from ki2hoi_jax.data import metadata
  from ki2hoi_jax.evaluation import vocabulary
  config = demo.get_config()  # Verb space.
  meta = metadata.hico()
  for split in ("rf_uc", "nf_uc", "uc", "uo"):
    config.dataset.zero_shot_split = split
    vocab = vocabulary.closed_vocabulary(config)
    mask = vocabulary.trained_candidate_mask(config, vocab)
    assert mask.shape == (600,)
    seen_verbs = {meta.hois[h][0] for h in meta.seen_hois(split)}
    want = {h for h in meta.unseen_hois(split) if meta.hois[h][0] in seen_verbs}
    assert set(vocab.table.hoi_index[~mask].tolist()) == want, split
    assert want, split
    prompts = vocabulary.candidate_prompts(config, vocab)
    h = int(np.flatnonzero(~mask)[0])
    v, o = meta.hois[int(vocab.table.hoi_index[h])]
    assert prompts[h] == metadata.hoi_prompt(meta.verbs[v], meta.objects[o])
  # 'uv': the unseen HOIs are those of untrained verbs (the verb-level
  # fusion's); no split, or the 'hoi' space: nothing to fuse.
  for split, space in (("uv", "verb"), ("", "verb"), ("rf_uc", "hoi")):
    config.dataset.zero_shot_split = split
    config.model.interaction_space = space
    assert vocabulary.trained_candidate_mask(
        config, vocabulary.closed_vocabulary(config)) is None, (split, space)


def test_clip_fusion_inputs_name_what_is_fused():
  from configs import demo
  from ki2hoi_jax.evaluation import vocabulary
  config = demo.get_config()
  config.dataset.zero_shot_split = "uo"
  vocab = vocabulary.closed_vocabulary(config)
  calls = []
  def embed(prompts):
    calls.append(len(prompts))
    return np.zeros((len(prompts), 4), np.float32)
  inputs = vocabulary.clip_fusion_inputs(config, vocab, embed)
  # UO: untrained objects, pairs, and verbs seen with unseen objects only.
  assert set(inputs) == {"trained_classes", "trained_objects",
                         "object_text_embeddings", "trained_candidates",
                         "candidate_columns", "candidate_text_embeddings"}
  # The text tower runs for what is fused only: 80 objects, 600 candidates.
  assert calls == [80, 600] and inputs["candidate_columns"].shape == (600,)
  assert inputs["object_text_embeddings"].shape == (80, 4)
  config.inference.clip_pair_fusion = 0.0
  assert vocabulary.clip_fusion_inputs(config, vocab, embed) == {}
  assert calls == [80, 600]
