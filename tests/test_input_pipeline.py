"""Tests of the TFDS builder, transforms and tf.data input pipeline."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.data import batching
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import splits
from ki2hoi_jax.data import synthetic
from ki2hoi_jax.data import tfds_builder
from ki2hoi_jax.data import transforms

HICO = metadata.hico()
CORRUPT, BROKEN = 5, 6  # Training records damaged by the fixture.


def _config(**dataset):
  config = base.get_config()
  d = config.dataset
  d.max_pairs = 6
  d.train_short_sides = (64, 80, 96)
  d.max_size = 128
  d.crop = True
  d.crop_short_sides = (72, 96)
  d.crop_min_size = 48
  d.crop_max_size = 80
  d.eval_short_side = 96
  d.size_buckets = 3
  d.clip_image_size = 32
  d.prefetch = 1
  d.update(dataset)
  config.model.num_queries = 16
  config.batch_size = 8
  config.eval_batch_size = 8
  return config


@pytest.fixture(scope="module")
def hico_builder(synthetic_root, tmp_path_factory):
  """Synthetic HICO-DET with extra unseen labels, a corrupt image, a bad index.

  Every training pair whose object has an RF-UC unseen HOI gets that HOI as
  an extra label (the synthetic grammar has almost no RF-UC unseen classes),
  so each zero-shot split has pairs that mix seen and unseen labels.
  """
  root = str(tmp_path_factory.mktemp("hico") / "root")
  shutil.copytree(synthetic_root, root)
  path = os.path.join(root, "annotations", "trainval_hico.json")
  with open(path) as f:
    records = json.load(f)
  rf_uc = set(HICO.unseen_hois("rf_uc"))
  for rec in records:
    extra = []
    for hoi in rec["hoi_annotation"]:
      obj = HICO.object_index_from_coco(
          rec["annotations"][hoi["object_id"]]["category_id"])
      cands = [h for h in sorted(rf_uc) if HICO.hois[h][1] == obj]
      if cands and hoi["hoi_category_id"] - 1 not in rf_uc:
        extra.append(dict(hoi, category_id=HICO.hois[cands[0]][0] + 1,
                          hoi_category_id=cands[0] + 1))
    rec["hoi_annotation"] += extra[:1]
  records[BROKEN]["hoi_annotation"][0]["subject_id"] = 99
  with open(path, "w") as f:
    json.dump(records, f)
  img = os.path.join(root, "images", "train2015",
                     records[CORRUPT]["file_name"])
  data = open(img, "rb").read()
  open(img, "wb").write(data[:len(data) // 3])
  return tfds_builder.build(root, str(tmp_path_factory.mktemp("tfds")))


def test_build_metadata_and_skips(hico_builder, synthetic_root):
  meta = hico_builder.info.metadata
  summary = meta["summary"]["train"]
  assert summary["num_records"] == 24
  assert summary["skipped"] == {"image_corrupt": 1, "index_out_of_range": 1}
  assert summary["num_images"] == 22
  assert hico_builder.info.splits["train"].num_examples == 22
  assert hico_builder.info.splits["test"].num_examples == 8
  data = splits.split_data(hico_builder, "train")
  assert CORRUPT not in data.image_index and BROKEN not in data.image_index
  with open(os.path.join(synthetic_root, "annotations", "test_hico.json")) as f:
    test_records = json.load(f)
  info = splits.image_info(hico_builder, "test")
  assert sorted(info) == list(range(8))
  for i, rec in enumerate(test_records):
    assert info[i][0] == rec["file_name"]
    path = os.path.join(synthetic_root, "images", "test2015", rec["file_name"])
    assert info[i][1] == tuple(tf.io.decode_jpeg(open(path, "rb").read())
                               .shape[:2])
  gt = splits.split_records(hico_builder, "test")[3]
  np.testing.assert_allclose(
      gt.boxes, [a["bbox"] for a in test_records[3]["annotations"]])
  # The same data_dir with other build options is refused.
  with pytest.raises(ValueError, match="delete that folder"):
    tfds_builder.build(meta["root"], os.fspath(hico_builder.data_dir).rsplit(
        "/hico_det", 1)[0], on_bad_box="reject")


def test_resized_size_matches_detr():
  assert transforms.resized_size(480, 640, 800, 1333) == (800, 1066)
  assert transforms.resized_size(480, 1280, 800, 1333) == (500, 1333)
  assert transforms.resized_size(600, 400, 400) == (600, 400)
  assert transforms.bucket_sides(1333, 4) == (352, 672, 1024, 1344)
  assert transforms.bucket_shape(800, 1066, (352, 672, 1024, 1344)) == (
      1024, 1344)


def test_transform_boxes_known_answer():
  boxes = np.array([[10, 20, 30, 60], [-5, 0, 20, 10], [70, 70, 90, 90]],
                   np.float32)
  geom = transforms.Geometry(flip=True, crop=True, resize1=(200, 160),
                             crop_window=(20, 10, 100, 100), out_size=(50, 50))
  out, valid = transforms.transform_boxes(boxes, 100, 80, geom)
  # Box 0: clip -> same; flip (w=80): [50, 20, 70, 60]; x2 (resize1):
  # [100, 40, 140, 120]; crop (-10, -20): [90, 20, 130, 100] -> clip 100:
  # [90, 20, 100, 100]; x0.5 -> [45, 10, 50, 50].
  np.testing.assert_allclose(out[0], [45, 10, 50, 50])
  # Box 1: clip -> [0, 0, 20, 10]; flip -> [60, 0, 80, 10]; x2 -> [120, 0,
  # 160, 20]; crop -> [110, -20, 150, 0]: zero height -> removed.
  # Box 2: clip -> [70, 70, 80, 90]; flip -> [0, 70, 10, 90] -> [0, 140, 20,
  # 180] -> [-10, 120, 10, 160] -> [0, 100, 10, 100]: removed.
  np.testing.assert_array_equal(valid, [True, False, False])


def _rect_image(h, w, box):
  img = np.zeros((h, w, 3), np.float32)
  x1, y1, x2, y2 = (int(v) for v in box)
  img[y1:y2, x1:x2] = 1.0
  return img


def _bright_bbox(img):
  ys, xs = np.nonzero(img[..., 0] > 0.5)
  return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_pixels_follow_boxes():
  """The white rectangle of the image lands where transform_boxes says."""
  h, w, box = 90, 120, np.array([[40, 20, 100, 70]], np.float32)
  checked = {"crop": 0, "flip": 0, "plain": 0}
  for seed in range(12):
    cfg = _config(crop=seed % 3 > 0).dataset
    geom = transforms.sample_train_geometry(np.random.default_rng(seed), h, w,
                                            cfg)
    out, valid = transforms.transform_boxes(box, h, w, geom)
    img = transforms.augment_image(
        tf.constant(_rect_image(h, w, box[0])), geom.flip,
        tf.ones(3), tf.range(3), geom.crop, geom.resize1, geom.crop_window,
        geom.out_size, use_jitter=False).numpy()
    assert img.shape[:2] == geom.out_size
    if not valid[0] or min(out[0, 2:] - out[0, :2]) < 2:
      continue
    np.testing.assert_allclose(_bright_bbox(img), out[0], atol=1.5)
    checked["crop" if geom.crop else "plain"] += 1
    checked["flip"] += geom.flip
  assert min(checked.values()) >= 1, checked


def test_cropped_away_pair_loses_its_labels():
  boxes = np.array([[0, 0, 20, 40], [5, 5, 15, 15], [60, 60, 80, 80]],
                   np.float32)
  labels = np.array([0, 3, 7], np.int32)
  pairs = np.array([[0, 1, 5, 10], [0, 1, 6, 11], [0, 2, 8, 12]], np.int32)
  geom = transforms.Geometry(crop=True, resize1=(100, 100),
                             crop_window=(0, 0, 50, 50), out_size=(50, 50))
  out, valid = transforms.transform_boxes(boxes, 100, 100, geom)
  assert valid.tolist() == [True, True, False]
  t = batching.build_targets(out, valid, labels, pairs,
                             np.ones(3, bool), (50, 50), max_pairs=4,
                             num_verbs=117, num_hois=600)
  assert t["pair_mask"].tolist() == [True, False, False, False]
  assert np.flatnonzero(t["verb_labels"][0]).tolist() == [5, 6]  # Merged.
  assert np.flatnonzero(t["hoi_labels"][0]).tolist() == [10, 11]
  assert t["verb_labels"][:, 8].sum() == 0 and t["hoi_labels"][:, 12].sum() == 0
  assert t["obj_labels"][0] == 3
  np.testing.assert_allclose(t["sub_boxes"][0], [0.2, 0.4, 0.4, 0.8])
  np.testing.assert_allclose(t["obj_boxes"][0], [0.2, 0.2, 0.2, 0.2])


def _check_batch(batch, config, devices):
  d = config.dataset
  p, b = d.max_pairs, config.batch_size // devices
  assert batch["image"].shape[:2] == (devices, b)
  assert batch["clip_image"].shape == (devices, b, 32, 32, 3)
  assert batch["verb_labels"].shape == (devices, b, p, 117)
  assert batch["hoi_labels"].shape == (devices, b, p, 600)
  sides = transforms.bucket_sides(d.max_size, d.size_buckets)
  hp, wp = batch["image"].shape[2:4]
  assert hp in sides and wp in sides
  flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}
  for i in range(len(flat["image"])):
    h, w = flat["size"][i]
    expected = np.zeros((hp, wp), bool)
    expected[:h, :w] = True
    np.testing.assert_array_equal(flat["mask"][i], expected)
    assert not flat["image"][i][~expected].any()
    assert flat["image"][i][expected].std() > 0.1
    m = flat["pair_mask"][i]
    for key in ("sub_boxes", "obj_boxes"):
      bx = flat[key][i][m]
      assert (bx >= 0).all() and (bx <= 1).all() and (bx[:, 2:] > 0).all()
      assert not flat[key][i][~m].any()
    assert (flat["verb_labels"][i][m].sum(-1) >= 1).all()
    assert not flat["verb_labels"][i][~m].any()
  return hp, wp


def test_train_batches_shapes_masks_buckets(hico_builder):
  config = _config()
  it = input_pipeline.create_train_iterator(config, hico_builder,
                                            num_local_devices=4)
  shapes = {_check_batch(next(it), config, 4) for _ in range(6)}
  assert len(shapes) <= config.dataset.size_buckets ** 2


def test_boxes_round_trip_through_pipeline(hico_builder):
  """Batch boxes mapped back to the original image match the annotation."""
  config = _config(crop=False, color_jitter=0.0)
  data = splits.split_data(hico_builder, "train")
  by_index = {int(i): k for k, i in enumerate(data.image_index)}
  batch = next(input_pipeline.create_train_iterator(
      config, hico_builder, num_local_devices=1))
  checked = 0
  for i in range(config.batch_size):
    k = by_index[int(batch["image_index"][0, i])]
    oh, ow = batch["orig_size"][0, i]
    orig = data.boxes_of(k)
    for j in np.flatnonzero(batch["pair_mask"][0, i]):
      cx, cy, bw, bh = batch["sub_boxes"][0, i, j]
      back = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
      back *= [ow, oh, ow, oh]
      flipped = np.array([ow - back[2], back[1], ow - back[0], back[3]])
      err = min(np.abs(orig - back).max(1).min(),
                np.abs(orig - flipped).max(1).min())
      assert err < 1e-3 * max(oh, ow)
      checked += 1
  assert checked >= config.batch_size


@pytest.mark.parametrize("split", metadata.ZERO_SHOT_SPLITS)
def test_zero_shot_epoch_has_no_unseen_labels(hico_builder, split):
  config = _config(zero_shot_split=split)
  data = splits.split_data(hico_builder, "train")
  sel = splits.select_training(data, "hico_det", split)
  assert sel.stats["zero_shot_dropped_labels"] > 0
  assert (sel.stats["zero_shot_dropped_labels"]
          >= sel.stats["zero_shot_unseen_labels"] > 0)
  if split == "rf_uc":  # Seen labels sharing a pair with an unseen one go too.
    assert (sel.stats["zero_shot_dropped_labels"]
            > sel.stats["zero_shot_unseen_labels"])
  unseen = np.array(HICO.unseen_hois(split))
  steps = input_pipeline.train_steps_per_epoch(config, hico_builder)
  assert steps == len(sel.positions) // 8
  it = input_pipeline.create_train_iterator(config, hico_builder,
                                            num_local_devices=1)
  seen_images, num_labels = [], 0
  for _ in range(steps):
    batch = next(it)
    assert not batch["hoi_labels"][..., unseen].any()
    num_labels += batch["hoi_labels"].sum()
    seen_images += batch["image_index"].ravel().tolist()
  assert num_labels > 0
  assert len(set(seen_images)) == len(seen_images) == steps * 8
  assert set(seen_images) <= set(data.image_index[sel.positions].tolist())


def test_train_fraction_is_fixed_subset(hico_builder):
  data = splits.split_data(hico_builder, "train")
  a = splits.select_training(data, "hico_det", "", 0.5, seed=1)
  b = splits.select_training(data, "hico_det", "", 0.5, seed=1)
  c = splits.select_training(data, "hico_det", "", 0.5, seed=2)
  assert len(a.positions) == 11
  np.testing.assert_array_equal(a.positions, b.positions)
  assert a.positions.tolist() != c.positions.tolist()


def _equal(x, y):
  assert x.keys() == y.keys()
  for k in x:
    np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_determinism_and_resume(hico_builder):
  config = _config()
  make = lambda **kw: input_pipeline.create_train_iterator(
      config, hico_builder, num_local_devices=2, **kw)
  run = make()
  batches = [next(run) for _ in range(5)]  # 2 steps per epoch: 2.5 epochs.
  again = make()
  _equal(next(again), batches[0])
  resumed = make(start_step=3)
  _equal(next(resumed), batches[3])
  _equal(next(resumed), batches[4])
  assert not np.array_equal(batches[0]["image_index"],
                            batches[2]["image_index"])  # Reshuffled epoch.
  config.seed = 1
  other = next(make())
  assert not all(np.array_equal(other[k], batches[0][k]) for k in other)
  # Two hosts see the two halves of the same global batch.
  config.seed = 0
  halves = [next(input_pipeline.create_train_iterator(
      config, hico_builder, num_local_devices=2, process_index=p,
      process_count=2)) for p in range(2)]
  whole = batches[0]["image_index"].ravel()
  np.testing.assert_array_equal(
      np.concatenate([h["image_index"].ravel() for h in halves]), whole)
  run.close()
  with pytest.raises(StopIteration):
    next(run)


def test_eval_covers_every_image_once(hico_builder):
  config = _config()
  config.eval_batch_size = 6  # 8 test images -> 2 steps, 4 dummies.
  assert input_pipeline.num_eval_steps(config, hico_builder) == 2
  seen = []
  for p in range(2):
    for batch in input_pipeline.create_eval_iterator(
        config, hico_builder, num_local_devices=3, process_index=p,
        process_count=2):
      assert batch["image"].shape[:2] == (3, 1)
      idx = batch["image_index"].ravel()
      seen += idx.tolist()
      assert batch["mask"].reshape(3, -1)[idx < 0].all()
      assert not batch["pair_mask"].reshape(3, -1)[idx < 0].any()
      for i in np.flatnonzero(idx >= 0):
        h, w = batch["size"].reshape(3, 2)[i]
        assert min(h, w) == 96 or max(h, w) == 128
  assert sorted(seen) == [-1] * 4 + list(range(8))


def test_vcoco_no_object_pairs(tmp_path):
  root = str(tmp_path / "vcoco")
  synthetic.generate(root, num_train=8, num_test=2, seed=3, image_size=96,
                     dataset="vcoco")
  builder = tfds_builder.build(root, str(tmp_path / "tfds"), "vcoco")
  config = _config(name="vcoco", crop=False)
  batch = next(input_pipeline.create_train_iterator(config, builder,
                                                    num_local_devices=1))
  assert batch["verb_labels"].shape[-1] == 29
  assert batch["hoi_labels"].shape[-1] == 263
  m = batch["pair_mask"]
  no_obj = m & (batch["obj_labels"] == 80)
  assert no_obj.any() and (m & (batch["obj_labels"] < 80)).any()
  assert not batch["obj_boxes"][no_obj].any()
  stand = metadata.vcoco().verb_classes.index("stand")
  hoi_stand = metadata.vcoco().hoi_pairs.index((stand, 80))
  assert (batch["verb_labels"][no_obj][:, stand]
          <= batch["hoi_labels"][no_obj][:, hoi_stand]).all()
