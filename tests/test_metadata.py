"""HICO-DET and V-COCO class metadata: counts, splits, lookups and prompts."""

import collections
import os

import numpy as np
import pytest

from ki2hoi_jax.data import metadata

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _lines(name):
  with open(os.path.join(DATA, name)) as f:
    return f.read().splitlines()


@pytest.fixture(scope="module")
def hico():
  return metadata.hico()


@pytest.fixture(scope="module")
def vcoco():
  return metadata.vcoco()


def test_hico_class_counts(hico):
  assert hico.num_verbs == 117 and hico.num_objects == 80
  assert hico.num_hois == 600
  assert hico.verbs[metadata.NO_INTERACTION_VERB] == "no_interaction"
  assert hico.objects[0] == "person"
  assert len(set(hico.hois)) == 600
  assert hico.hois[0] == (hico.verbs.index("board"),
                          hico.objects.index("airplane"))


def test_coco_ids(hico):
  ids = hico.coco_category_ids
  assert len(ids) == 80 and list(ids) == sorted(ids)
  assert ids[0] == 1 and ids[-1] == 90
  # The 10 unused COCO ids are skipped.
  assert set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71,
                                          83}
  for i, c in enumerate(ids):
    assert hico.object_index_from_coco(c) == i
  assert hico.object_index_from_coco(12) is None
  assert hico.object_index_from_coco(hico.coco_category_ids[
      hico.objects.index("bicycle")]) == 1


def test_every_verb_and_object_occurs(hico):
  assert {v for v, _ in hico.hois} == set(range(117))
  assert {o for _, o in hico.hois} == set(range(80))


def test_one_no_interaction_hoi_per_object(hico):
  per_object = collections.Counter(
      o for v, o in hico.hois if v == metadata.NO_INTERACTION_VERB)
  assert len(per_object) == 80 and set(per_object.values()) == {1}


def test_hoi_index_round_trip(hico):
  for h, (v, o) in enumerate(hico.hois):
    assert hico.hoi_index(v, o) == h
  np.testing.assert_array_equal(hico.hoi_verb, [v for v, _ in hico.hois])
  np.testing.assert_array_equal(hico.hoi_object, [o for _, o in hico.hois])
  # 'ride' + 'apple' is not a HICO-DET HOI.
  assert hico.hoi_index(hico.verbs.index("ride"),
                        hico.objects.index("apple")) is None


def test_verb_object_matrix(hico):
  m = hico.verb_object_matrix()
  assert m.shape == (117, 80) and m.dtype == np.float32
  assert m.sum() == 600
  for v, o in hico.hois:
    assert m[v, o] == 1.0


def test_rare_and_zero_shot_splits(hico):
  rare = set(hico.rare_hois)
  assert len(rare) == 138
  assert hico.is_rare().sum() == 138
  sizes = {"rf_uc": 120, "nf_uc": 120, "uo": 100, "uv": 84, "uc": 120}
  for split, size in sizes.items():
    unseen = hico.unseen_hois(split)
    assert len(unseen) == size, split
    assert list(unseen) == sorted(set(unseen))
    seen = hico.seen_hois(split)
    assert len(seen) == 600 - size
    assert not set(seen) & set(unseen)
  assert set(hico.unseen_hois("rf_uc")) <= rare
  assert not set(hico.unseen_hois("nf_uc")) & rare
  # UO: 12 unseen objects and exactly their HOIs.
  objects = set(hico.unseen_objects["uo"])
  assert len(objects) == 12
  assert set(hico.unseen_hois("uo")) == {
      h for h, (_, o) in enumerate(hico.hois) if o in objects}
  # UV: 20 unseen verbs and exactly their HOIs.
  verbs = set(hico.unseen_verbs["uv"])
  assert len(verbs) == 20
  assert set(hico.unseen_hois("uv")) == {
      h for h, (v, _) in enumerate(hico.hois) if v in verbs}
  assert hico.unseen_hois("") == () and hico.unseen_hois(None) == ()
  assert len(hico.seen_hois("")) == 600
  with pytest.raises(ValueError, match="zero-shot split"):
    hico.unseen_hois("rare_first")


def test_prompts(hico):
  prompts = hico.hoi_prompts()
  assert len(prompts) == 600
  ride_bicycle = hico.hoi_index(hico.verbs.index("ride"),
                                hico.objects.index("bicycle"))
  assert prompts[ride_bicycle] == "a photo of a person riding a bicycle"
  no_apple = hico.hoi_index(metadata.NO_INTERACTION_VERB,
                            hico.objects.index("apple"))
  assert prompts[no_apple] == "a photo of a person and an apple"
  objects = hico.object_prompts()
  assert len(objects) == 80
  assert objects[hico.objects.index("apple")] == "a photo of an apple"
  assert objects[hico.objects.index("dining_table")] == (
      "a photo of a dining table")
  verbs = hico.verb_prompts()
  assert len(verbs) == 117
  assert verbs[hico.verbs.index("ride")] == (
      "a photo of a person riding something")
  assert hico.hoi_name(ride_bicycle) == "ride bicycle"


def test_gerund_prompts_are_pinned(hico):
  """All 600 HOI and 117 verb prompts of the default style, reviewed by eye.

  The files were written once by `hoi_prompts('gerund')` and
  `verb_prompts('gerund')` and read line by line; a change to the spelling
  rules must show up here.
  """
  assert hico.hoi_prompts("gerund") == _lines("hico_hoi_prompts_gerund.txt")
  assert hico.verb_prompts("gerund") == _lines("hico_verb_prompts_gerund.txt")
  assert hico.hoi_prompts() == hico.hoi_prompts("gerund")
  assert hico.verb_prompts() == hico.verb_prompts("gerund")


@pytest.mark.parametrize("verb,expected", [
    ("ride", "riding"), ("hose", "hosing"), ("dribble", "dribbling"),
    ("squeeze", "squeezing"), ("tie", "tying"), ("lie_on", "lying on"),
    ("run", "running"), ("stir", "stirring"), ("pet", "petting"),
    ("stop_at", "stopping at"), ("hop_on", "hopping on"), ("zip", "zipping"),
    ("open", "opening"), ("exit", "exiting"), ("control", "controlling"),
    ("text_on", "texting on"), ("kick", "kicking"), ("dry", "drying"),
    ("pay", "paying"), ("row", "rowing"), ("lasso", "lassoing"),
    ("pick_up", "picking up"), ("type_on", "typing on"),
    # V-COCO and open-vocabulary verbs.
    ("ski", "skiing"), ("lay", "laying"), ("talk_on_phone",
                                          "talking on phone"),
    ("free", "freeing"), ("see", "seeing"), ("dye", "dyeing"),
    ("visit", "visiting"), ("fix", "fixing"), ("refer", "referring"),
    ("quit", "quitting"), ("be", "being"),
])
def test_gerund_spelling(verb, expected):
  assert metadata.gerund(verb) == expected


@pytest.mark.parametrize("word", sorted(metadata.GERUND_EXCEPTIONS))
def test_gerund_exceptions_differ_from_the_rules(word, monkeypatch):
  """Every exception is needed: the rules alone spell it otherwise."""
  spelled = metadata.GERUND_EXCEPTIONS[word]
  assert spelled.endswith("ing")
  monkeypatch.delitem(metadata.GERUND_EXCEPTIONS, word)
  assert metadata.gerund(word) != spelled


def test_no_interaction_has_no_gerund():
  with pytest.raises(ValueError, match="no_interaction"):
    metadata.gerund("no_interaction")
  assert metadata.verb_prompt("no_interaction") == (
      "a photo of a person and something")


def test_bare_style_keeps_the_old_prompts(hico):
  prompts = hico.hoi_prompts("bare")
  assert prompts[0] == "a photo of a person board an airplane"
  assert prompts[hico.hoi_index(hico.verbs.index("sit_at"),
                                hico.objects.index("dining_table"))] == (
                                    "a photo of a person sit at a dining table")
  assert metadata.hoi_prompt("sit_on", "chair", "bare") == (
      "a photo of a person sit on a chair")
  assert metadata.hoi_prompt("no_interaction", "apple", "bare") == (
      "a photo of a person and an apple")
  verbs = hico.verb_prompts("bare")
  assert verbs[hico.verbs.index("throw")] == (
      "a photo of a person throw something")
  assert verbs[metadata.NO_INTERACTION_VERB] == (
      "a photo of a person with no interaction")


def test_unknown_prompt_style_is_rejected():
  for call in (lambda: metadata.hoi_prompt("ride", "horse", "gerunds"),
               lambda: metadata.hoi_prompt("no_interaction", "horse", "ing"),
               lambda: metadata.verb_prompt("no_interaction", "ing"),
               lambda: metadata.vcoco().verb_prompts("Bare")):
    with pytest.raises(ValueError, match="unknown prompt style"):
      call()


def test_vcoco_counts(vcoco):
  assert len(vcoco.actions) == 26
  assert vcoco.num_verb_classes == 29
  assert len(vcoco.role_ap_classes) == 24
  assert len(vcoco.hoi_pairs) == 263 and len(set(vcoco.hoi_pairs)) == 263
  agent_only = vcoco.agent_only_actions
  assert len(agent_only) == 4
  assert {vcoco.actions[a] for a in agent_only} == {"stand", "walk", "run",
                                                   "smile"}
  # Agent-only and point_instr are left out of the role AP mean.
  excluded = set(range(29)) - set(vcoco.role_ap_classes)
  assert {vcoco.verb_classes[v] for v in excluded} == {
      "stand", "walk", "run", "smile", "point_instr"}
  assert len(vcoco.objects) == 81 and vcoco.objects[80] == "no_object"
  assert vcoco.no_object_index == 80
  assert vcoco.coco_category_ids == metadata.hico().coco_category_ids
  m = vcoco.verb_object_matrix()
  assert m.shape == (29, 81) and m.sum() == 263


def test_vcoco_verb_classes(vcoco):
  # Two-role actions give two classes; agent-only actions have no role.
  for name in ("hit", "eat", "cut"):
    a = vcoco.actions.index(name)
    assert sorted(vcoco.verb_class_role[v] for v in range(29)
                  if vcoco.verb_class_action[v] == a) == ["instr", "obj"]
  for v, name in enumerate(vcoco.verb_classes):
    role = vcoco.verb_class_role[v]
    action = vcoco.actions[vcoco.verb_class_action[v]]
    assert name == (f"{action}_{role}" if role else action)
    assert (role == "") == (vcoco.verb_class_action[v] in
                            vcoco.agent_only_actions)
    if not role:  # Agent-only classes pair only with 'no object'.
      assert {o for vv, o in vcoco.hoi_pairs if vv == v} == {80}
  prompts = vcoco.verb_prompts("bare")
  assert prompts[vcoco.verb_classes.index("hit_instr")] == (
      "a photo of a person hit with something")
  assert prompts[vcoco.verb_classes.index("stand")] == (
      "a photo of a person stand")
  # The default style, all 29 reviewed by eye.
  assert vcoco.verb_prompts() == _lines("vcoco_verb_prompts_gerund.txt")
  assert vcoco.verb_prompts()[vcoco.verb_classes.index("look_obj")] == (
      "a photo of a person looking at something")
