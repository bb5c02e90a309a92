"""Synthetic "COCO-DETR": corpus seeds, set-prediction pretraining, loading.

One short pretraining of the tests' tiny model on 96-px images (module
fixture, about 100 s on 2 CPU cores: the tests that use it are `slow`)
serves the AP, the loading and the workdir-reuse tests.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from ki2hoi_jax import cli
from ki2hoi_jax.clip import corpus as clip_corpus
from ki2hoi_jax.data import synthetic_detection
from ki2hoi_jax.evaluation import box_ap
from ki2hoi_jax.train import pretrain_detector
from ki2hoi_jax.weights import convert_detr
from ki2hoi_jax.weights import pretrained
from tests import demo_utils

SIZE = 96
STEPS = 200


def _config(overrides=None):
  # World 'basic' (8 objects), where 200 steps of this 96-pixel model were
  # measured to beat a random detector; the compositional world's 14 objects
  # want longer (benchmarks/results/detector/).
  return demo_utils.tiny_config({
      "dataset.synthetic_world": "basic",
      "dataset.synthetic_image_size": SIZE,
      "dataset.train_short_sides": (SIZE * 3 // 4, SIZE),
      "dataset.eval_short_side": SIZE, "dataset.max_size": SIZE,
      **(overrides or {})})


def test_corpus_splits_are_disjoint_from_the_other_renderer_users():
  ours = {synthetic_detection.DETECTOR_SPLIT,
          synthetic_detection.DETECTOR_HELD_OUT_SPLIT}
  writer = {0, 1}  # data/synthetic.py: enumerate((train, test)).
  clip = {clip_corpus.WEB_SPLIT, clip_corpus.HELD_OUT_SPLIT}
  assert len(ours) == 2
  assert not ours & writer and not ours & clip
  assert writer | clip == set(synthetic_detection.OTHER_RENDERER_SPLITS)
  with pytest.raises(ValueError, match="another renderer user"):
    synthetic_detection.detection_corpus(0, clip_corpus.WEB_SPLIT, 1, SIZE,
                                         (SIZE,), SIZE)


def test_corpus_boxes_every_person_and_object():
  c = synthetic_detection.detection_corpus(
      0, synthetic_detection.DETECTOR_SPLIT, 20, SIZE, (SIZE,), SIZE)
  assert c.images.shape == (20, SIZE, SIZE, 3)
  assert np.all(c.person_mask.sum(1) >= 1)  # Every image shows people.
  assert c.object_mask.sum() >= 15
  renderer = set(synthetic_detection.renderer_object_ids().tolist())
  assert set(c.object_labels[c.object_mask].tolist()) <= renderer
  for boxes, mask in ((c.person_boxes, c.person_mask),
                      (c.object_boxes, c.object_mask)):
    b = boxes[mask]
    assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
    assert np.all(b >= 0) and np.all(b <= SIZE)
  # Padding below / right of the valid region is zero.
  h, w = c.sizes[0]
  assert not c.images[0, h:].any() and not c.images[0, :, w:].any()


def test_box_ap_known_answers():
  gt_boxes = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [0, 0, 9, 9]], float)
  gt_image, gt_class = np.array([0, 0, 1]), np.array([0, 0, 1])
  # Class 0: a hit, a duplicate (FP) ranked second, then the second hit:
  # precision 1 up to recall 0.5, 2/3 at recall 1 -> 11-point AP 9.5 / 11.
  det_boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [20, 20, 29, 29],
                        [50, 50, 60, 60]], float)
  out = box_ap.box_ap(gt_image, gt_class, gt_boxes, np.array([0, 0, 0, 1]),
                      np.array([0, 0, 0, 1]), det_boxes,
                      np.array([0.9, 0.8, 0.7, 0.6]), 3)
  assert sorted(out) == [0, 1]  # Class 2 has no ground truth.
  assert out[0]["ap"] == pytest.approx(100 * (6 + 5 * 2 / 3) / 11)
  assert out[0]["num_instances"] == 2 and out[0]["max_recall"] == 100.0
  assert out[1]["ap"] == 0.0 and out[1]["num_detections"] == 1


def test_command_line_overrides_the_config():
  argv = ["prog", "--config",
          os.path.join(demo_utils.REPO_ROOT, "configs", "demo.py"),
          "--config.model.num_queries=16", "--out", "/tmp/unused.msgpack"]
  args = cli.parse_flags(
      argv, lambda flag_values: pretrain_detector.define_flags(
          flag_values, argv))
  assert args.config.model.num_queries == 16
  assert pretrain_detector.detector_model(args.config)["num_queries"] == 16
  assert set(pretrain_detector.detector_model(args.config)) == set(
      pretrain_detector.DETECTOR_MODEL_FIELDS)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
  config = _config()
  out = str(tmp_path_factory.mktemp("detector") / "synthetic_detr.msgpack")
  held_out = synthetic_detection.detection_corpus(
      0, synthetic_detection.DETECTOR_HELD_OUT_SPLIT, 64, SIZE, (SIZE,),
      SIZE)
  random = pretrain_detector.ap_figure(
      config, pretrain_detector.init_variables(config, 0, SIZE), held_out)
  figure = pretrain_detector.run(config, out, steps=STEPS, batch_size=8,
                                 seed=0, num_images=600, num_held_out=64,
                                 learning_rate=1e-3, progress=False)
  return config, out, figure, random


@pytest.mark.slow
def test_pretraining_beats_a_random_detector(pretrained_run):
  _, out, figure, random = pretrained_run
  print(pretrain_detector.format_figure(figure))
  assert figure["person"]["num_instances"] == random["person"][
      "num_instances"] > 50
  assert figure["person"]["ap"] >= random["person"]["ap"] + 10.0
  with open(pretrain_detector.ap_path(out)) as f:
    written = json.load(f)
  assert written["person"]["ap"] == pytest.approx(figure["person"]["ap"])
  assert written["steps"] == STEPS and "sports_ball" in written["objects"]


@pytest.mark.slow
def test_checkpoint_loads_through_init_detr_checkpoint(pretrained_run):
  config, out, _, _ = pretrained_run
  meta = pretrained.load_checkpoint_meta(out)
  assert meta["format"] == convert_detr.FORMAT
  assert {"params/backbone", "params/input_proj", "params/encoder",
          "params/instance_interactor"} <= set(meta["covers"])
  assert os.path.exists(out + ".report.txt")
  from ki2hoi_jax.models import ki2hoi  # pylint: disable=g-import-not-at-top
  model = ki2hoi.build_model(config)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), *ki2hoi.dummy_inputs(config), train=False))
  config.init.detr_checkpoint = out
  loaded = pretrained.flatten(
      pretrained.init_from_pretrained(variables, config))
  ckpt = pretrained.flatten(pretrained.load_checkpoint(out)[0])
  # Strict loading: every tensor of the covered subtrees came from the file.
  for name, value in loaded.items():
    if any(name.startswith(c + "/") for c in meta["covers"]):
      np.testing.assert_array_equal(np.asarray(value), ckpt[name])
  assert not isinstance(loaded["params/backbone/conv1/kernel"],
                        jax.ShapeDtypeStruct)
  config.model.backbone_norm = "frozen"
  with pytest.raises(ValueError, match="backbone_norm='group'"):
    pretrained.init_from_pretrained(variables, config)


@pytest.mark.slow
def test_workdir_detector_is_reused_or_remade(pretrained_run, tmp_path):
  config, out, _, _ = pretrained_run
  config = _config({"init.synthetic_detector_steps": STEPS,
                    "init.synthetic_detector_images": 600, "seed": 0})
  workdir = tmp_path / "run"
  (workdir / "detector").mkdir(parents=True)
  path = str(workdir / "detector" / "synthetic_detr.msgpack")
  for suffix in ("", ".json", ".report.txt"):
    shutil.copy(out + suffix, path + suffix)
  assert pretrain_detector.stale_settings(config, path) == ["missing"]
  shutil.copy(pretrain_detector.ap_path(out), pretrain_detector.ap_path(path))
  assert pretrain_detector.stale_settings(config, path) == []
  # Made with these settings: reused, not retrained (a retraining would
  # rewrite the file).
  mtime = os.path.getmtime(path)
  pretrain_detector.ensure_synthetic_detector(config, str(workdir))
  assert config.init.detr_checkpoint == path
  assert os.path.getmtime(path) == mtime
  other = _config({"init.synthetic_detector_steps": STEPS + 1,
                   "init.synthetic_detector_images": 600,
                   "dataset.max_size": SIZE + 32})
  stale = pretrain_detector.stale_settings(other, path)
  assert stale == [f"steps {STEPS} (wanted {STEPS + 1})",
                   f"max_size {SIZE} (wanted {SIZE + 32})"]
  # Another detector architecture is stale too.
  more_queries = _config({"init.synthetic_detector_steps": STEPS,
                          "init.synthetic_detector_images": 600, "seed": 0,
                          "model.num_queries": config.model.num_queries + 4})
  stale = pretrain_detector.stale_settings(more_queries, path)
  assert len(stale) == 1 and stale[0].startswith("model {")
  assert f"'num_queries': {config.model.num_queries + 4}" in stale[0]
  # A given checkpoint wins; steps 0 leaves the config alone.
  other.init.detr_checkpoint = "/given.msgpack"
  pretrain_detector.ensure_synthetic_detector(other, str(workdir))
  assert other.init.detr_checkpoint == "/given.msgpack"
