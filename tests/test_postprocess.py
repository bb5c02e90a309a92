"""Tests of inference post-processing (ki2hoi_jax.evaluation.postprocess)."""

import numpy as np
import pytest

from ki2hoi_jax.config_lib import base as base_config
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import boxes as box_lib
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import postprocess as pp

META = metadata.hico()


def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def random_outputs(rng, b=2, q=3, c=600, k=81):
  boxes = lambda: np.concatenate(
      [rng.uniform(0.3, 0.7, (b, q, 2)), rng.uniform(0.1, 0.4, (b, q, 2))],
      -1).astype(np.float32)
  return {
      "pred_sub_boxes": boxes(),
      "pred_obj_boxes": boxes(),
      "pred_obj_logits": rng.normal(0, 2, (b, q, k)).astype(np.float32),
      "pred_human_logits": rng.normal(0, 2, (b, q, 2)).astype(np.float32),
      "pred_interaction_logits": rng.normal(-2, 2, (b, q, c)).astype(
          np.float32),
  }


# -------------------------------------------------------------- boxes
def test_boxes_to_original_coordinates_without_clipping():
  boxes = np.array([[[0.5, 0.5, 0.2, 0.4], [0.95, 0.1, 0.3, 0.4]]])
  out = pp.to_original_xyxy(boxes, np.array([[200, 100]]))  # (h, w)
  np.testing.assert_allclose(out[0, 0], [40, 60, 60, 140])
  np.testing.assert_allclose(out[0, 1], [80, -20, 110, 60])  # Not clipped.


# ------------------------------------------------------------ tables
def test_candidate_tables():
  t = pp.candidate_table("hoi")
  np.testing.assert_array_equal(t.hoi_index, np.arange(600))
  np.testing.assert_array_equal(t.interaction_column, np.arange(600))
  np.testing.assert_array_equal(t.object_index, META.hoi_object)
  v = pp.candidate_table("verb")
  np.testing.assert_array_equal(v.hoi_index, np.arange(600))
  np.testing.assert_array_equal(v.interaction_column, META.hoi_verb)
  np.testing.assert_array_equal(v.verb_index, META.hoi_verb)
  np.testing.assert_array_equal(v.object_index, META.hoi_object)
  s = pp.candidate_table("hoi", hoi_classes=[5, 17, 300])
  np.testing.assert_array_equal(s.hoi_index, [5, 17, 300])
  np.testing.assert_array_equal(s.interaction_column, [0, 1, 2])
  np.testing.assert_array_equal(s.verb_index, META.hoi_verb[[5, 17, 300]])
  with pytest.raises(ValueError):
    pp.candidate_table("verb", hoi_classes=[1])
  with pytest.raises(ValueError):
    pp.candidate_table("triplet")


def test_verb_candidate_table_over_a_verb_subset():
  """A linear head over some verbs: their HOIs only, columns renumbered."""
  verbs = [3, 57, 100]
  t = pp.candidate_table("verb", verb_classes=verbs)
  expected = np.flatnonzero(np.isin(META.hoi_verb, verbs))
  np.testing.assert_array_equal(t.hoi_index, expected)
  np.testing.assert_array_equal(t.verb_index, META.hoi_verb[expected])
  np.testing.assert_array_equal(t.object_index, META.hoi_object[expected])
  column = {v: i for i, v in enumerate(verbs)}
  np.testing.assert_array_equal(
      t.interaction_column, [column[v] for v in META.hoi_verb[expected]])
  assert t.num_columns == 3
  full = pp.candidate_table("verb", verb_classes=range(117))
  np.testing.assert_array_equal(full.interaction_column,
                                pp.candidate_table("verb").interaction_column)
  for bad in ([], [117], [3, 3]):
    with pytest.raises(ValueError, match="verb_classes"):
      pp.candidate_table("verb", verb_classes=bad)
  with pytest.raises(ValueError, match="verb_classes"):
    pp.candidate_table("hoi", verb_classes=[1])


@pytest.mark.parametrize("space", ["hoi", "verb"])
def test_linear_classifier_evaluation_vocabulary_scores_seen_classes(space):
  from ki2hoi_jax.evaluation import vocabulary  # pylint: disable=g-import-not-at-top
  config = base_config.get_config()
  config.model.interaction_space = space
  config.dataset.zero_shot_split = "uv"
  closed = vocabulary.closed_vocabulary(config)
  same = vocabulary.evaluation_vocabulary(config)  # clip_text: all classes.
  assert same.prompts == closed.prompts and same.table is closed.table
  config.model.classifier = "linear"
  vocab = vocabulary.evaluation_vocabulary(config)
  unseen = set(META.unseen_hois("uv"))
  num_seen = 600 - len(unseen)
  assert vocab.num_classes == (num_seen if space == "hoi" else 117 - 20)
  assert vocab.table.num_columns == vocab.num_classes
  assert set(vocab.table.hoi_index.tolist()) == set(range(600)) - unseen
  assert int(vocab.table.interaction_column.max()) == vocab.num_classes - 1
  # Column c scores the class of prompt c.
  prompts = (META.hoi_prompts() if space == "hoi" else META.verb_prompts())
  key = vocab.table.hoi_index if space == "hoi" else vocab.table.verb_index
  for col, k in zip(vocab.table.interaction_column[:20], key[:20]):
    assert vocab.prompts[col] == prompts[k]
  # Fully supervised: every class is a training class.
  config.dataset.zero_shot_split = ""
  same = vocabulary.evaluation_vocabulary(config)
  assert same.prompts == closed.prompts and same.table is closed.table


# ------------------------------------------------------------ scores
@pytest.mark.parametrize("fusion", ["genvlkt", "sum", "product"])
def test_score_fusion_formulas(fusion):
  rng = np.random.default_rng(0)
  out = random_outputs(rng)
  table = pp.candidate_table("hoi")
  got = np.asarray(pp.candidate_scores(
      out["pred_interaction_logits"], out["pred_obj_logits"],
      out["pred_human_logits"], table, fusion))
  assert got.shape == (2, 3, 600)
  for b, q, c in [(0, 0, 0), (1, 2, 599), (0, 1, 123), (1, 0, 57)]:
    o = META.hois[c][1]
    s_verb = sigmoid(out["pred_interaction_logits"][b, q, c])
    if fusion == "genvlkt":
      want = s_verb + sigmoid(out["pred_obj_logits"][b, q, o]) ** 2
    else:
      s_h = softmax(out["pred_human_logits"][b, q])[0]
      s_o = softmax(out["pred_obj_logits"][b, q])[o]  # Over 81 classes.
      want = (s_h + s_o + s_verb if fusion == "sum"
              else s_h * s_o * s_verb)
    assert got[b, q, c] == pytest.approx(want, rel=1e-5)


def test_verb_space_scores_use_the_verb_logit():
  rng = np.random.default_rng(1)
  out = random_outputs(rng, c=117)
  table = pp.candidate_table("verb")
  got = np.asarray(pp.candidate_scores(
      out["pred_interaction_logits"], out["pred_obj_logits"],
      out["pred_human_logits"], table, "genvlkt"))
  assert got.shape == (2, 3, 600)
  for c in (0, 250, 599):
    v, o = META.hois[c]
    want = (sigmoid(out["pred_interaction_logits"][1, 2, v]) +
            sigmoid(out["pred_obj_logits"][1, 2, o]) ** 2)
    assert got[1, 2, c] == pytest.approx(want, rel=1e-5)


def test_candidate_logits_replace_the_columns_when_given():
  """pred_candidate_logits (CLIP-fused candidates) score as given."""
  rng = np.random.default_rng(7)
  out = random_outputs(rng, c=117)
  table = pp.candidate_table("verb")
  cand = rng.normal(size=(2, 3, 600)).astype(np.float32)
  got = np.asarray(pp.candidate_scores(
      out["pred_interaction_logits"], out["pred_obj_logits"],
      out["pred_human_logits"], table, "product", cand))
  for c in (0, 250, 599):
    o = META.hois[c][1]
    want = (softmax(out["pred_human_logits"][0, 1])[0]
            * softmax(out["pred_obj_logits"][0, 1])[o] * sigmoid(cand[0, 1, c]))
    assert got[0, 1, c] == pytest.approx(want, rel=1e-5)
  top = pp.select_top_k(dict(out, pred_candidate_logits=cand), table,
                        "product", 5)
  np.testing.assert_allclose(np.asarray(top["scores"][0]),
                             np.sort(got[0].ravel())[::-1][:5], rtol=1e-6)


def test_top_k_matches_stable_argsort_and_breaks_ties_by_index():
  rng = np.random.default_rng(2)
  out = random_outputs(rng, b=2, q=4)
  # Queries 1 and 3 of image 0 are identical: exact score ties.
  for key in ("pred_obj_logits", "pred_human_logits",
              "pred_interaction_logits"):
    out[key][0, 3] = out[key][0, 1]
  table = pp.candidate_table("hoi")
  sel = pp.select_top_k(out, table, "sum", 50)
  scores = np.asarray(pp.candidate_scores(
      out["pred_interaction_logits"], out["pred_obj_logits"],
      out["pred_human_logits"], table, "sum")).reshape(2, -1)
  for b in range(2):
    ref = np.argsort(-scores[b], kind="stable")[:50]
    np.testing.assert_array_equal(np.asarray(sel["queries"][b]), ref // 600)
    np.testing.assert_array_equal(np.asarray(sel["candidates"][b]),
                                  ref % 600)
    np.testing.assert_array_equal(np.asarray(sel["scores"][b]),
                                  scores[b, ref])
  q0 = np.asarray(sel["queries"][0]).tolist()
  assert 1 in q0 and 3 in q0
  assert q0.index(1) < q0.index(3)  # Tie: the lower index comes first.
  # k larger than Q * H is clipped.
  small = pp.select_top_k(out, pp.candidate_table("hoi", [0, 1]), "sum", 100)
  assert small["scores"].shape == (2, 8)


# --------------------------------------------------------------- NMS
def ref_nms(sub, obj, scores, labels, thr, alpha, beta):
  """Per-class greedy NMS written with plain loops."""
  def iou(a, b):
    return float(box_lib.iou_plus1(a, b))
  keep = []
  for c in sorted(set(labels.tolist())):
    idx = sorted([i for i in range(len(scores)) if labels[i] == c],
                 key=lambda i: -scores[i])
    while idx:
      i = idx.pop(0)
      keep.append(i)
      idx = [j for j in idx
             if iou(sub[i], sub[j]) ** alpha * iou(obj[i], obj[j]) ** beta
             <= thr]
  return sorted(keep, key=lambda i: (-scores[i], i))


@pytest.mark.parametrize("seed", range(6))
def test_triplet_nms_matches_loop_reference(seed):
  rng = np.random.default_rng(seed)
  n = 60
  cluster = rng.integers(4, size=n)  # Human and object from one cluster.
  def boxes():
    c = rng.uniform(20, 80, (4, 2))[cluster] + rng.normal(0, 1.5, (n, 2))
    wh = rng.uniform(18, 22, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], 1)
  sub, obj = boxes(), boxes()
  scores = rng.random(n)
  labels = rng.integers(0, 3, n)
  for thr, alpha, beta in ((0.7, 1.0, 0.5), (0.5, 1.0, 1.0), (0.3, 2, 0.5)):
    got = pp.triplet_nms(sub, obj, scores, labels, thr, alpha, beta)
    want = ref_nms(sub, obj, scores, labels, thr, alpha, beta)
    assert got.tolist() == want
    assert 0 < len(got) < n


def test_triplet_nms_keeps_touching_and_other_class():
  sub = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9]], float)
  obj = np.array([[10, 0, 19, 9], [10, 0, 19, 9], [10, 0, 19, 9]], float)
  keep = pp.triplet_nms(sub, obj, np.array([0.9, 0.8, 0.7]),
                        np.array([3, 3, 4]), 0.7)
  assert keep.tolist() == [0, 2]  # Duplicate of class 3 removed.
  assert pp.triplet_nms(sub[:0], obj[:0], np.zeros(0), np.zeros(0),
                        0.7).size == 0


# ---------------------------------------------------------- end to end
def _exact_outputs(c1, c2):
  """One image (w=200, h=100), Q=3: query 0 and 1 identical (NMS removes
  the weaker), query 2 elsewhere; high logits for HOIs c1 (q0, q1) and c2
  (q2)."""
  q = 3
  inter = np.full((1, q, 600), -10.0, np.float32)
  objl = np.full((1, q, 81), -5.0, np.float32)
  hum = np.array([[[4.0, -4.0]] * q], np.float32)
  sub = np.array([[[0.25, 0.5, 0.3, 0.4], [0.25, 0.5, 0.3, 0.4],
                   [0.7, 0.3, 0.2, 0.2]]], np.float32)
  obj = np.array([[[0.6, 0.5, 0.2, 0.6], [0.6, 0.5, 0.2, 0.6],
                   [0.8, 0.6, 0.2, 0.4]]], np.float32)
  inter[0, 0, c1], inter[0, 1, c1] = 6.0, 5.0
  inter[0, 2, c2] = 4.0
  objl[0, :2, META.hois[c1][1]] = 5.0
  objl[0, 2, META.hois[c2][1]] = 5.0
  return {"pred_sub_boxes": sub, "pred_obj_boxes": obj,
          "pred_obj_logits": objl, "pred_human_logits": hum,
          "pred_interaction_logits": inter}


def test_postprocess_entries_and_round_trip_through_evaluator(tmp_path):
  c1, c2 = 100, 400
  out = _exact_outputs(c1, c2)
  orig = np.array([[100, 200], [50, 50]])  # (h, w); image 2 is padding.
  batch_out = {k: np.concatenate([v, v]) for k, v in out.items()}
  entries = pp.postprocess(batch_out, orig, ["img.jpg", None],
                           score_fusion="genvlkt", top_k=10)
  assert len(entries) == 1
  e = entries[0]
  assert e["file_name"] == "img.jpg"
  hois = e["hoi_prediction"]
  assert len(hois) == 9  # 10 candidates, the duplicate of q0/c1 removed.
  scores = [h["score"] for h in hois]
  assert scores == sorted(scores, reverse=True)
  top = hois[0]
  assert top["hoi_category_id"] == c1 + 1
  assert top["category_id"] == META.hois[c1][0] + 1
  assert top["score"] == pytest.approx(
      sigmoid(6.0) + sigmoid(5.0) ** 2, rel=1e-6)
  boxes = e["predictions"]
  sub, obj = boxes[top["subject_id"]], boxes[top["object_id"]]
  assert sub["category_id"] == 1
  assert obj["category_id"] == META.coco_category_ids[META.hois[c1][1]]
  np.testing.assert_allclose(sub["bbox"], [20, 30, 80, 70], rtol=1e-6)
  np.testing.assert_allclose(obj["bbox"], [100, 20, 140, 80], rtol=1e-6)
  # Every id is valid and each (query, object class) box appears once.
  for h in hois:
    assert 0 <= h["subject_id"] < len(boxes)
    assert 0 <= h["object_id"] < len(boxes)
    assert (boxes[h["object_id"]]["category_id"] ==
            META.coco_category_ids[META.hois[h["hoi_category_id"] - 1][1]])
  assert len(boxes) == len({(tuple(b["bbox"]), b["category_id"])
                            for b in boxes})
  no_nms = pp.postprocess(out, orig[:1], ["img.jpg"],
                          score_fusion="genvlkt", top_k=10, nms=False)
  assert len(no_nms[0]["hoi_prediction"]) == 10

  # Round trip: file, then the evaluator against GT made of those boxes.
  path = str(tmp_path / "preds.json")
  pp.write_predictions(path, entries)
  loaded = pp.read_predictions(path)
  assert loaded == entries
  gt = [{"file_name": "img.jpg",
         "annotations": [{"bbox": [20, 30, 80, 70], "category_id": 1},
                         {"bbox": [100, 20, 140, 80],
                          "category_id": obj["category_id"]}],
         "hoi_annotation": [{"subject_id": 0, "object_id": 1,
                             "category_id": META.hois[c1][0] + 1}]}]
  m = hico.evaluate(gt, loaded)
  assert m["per_hoi"]["ap"][c1] == pytest.approx(100.0)


def test_postprocess_hoi_subset_and_config():
  rng = np.random.default_rng(3)
  out = random_outputs(rng, b=1, q=5, c=3)
  entries = pp.postprocess(out, [[480, 640]], ["a"], hoi_classes=[5, 17, 300],
                           score_fusion="sum", top_k=100)
  ids = {h["hoi_category_id"] for h in entries[0]["hoi_prediction"]}
  assert ids <= {6, 18, 301}
  config = base_config.get_config()
  config.inference.top_k = 7
  config.inference.nms = False
  out = random_outputs(rng, b=1, q=5)
  a = pp.postprocess_from_config(out, [[480, 640]], ["a"], config)
  b = pp.postprocess(out, [[480, 640]], ["a"], score_fusion="sum", top_k=7,
                     nms=False)
  assert a == b and len(a[0]["hoi_prediction"]) == 7
  with pytest.raises(ValueError):
    pp.postprocess(out, [[480, 640]], ["a"], interaction_space="verb")
