"""CLIP's crop score for untrained classes (inference.clip_pair_fusion)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ki2hoi_jax.clip import pretrain
from ki2hoi_jax.data import transforms
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
  """The window equals clip/pretrain.py's corpus crop of the union box."""
  h, w = 100, 160
  boxes = clip_pair_scores.union_crop_boxes(
      jnp.asarray([[_cxcywh(*sub, w, h)]]),
      jnp.asarray([[_cxcywh(*obj, w, h)]]),
      jnp.asarray([[h, w]]))
  got = np.asarray(boxes)[0, 0]
  # The corpus' window, read off an image whose pixels hold their coordinates.
  ys, xs = np.mgrid[0:h, 0:w]
  coords = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8)
  union = pretrain._union(sub, obj)
  side = max(union[2] - union[0], union[3] - union[1]) * 1.2 + 1
  crop = pretrain._square_crop(coords, union, int(side) + 1)
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


def test_model_fuses_only_untrained_classes_at_inference():
  model, variables, _ = tk._built(3)
  fusing = dataclasses.replace(model, clip_pair_fusion=0.5)
  rng = np.random.default_rng(4)
  image, mask, clip_image = tk._inputs(rng)
  text = tk._text(rng, tk.C)
  trained = jnp.asarray([True, True, False, True, False])
  plain = tk._apply(model, variables, image, mask, clip_image, text)
  fused = tk._apply(fusing, variables, image, mask, clip_image, text,
                    trained_classes=trained)
  a, b = (np.asarray(o["pred_interaction_logits"]) for o in (plain, fused))
  np.testing.assert_allclose(b[..., [0, 1, 3]], a[..., [0, 1, 3]], rtol=1e-6)
  assert np.abs(b[..., [2, 4]] - a[..., [2, 4]]).min() > 1e-4
  # No mask, or training: the detector's logits alone.
  unmasked = tk._apply(fusing, variables, image, mask, clip_image, text)
  np.testing.assert_allclose(
      np.asarray(unmasked["pred_interaction_logits"]), a, rtol=1e-6)
  train_plain, train_fusing = (
      tk._apply(m, variables, image, mask, clip_image, text,
                trained_classes=trained, train=True) for m in (model, fusing))
  np.testing.assert_allclose(
      np.asarray(train_fusing["pred_interaction_logits"]),
      np.asarray(train_plain["pred_interaction_logits"]), rtol=1e-6)


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
