"""Tests of the annotation reader and validator (annotations.py and
annotation_records.py in ki2hoi_jax/data)."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import metadata

HICO = metadata.hico()
PERSON = 1  # COCO id of 'person'.
BICYCLE_COCO = 2
BICYCLE = HICO.object_index_from_coco(BICYCLE_COCO)
RIDE = HICO.verbs.index("ride")
HOLD = HICO.verbs.index("hold")
RIDE_BICYCLE = HICO.hoi_index(RIDE, BICYCLE)
HOLD_BICYCLE = HICO.hoi_index(HOLD, BICYCLE)


def _record(**overrides):
  rec = {
      "file_name": "HICO_train2015_00000001.jpg",
      "annotations": [{"bbox": [10, 20, 50, 90], "category_id": PERSON},
                      {"bbox": [30.5, 40, 70, 95],
                       "category_id": BICYCLE_COCO}],
      "hoi_annotation": [
          {"subject_id": 0, "object_id": 1, "category_id": RIDE + 1,
           "hoi_category_id": RIDE_BICYCLE + 1},
          {"subject_id": 0, "object_id": 1, "category_id": HOLD + 1,
           "hoi_category_id": HOLD_BICYCLE + 1}],
  }
  rec.update(overrides)
  return rec


def _parse(raw, train=True, dataset="hico_det"):
  stats = annotations.SplitStats("t")
  rec = annotations.parse_record(raw, 7, path="ann.json", dataset=dataset,
                                 train=train, stats=stats)
  return rec, stats


def test_parse_record_arrays():
  rec, stats = _parse(_record())
  assert rec.index == 7 and rec.file_name == "HICO_train2015_00000001.jpg"
  np.testing.assert_array_equal(
      rec.boxes, np.array([[10, 20, 50, 90], [30.5, 40, 70, 95]], np.float32))
  assert rec.boxes.dtype == np.float32
  np.testing.assert_array_equal(rec.labels, [0, BICYCLE])
  np.testing.assert_array_equal(
      rec.pairs, [[0, 1, RIDE, RIDE_BICYCLE], [0, 1, HOLD, HOLD_BICYCLE]])
  assert rec.pairs.dtype == np.int32
  assert not stats.skipped


def test_missing_hoi_id_is_rebuilt():
  raw = _record()
  del raw["hoi_annotation"][0]["hoi_category_id"]
  rec, stats = _parse(raw)
  assert rec.pairs[0, 3] == RIDE_BICYCLE
  assert stats.counts["hoi_id_rebuilt"] == 1


def _error(raw, train=True, dataset="hico_det"):
  with pytest.raises(annotations.AnnotationError) as e:
    _parse(raw, train=train, dataset=dataset)
  return str(e.value)


def test_unknown_category_id():
  raw = _record()
  raw["annotations"][1]["category_id"] = 12  # An unused COCO id.
  msg = _error(raw)
  assert "ann.json" in msg and "record 7" in msg
  assert "HICO_train2015_00000001.jpg" in msg
  assert "annotations[1].category_id" in msg and "12" in msg


def test_inconsistent_hoi_id():
  raw = _record()
  raw["hoi_annotation"][1]["hoi_category_id"] = RIDE_BICYCLE + 1
  msg = _error(raw)
  assert "hoi_annotation[1].hoi_category_id" in msg
  assert "ride" in msg and "hold" in msg


def test_verb_and_hoi_ids_out_of_range():
  raw = _record()
  raw["hoi_annotation"][0]["category_id"] = 118
  assert "hoi_annotation[0].category_id" in _error(raw)
  raw = _record()
  raw["hoi_annotation"][0]["hoi_category_id"] = 601
  assert "hoi_annotation[0].hoi_category_id" in _error(raw)


def test_index_out_of_range_train_drops_test_fails():
  raw = _record()
  raw["hoi_annotation"][1]["object_id"] = 2
  rec, stats = _parse(raw, train=True)
  assert rec is None and stats.skipped["index_out_of_range"] == 1
  msg = _error(raw, train=False)
  assert "hoi_annotation[1].object_id" in msg and "index 2" in msg


def test_empty_records():
  raw = _record(hoi_annotation=[])
  rec, stats = _parse(raw, train=True)
  assert rec is None and stats.skipped["no_pairs"] == 1
  rec, stats = _parse(raw, train=False)  # Test images without pairs stay.
  assert rec is not None and rec.pairs.shape == (0, 4)


@pytest.mark.parametrize("mutate,field", [
    (lambda r: r.pop("annotations"), "field annotations: missing key"),
    (lambda r: r.update(file_name=3), "field file_name: expected str"),
    (lambda r: r["annotations"][0].update(bbox=[1, 2, 3]),
     "annotations[0].bbox"),
    (lambda r: r["annotations"][0].update(bbox=[1, 2, "a", 4]),
     "annotations[0].bbox"),
    (lambda r: r["hoi_annotation"][0].pop("subject_id"),
     "hoi_annotation[0].subject_id: missing key"),
    (lambda r: r["hoi_annotation"][0].update(object_id=1.5),
     "hoi_annotation[0].object_id: expected int"),
    (lambda r: r["hoi_annotation"].__setitem__(0, [0, 1]),
     "hoi_annotation[0]: expected an object"),
])
def test_malformed_record(mutate, field):
  raw = _record()
  mutate(raw)
  msg = _error(raw)
  assert "ann.json: record 7" in msg and field in msg


def test_malformed_json_files(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text("[{\"file_name\": ")
  with pytest.raises(annotations.AnnotationError,
                     match="bad.json: invalid JSON"):
    annotations.load_json(str(bad))
  bad.write_text(json.dumps({"file_name": "x"}))
  with pytest.raises(annotations.AnnotationError,
                     match="bad.json: top level must be a list"):
    annotations.load_json(str(bad))
  with pytest.raises(annotations.AnnotationError, match="cannot read"):
    annotations.load_json(str(tmp_path / "missing.json"))


def test_bad_boxes_clip_vs_reject():
  def rec():
    r, _ = _parse(_record())
    r.boxes[0] = [-5, 20, 50, 90]        # Outside on the left.
    r.boxes[1] = [30, 40, 30, 95]        # Zero width.
    r.height, r.width = 80, 60           # y2 = 90 / 95 > 80 too.
    return r
  r = rec()
  stats = annotations.SplitStats("t")
  annotations.check_boxes(r, "clip", stats)
  np.testing.assert_array_equal(r.boxes, [[0, 20, 50, 80], [30, 40, 30, 80]])
  assert stats.counts["boxes_clipped"] == 2
  assert stats.counts["boxes_degenerate"] == 1
  with pytest.raises(annotations.AnnotationError,
                     match=r"annotations\[0\].bbox.*outside the 60x80 image"):
    annotations.check_boxes(rec(), "reject", stats, path="ann.json")
  r = rec()
  r.boxes[0] = [10, 20, 50, 60]
  with pytest.raises(annotations.AnnotationError,
                     match=r"annotations\[1\].bbox.*degenerate"):
    annotations.check_boxes(r, "reject", stats)
  r = rec()
  annotations.check_boxes(r, "keep", stats)
  assert r.boxes[0, 0] == -5


def test_vcoco_records():
  meta = metadata.vcoco()
  hold = meta.verb_classes.index("hold_obj")
  stand = meta.verb_classes.index("stand")
  raw = _record(hoi_annotation=[
      {"subject_id": 0, "object_id": 1, "category_id": hold},
      {"subject_id": 0, "object_id": -1, "category_id": stand}])
  rec, stats = _parse(raw, dataset="vcoco")
  lookup = {tuple(p): i for i, p in enumerate(meta.hoi_pairs)}
  np.testing.assert_array_equal(rec.pairs, [
      [0, 1, hold, lookup[(hold, BICYCLE)]],
      [0, -1, stand, lookup[(stand, 80)]]])
  raw["hoi_annotation"][0]["category_id"] = 29
  assert "verb class 29" in _error(raw, dataset="vcoco")


def _write_split(root, records, images):
  os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
  img_dir = os.path.join(root, "images", "train2015")
  os.makedirs(img_dir, exist_ok=True)
  with open(os.path.join(root, "annotations", "trainval_hico.json"), "w") as f:
    json.dump(records, f)
  for name, writer in images.items():
    writer(os.path.join(img_dir, name))


def _jpeg(h, w, fmt="JPEG", mode="RGB"):
  def write(path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))
    img.convert(mode).save(path, fmt)
  return write


def test_images_sizes_corrupt_missing_and_reencoded(tmp_path):
  def truncated(path):
    _jpeg(40, 50)(path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])

  names = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
  records = [_record(file_name=n) for n in names]
  _write_split(str(tmp_path), records, {
      "a.jpg": _jpeg(100, 80), "b.jpg": truncated,
      "d.jpg": _jpeg(60, 90, fmt="PNG"),  # A PNG named .jpg.
      "e.jpg": _jpeg(120, 100, mode="CMYK")})  # c.jpg is missing.
  recs, stats = annotations.read_split(str(tmp_path), "train")
  assert [r.file_name for r in recs] == ["a.jpg", "d.jpg", "e.jpg"]
  assert [(r.height, r.width) for r in recs] == [(100, 80), (60, 90),
                                                  (120, 100)]
  assert dict(stats.skipped) == {"image_corrupt": 1, "image_missing": 1}
  assert stats.counts["image_reencoded"] >= 1  # PNG (and CMYK if TF refuses).
  # Boxes were clipped to the real image sizes (the bicycle reaches y = 95).
  assert recs[1].boxes[:, 3].max() == 60
  line = stats.summary()
  assert "3 images, 6 pairs from 5 records; skipped 2" in line
  assert "image_corrupt=1" in line and "image_missing=1" in line
  with pytest.raises(annotations.BadImageError,
                     match=r"record 1 \(b.jpg\).*corrupt"):
    annotations.read_split(str(tmp_path), "train", on_bad_image="fail")
  with pytest.raises(annotations.AnnotationError, match="on_bad_box='reject'"):
    annotations.read_split(str(tmp_path), "train", on_bad_box="reject")
  # Every kept image's bytes decode as JPEG with the recorded size.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for rec, data in annotations.iter_split(str(tmp_path), "train",
                                          with_bytes=True):
    shape = tf.io.decode_jpeg(data, channels=3).shape
    assert shape[:2] == (rec.height, rec.width)
