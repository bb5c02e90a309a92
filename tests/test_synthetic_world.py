"""Tests of the compositional synthetic world (synthetic_scenes.py)."""

import json

import numpy as np
import pytest

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import synthetic
from ki2hoi_jax.data import synthetic_scenes as scenes
from ki2hoi_jax.data import synthetic_world

WORLD = "compositional"
MIN_UNSEEN = 6  # Drawn unseen HOIs per zero-shot setting.


def _objects(hois):
  meta = metadata.hico()
  return {meta.hoi_object[h] for h in hois}


def _verbs(hois):
  meta = metadata.hico()
  return {meta.hoi_verb[h] for h in hois}


def test_every_setting_draws_unseen_hois_with_seen_relatives():
  meta = metadata.hico()
  drawn = set(scenes.hoi_subset("hico_det", WORLD))
  relatives = scenes.zero_shot_relatives(WORLD)
  assert set(relatives) == set(metadata.ZERO_SHOT_SPLITS)
  for split, table in relatives.items():
    unseen = set(meta.unseen_hois(split))
    assert set(table) == drawn & unseen, split
    assert len(table) >= MIN_UNSEEN, split
    for h, rels in table.items():
      assert rels, (split, meta.hoi_name(h))
      for r in rels:
        assert r in drawn and r not in unseen
        same_verb = meta.hoi_verb[r] == meta.hoi_verb[h]
        same_object = meta.hoi_object[r] == meta.hoi_object[h]
        assert {"uo": same_verb, "uv": same_object}.get(
            split, same_verb or same_object), (split, meta.hoi_name(h))
  seen_uo = set(meta.seen_hois("uo")) & drawn
  assert len(_objects(relatives["uo"]) - _objects(seen_uo)) >= 2
  seen_uv = set(meta.seen_hois("uv")) & drawn
  assert len(_verbs(relatives["uv"]) - _verbs(seen_uv)) >= 3


def test_verbs_and_objects_are_shared():
  meta = metadata.hico()
  drawn = scenes.hoi_subset("hico_det", WORLD)
  objects_of, verbs_of = {}, {}
  for h in drawn:
    v, o = meta.hoi_verb[h], meta.hoi_object[h]
    objects_of.setdefault(v, set()).add(o)
    verbs_of.setdefault(o, set()).add(v)
  assert len(objects_of) > len(_verbs(scenes.hoi_subset())) + 5
  assert sum(len(s) >= 2 for s in objects_of.values()) > len(objects_of) / 2
  assert all(len(s) >= 2 for s in verbs_of.values())


def test_frequencies_are_long_tailed_with_rare_hois():
  counts = synthetic_world.expected_counts(WORLD)
  assert set(counts) == set(scenes.hoi_subset("hico_det", WORLD))
  rare = [h for h, c in counts.items() if c < synthetic_world.RARE]
  assert 4 <= len(rare) <= len(counts) // 3
  assert max(counts.values()) > 3 * synthetic_world.RARE
  # HICO-DET's rare-first HOIs (RF-UC) are rare here too.
  assert set(metadata.hico().unseen_hois("rf_uc")) & set(counts) <= set(rare)


def test_rendered_images_have_valid_boxes_and_subset_labels():
  meta = metadata.hico()
  subset = set(scenes.hoi_subset("hico_det", WORLD))
  seen_templates = set()
  for i in range(20):
    pixels, groups = scenes.sample_image(np.random.default_rng([5, 0, i]),
                                         160, "hico_det", WORLD)
    h, w = pixels.shape[:2]
    assert pixels.dtype == np.uint8 and max(h, w) == 160
    for g in groups:
      t = g["template"]
      seen_templates.add(t)
      for box in (g["person_box"], g["object_box"]):
        x1, y1, x2, y2 = box
        assert 0 <= x1 and 0 <= y1 and x2 < w and y2 < h, box
        assert x2 - x1 + 1 >= 12 and y2 - y1 + 1 >= 12, (t.pose, t.obj, box)
      o = meta.objects.index(t.obj)
      for v in t.hico_verbs:
        assert meta.hoi_index(meta.verbs.index(v), o) in subset
  assert len(seen_templates) > 10


def test_same_seed_same_pixels_and_basic_is_the_default():
  draw = lambda world: scenes.sample_image(np.random.default_rng([3, 1, 4]),
                                           128, "hico_det", world)
  a, ga = draw(WORLD)
  b, gb = draw(WORLD)
  np.testing.assert_array_equal(a, b)
  assert [g["template"] for g in ga] == [g["template"] for g in gb]
  basic, _ = draw("basic")
  default, _ = scenes.sample_image(np.random.default_rng([3, 1, 4]), 128,
                                   "hico_det")
  np.testing.assert_array_equal(basic, default)
  assert scenes.hoi_subset() == scenes.hoi_subset("hico_det", "basic")


def test_unknown_world_and_vcoco_are_refused(tmp_path):
  with pytest.raises(ValueError, match="world must be one of"):
    scenes.hoi_subset("hico_det", "wild")
  with pytest.raises(ValueError, match="V-COCO"):
    scenes.hoi_subset("vcoco", WORLD)
  with pytest.raises(ValueError, match="V-COCO"):
    synthetic.generate(str(tmp_path), 1, 1, dataset="vcoco", world=WORLD)


def test_generate_writes_compositional_labels(tmp_path):
  summary = synthetic.generate(str(tmp_path), num_train=6, num_test=2,
                               seed=0, image_size=128, world=WORLD)
  subset = {h + 1 for h in scenes.hoi_subset("hico_det", WORLD)}
  assert set(summary["train_class_counts"]) <= subset
  assert summary["train_pairs"] > 0


def test_config_field_is_validated():
  config = base.get_config()
  assert config.dataset.synthetic_world == "basic"
  config.dataset.synthetic_world = WORLD
  validation.validate(config)
  config.dataset.synthetic_world = "wild"
  with pytest.raises(validation.ConfigError, match="synthetic_world"):
    validation.validate(config)


def test_markdown_lists_every_setting():
  text = synthetic_world.world_markdown(WORLD)
  for split in metadata.ZERO_SHOT_SPLITS:
    assert f"### {split}" in text
  assert "--config.dataset.synthetic_world=compositional" in text
  assert "(none)" not in text


def test_test_split_is_balanced_over_templates():
  table = scenes.templates("hico_det", WORLD)
  rare = min(range(len(table)), key=lambda k: table[k].hico_weight)
  counts = {False: np.zeros(len(table)), True: np.zeros(len(table))}
  for balanced in counts:
    for i in range(600):
      for g in scenes._sample_groups(np.random.default_rng([7, 1, i]),
                                     "hico_det", WORLD, balanced):
        counts[balanced][table.index(g["template"])] += 1
  expected = counts[True].sum() / len(table)  # About 19 draws a template.
  assert counts[True].min() >= expected / 3
  assert counts[True].max() <= expected * 2
  # The rarest template (weight 0.5, a 20th of the most frequent) is drawn
  # about 4 times as often in a balanced split.
  assert counts[True][rare] > 2 * counts[False][rare]
  assert scenes.balanced_test_split(WORLD)
  assert not scenes.balanced_test_split("basic")


def _drawn_hois(seed, split_id, i, world, balanced):
  """HICO HOI ids (1-based) of image i as `sample_image` draws its groups."""
  meta = metadata.hico()
  rng = np.random.default_rng([seed, split_id, i])
  scenes._image_size(rng, 128)
  return sorted(
      meta.hoi_index(meta.verbs.index(v), meta.objects.index(g["template"].obj))
      + 1 for g in scenes._sample_groups(rng, "hico_det", world, balanced)
      for v in g["template"].hico_verbs)


@pytest.mark.parametrize("world", ["basic", WORLD])
def test_writer_balances_the_compositional_test_split_only(tmp_path, world):
  synthetic.generate(str(tmp_path), num_train=3, num_test=3, seed=0,
                     image_size=128, world=world)
  for split_id, split in enumerate(("trainval", "test")):
    with open(tmp_path / "annotations" / f"{split}_hico.json") as f:
      records = json.load(f)
    balanced = split == "test" and world == WORLD
    for i, record in enumerate(records):
      assert sorted(h["hoi_category_id"] for h in record["hoi_annotation"]
                    ) == _drawn_hois(0, split_id, i, world, balanced)


def test_groups_of_an_image_share_their_object():
  sizes = []
  for balanced in (False, True):
    for i in range(200):
      groups = scenes._sample_groups(np.random.default_rng([9, 0, i]),
                                     "hico_det", WORLD, balanced)
      assert len({g["template"].obj for g in groups}) == 1
      sizes.append(len(groups))
  assert max(sizes) == 3
  # The basic world keeps mixing objects.
  assert any(len({g["template"].obj for g in scenes._sample_groups(
      np.random.default_rng([9, 0, i]), "hico_det", "basic", False)}) > 1
             for i in range(50))
