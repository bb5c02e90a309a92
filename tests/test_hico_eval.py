"""Tests of the HICO-DET evaluator (ki2hoi_jax.evaluation.hico, boxes).

Hand-built cases with closed-form AP, and a plain loop-based reference that
follows docs/datasets.md section 6 literally, compared with the vectorised evaluator
on random cases (exact equality of every AP).
"""

import copy
import math
import os
import re
import subprocess
import sys

import numpy as np
import orjson
import pytest

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import boxes as box_lib
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import hico_ap
from ki2hoi_jax.evaluation import hico_inputs

META = metadata.hico()
COCO = META.coco_category_ids
RARE = sorted(META.rare_hois)
NON_RARE = [h for h in range(600) if h not in set(RARE)]

H = [0, 0, 99, 99]  # A human box (area 10,000 with the +1 convention).
O = [100, 0, 199, 99]  # An object box.


# ----------------------------------------------------------------- builders
def gt_record(name, pairs):
  """pairs: list of (human box, object box, hoi index); boxes per pair."""
  anns, hois = [], []
  for h_box, o_box, c in pairs:
    v, o = META.hois[c]
    anns.append({"bbox": list(h_box), "category_id": 1})
    anns.append({"bbox": list(o_box), "category_id": COCO[o]})
    hois.append({"subject_id": len(anns) - 2, "object_id": len(anns) - 1,
                 "category_id": v + 1, "hoi_category_id": c + 1})
  return {"file_name": name, "annotations": anns, "hoi_annotation": hois}


def pred_entry(name, triplets):
  """triplets: list of (human box, object box, hoi index, score)."""
  boxes, hois = [], []
  for h_box, o_box, c, s in triplets:
    v, o = META.hois[c]
    boxes.append({"bbox": list(h_box), "category_id": 1})
    boxes.append({"bbox": list(o_box), "category_id": COCO[o]})
    hois.append({"subject_id": len(boxes) - 2, "object_id": len(boxes) - 1,
                 "category_id": v + 1, "hoi_category_id": c + 1,
                 "score": s})
  return {"file_name": name, "predictions": boxes, "hoi_prediction": hois}


def ap_of(metrics, c):
  return metrics["per_hoi"]["ap"][c]


def approx(x):
  return pytest.approx(x, rel=1e-12, abs=1e-12)


# Two HOIs of different objects, both non-rare; one rare HOI.
C1, C2 = NON_RARE[0], next(h for h in NON_RARE
                           if META.hois[h][1] != META.hois[NON_RARE[0]][1])
R1 = RARE[0]


# -------------------------------------------------------------------- boxes
def test_iou_plus1_conventions():
  # +1 areas: 10x10 = 100 each; overlap of one pixel column: 2*10 = 20.
  assert box_lib.iou_plus1([0, 0, 9, 9], [8, 0, 17, 9]) == 20 / 180
  # Touching boxes (min x2 == max x1) do not overlap.
  assert box_lib.iou_plus1([0, 0, 9, 9], [9, 0, 19, 9]) == 0.0
  # A zero-width box has IoU 0 even with itself.
  assert box_lib.iou_plus1([5, 5, 5, 20], [5, 5, 5, 20]) == 0.0
  assert box_lib.iou_plus1([0, 0, 9, 9], [0, 0, 9, 9]) == 1.0
  # Exactly 0.5 with the +1 convention: 50 / 100.
  assert box_lib.iou_plus1([0, 0, 9, 9], [0, 0, 4, 9]) == 0.5
  m = box_lib.pairwise_iou_plus1([[0, 0, 9, 9], [8, 0, 17, 9]],
                                 [[0, 0, 9, 9], [9, 0, 19, 9], [0, 0, 4, 9]])
  np.testing.assert_array_equal(
      m, [[1.0, 0.0, 0.5], [20 / 180, 90 / 120, 0.0]])


def test_cxcywh_to_xyxy():
  np.testing.assert_allclose(box_lib.cxcywh_to_xyxy([[0.5, 0.5, 0.2, 0.4]]),
                             [[0.4, 0.3, 0.6, 0.7]])


# --------------------------------------------------------- closed-form APs
def test_single_gt_ap_100_and_json_layout():
  m = hico.evaluate([gt_record("a", [(H, O, C1)])],
                    [pred_entry("a", [(H, O, C1, 0.9)])])
  assert ap_of(m, C1) == approx(100.0)
  assert m["default"] == {"full": approx(100.0), "rare": None,
                          "non_rare": approx(100.0)}
  assert set(m["default"]) == {"full", "rare", "non_rare"}
  assert set(m["known_object"]) == {"full", "rare", "non_rare"}
  assert "zero_shot" not in m
  assert ap_of(m, C2) is None  # No GT: not evaluated.
  assert m["per_hoi"]["num_gt"][C1] == 1
  assert m["per_hoi"]["max_recall"][C1] == approx(100.0)
  assert len(m["per_hoi"]["ap"]) == 600
  assert m["counts"]["true_positives"] == 1


def test_duplicate_is_fp_after_tp():
  # Ranking TP (a, .9), FP duplicate (a, .8), TP (b, .7): rec .5 .5 1,
  # prec 1 .5 2/3; 11-point: t = 0..0.5 -> 1, t = 0.6..1 -> 2/3.
  gts = [gt_record("a", [(H, O, C1)]), gt_record("b", [(H, O, C1)])]
  preds = [pred_entry("a", [(H, O, C1, 0.9), (H, O, C1, 0.8)]),
           pred_entry("b", [(H, O, C1, 0.7)])]
  m = hico.evaluate(gts, preds)
  assert ap_of(m, C1) == approx(100.0 * (6 + 5 * 2 / 3) / 11)
  assert m["counts"]["true_positives"] == 2


def test_miss_halves_recall():
  gts = [gt_record("a", [(H, O, C1)]), gt_record("b", [(H, O, C1)])]
  m = hico.evaluate(gts, [pred_entry("a", [(H, O, C1, 0.9)])])
  assert ap_of(m, C1) == approx(100.0 * 6 / 11)  # t <= 0.5 reached.
  assert m["per_hoi"]["max_recall"][C1] == approx(50.0)
  assert m["counts"]["images_with_predictions"] == 1


def test_iou_exactly_half_matches_with_plus1_convention():
  gt_o = [0, 200, 9, 209]
  half = [0, 200, 4, 209]  # +1 IoU exactly 0.5 (plain IoU 4*9/81 < 0.5).
  below = [0, 200, 3, 209]  # 40 / 100.
  m = hico.evaluate([gt_record("a", [(H, gt_o, C1)])],
                    [pred_entry("a", [(H, half, C1, 0.9)])])
  assert ap_of(m, C1) == approx(100.0)
  m = hico.evaluate([gt_record("a", [(H, gt_o, C1)])],
                    [pred_entry("a", [(H, below, C1, 0.9)])])
  assert ap_of(m, C1) == 0.0


def test_best_candidate_already_matched_is_fp_without_fallback():
  o1 = [100, 0, 199, 99]
  o2 = [110, 0, 209, 99]
  gts = [gt_record("a", [(H, o1, C1), (H, o2, C1)])]
  # P1 matches GT1 (IoU 1). P2: IoU_o .961 with GT1, .852 with GT2 -> picks
  # GT1, already matched -> FP; GT2 stays unmatched.
  p2 = [102, 0, 201, 99]
  assert box_lib.iou_plus1(p2, o1) > box_lib.iou_plus1(p2, o2) > 0.5
  m = hico.evaluate(gts, [pred_entry("a", [(H, o1, C1, 0.9),
                                           (H, p2, C1, 0.8)])])
  assert ap_of(m, C1) == approx(100.0 * 6 / 11)
  # Ordered the other way round, P2 (now first) takes GT1 and P1 has GT1 as
  # its best too (IoU 1 > .818): FP again.
  m = hico.evaluate(gts, [pred_entry("a", [(H, o1, C1, 0.7),
                                           (H, p2, C1, 0.8)])])
  assert ap_of(m, C1) == approx(100.0 * 6 / 11)
  # A prediction whose best candidate is GT2 gets it.
  m = hico.evaluate(gts, [pred_entry("a", [(H, o1, C1, 0.9),
                                           (H, o2, C1, 0.8)])])
  assert ap_of(m, C1) == approx(100.0)


def test_equal_overlap_candidates_take_the_first_gt():
  # A duplicated GT pair: both predictions choose the first copy.
  gts = [gt_record("a", [(H, O, C1), (H, O, C1)])]
  m = hico.evaluate(gts, [pred_entry("a", [(H, O, C1, 0.9),
                                           (H, O, C1, 0.8)])])
  assert ap_of(m, C1) == approx(100.0 * 6 / 11)


def test_class_without_gt_is_ignored():
  gts = [gt_record("a", [(H, O, C1)])]
  base = hico.evaluate(gts, [pred_entry("a", [(H, O, C1, 0.5)])])
  m = hico.evaluate(gts, [pred_entry("a", [(H, O, C2, 0.99),
                                           (H, O, C1, 0.5)])])
  assert m["default"] == base["default"]
  assert m["counts"]["predictions"] == 2
  assert m["counts"]["predictions_evaluated"] == 1
  assert m["per_hoi"]["ap"][C2] is None
  assert m["counts"]["classes_with_gt"] == 1


def test_empty_images_and_missing_entries():
  gts = [gt_record("a", [(H, O, C1)]), gt_record("empty", []),
         gt_record("b", [(H, O, C2)])]
  # No entry for "b" (its GT is a miss: AP 0 counts); predictions on the
  # GT-less image are FPs of C1.
  preds = [pred_entry("empty", [(H, O, C1, 0.95)]),
           pred_entry("a", [(H, O, C1, 0.9)])]
  m = hico.evaluate(gts, preds)
  # C1 ranking: FP, TP -> rec 0 1, prec 0 .5 -> AP .5.
  assert ap_of(m, C1) == approx(50.0)
  assert ap_of(m, C2) == 0.0
  assert m["default"]["full"] == approx(25.0)
  assert hico.evaluate(gts, [])["default"]["full"] == 0.0


def test_zero_area_box_never_matches():
  z = [150, 0, 150, 99]  # Zero width.
  m = hico.evaluate([gt_record("a", [(H, z, C1)])],
                    [pred_entry("a", [(H, z, C1, 0.9)])])
  assert ap_of(m, C1) == 0.0


def test_known_object_drops_predictions_in_images_without_the_object():
  o2 = META.hois[C2][1]
  assert META.hois[C1][1] != o2
  gts = [gt_record("a", [(H, O, C1)]), gt_record("b", [(H, O, C2)])]
  preds = [pred_entry("b", [(H, O, C1, 0.9)]),
           pred_entry("a", [(H, O, C1, 0.8)])]
  m = hico.evaluate(gts, preds)
  assert ap_of(m, C1) == approx(50.0)
  assert m["per_hoi"]["ap_known_object"][C1] == approx(100.0)
  assert m["default"]["full"] == approx(25.0)  # (50 + 0) / 2.
  assert m["known_object"]["full"] == approx(50.0)  # (100 + 0) / 2.
  assert m["known_object"]["non_rare"] == approx(50.0)


def _four_class_case():
  """Rare a (no pred), rare b (AP 1), non-rare c (no pred), d (AP 6/11)."""
  a, b = RARE[0], RARE[1]
  c, d = NON_RARE[0], NON_RARE[1]
  gts = [gt_record("x", [(H, O, a), (H, O, b), (H, O, c), (H, O, d)]),
         gt_record("y", [(H, O, d)])]
  preds = [pred_entry("x", [(H, O, b, 0.9), (H, O, d, 0.8)])]
  return gts, preds, (a, b, c, d)


def test_means_and_compat_averaging_bug():
  gts, preds, _ = _four_class_case()
  m = hico.evaluate(gts, preds)
  full = 100.0 * (0 + 1 + 0 + 6 / 11) / 4
  assert m["default"]["full"] == approx(full)
  assert m["default"]["rare"] == approx(50.0)
  assert m["default"]["non_rare"] == approx(100.0 * 3 / 11)
  bug = hico.evaluate(gts, preds, compat_averaging_bug=True)
  assert bug["default"]["full"] == approx(full)  # Full unaffected.
  assert bug["default"]["rare"] == approx(100.0)
  assert bug["default"]["non_rare"] == approx(100.0 * 6 / 11)
  assert bug["settings"]["compat_averaging_bug"] is True


def test_zero_shot_seen_unseen_means():
  unseen = sorted(META.unseen_hois("rf_uc"))
  seen = sorted(META.seen_hois("rf_uc"))
  u1, u2, s1 = unseen[0], unseen[1], seen[0]
  gts = [gt_record("x", [(H, O, u1), (H, O, u2), (H, O, s1)]),
         gt_record("y", [(H, O, s1)])]
  preds = [pred_entry("x", [(H, O, u1, 0.9), (H, O, s1, 0.8)])]
  m = hico.evaluate(gts, preds, zero_shot_split="rf_uc")
  assert m["zero_shot"] == {"split": "rf_uc",
                            "full": approx(100.0 * (1 + 6 / 11) / 3),
                            "seen": approx(100.0 * 6 / 11),
                            "unseen": approx(50.0)}
  bug = hico.evaluate(gts, preds, zero_shot_split="rf_uc",
                      compat_averaging_bug=True)
  assert bug["zero_shot"]["unseen"] == approx(100.0)  # u2 drops out.
  assert bug["zero_shot"]["full"] == m["zero_shot"]["full"]
  # RF-UC unseen classes are all rare.
  assert m["default"]["rare"] == approx(50.0)


def test_rare_from_training_annotations(tmp_path):
  a, b = NON_RARE[0], NON_RARE[1]
  recs = [gt_record(f"t{i}", [(H, O, a)]) for i in range(10)]
  recs += [gt_record(f"u{i}", [(H, O, b)]) for i in range(9)]
  broken = gt_record("broken", [(H, O, a)])
  broken["hoi_annotation"].append({"subject_id": 0, "object_id": 7,
                                   "category_id": 1})
  not_person = gt_record("np", [(H, O, b)])
  not_person["annotations"][0]["category_id"] = COCO[5]
  recs += [broken, not_person]
  counts = hico.hoi_instance_counts(recs)
  assert counts[a] == 11 and counts[b] == 9 and counts.sum() == 20
  rare = hico.rare_hois_from_annotations(recs)
  assert a not in rare and b in rare and len(rare) == 599

  gts = [gt_record("x", [(H, O, a), (H, O, b)])]
  preds = [pred_entry("x", [(H, O, a, 0.9)])]
  m = hico.evaluate(gts, preds, rare_hois=rare)
  assert m["default"]["rare"] == 0.0 and m["default"]["non_rare"] == approx(
      100.0)
  # Through the CLI.
  paths = {}
  for key, data in (("gt", gts), ("pred", preds), ("train", recs)):
    paths[key] = str(tmp_path / f"{key}.json")
    with open(paths[key], "wb") as f:
      f.write(orjson.dumps(data))
  out = str(tmp_path / "m.json")
  assert hico.main(["hico", "--annotations", paths["gt"], "--predictions",
                    paths["pred"], "--train_annotations", paths["train"],
                    "--output", out]) == 0
  with open(out, "rb") as f:
    written = orjson.loads(f.read())
  assert written["default"]["rare"] == 0.0
  assert written["default"]["non_rare"] == approx(100.0)


def test_cli_output_layout_and_help(tmp_path, capsys):
  gts, preds, _ = _four_class_case()
  g, p, out = (str(tmp_path / n) for n in ("g.json", "p.json", "o.json"))
  for path, data in ((g, gts), (p, preds)):
    with open(path, "wb") as f:
      f.write(orjson.dumps(data))
  assert hico.main(["hico", "--annotations", g, "--predictions", p,
                    "--output", out, "--zero_shot_split", "uv"]) == 0
  printed = capsys.readouterr().out
  assert "Known object" in printed and "MATLAB" in printed
  with open(out, "rb") as f:
    m = orjson.loads(f.read())
  assert set(m["default"]) == {"full", "rare", "non_rare"}
  assert set(m["known_object"]) == {"full", "rare", "non_rare"}
  assert set(m["zero_shot"]) == {"split", "full", "seen", "unseen"}
  assert m["zero_shot"]["split"] == "uv"
  assert {"ap", "max_recall", "ap_known_object", "num_gt"} <= set(
      m["per_hoi"])
  assert m["default"]["full"] == approx(100.0 * (1 + 6 / 11) / 4)
  no_gt = next(h for h in range(600) if h not in _four_class_case()[2])
  assert m["per_hoi"]["ap"][no_gt] is None
  with pytest.raises(SystemExit):
    hico.main(["hico", "--help"])
  assert "official MATLAB" in capsys.readouterr().out
  assert "official MATLAB" in hico.__doc__


def test_input_errors():
  gts = [gt_record("a", [(H, O, C1)])]
  with pytest.raises(ValueError, match="not an image"):
    hico.evaluate(gts, [pred_entry("zzz", [(H, O, C1, 0.5)])])
  with pytest.raises(ValueError, match="several prediction entries"):
    hico.evaluate(gts, [pred_entry("a", []), pred_entry("a", [])])
  bad = pred_entry("a", [(H, O, C1, 0.5)])
  bad["hoi_prediction"][0]["object_id"] = 5
  with pytest.raises(ValueError, match="outside"):
    hico.evaluate(gts, [bad])
  bad = pred_entry("a", [(H, O, C1, 0.5)])
  bad["hoi_prediction"][0]["category_id"] += 1
  with pytest.raises(ValueError, match="does not match"):
    hico.evaluate(gts, [bad])
  wrong = gt_record("a", [(H, O, C1)])
  wrong["hoi_annotation"][0]["category_id"] = META.hois[C2][0] + 1
  if META.hoi_index(META.hois[C2][0], META.hois[C1][1]) is None:
    with pytest.raises(ValueError, match="not a HICO-DET HOI"):
      hico.evaluate([wrong], [])


def test_recall_thresholds_are_the_reference_floats():
  # 3 of 10 found: recall 0.3 is below the reference's 0.30000000000000004.
  assert hico_ap.RECALL_THRESHOLDS[3] > 0.3
  gts = [gt_record(f"i{i}", [(H, O, C1)]) for i in range(10)]
  preds = [pred_entry(f"i{i}", [(H, O, C1, 1.0 - i / 10)]) for i in range(3)]
  m = hico.evaluate(gts, preds)
  # Thresholds 0, .1, .2 reached (prec 1); "0.3" is not.
  assert ap_of(m, C1) == approx(100.0 * 3 / 11)


# ------------------------------------------------- loop-based reference
def ref_iou(a, b):
  """+1 IoU written out as in docs/datasets.md section 6."""
  s1 = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
  s2 = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
  sum_area = s1 + s2
  left, right = max(a[1], b[1]), min(a[3], b[3])
  top, bottom = max(a[0], b[0]), min(a[2], b[2])
  if left >= right or top >= bottom:
    return 0.0
  inter = (right - left + 1) * (bottom - top + 1)
  return inter / (sum_area - inter)


def ref_evaluate(gt_records, predictions, known_object=False):
  """Plain loops over images and predictions; returns {class: (ap, rec)}."""
  entries = {e["file_name"]: e for e in predictions}
  sum_gts = {}
  for rec in gt_records:
    for p in rec["hoi_annotation"]:
      c = p["hoi_category_id"] - 1
      sum_gts[c] = sum_gts.get(c, 0) + 1
  tps, scores = {}, {}
  for rec in gt_records:
    anns = rec["annotations"]
    gts = [(anns[p["subject_id"]]["bbox"], anns[p["object_id"]]["bbox"],
            p["hoi_category_id"] - 1) for p in rec["hoi_annotation"]]
    objects = {META.hois[c][1] for _, _, c in gts}
    entry = entries.get(rec["file_name"])
    if entry is None:
      continue
    boxes = entry["predictions"]
    preds = sorted(entry["hoi_prediction"], key=lambda k: k["score"],
                   reverse=True)
    matched = [False] * len(gts)
    for p in preds:
      c = p["hoi_category_id"] - 1
      if c not in sum_gts:
        continue
      if known_object and META.hois[c][1] not in objects:
        continue
      hb = boxes[p["subject_id"]]["bbox"]
      ob = boxes[p["object_id"]]["bbox"]
      best, best_overlap = None, 0.0
      for g, (gh, go, gc) in enumerate(gts):
        if gc != c:
          continue
        ih, io = ref_iou(hb, gh), ref_iou(ob, go)
        if ih >= 0.5 and io >= 0.5 and min(ih, io) > best_overlap:
          best, best_overlap = g, min(ih, io)
      is_tp = best is not None and not matched[best]
      if is_tp:
        matched[best] = True
      tps.setdefault(c, []).append(1 if is_tp else 0)
      scores.setdefault(c, []).append(p["score"])
  out = {}
  for c, n in sum_gts.items():
    if c not in tps:
      out[c] = (0.0, 0.0)
      continue
    order = sorted(range(len(tps[c])), key=lambda i: -scores[c][i])
    tp_cum, fp_cum, rec, prec = 0, 0, [], []
    for i in order:
      tp_cum += tps[c][i]
      fp_cum += 1 - tps[c][i]
      rec.append(tp_cum / n)
      prec.append(tp_cum / (tp_cum + fp_cum))
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
      ps = [p for r, p in zip(rec, prec) if r >= t]
      ap = ap + (max(ps) if ps else 0) / 11.
    out[c] = (ap, max(rec))
  return out


def random_case(seed, num_images=30, classes=3):
  """Crowded random case: clustered integer boxes, so that predictions often
  have several candidate GT pairs and equal overlaps occur."""
  rng = np.random.default_rng(seed)
  hoi_pool = [int(h) for h in rng.choice(600, classes, replace=False)]

  def near(b, r):
    return [v + int(rng.integers(-r, r + 1)) for v in b]

  def base_box():
    x, y = (int(v) for v in rng.integers(0, 60, 2))
    return [x, y, x + int(rng.integers(20, 40)), y + int(rng.integers(20, 40))]

  gts, preds = [], []
  for i in range(num_images):
    name = f"img{i}"
    bh, bo = base_box(), base_box()
    humans = [near(bh, 5) for _ in range(3)]
    objects = [near(bo, 5) for _ in range(3)]
    pairs = [(humans[rng.integers(3)], objects[rng.integers(3)],
              hoi_pool[rng.integers(classes)])
             for _ in range(int(rng.integers(0, 7)))]
    gts.append(gt_record(name, pairs))
    if rng.random() < 0.15:
      continue  # No predictions entry for this image.
    triplets = []
    for _ in range(int(rng.integers(0, 15))):
      u = rng.random()
      if pairs and u < 0.5:
        hb, ob, c = pairs[rng.integers(len(pairs))]
        hb, ob = near(hb, 3), near(ob, 3)
      elif u < 0.8:
        hb = near(humans[rng.integers(3)], 4)
        ob = near(objects[rng.integers(3)], 4)
        c = hoi_pool[rng.integers(classes)]
      elif u < 0.9:
        hb, ob, c = base_box(), base_box(), hoi_pool[rng.integers(classes)]
      else:
        hb, ob, c = near(bh, 4), near(bo, 4), int(rng.integers(600))
      if rng.random() < 0.1:
        hb = list(humans[rng.integers(3)])  # Exact copies: overlap ties.
        ob = list(objects[rng.integers(3)])
      triplets.append((hb, ob, c, float(rng.random())))
    preds.append(pred_entry(name, triplets))
  rng.shuffle(preds)
  return gts, preds


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_equals_loop_reference(seed):
  gts, preds = random_case(seed)
  m = hico.evaluate(gts, preds)
  for key, known in (("", False), ("_known_object", True)):
    ref = ref_evaluate(gts, preds, known_object=known)
    got_ap = m["per_hoi"]["ap" + key]
    got_rec = m["per_hoi"]["max_recall" + key]
    assert {c for c in range(600) if got_ap[c] is not None} == set(ref)
    for c, (ap, rec) in ref.items():
      assert got_ap[c] == ap * 100.0, (c, got_ap[c], ap)  # Exact.
      assert got_rec[c] == rec * 100.0
    aps = np.array([ref[c][0] for c in sorted(ref)])
    name = "known_object" if known else "default"
    assert m[name]["full"] == approx(float(np.mean(aps) * 100.0))
    rare = [ref[c][0] for c in sorted(ref) if c in set(RARE)]
    if rare:
      assert m[name]["rare"] == approx(float(np.mean(rare) * 100.0))
  # Some matching actually happened, and some did not.
  assert 0 < m["counts"]["true_positives"] < m["counts"][
      "predictions_evaluated"]


def test_reference_sanity_on_closed_form_case():
  gts, preds, (a, b, c, d) = _four_class_case()
  ref = ref_evaluate(gts, preds)
  assert ref[b][0] == pytest.approx(1.0) and ref[a][0] == 0.0
  assert ref[d][0] == pytest.approx(6 / 11)
  assert math.isclose(ref[d][1], 0.5)


# ------------------------ input checks, foreign prediction files (issue 17)
def _write(tmp_path, name, data):
  path = tmp_path / name
  path.write_bytes(data if isinstance(data, bytes) else orjson.dumps(data))
  return str(path)


def _run_cli(tmp_path, preds, gts=None):
  """The CLI on `preds` (data or raw bytes); returns the predictions path
  through the exception it raises."""
  g = _write(tmp_path, "gt.json",
             gts if gts is not None else [gt_record("a", [(H, O, C1)])])
  p = _write(tmp_path, "preds.json", preds)
  return g, p, lambda: hico.main(["hico", "--annotations", g,
                                  "--predictions", p])


def _where(source, image="a", entry=0, item=None):
  """Regex of the start of an error message naming source, image, item."""
  text = f"{source}: image '{image}' (entry {entry})"
  return re.escape(text + (f", {item}" if item else ""))


def _strip_hoi_ids(preds, every=1):
  """A copy without `hoi_category_id` on every `every`-th hoi_prediction."""
  out = copy.deepcopy(preds)
  k = 0
  for entry in out:
    for h in entry["hoi_prediction"]:
      if k % every == 0:
        del h["hoi_category_id"]
      k += 1
  return out


def test_top_level_not_a_list_names_the_file(tmp_path):
  _, p, run = _run_cli(tmp_path, {"file_name": "a"})
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=re.escape(p) + ": expected a JSON list of "
                     "per-image prediction entries, got dict"):
    run()
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match="^predictions: expected a JSON list"):
    hico.evaluate([gt_record("a", [(H, O, C1)])], {"file_name": "a"})
  g, _, run = _run_cli(tmp_path, [pred_entry("a", [(H, O, C1, 0.5)])],
                       gts={"a": 1})
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=re.escape(g) + ": expected a JSON list of "
                     "annotation records, got dict"):
    run()


@pytest.mark.parametrize("data", [b'[{"file_name": "a", "predictions": [',
                                  b'[{"file_name": "a", "predictions": [], '
                                  b'"hoi_prediction": [{"score": NaN}]}]'])
def test_truncated_or_nan_json_names_the_file(tmp_path, data):
  _, p, run = _run_cli(tmp_path, data)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=re.escape(p) + r": not valid JSON \(.*line 1"):
    run()


@pytest.mark.parametrize("data", [b"", b"[]"])
def test_empty_predictions_file_is_an_error(tmp_path, data):
  _, p, run = _run_cli(tmp_path, data)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=re.escape(p) + ": (empty file|an empty list)"):
    run()


def test_entry_without_file_name(tmp_path):
  preds = [pred_entry("a", [(H, O, C1, 0.5)]),
           {"predictions": [], "hoi_prediction": []}]
  _, p, run = _run_cli(tmp_path, preds)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=re.escape(p) + ": entry 1 has no 'file_name'"):
    run()
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match="^predictions: entry 1 has no 'file_name'"):
    hico.evaluate([gt_record("a", [(H, O, C1)])], preds)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match="^annotations: record 1 has no 'file_name'"):
    hico.evaluate([gt_record("a", [(H, O, C1)]), {"annotations": []}], [])


def test_all_inverted_boxes_are_an_error(tmp_path):
  flipped = [99, 0, 0, 99]  # x2 < x1.
  preds = [pred_entry("a", [(flipped, [199, 0, 100, 99], C1, 0.9)])]
  _, p, run = _run_cli(tmp_path, preds)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where(p, item="predictions[0]") +
                     r": bbox \[99, 0, 0, 99\] is inverted"):
    run()
  preds = [pred_entry("a", [(H, O, C1, 0.9), (H, [100, 99, 199, 0], C1, .8)])]
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where("predictions", item="predictions[3]") +
                     r": bbox \[100, 99, 199, 0\] is inverted \(x2 < x1 or "
                     r"y2 < y1"):
    hico.evaluate([gt_record("a", [(H, O, C1)])], preds)


@pytest.mark.parametrize("key,value", [("subject_id", 1.5),
                                       ("object_id", 0.5),
                                       ("subject_id", None)])
def test_non_integer_box_ids(tmp_path, key, value):
  preds = [pred_entry("a", [(H, O, C1, 0.9), (H, O, C1, 0.8)])]
  preds[0]["hoi_prediction"][1][key] = value
  _, p, run = _run_cli(tmp_path, preds)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where(p, item="hoi_prediction[1]") +
                     re.escape(f": {key} {value!r} is not an integer")):
    run()


@pytest.mark.parametrize("key,value", [("object_id", 4), ("subject_id", -1)])
def test_box_ids_out_of_range(tmp_path, key, value):
  gts = [gt_record("a", [(H, O, C1)]), gt_record("b", [(H, O, C1)])]
  preds = [pred_entry("a", [(H, O, C1, 0.9)]),
           pred_entry("b", [(H, O, C1, 0.9), (H, O, C1, 0.8)])]
  preds[1]["hoi_prediction"][1][key] = value
  _, p, run = _run_cli(tmp_path, preds, gts)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where(p, "b", 1, "hoi_prediction[1]") +
                     re.escape(f": {key} {value} refers to a box outside "
                               "the image's 4 predictions")):
    run()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_and_boxes_in_process(value):
  # Records as the trainer passes them: the messages name 'predictions'.
  gts = [gt_record("a", [(H, O, C1)]), gt_record("b", [(H, O, C1)])]
  preds = [pred_entry("a", [(H, O, C1, 0.9)]),
           pred_entry("b", [(H, O, C1, 0.9), (H, O, C1, value)])]
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where("predictions", "b", 1, "hoi_prediction[1]")
                     + re.escape(f": score {value!r} is not a finite number")):
    hico.evaluate(gts, preds)
  preds[1]["hoi_prediction"][1]["score"] = 0.5
  preds[1]["predictions"][1]["bbox"][2] = value
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where("predictions", "b", 1, "predictions[1]") +
                     r": bbox \[.*\] is not 4 finite numbers"):
    hico.evaluate(gts, preds)


def test_genvlkt_file_without_hoi_category_id_gives_the_same_metrics(
    tmp_path):
  gts, preds = random_case(3)
  g = _write(tmp_path, "gt.json", gts)
  metrics = []
  for name, data in (("with_ids.json", preds),
                     ("without_ids.json", _strip_hoi_ids(preds)),
                     ("some_ids.json", _strip_hoi_ids(preds, every=3))):
    p = _write(tmp_path, name, data)
    metrics.append(hico.evaluate(hico.load_annotations(g),
                                 hico.load_predictions(p),
                                 zero_shot_split="rf_uc",
                                 predictions_source=p))
  assert metrics[0]["counts"]["true_positives"] > 0
  assert metrics[1] == metrics[0]
  assert metrics[2] == metrics[0]


def test_pairs_that_are_not_hois_are_skipped_and_logged(caplog):
  v, o = next((v, o) for v in range(META.num_verbs)
              for o in range(META.num_objects) if META.hoi_index(v, o) is None)
  gts = [gt_record("a", [(H, O, C1)])]
  preds = _strip_hoi_ids([pred_entry("a", [(H, O, C1, 0.5)])])
  base = hico.evaluate(gts, preds)
  extra = copy.deepcopy(preds)
  extra[0]["predictions"].append({"bbox": O, "category_id": COCO[o]})
  extra[0]["hoi_prediction"].insert(0, {
      "subject_id": 0, "object_id": 2, "category_id": v + 1, "score": 0.9})
  with caplog.at_level("WARNING"):
    m = hico.evaluate(gts, extra)
  assert m == base
  assert "predictions: skipped 1 of 2 hoi_predictions without " \
         "hoi_category_id" in caplog.text


def test_hoi_category_id_disagreeing_with_verb_or_object_box(tmp_path):
  o2 = next(o for o in range(META.num_objects) if o != META.hois[C1][1])
  preds = [pred_entry("a", [(H, O, C1, 0.9), (H, O, C1, 0.8)])]
  preds[0]["predictions"][3]["category_id"] = COCO[o2]  # Object of pair 1.
  _, p, run = _run_cli(tmp_path, preds)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where(p, item="hoi_prediction[1]") +
                     re.escape(f": hoi_category_id {C1 + 1} (") + ".*" +
                     re.escape(f") does not match category_id "
                               f"{META.hois[C1][0] + 1} (verb ") + ".*" +
                     re.escape(f"object box's category_id {COCO[o2]} "
                               f"({META.objects[o2]})")):
    run()
  preds = [pred_entry("a", [(H, O, C1, 0.9), (H, O, C1, 0.8)])]
  preds[0]["hoi_prediction"][1]["category_id"] = (
      (META.hois[C1][0] + 1) % META.num_verbs + 1)
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where("predictions", item="hoi_prediction[1]") +
                     ": hoi_category_id .* does not match"):
    hico.evaluate([gt_record("a", [(H, O, C1)])], preds)


def test_object_box_category_must_be_a_coco_id():
  preds = _strip_hoi_ids([pred_entry("a", [(H, O, C1, 0.9)])])
  preds[0]["predictions"][1]["category_id"] = 12  # Not a COCO category id.
  with pytest.raises(hico_inputs.EvaluationInputError,
                     match=_where("predictions", item="hoi_prediction[0]") +
                     re.escape(": its object box predictions[1] has "
                               "category_id 12, not the COCO id")):
    hico.evaluate([gt_record("a", [(H, O, C1)])], preds)


def test_cli_bad_file_is_one_line(tmp_path):
  """From the shell a bad predictions file is one line, exit 2."""
  g = _write(tmp_path, "gt.json", [gt_record("a", [(H, O, C1)])])
  p = _write(tmp_path, "preds.json", b"")
  proc = subprocess.run(
      [sys.executable, "-m", "ki2hoi_jax.evaluation.hico", "--annotations", g,
       "--predictions", p], capture_output=True, text=True, timeout=120,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip() == f"error: {p}: empty file (0 bytes), not JSON"

