"""Tests of the prediction tool (ki2hoi_jax/inference/) and open vocabularies.

A tiny KI2HOI (configs/demo.py shrunk further) gets random parameters
(shapes from `jax.eval_shape`, so no init compilation) saved with the
trainer's `checkpoints.manager.Checkpointer`; prediction restores them from the
workdir like a user would.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
from PIL import ImageDraw
import pytest

import demo_utils  # tests/ is on sys.path (pytest rootdir conftest).
from configs import demo
from ki2hoi_jax.checkpoints import manager as checkpoint_manager
from ki2hoi_jax.checkpoints import restore
from ki2hoi_jax.clip import text_embeddings as clip_text
from ki2hoi_jax.config_lib import saved as saved_config
from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.evaluation import vocabulary as vocabulary_lib
from ki2hoi_jax.inference import drawing
from ki2hoi_jax.inference import images
from ki2hoi_jax.inference import open_vocabulary as ov
from ki2hoi_jax.inference import predict
from ki2hoi_jax.inference import predictor as predictor_lib
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.train import run_setup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIPLET_KEYS = {"human_box", "object_box", "object", "verb", "score",
                "rank_score", "pair"}


def _tiny_config(space="hoi"):
  config = demo.get_config()
  config.mode = "predict"
  config.inference.clip_pair_fusion = 0.0  # Random CLIP (demo_utils).
  m = config.model
  m.interaction_space = space
  m.backbone_width = 8
  m.d_model = 32
  m.num_heads = 2
  m.dim_feedforward = 64
  m.num_queries = 4
  m.instance_decoder_layers = 1
  m.interaction_decoder_layers = 1
  m.encoder_layers = 1
  m.encoder_mlp_ratio = 2
  c = m.clip
  c.image_size, c.patch_size, c.vision_width = 32, 16, 32
  c.vision_layers, c.vision_heads, c.embed_dim = 1, 2, 32
  c.text_width, c.text_layers, c.text_heads, c.context_length = 32, 1, 2, 16
  d = config.dataset
  d.eval_short_side, d.max_size, d.size_buckets, d.clip_image_size = (
      64, 96, 1, 32)
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(config, workdir, clip text params) of a saved random tiny model."""
  config = _tiny_config()
  clip = clip_text.clip_text_params(config)
  model = ki2hoi.build_model(config)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), *ki2hoi.dummy_inputs(config, 1, (64, 64))))
  variables = demo_utils.random_variables(dict(shapes))
  workdir = str(tmp_path_factory.mktemp("workdir"))
  ckpt = checkpoint_manager.Checkpointer(workdir)
  extra = {k: v for k, v in variables.items()
           if k not in ("params", "batch_stats")}
  ckpt.save(7, {"step": np.int32(7), "params": variables["params"],
                "batch_stats": variables.get("batch_stats", {}),
                "opt_state": {"count": np.int32(0)},
                "model_state": extra}, config)
  ckpt.close()
  return config, workdir, clip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Paths of a JPEG, a greyscale PNG, an odd-size RGBA PNG, a corrupt file."""
  folder = tmp_path_factory.mktemp("inputs")
  rng = np.random.default_rng(1)
  rgb = (rng.random((48, 80, 3)) * 255).astype(np.uint8)
  rgb[10:40, 5:30] = (200, 40, 40)
  paths = {"jpeg": str(folder / "scene.jpg"), "grey": str(folder / "grey.png"),
           "rgba": str(folder / "odd.png"), "corrupt": str(folder / "bad.jpg")}
  Image.fromarray(rgb).save(paths["jpeg"], quality=90)
  Image.fromarray(rgb[..., 0]).convert("L").save(paths["grey"])
  rgba = np.concatenate([rng.integers(0, 255, (37, 91, 3)),
                         np.full((37, 91, 1), 255)], -1).astype(np.uint8)
  rgba[:, :10, 3] = 0  # Transparent stripe.
  Image.fromarray(rgba, "RGBA").save(paths["rgba"])
  with open(paths["corrupt"], "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 this is not a JPEG")
  return paths


def _check_record(record, path, size, threshold, top_k, verbs=None,
                  objects=None):
  assert set(record) == {"image", "width", "height", "triplets"}
  assert record["image"] == path
  assert (record["width"], record["height"]) == size
  triplets = record["triplets"]
  assert len(triplets) <= top_k
  ranks = [t["rank_score"] for t in triplets]
  assert ranks == sorted(ranks, reverse=True)
  w, h = size
  for t in triplets:
    assert set(t) == TRIPLET_KEYS
    assert isinstance(t["score"], float) and threshold <= t["score"] <= 1.0
    # The fused score: at most 3 ('sum'), at least the confidence.
    assert isinstance(t["rank_score"], float)
    assert t["score"] - 1e-6 <= t["rank_score"] <= 3.0
    assert isinstance(t["pair"], int) and t["pair"] >= 0
    assert isinstance(t["verb"], str) and isinstance(t["object"], str)
    for key in ("human_box", "object_box"):
      box = t[key]
      assert len(box) == 4 and all(isinstance(v, float) for v in box)
      assert 0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h
    if verbs is not None:
      assert t["verb"] in verbs
    if objects is not None:
      assert t["object"] in objects
  return triplets


# ------------------------------------------------------------ pure functions


def test_parse_names_and_prompts_file(tmp_path):
  assert ov.parse_names(" throw, catch,,throw ,sit  on") == [
      "throw", "catch", "sit on"]
  assert ov.parse_names("") == [] and ov.parse_names(None) == []
  path = tmp_path / "prompts.txt"
  path.write_text("# comment\nthrow, frisbee\n\na photo of a person "
                  "juggling\nthrow,frisbee\n")
  pairs, plain = ov.read_prompts_file(str(path))
  assert pairs == [("throw", "frisbee")]
  assert plain == ["a photo of a person juggling"]
  bad = tmp_path / "bad.txt"
  bad.write_text("throw,frisbee,extra\n")
  with pytest.raises(vocabulary_lib.VocabularyError, match="bad.txt:1"):
    ov.read_prompts_file(str(bad))


def test_hoi_space_vocabulary_prompts():
  config = _tiny_config("hoi")
  vocab = ov.vocabulary_from_args(config, "throw,catch", "frisbee,apple,dog "
                                  "bed")
  assert vocab.is_open and vocab.prompts == (
      "a photo of a person throwing a frisbee",
      "a photo of a person throwing an apple",
      "a photo of a person throwing a dog bed",
      "a photo of a person catching a frisbee",
      "a photo of a person catching an apple",
      "a photo of a person catching a dog bed")
  assert vocab.num_classes == 2 * 3
  meta = metadata.hico()
  assert vocab.objects[:80] == meta.objects and vocab.new_objects == (
      "dog bed",)
  assert vocab.new_object_prompts() == ["a photo of a dog bed"]
  t = vocab.table
  np.testing.assert_array_equal(t.interaction_column, np.arange(6))
  assert [vocab.verbs[i] for i in t.verb_index] == ["throw"] * 3 + [
      "catch"] * 3
  assert [vocab.objects[i] for i in t.object_index] == [
      "frisbee", "apple", "dog bed"] * 2
  # Known HOIs keep their HICO-DET index, the new object has none.
  assert t.hoi_index[0] == meta.hoi_index(meta.verbs.index("throw"),
                                          meta.objects.index("frisbee"))
  assert t.hoi_index[2] == -1
  # Known names are canonicalised: spaces -> the training spelling.
  vocab = ov.vocabulary_from_args(config, "Sit On", "Dining Table")
  assert vocab.verbs == ("sit_on",) and vocab.new_objects == ()
  assert vocab.prompts == ("a photo of a person sitting on a dining table",)
  # A verb outside the training list takes '-ing' by the spelling rules.
  assert ov.vocabulary_from_args(config, "juggle", "apple").prompts == (
      "a photo of a person juggling an apple",)
  config.model.prompt_style = "bare"
  assert ov.vocabulary_from_args(config, "sit on", "dining table").prompts == (
      "a photo of a person sit on a dining table",)


def test_verb_space_vocabulary_and_defaults(tmp_path):
  config = _tiny_config("verb")
  vocab = ov.vocabulary_from_args(config, "throw,catch", "frisbee")
  assert vocab.prompts == ("a photo of a person throwing something",
                           "a photo of a person catching something")
  np.testing.assert_array_equal(vocab.table.interaction_column, [0, 1])
  assert vocab.table.num_candidates == 2
  # Only objects: every training verb; only verbs: every training object.
  vocab = ov.vocabulary_from_args(config, "", "frisbee")
  assert vocab.num_classes == 117 and vocab.table.num_candidates == 117
  vocab = ov.vocabulary_from_args(_tiny_config("hoi"), "throw", "")
  assert vocab.num_classes == 80
  # A prompts file: a pair plus a plain prompt paired with each object.
  path = tmp_path / "p.txt"
  path.write_text("kick,sports ball\na person juggling\n")
  vocab = ov.vocabulary_from_args(_tiny_config("hoi"), "", "apple,orange",
                                  str(path))
  # All 117 verbs x the 2 objects, then the pair, then the plain prompt.
  assert vocab.num_classes == 117 * 2 + 1 + 1
  assert vocab.prompts[-2:] == ("a photo of a person kicking a sports ball",
                                "a person juggling")
  t = vocab.table
  assert t.num_candidates == 117 * 2 + 1 + 2
  assert [(vocab.verbs[v], vocab.objects[o]) for v, o in zip(
      t.verb_index[-3:], t.object_index[-3:])] == [
          ("kick", "sports_ball"), ("a person juggling", "apple"),
          ("a person juggling", "orange")]
  np.testing.assert_array_equal(t.interaction_column[-3:], [234, 235, 235])


def test_closed_vocabulary_matches_evaluation():
  vocab = ov.vocabulary_from_args(_tiny_config("hoi"))
  assert not vocab.is_open and vocab.num_classes == 600
  assert vocab.prompts == tuple(metadata.hico().hoi_prompts())
  np.testing.assert_array_equal(vocab.table.hoi_index, np.arange(600))
  vocab = ov.vocabulary_from_args(_tiny_config("verb"))
  assert vocab.num_classes == 117 and vocab.table.num_candidates == 600


@pytest.mark.parametrize("space,index,gerund,bare", [
    ("hoi", 18, "a photo of a person riding a bicycle",
     "a photo of a person ride a bicycle"),
    ("verb", 87, "a photo of a person sitting on something",
     "a photo of a person sit on something"),
])
def test_prompt_style_sets_the_closed_vocabulary_prompts(space, index, gerund,
                                                         bare):
  config = _tiny_config(space)
  assert config.model.prompt_style == "gerund"  # The default.
  prompts = vocabulary_lib.closed_vocabulary(config).prompts
  assert prompts[index] == gerund
  assert prompts == tuple(metadata.hico().hoi_prompts() if space == "hoi"
                          else metadata.hico().verb_prompts())
  config.model.prompt_style = "bare"
  prompts = vocabulary_lib.closed_vocabulary(config).prompts
  assert prompts[index] == bare
  # The trainer embeds the closed vocabulary's prompts.
  assert run_setup.interaction_prompts(config) == list(prompts)


def test_prompt_style_sets_the_vcoco_closed_vocabulary_prompts():
  config = _tiny_config("verb")
  config.dataset.name = "vcoco"
  hold = metadata.vcoco().verb_classes.index("hold_obj")
  prompts = vocabulary_lib.closed_vocabulary(config).prompts
  assert prompts[hold] == "a photo of a person holding something"
  config.model.prompt_style = "bare"
  prompts = vocabulary_lib.closed_vocabulary(config).prompts
  assert prompts[hold] == "a photo of a person hold something"


def test_linear_head_predicts_its_training_classes_only():
  config = _tiny_config("hoi")
  config.dataset.zero_shot_split = "uv"
  config.model.classifier = "linear"
  vocab = ov.vocabulary_from_args(config)  # The evaluation vocabulary.
  assert vocab.num_classes == 600 - len(metadata.hico().unseen_hois("uv"))
  def params(num_classes):
    return {"verb_predictor": {"interaction_classifier": {
        "kernel": np.zeros((8, num_classes), np.float32)}}}
  with pytest.raises(vocabulary_lib.VocabularyError,
                     match=r"classifier='linear' has a learned head over its "
                     r"600 training classes and cannot score this"):
    ov.prepare_classes(vocab, params(600), {}, config)
  open_vocab = ov.vocabulary_from_args(config, verbs="ride",
                                       objects="horse")
  with pytest.raises(vocabulary_lib.VocabularyError, match="an open"):
    ov.prepare_classes(open_vocab, params(vocab.num_classes), {}, config)


def test_extend_object_classifier_known_values():
  kernel = np.array([[3.0, 0.0, 9.0], [0.0, 1.0, 9.0]], np.float32)  # E=2,K=2
  params = {"instance_interactor": {"obj_classifier": {
      "obj_visual_projection": {"kernel": kernel,
                                "bias": np.array([1.0, 3.0, -5.0])}},
      "other": 1}, "x": 2}
  out = ov.extend_object_classifier(params, np.array([[0.0, 2.0]]))
  leaf = out["instance_interactor"]["obj_classifier"]["obj_visual_projection"]
  # Mean trained column norm (3 + 1) / 2 = 2; no-object column stays last.
  np.testing.assert_allclose(leaf["kernel"],
                             [[3, 0, 0, 9], [0, 1, 2, 9]])
  np.testing.assert_allclose(leaf["bias"], [1, 3, 2, -5])
  assert out["x"] == 2 and out["instance_interactor"]["other"] == 1
  assert params["instance_interactor"]["obj_classifier"][
      "obj_visual_projection"]["kernel"].shape == (2, 3)  # Not mutated.


def test_decode_triplets_known_answer():
  vocab = ov.build_vocabulary(_tiny_config("hoi"), ["ride", "hold"],
                              ["bicycle"])
  # Two queries; query 1 duplicates query 0's boxes (NMS removes it).
  sub = np.array([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
  obj = np.array([[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]])
  selected = {"scores": np.array([2.4, 2.1, 1.5, 0.6]),
              "queries": np.array([0, 1, 0, 1]),
              "candidates": np.array([0, 0, 1, 1]),
              "confidences": np.array([0.7, 0.6, 0.4, 0.1])}
  out = predictor_lib.decode_triplets(
      selected, sub, obj, (100, 200), vocab, score_threshold=0.3, top_k=10)
  # Candidate 0 of query 1 is suppressed by NMS, confidence 0.1 < 0.3 is
  # dropped.
  assert [(t["verb"], t["object"]) for t in out] == [("ride", "bicycle"),
                                                     ("hold", "bicycle")]
  np.testing.assert_allclose([t["score"] for t in out], [0.7, 0.4])
  np.testing.assert_allclose([t["rank_score"] for t in out], [2.4, 1.5])
  assert [t["pair"] for t in out] == [0, 0]
  assert out[0]["human_box"] == [50.0, 25.0, 150.0, 75.0]
  assert out[0]["object_box"] == [0.0, 0.0, 200.0, 100.0]
  out = predictor_lib.decode_triplets(
      selected, sub, obj, (100, 200), vocab, score_threshold=0.0, top_k=1,
      nms=False)
  # The raw fused score, not normalised by its maximum.
  assert len(out) == 1 and out[0]["rank_score"] == pytest.approx(2.4)
  assert out[0]["score"] == pytest.approx(0.7)


def _logit(p):
  return float(np.log(p / (1.0 - p)))


def _crafted_outputs(num_objects, ball):
  """Outputs of 2 queries x 3 interaction columns with known probabilities.

  Query 0 (a confident pair): S_h 0.9, S_o(sports ball) 0.8, interaction
  probabilities throw 0.9, catch 0.6, sign 0.2. Query 1 (elsewhere): S_h
  0.5, S_o 0.5, throw 0.7, catch 0.1, sign 0.1.
  """
  human = np.log([[[0.9, 0.1], [0.5, 0.5]]])
  obj = np.full((1, 2, num_objects + 1), -30.0)
  obj[0, 0, ball], obj[0, 0, -1] = np.log(0.8), np.log(0.2)
  obj[0, 1, ball], obj[0, 1, -1] = np.log(0.5), np.log(0.5)
  inter = np.array([[[_logit(p) for p in (0.9, 0.6, 0.2)],
                     [_logit(p) for p in (0.7, 0.1, 0.1)]]])
  return {"pred_human_logits": human.astype(np.float32),
          "pred_obj_logits": obj.astype(np.float32),
          "pred_interaction_logits": inter.astype(np.float32),
          "pred_sub_boxes": np.array([[[0.25, 0.5, 0.3, 0.6],
                                       [0.75, 0.5, 0.3, 0.6]]]),
          "pred_obj_boxes": np.array([[[0.4, 0.5, 0.1, 0.1],
                                       [0.9, 0.5, 0.1, 0.1]]])}


@pytest.mark.parametrize("space", ["hoi", "verb"])
def test_confidence_thresholds_rank_score_ranks(space):
  """`score` = S_h * S_o * S_verb is thresholded; the fused score ranks.

  'sign' on the confident pair has fused score 0.9 + 0.8 + 0.2 = 1.9 (eq.
  18), above every candidate of query 1, but interaction probability 0.2:
  its confidence 0.144 is below 0.25 and it is never listed.
  """
  config = _tiny_config(space)
  vocab = ov.build_vocabulary(config, ["throw", "catch", "sign"],
                              ["sports_ball"])
  ball = vocab.objects.index("sports_ball")
  np.testing.assert_array_equal(vocab.table.interaction_column, [0, 1, 2])
  outputs = _crafted_outputs(len(vocab.objects), ball)

  def triplets(fusion, threshold):
    selected = jax.device_get(postprocess.select_top_k(
        outputs, vocab.table, fusion, 6, with_confidence=True))
    return predictor_lib.decode_triplets(
        {k: v[0] for k, v in selected.items()},
        outputs["pred_sub_boxes"][0], outputs["pred_obj_boxes"][0],
        (100, 200), vocab, score_threshold=threshold, top_k=10)

  out = triplets("sum", 0.25)
  assert [(t["pair"], t["verb"]) for t in out] == [(0, "throw"),
                                                   (0, "catch")]
  assert {t["object"] for t in out} == {"sports_ball"}
  np.testing.assert_allclose([t["score"] for t in out],
                             [0.9 * 0.8 * 0.9, 0.9 * 0.8 * 0.6], atol=1e-6)
  np.testing.assert_allclose([t["rank_score"] for t in out],
                             [0.9 + 0.8 + 0.9, 0.9 + 0.8 + 0.6], atol=1e-6)
  # Without a threshold 'sign' ranks third, before everything of query 1.
  out = triplets("sum", 0.0)
  assert [(t["pair"], t["verb"]) for t in out][:4] == [
      (0, "throw"), (0, "catch"), (0, "sign"), (1, "throw")]
  np.testing.assert_allclose(out[2]["rank_score"], 1.9, atol=1e-6)
  np.testing.assert_allclose(out[2]["score"], 0.9 * 0.8 * 0.2, atol=1e-6)
  np.testing.assert_allclose(out[3]["score"], 0.5 * 0.5 * 0.7, atol=1e-6)
  # Another fusion ranks differently (GEN-VLKT: S_verb + sigmoid(obj)^2) but
  # the confidence is the same product.
  out = triplets("genvlkt", 0.25)
  assert [(t["pair"], t["verb"]) for t in out] == [(0, "throw"),
                                                   (0, "catch")]
  sig_ball = 0.8 / 1.8  # sigmoid(log 0.8)
  np.testing.assert_allclose([t["rank_score"] for t in out],
                             [0.9 + sig_ball ** 2, 0.6 + sig_ball ** 2],
                             atol=1e-6)
  np.testing.assert_allclose([t["score"] for t in out],
                             [0.9 * 0.8 * 0.9, 0.9 * 0.8 * 0.6], atol=1e-6)


def test_pair_labels_one_block_per_pair(monkeypatch):
  a = {"human_box": [10.0, 10.0, 40.0, 60.0],
       "object_box": [50.0, 20.0, 60.0, 30.0]}
  b = {"human_box": [100.0, 10.0, 140.0, 60.0],
       "object_box": [150.0, 20.0, 170.0, 30.0]}
  triplets = [
      dict(a, verb="throw", object="sports_ball", score=0.75, pair=0),
      dict(b, verb="ride", object="bicycle", score=0.52, pair=2),
      dict(a, verb="catch", object="sports_ball", score=0.41, pair=0),
      dict(b, verb="hold", object="motorcycle", score=0.3, pair=2)]
  labels = drawing.pair_labels(triplets)
  assert [label.lines for label in labels] == [
      ("person - sports ball", "throw 0.75", "catch 0.41"),
      ("person", "ride bicycle 0.52", "hold motorcycle 0.30")]
  assert labels[0].human_box == tuple(a["human_box"])
  assert labels[0].object_box == tuple(a["object_box"])
  assert labels[1].object == "bicycle"
  # draw_triplets draws exactly these blocks, one per pair.
  drawn = []
  original = ImageDraw.ImageDraw.multiline_text

  def record(self, xy, text, *args, **kwargs):
    drawn.append(text)
    return original(self, xy, text, *args, **kwargs)

  monkeypatch.setattr(ImageDraw.ImageDraw, "multiline_text", record)
  image = drawing.draw_triplets(Image.new("RGB", (200, 100), (255, 255, 255)),
                                triplets, min_short_side=0)
  assert image.size == (200, 100)
  assert drawn == ["person - sports ball\nthrow 0.75\ncatch 0.41",
                   "person\nride bicycle 0.52\nhold motorcycle 0.30"]
  # max_triplets counts triplets: the first two make two one-verb blocks.
  drawn.clear()
  drawing.draw_triplets(Image.new("RGB", (200, 100)), triplets,
                        max_triplets=2, min_short_side=0)
  assert drawn == ["person - sports ball\nthrow 0.75",
                   "person - bicycle\nride 0.52"]


# ------------------------------------------------------------------- images


def test_load_image_modes(inputs, tmp_path):
  image, px = images.load_image(inputs["grey"])
  assert image.mode == "RGB" and px.shape == (48, 80, 3)
  np.testing.assert_array_equal(px[..., 0], px[..., 1])
  image, px = images.load_image(inputs["rgba"])
  assert px.shape == (37, 91, 3) and image.size == (91, 37)
  assert (px[:, :10] == 255).all()  # Transparent -> white.
  src = np.asarray(Image.open(inputs["rgba"]))
  np.testing.assert_array_equal(px[:, 10:], src[:, 10:, :3])
  # JPEG: TensorFlow's decoding, as the input pipeline.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.data import transforms  # pylint: disable=g-import-not-at-top
  _, px = images.load_image(inputs["jpeg"])
  with open(inputs["jpeg"], "rb") as f:
    ref = transforms.decode_jpeg(tf.constant(f.read())).numpy()
  np.testing.assert_allclose(px / 255.0, ref, atol=1e-6)
  # 16-bit greyscale is rescaled, not clipped.
  deep = np.array([[0, 1000], [30000, 60000]], np.uint16)
  Image.fromarray(deep).save(tmp_path / "deep.png")
  _, px = images.load_image(str(tmp_path / "deep.png"))
  np.testing.assert_array_equal(px[..., 0], [[0, 4], [128, 255]])
  for bad in (inputs["corrupt"], str(tmp_path / "missing.png")):
    with pytest.raises(images.ImageLoadError, match=bad.replace(".", r"\.")):
      images.load_image(bad)


def test_preprocess_matches_eval_transforms():
  config = _tiny_config()
  px = np.full((30, 50, 3), 128, np.uint8)
  batch = images.preprocess(px, config)
  # Short side 64 would make the long side 106 > max_size 96, so DETR's
  # rule lowers it to round(96 * 30 / 50) = 58; the one bucket is 96 x 96.
  assert batch["image"].shape == (1, 96, 96, 3)
  np.testing.assert_array_equal(batch["size"], [[58, 96]])
  np.testing.assert_array_equal(batch["orig_size"], [[30, 50]])
  assert batch["mask"][0, :58, :96].all() and not batch["mask"][0, 58:].any()
  assert (batch["image"][0, 58:] == 0).all()
  mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(batch["image"][0, 10, 10],
                             (128 / 255 - mean) / std, atol=1e-5)
  cmean = np.array([0.48145466, 0.4578275, 0.40821073])
  cstd = np.array([0.26862954, 0.26130258, 0.27577711])
  assert batch["clip_image"].shape == (1, 32, 32, 3)
  np.testing.assert_allclose(batch["clip_image"][0, 16, 16],
                             (128 / 255 - cmean) / cstd, atol=1e-4)


def test_find_checkpoint(trained, tmp_path):
  _, workdir, _ = trained
  step_dir = os.path.join(workdir, "checkpoints", "7")
  assert restore.find_checkpoint(workdir) == step_dir
  assert restore.find_checkpoint(os.path.join(workdir, "checkpoints")) == (
      step_dir)
  assert restore.find_checkpoint(step_dir) == step_dir
  with pytest.raises(FileNotFoundError, match="best"):
    restore.find_checkpoint(workdir, "best")
  with pytest.raises(FileNotFoundError, match="not a training workdir"):
    restore.find_checkpoint(str(tmp_path))


# --------------------------------------------------------------- end to end


def test_predict_files_end_to_end(trained, inputs, tmp_path):
  config, workdir, clip = trained
  out = str(tmp_path / "out")
  order = [inputs[k] for k in ("jpeg", "corrupt", "grey", "rgba")]
  # Random weights: confidences S_h * S_o * S_verb are tiny (S_o ~ 1/81),
  # so no threshold keeps exactly top_k triplets.
  summary = predict.run(config, workdir, order, out, clip_params=clip,
                        score_threshold=0.0, top_k=3)
  assert summary.step == 7
  assert [p for p, _ in summary.failed] == [inputs["corrupt"]]
  assert inputs["corrupt"] in summary.failed[0][1]
  assert "FAILED: 1" in summary.text() and inputs["corrupt"] in summary.text()
  sizes = {"scene": (80, 48), "grey": (80, 48), "odd": (91, 37)}
  for stem, size in sizes.items():
    with open(os.path.join(out, stem + ".json")) as f:
      record = json.load(f)
    path = {"scene": inputs["jpeg"], "grey": inputs["grey"],
            "odd": inputs["rgba"]}[stem]
    triplets = _check_record(record, path, size, 0.0, 3)
    # No threshold: exactly 3.
    assert len(triplets) == 3
    assert all(t["verb"] in metadata.hico().verbs and
               t["object"] in metadata.hico().objects for t in triplets)
    # Small inputs are upscaled so that the labels stay legible.
    scale = predict.PNG_MIN_SHORT_SIDE / min(size)
    assert Image.open(os.path.join(out, stem + ".png")).size == (
        round(size[0] * scale), round(size[1] * scale))
  assert not os.path.exists(os.path.join(out, "bad.json"))


def test_predictor_matches_evaluation_postprocess(trained, inputs):
  """Closed vocabulary: the same triplets as evaluation's post-processing.

  (Same compiled program as the end-to-end test: no recompilation.)
  """
  config, workdir, clip = trained
  restored = restore.restore_checkpoint(workdir)
  predictor = predictor_lib.build_predictor(config, restored, clip_params=clip,
                                      score_threshold=0.0, top_k=1000)
  _, px = images.load_image(inputs["rgba"])
  batch = images.preprocess(px, config)
  ours = predictor.predict_batch(batch)
  outputs = predictor.outputs(batch)
  assert outputs["pred_interaction_logits"].shape == (1, 4, 600)
  ref = postprocess.postprocess_from_config(outputs, batch["orig_size"],
                                            ["x"], config)[0]
  boxes = ref["predictions"]
  assert len(ours) == len(ref["hoi_prediction"])
  meta = metadata.hico()
  human = jax.nn.softmax(outputs["pred_human_logits"][0], axis=-1)[:, 0]
  objects = jax.nn.softmax(outputs["pred_obj_logits"][0], axis=-1)
  interaction = jax.nn.sigmoid(outputs["pred_interaction_logits"][0])
  for t, r in zip(ours, ref["hoi_prediction"]):
    # rank_score is evaluation's fused score; score the product of the three
    # probabilities of the triplet's query and HOI (column = HOI index).
    assert t["rank_score"] == pytest.approx(r["score"], abs=1e-5)
    v, o = meta.hois[r["hoi_category_id"] - 1]
    q = t["pair"]
    assert t["score"] == pytest.approx(
        float(human[q] * objects[q, o] *
              interaction[q, r["hoi_category_id"] - 1]), rel=1e-4, abs=1e-7)
    assert (t["verb"], t["object"]) == (meta.verbs[v], meta.objects[o])
    np.testing.assert_allclose(
        t["human_box"], np.clip(boxes[r["subject_id"]]["bbox"], 0,
                                [91, 37, 91, 37]), atol=1e-3)


def test_open_vocabulary_end_to_end(trained, inputs, tmp_path):
  config, workdir, clip = trained
  config = config.copy_and_resolve_references()
  config.inference.nms = False  # So that exactly top_k triplets remain.
  out = str(tmp_path / "ov")
  summary = predict.run(config, workdir, [inputs["jpeg"]], out,
                        clip_params=clip, score_threshold=0.0, top_k=5,
                        verbs="throw,catch", objects="frisbee,unicorn")
  assert not summary.failed
  with open(os.path.join(out, "scene.json")) as f:
    record = json.load(f)
  triplets = _check_record(record, inputs["jpeg"], (80, 48), 0.0, 5,
                           {"throw", "catch"}, {"frisbee", "unicorn"})
  assert len(triplets) == 5
  restored = restore.restore_checkpoint(workdir)
  vocab = ov.vocabulary_from_args(config, "throw,catch", "frisbee,unicorn")
  prepared = ov.prepare_classes(vocab, restored.variables["params"], clip,
                                config)
  assert prepared.interaction_embeddings.shape == (4, 32)
  np.testing.assert_allclose(
      np.linalg.norm(prepared.interaction_embeddings, axis=1), 1, atol=1e-5)
  assert prepared.num_object_classes == 81
  assert ov.object_classifier_params(prepared.params)["kernel"].shape == (
      32, 82)


def test_new_objects_get_clip_crop_scores_with_fusion(trained, inputs):
  """clip_pair_fusion > 0: the new object's column changes, a trained one's
  ratio to no-object does not (models/clip_pair_scores.py)."""
  config, workdir, clip = trained
  restored = restore.restore_checkpoint(workdir)
  _, px = images.load_image(inputs["jpeg"])
  probs = []
  for w in (0.0, 0.5):
    cfg = config.copy_and_resolve_references()
    cfg.inference.clip_pair_fusion = w
    p = predictor_lib.build_predictor(cfg, restored, clip_params=clip,
                                      objects="frisbee,unicorn")
    fusion = p._clip_fusion  # pylint: disable=protected-access
    if w:
      assert not np.asarray(fusion["trained_objects"])[-1]
      assert np.asarray(fusion["trained_objects"])[:-1].all()
      objects = np.asarray(fusion["object_text_embeddings"])
      assert objects.shape == (81, 32)
      np.testing.assert_allclose(objects[-1], clip_text.class_embeddings(
          clip, cfg, [metadata.object_prompt("unicorn")])[0], atol=1e-6)
    else:
      assert fusion == {}
    probs.append(np.asarray(jax.nn.softmax(p.outputs(images.preprocess(
        px, cfg))["pred_obj_logits"][0], axis=-1)))
  plain, fused = probs
  frisbee = metadata.hico().objects.index("frisbee")
  np.testing.assert_allclose(fused[:, frisbee] / fused[:, -1],
                             plain[:, frisbee] / plain[:, -1], rtol=1e-4)
  assert np.abs(fused[:, 80] - plain[:, 80]).min() > 1e-6


def test_saved_config_round_trip(trained):
  config, workdir, _ = trained
  restored = restore.restore_checkpoint(workdir)
  # Encoder BN statistics always; FrozenBatchNorm constants only with
  # backbone_norm='frozen' (the demo trains GroupNorm instead).
  expected = {"params", "batch_stats"} | (
      {"frozen_bn"} if config.model.backbone_norm == "frozen" else set())
  assert restored.step == 7 and set(restored.variables) == expected
  loaded = saved_config.config_from_saved(restored.config)
  assert loaded.model.to_dict() == config.model.to_dict()
  assert loaded.dataset.train_short_sides == (160, 176, 192)  # A tuple again.
  assert saved_config.check_config_matches(config, restored.config) == []
  other = config.copy_and_resolve_references()
  other.model.d_model = 48
  assert saved_config.check_config_matches(other, restored.config) == [
      "model.d_model: 32 -> 48"]
  # Predicting with another model than the checkpoint's stops with one line.
  with pytest.raises(validation.ConfigError, match=r"model\.d_model is 32"):
    predict.run(other, workdir, [], str(workdir) + "/unused")


def test_predict_from_config_default_images(trained, capsys):
  """mode=predict: the dataset's first test images -> <workdir>/predictions."""
  config, workdir, _ = trained
  root = input_pipeline.dataset_root(config, workdir)
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  with open(os.path.join(root, "annotations", "test_hico.json"), "w") as f:
    f.write("[]")
  folder = os.path.join(root, "images", "test2015")
  os.makedirs(folder, exist_ok=True)
  good = os.path.join(folder, "HICO_test2015_00000001.jpg")
  bad = os.path.join(folder, "HICO_test2015_00000002.jpg")
  Image.new("RGB", (40, 30), (90, 120, 30)).save(good)
  with open(bad, "wb") as f:
    f.write(b"\xff\xd8\xff truncated")
  with open(os.path.join(folder, "notes.txt"), "w") as f:
    f.write("not an image name")
  assert predict.default_images(config, workdir) == [good, bad]
  assert predict.default_images(config, workdir, limit=1) == [good]
  with pytest.raises(predict.PredictError, match="HICO_test2015_00000002"):
    predict.predict_from_config(config, workdir)
  printed = capsys.readouterr().out
  out_dir = os.path.join(workdir, "predictions")
  assert out_dir in printed and "FAILED: 1" in printed
  with open(os.path.join(out_dir, "HICO_test2015_00000001.json")) as f:
    record = json.load(f)
  _check_record(record, good, (40, 30), config.predict.score_threshold,
                config.predict.top_k)
  assert Image.open(os.path.join(out_dir, "HICO_test2015_00000001.png")
                    ).size == (640, 480)  # Upscaled to a 480-px short side.


@pytest.mark.slow
def test_command_line(trained, inputs, tmp_path):
  """The CLI with the config saved in the checkpoint: exit 1, names the file."""
  _, workdir, _ = trained
  out = str(tmp_path / "cli")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "ki2hoi_jax.inference.predict", f"--checkpoint={workdir}",
       "--images", inputs["grey"], inputs["corrupt"], inputs["rgba"],
       f"--out={out}", "--top_k=2", "--score_threshold=0",
       "--verbs=ride,hold", "--objects=bicycle"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert inputs["corrupt"] in proc.stdout and "FAILED: 1" in proc.stdout
  assert inputs["corrupt"] in proc.stderr  # Logged as an error too.
  for stem, size in (("grey", (80, 48)), ("odd", (91, 37))):
    with open(os.path.join(out, stem + ".json")) as f:
      record = json.load(f)
    triplets = _check_record(record, inputs[
        "grey" if stem == "grey" else "rgba"], size, 0.0, 2,
                             {"ride", "hold"}, {"bicycle"})
    assert len(triplets) >= 1
