"""Synthetic HICO-DET / V-COCO generator: file layout, labels, determinism."""

import collections
import io
import json
import os

import numpy as np
from PIL import Image
import pytest

from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic
from ki2hoi_jax.data import synthetic_poses as poses
from ki2hoi_jax.data import synthetic_scenes as scenes
from ki2hoi_jax.data import synthetic_shapes as shapes

HICO_FILES = (("trainval_hico.json", "train2015"),
              ("test_hico.json", "test2015"))
VCOCO_FILES = (("trainval_vcoco.json", "train2014"),
               ("test_vcoco.json", "val2014"))
NO_INTERACTION_ID = metadata.NO_INTERACTION_VERB + 1


def _load(root, name):
  with open(os.path.join(root, "annotations", name)) as fp:
    return json.load(fp)


def _check_images_and_boxes(root, files, image_size):
  """Every record's image is a JPEG of the right size with boxes inside."""
  for ann_name, folder in files:
    records = _load(root, ann_name)
    ids = [r["img_id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, int) for i in ids)
    for rec in records:
      path = os.path.join(root, "images", folder, rec["file_name"])
      with Image.open(path) as im:
        assert im.format == "JPEG"
        assert im.mode == "RGB"
        width, height = im.size
      assert max(width, height) == image_size
      assert 0.74 <= width / height <= 1.34
      for ann in rec["annotations"]:
        x1, y1, x2, y2 = ann["bbox"]
        assert all(isinstance(v, int) for v in ann["bbox"])
        assert 0 <= x1 < x2 <= width - 1
        assert 0 <= y1 < y2 <= height - 1
        assert x2 - x1 + 1 >= 12 and y2 - y1 + 1 >= 12


@pytest.fixture(scope="module")
def long_root(tmp_path_factory):
  """200 training images at a small size (long-tail statistics)."""
  root = str(tmp_path_factory.mktemp("synthetic_long"))
  summary = synthetic.generate(root, num_train=200, num_test=20, seed=1,
                               image_size=96)
  return root, summary


@pytest.fixture(scope="module")
def vcoco_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("synthetic_vcoco"))
  summary = synthetic.generate(root, num_train=80, num_test=10, seed=2,
                               image_size=96, dataset="vcoco")
  return root, summary


def test_hico_layout_and_prior(synthetic_root):
  train = _load(synthetic_root, "trainval_hico.json")
  test = _load(synthetic_root, "test_hico.json")
  assert len(train) == 24 and len(test) == 8
  assert train[0]["file_name"] == "HICO_train2015_00000001.jpg"
  assert test[-1]["file_name"] == "HICO_test2015_00000008.jpg"
  prior = np.load(os.path.join(synthetic_root, "annotations", "corre_hico.npy"))
  assert prior.shape == (117, 80)
  np.testing.assert_array_equal(prior, metadata.hico().verb_object_matrix())
  assert prior.sum() == 600


def test_hico_images_and_boxes(synthetic_root):
  _check_images_and_boxes(synthetic_root, HICO_FILES, image_size=128)


def test_hico_labels_are_consistent(synthetic_root):
  meta = metadata.hico()
  subset = set(synthetic.hoi_subset())
  for ann_name, _ in HICO_FILES:
    for rec in _load(synthetic_root, ann_name):
      anns = rec["annotations"]
      assert rec["hoi_annotation"], rec["file_name"]
      for hoi in rec["hoi_annotation"]:
        sub, obj = anns[hoi["subject_id"]], anns[hoi["object_id"]]
        assert sub["category_id"] == 1  # Subjects are persons.
        o = meta.object_index_from_coco(obj["category_id"])
        assert o is not None and o != 0
        v = hoi["category_id"] - 1
        assert meta.hois[hoi["hoi_category_id"] - 1] == (v, o)
        assert hoi["hoi_category_id"] - 1 in subset


def test_hoi_subset_covers_seen_and_unseen_of_every_split():
  meta = metadata.hico()
  subset = set(synthetic.hoi_subset())
  assert 20 <= len(subset) <= 32
  objects = {meta.hois[h][1] for h in subset}
  assert 8 <= len(objects) <= 12
  # Every object has its no_interaction HOI in the subset.
  for o in objects:
    assert meta.hoi_index(metadata.NO_INTERACTION_VERB, o) in subset
  for split in ("uv", "rf_uc", "nf_uc", "uo", "uc"):
    unseen = set(meta.unseen_hois(split))
    assert subset & unseen, split
    assert subset - unseen, split
  names = {meta.hoi_name(h) for h in subset & set(meta.unseen_hois("uv"))}
  assert names == {"ride bicycle", "wear backpack"}


def _pair_layout(pose, obj, side):
  """(person extent, object extent, object drawn behind the person)."""
  items = poses.group_items(pose, obj, 80.0, side, 1, np.full(4, 0.5),
                            np.zeros(3, int), 100.0, 150.0)
  extents = []
  for who in ("p", "o"):
    b = np.array([shapes.bounds(q) for w, q in items if w == who])
    extents.append(np.concatenate([b[:, :2].min(0), b[:, 2:].max(0)]))
  return extents[0], extents[1], items[0][0] == "o"


def _iou(a, b):
  w, h = np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2])
  inter = max(w, 0) * max(h, 0)
  area = lambda x: (x[2] - x[0]) * (x[3] - x[1])
  return inter / (area(a) + area(b) - inter)


def test_every_unseen_uv_pair_has_a_seen_look_alike():
  """Riding and wearing share their layout with a seen HICO-DET scene.

  The zero-shot filter removes every pair with an unseen label, so unless a
  seen scene puts the same object where the unseen one does (same layering,
  overlapping boxes), the detector can only learn the unseen pair as
  background. Before perch and sling, the best look-alikes were hold bicycle
  (object IoU 0.17 with ride) and carry backpack (drawn in front of the
  person, wear behind).
  """
  meta = metadata.hico()
  unseen = set(meta.unseen_hois("uv"))
  def hois(t):
    o = meta.objects.index(t.obj)
    return {meta.hoi_index(meta.verbs.index(v), o) for v in t.hico_verbs}
  used = [t for t in scenes._TEMPLATES if t.hico_weight > 0]
  targets = [t for t in used if hois(t) & unseen]
  assert {t.pose for t in targets} == {"ride", "wear"}
  for t in targets:
    person, obj, behind = _pair_layout(t.pose, t.obj, 1)
    best = 0.0
    for u in used:
      if u.obj != t.obj or hois(u) & unseen:
        continue
      for side in (-1, 1):
        p2, o2, behind2 = _pair_layout(u.pose, u.obj, side)
        if behind2 == behind:
          best = max(best, min(_iou(person, p2), _iou(obj, o2)))
    assert best > 0.6, (t.pose, best)


def test_multi_label_pairs_and_no_interaction(long_root):
  root, _ = long_root
  pairs = collections.defaultdict(list)
  for i, rec in enumerate(_load(root, "trainval_hico.json")):
    for hoi in rec["hoi_annotation"]:
      pairs[(i, hoi["subject_id"], hoi["object_id"])].append(
          hoi["category_id"])
  verb_sets = [sorted(v) for v in pairs.values()]
  hold, carry = 37, 9
  assert [carry, hold] in verb_sets
  assert [NO_INTERACTION_ID] in verb_sets
  # no_interaction never co-occurs with a verb on the same pair.
  assert all(len(v) == 1 for v in verb_sets if NO_INTERACTION_ID in v)
  assert max(len(v) for v in verb_sets) == 2


def test_frequencies_are_long_tailed(long_root):
  root, summary = long_root
  counts = collections.Counter(
      h["hoi_category_id"] - 1
      for rec in _load(root, "trainval_hico.json")
      for h in rec["hoi_annotation"])
  assert summary["train_class_counts"] == {
      k + 1: v for k, v in sorted(counts.items())}
  assert summary["train_pairs"] == sum(counts.values())
  subset = synthetic.hoi_subset()
  per_class = [counts[h] for h in subset]
  assert sum(c < 10 for c in per_class) >= 3  # Rare classes.
  assert max(per_class) >= 30
  assert sum(c >= 20 for c in per_class) >= 5
  # Images hold 1-3 person-object groups.
  groups = collections.Counter(
      len(r["annotations"]) // 2 for r in _load(root, "trainval_hico.json"))
  assert set(groups) == {1, 2, 3}


def test_same_seed_is_byte_identical_and_seed_matters(tmp_path):
  roots = []
  for name, seed in (("a", 5), ("b", 5), ("c", 6)):
    root = str(tmp_path / name)
    synthetic.generate(root, num_train=6, num_test=2, seed=seed,
                       image_size=96)
    roots.append(root)

  def read(root, *parts):
    with open(os.path.join(root, *parts), "rb") as fp:
      return fp.read()

  for ann in ("trainval_hico.json", "test_hico.json", "corre_hico.npy"):
    assert read(roots[0], "annotations", ann) == read(roots[1], "annotations",
                                                      ann)
  for name in ("HICO_train2015_00000001.jpg", "HICO_train2015_00000006.jpg"):
    assert (read(roots[0], "images", "train2015", name) ==
            read(roots[1], "images", "train2015", name))
  assert (read(roots[0], "images", "test2015", "HICO_test2015_00000002.jpg") ==
          read(roots[1], "images", "test2015", "HICO_test2015_00000002.jpg"))
  assert (read(roots[0], "annotations", "trainval_hico.json") !=
          read(roots[2], "annotations", "trainval_hico.json"))
  assert (read(roots[0], "images", "train2015", "HICO_train2015_00000001.jpg")
          != read(roots[2], "images", "train2015",
                  "HICO_train2015_00000001.jpg"))
  # The test split is made of different images than the training split.
  train = Image.open(io.BytesIO(read(roots[0], "images", "train2015",
                                     "HICO_train2015_00000001.jpg")))
  test = Image.open(io.BytesIO(read(roots[0], "images", "test2015",
                                    "HICO_test2015_00000001.jpg")))
  assert (train.size != test.size or
          not np.array_equal(np.asarray(train), np.asarray(test)))


def test_vcoco_layout_and_labels(vcoco_root):
  root, summary = vcoco_root
  meta = metadata.vcoco()
  _check_images_and_boxes(root, VCOCO_FILES, image_size=96)
  prior = np.load(os.path.join(root, "annotations", "corre_vcoco.npy"))
  assert prior.shape == (29, 80)
  np.testing.assert_array_equal(prior, meta.verb_object_matrix()[:, :80])
  train = _load(root, "trainval_vcoco.json")
  test = _load(root, "test_vcoco.json")
  assert len(train) == 80 and len(test) == 10
  assert train[0]["file_name"] == "COCO_train2014_000000000001.jpg"
  assert test[0]["file_name"] == "COCO_val2014_000000000081.jpg"
  hoi_pairs = set(meta.hoi_pairs)
  agent_only_missing = role_missing = 0
  seen_classes = set()
  for rec in train + test:
    anns = rec["annotations"]
    for hoi in rec["hoi_annotation"]:
      assert "hoi_category_id" not in hoi
      v = hoi["category_id"]
      assert 0 <= v < 29
      seen_classes.add(v)
      assert anns[hoi["subject_id"]]["category_id"] == 1
      if hoi["object_id"] == -1:
        o = meta.no_object_index
        if meta.verb_class_role[v]:
          role_missing += 1
        else:
          agent_only_missing += 1
      else:
        assert meta.verb_class_role[v]  # Agent-only classes have no object.
        o = meta.coco_category_ids.index(
            anns[hoi["object_id"]]["category_id"])
      assert (v, o) in hoi_pairs
      assert (v, o) in set(synthetic.hoi_subset("vcoco"))
  assert agent_only_missing > 0 and role_missing > 0
  agent_only = {meta.verb_classes.index(a) for a in
                ("stand", "walk", "run", "smile")}
  assert agent_only <= seen_classes
  assert summary["train_pairs"] == sum(len(r["hoi_annotation"]) for r in train)


def test_rejects_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="dataset"):
    synthetic.generate(str(tmp_path), 1, 1, dataset="coco")
  with pytest.raises(ValueError, match="image_size"):
    synthetic.generate(str(tmp_path), 1, 1, image_size=32)


def test_command_line(tmp_path, capsys):
  out = str(tmp_path / "cli")
  assert synthetic.main(["synthetic", "--out", out, "--num_train", "2",
                         "--num_test", "1", "--seed", "3",
                         "--image_size", "96"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["train_images"] == 2 and summary["test_images"] == 1
  assert len(_load(out, "trainval_hico.json")) == 2
  assert os.path.exists(os.path.join(out, "images", "test2015",
                                     "HICO_test2015_00000001.jpg"))
