"""V-COCO reader/validator error cases, TFDS build and targets of no-object pairs.

Hand-built GEN-VLKT-style V-COCO records (`category_id` of a pair is the
0-based verb class 0..28, `object_id` -1 = the role has no object) through
`annotations.parse_record` / `read_split`, the TFDS builder and the input
pipeline's targets (docs/datasets.md section 7, docs/contracts.md).
"""

import json
import os

import numpy as np
from PIL import Image
import pytest

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import tfds_builder

META = metadata.vcoco()
HOI_OF = {pair: i for i, pair in enumerate(META.hoi_pairs)}
HOLD = META.verb_classes.index("hold_obj")
STAND = META.verb_classes.index("stand")
RIDE = META.verb_classes.index("ride_instr")
BICYCLE_COCO = 2
BICYCLE = metadata.hico().object_index_from_coco(BICYCLE_COCO)  # 1
CAR_COCO = 3
CAR = metadata.hico().object_index_from_coco(CAR_COCO)  # 2


def _record(file_name="COCO_train2014_000000000001.jpg", hois=None):
  """Person (box 0) riding and holding a bicycle (box 1), standing."""
  if hois is None:
    hois = [{"subject_id": 0, "object_id": 1, "category_id": RIDE},
            {"subject_id": 0, "object_id": 1, "category_id": HOLD},
            {"subject_id": 0, "object_id": -1, "category_id": STAND}]
  return {"file_name": file_name,
          "annotations": [{"bbox": [10, 20, 50, 90], "category_id": 1},
                          {"bbox": [40, 50, 100, 94],
                           "category_id": BICYCLE_COCO}],
          "hoi_annotation": hois}


def _parse(raw, train=True, dataset="vcoco"):
  stats = annotations.SplitStats("t")
  rec = annotations.parse_record(raw, 3, path="trainval_vcoco.json",
                                 dataset=dataset, train=train, stats=stats)
  return rec, stats


def _error(raw, train=True, dataset="vcoco"):
  with pytest.raises(annotations.AnnotationError) as e:
    _parse(raw, train=train, dataset=dataset)
  return str(e.value)


# ------------------------------------------------------------ record level


def test_vcoco_pairs_use_verb_class_and_no_object_class():
  rec, stats = _parse(_record())
  np.testing.assert_array_equal(rec.labels, [0, BICYCLE])
  np.testing.assert_array_equal(rec.pairs, [
      [0, 1, RIDE, HOI_OF[(RIDE, BICYCLE)]],
      [0, 1, HOLD, HOI_OF[(HOLD, BICYCLE)]],
      [0, -1, STAND, HOI_OF[(STAND, annotations.VCOCO_NO_OBJECT)]]])
  assert annotations.VCOCO_NO_OBJECT == META.no_object_index == 80
  assert not stats.skipped and not stats.counts["vcoco_unlisted_hoi"]


def test_verb_class_bounds():
  for verb in (0, META.num_verb_classes - 1):  # 0 and 28 are valid.
    rec, _ = _parse(_record(hois=[{"subject_id": 0, "object_id": -1,
                                   "category_id": verb}]))
    assert rec.pairs[0, 2] == verb
  for verb in (-1, 29, 117):
    raw = _record()
    raw["hoi_annotation"][1]["category_id"] = verb
    for train in (True, False):  # An unknown class is an error in any split.
      msg = _error(raw, train=train)
      assert "trainval_vcoco.json: record 3" in msg
      assert "COCO_train2014_000000000001.jpg" in msg
      assert "hoi_annotation[1].category_id" in msg
      assert f"verb class {verb} outside 0..28" in msg


def test_verb_class_must_be_an_integer():
  raw = _record()
  raw["hoi_annotation"][0]["category_id"] = "ride_instr"
  assert "hoi_annotation[0].category_id: expected int" in _error(raw)
  raw["hoi_annotation"][0]["category_id"] = float(RIDE)  # 3.0 is fine.
  rec, _ = _parse(raw)
  assert rec.pairs[0, 2] == RIDE


@pytest.mark.parametrize("field,value", [
    ("subject_id", 2), ("subject_id", -1), ("object_id", 2),
    ("object_id", -2)])
def test_index_out_of_range_train_drops_test_fails(field, value):
  raw = _record()
  raw["hoi_annotation"][0][field] = value
  rec, stats = _parse(raw, train=True)
  assert rec is None and dict(stats.skipped) == {"index_out_of_range": 1}
  msg = _error(raw, train=False)
  assert f"hoi_annotation[0].{field}" in msg
  assert f"box index {value} outside the record's 2 annotations" in msg


def test_object_minus_one_only_means_no_object_on_vcoco():
  rec, _ = _parse(_record(), train=False)  # Allowed in the test split too.
  assert rec.pairs[2, 1] == -1
  # HICO-DET has no such convention: -1 is an index out of range.
  raw = _record(hois=[{"subject_id": 0, "object_id": -1, "category_id": 1,
                       "hoi_category_id": 1}])
  rec, stats = _parse(raw, dataset="hico_det")
  assert rec is None and stats.skipped["index_out_of_range"] == 1


def test_unknown_object_category_and_unlisted_combination():
  raw = _record()
  raw["annotations"][1]["category_id"] = 12  # An unused COCO id.
  assert "annotations[1].category_id: unknown COCO category id 12" in (
      _error(raw))
  # (hold_obj, car) is not one of the 263 classifier pairs: kept, hoi -1.
  assert (HOLD, CAR) not in HOI_OF
  raw = _record()
  raw["annotations"][1]["category_id"] = CAR_COCO
  rec, stats = _parse(raw)
  np.testing.assert_array_equal(rec.pairs[:2], [
      [0, 1, RIDE, HOI_OF[(RIDE, CAR)]], [0, 1, HOLD, -1]])
  assert stats.counts["vcoco_unlisted_hoi"] == 1


def test_empty_records():
  raw = _record(hois=[])
  rec, stats = _parse(raw, train=True)
  assert rec is None and stats.skipped["no_pairs"] == 1
  rec, _ = _parse(raw, train=False)
  assert rec.pairs.shape == (0, 4)


# -------------------------------------------------------------- file level


def _write_root(root, train_records, test_records, size=(96, 128)):
  """A V-COCO folder: annotations/*.json, images/train2014 + val2014."""
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  for split, records in (("train", train_records), ("test", test_records)):
    ann, img_dir = annotations.split_paths(root, split, "vcoco")
    os.makedirs(img_dir, exist_ok=True)
    with open(ann, "w") as f:
      json.dump(records, f)
    for k, rec in enumerate(records):
      pixels = np.full(size + (3,), 40 * k, np.uint8)
      Image.fromarray(pixels).save(os.path.join(img_dir, rec["file_name"]),
                                   "JPEG")


def test_split_paths_use_coco_2014_folders():
  ann, img = annotations.split_paths("/d", "train", "vcoco")
  assert (ann, img) == ("/d/annotations/trainval_vcoco.json",
                        "/d/images/train2014")
  ann, img = annotations.split_paths("/d", "test", "vcoco")
  assert (ann, img) == ("/d/annotations/test_vcoco.json", "/d/images/val2014")


def test_malformed_and_missing_files(tmp_path):
  root = str(tmp_path)
  _write_root(root, [_record()], [_record("COCO_val2014_000000000002.jpg")])
  train_json, _ = annotations.split_paths(root, "train", "vcoco")
  with open(train_json, "w") as f:
    f.write('[{"file_name": "COCO_train2014_000000000001.jpg", ')
  with pytest.raises(annotations.AnnotationError,
                     match="trainval_vcoco.json: invalid JSON"):
    annotations.read_split(root, "train", "vcoco")
  with open(train_json, "w") as f:
    json.dump({"images": []}, f)
  with pytest.raises(annotations.AnnotationError,
                     match="trainval_vcoco.json: top level must be a list"):
    annotations.read_split(root, "train", "vcoco")
  with open(train_json, "w") as f:
    json.dump([["not", "a", "record"]], f)
  with pytest.raises(annotations.AnnotationError,
                     match=r"record 0: field record: expected an object"):
    annotations.read_split(root, "train", "vcoco")
  os.remove(train_json)
  with pytest.raises(annotations.AnnotationError,
                     match="trainval_vcoco.json: cannot read"):
    annotations.read_split(root, "train", "vcoco")
  # The test split is still fine; a HICO-DET reader finds nothing there.
  recs, stats = annotations.read_split(root, "test", "vcoco")
  assert [r.file_name for r in recs] == ["COCO_val2014_000000000002.jpg"]
  assert (recs[0].height, recs[0].width) == (96, 128)
  assert stats.num_pairs == 3
  with pytest.raises(annotations.AnnotationError, match="test_hico.json"):
    annotations.read_split(root, "test", "hico_det")


def test_split_skips_bad_training_records_and_counts(tmp_path):
  root = str(tmp_path)
  bad_index = _record("COCO_train2014_000000000002.jpg")
  bad_index["hoi_annotation"][2]["subject_id"] = 5
  train = [_record(), bad_index, _record("COCO_train2014_000000000003.jpg",
                                         hois=[])]
  test = [_record("COCO_val2014_000000000004.jpg"),
          _record("COCO_val2014_000000000005.jpg", hois=[])]
  _write_root(root, train, test)
  recs, stats = annotations.read_split(root, "train", "vcoco")
  assert [r.index for r in recs] == [0]
  assert dict(stats.skipped) == {"index_out_of_range": 1, "no_pairs": 1}
  assert "1 images, 3 pairs from 3 records; skipped 2" in stats.summary()
  recs, stats = annotations.read_split(root, "test", "vcoco")
  assert [r.index for r in recs] == [0, 1] and not stats.skipped
  test[1]["hoi_annotation"] = bad_index["hoi_annotation"]
  _write_root(root, train, test)
  with pytest.raises(annotations.AnnotationError,
                     match=r"record 1 .*hoi_annotation\[2\].subject_id"):
    annotations.read_split(root, "test", "vcoco")


# ---------------------------------------------------- build and targets


def test_tfds_build_and_no_object_targets(tmp_path):
  root = str(tmp_path / "vcoco")
  two_people = _record("COCO_train2014_000000000002.jpg")
  two_people["annotations"].append({"bbox": [60, 4, 120, 60],
                                    "category_id": 1})
  two_people["hoi_annotation"] = [  # Person 2 rides with an unknown object.
      {"subject_id": 2, "object_id": -1, "category_id": RIDE},
      {"subject_id": 2, "object_id": -1, "category_id": STAND},
      {"subject_id": 0, "object_id": 1, "category_id": HOLD}]
  _write_root(root, [_record(), two_people],
              [_record("COCO_val2014_000000000003.jpg")])
  builder = tfds_builder.build(root, str(tmp_path / "tfds"), "vcoco")
  meta = builder.info.metadata
  assert meta["dataset"] == "vcoco"
  assert meta["summary"]["train"]["num_pairs"] == 6
  np.testing.assert_array_equal(
      np.asarray(meta["splits"]["train"]["pairs"])[3:],
      [[2, -1, RIDE, HOI_OF[(RIDE, 80)]], [2, -1, STAND, HOI_OF[(STAND, 80)]],
       [0, 1, HOLD, HOI_OF[(HOLD, BICYCLE)]]])

  config = base.get_config()
  config.dataset.name = "vcoco"
  config.model.interaction_space = "verb"
  config.dataset.max_pairs = 4
  config.dataset.eval_short_side = 96  # The 96 x 128 images stay unscaled.
  config.dataset.max_size = 128
  config.dataset.size_buckets = 1
  config.dataset.clip_image_size = 32
  config.dataset.prefetch = 1
  batch = next(input_pipeline.create_eval_iterator(
      config, builder, split="train", batch_size=2, num_local_devices=1))
  batch = {k: v[0] for k, v in batch.items()}  # Drop the device axis.
  np.testing.assert_array_equal(batch["image_index"], [0, 1])
  # One slot per distinct (subject, object) pair, verbs merged; object -1
  # (no object) is a pair of its own. Image 0: slot 0 = (person 0, bicycle)
  # with ride_instr + hold_obj, slot 1 = (person 0, no object) with stand.
  # Image 1: slot 0 = (person 2, no object) with ride_instr + stand, slot 1 =
  # (person 0, bicycle) with hold_obj.
  np.testing.assert_array_equal(batch["pair_mask"],
                                [[1, 1, 0, 0], [1, 1, 0, 0]])
  assert batch["verb_labels"].shape[-1] == 29
  assert batch["hoi_labels"].shape[-1] == 263

  def cxcywh(x1, y1, x2, y2):
    return [(x1 + x2) / 256, (y1 + y2) / 192, (x2 - x1) / 128, (y2 - y1) / 96]

  np.testing.assert_array_equal(batch["obj_labels"][:, :2],
                                [[BICYCLE, 80], [80, BICYCLE]])
  np.testing.assert_array_equal(np.flatnonzero(batch["verb_labels"][0, 0]),
                                sorted([RIDE, HOLD]))
  np.testing.assert_array_equal(np.flatnonzero(batch["verb_labels"][0, 1]),
                                [STAND])
  np.testing.assert_allclose(batch["sub_boxes"][0, 1], cxcywh(10, 20, 50, 90),
                             atol=1e-6)
  np.testing.assert_array_equal(batch["obj_boxes"][0, 1], [0, 0, 0, 0])
  np.testing.assert_allclose(batch["sub_boxes"][1, 0], cxcywh(60, 4, 120, 60),
                             atol=1e-6)
  np.testing.assert_array_equal(batch["obj_boxes"][1, 0], [0, 0, 0, 0])
  assert batch["obj_labels"][1, 0] == 80
  np.testing.assert_array_equal(np.flatnonzero(batch["verb_labels"][1, 0]),
                                sorted([RIDE, STAND]))
  np.testing.assert_array_equal(
      np.flatnonzero(batch["hoi_labels"][1, 0]),
      sorted([HOI_OF[(RIDE, 80)], HOI_OF[(STAND, 80)]]))
  np.testing.assert_allclose(batch["obj_boxes"][1, 1],
                             cxcywh(40, 50, 100, 94), atol=1e-6)
  assert batch["obj_labels"][1, 1] == BICYCLE
  np.testing.assert_array_equal(np.flatnonzero(batch["verb_labels"][1, 1]),
                                [HOLD])
