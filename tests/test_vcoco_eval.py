"""Tests of the V-COCO role AP evaluator and post-processing."""

import json
import math

import numpy as np
import pytest

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import vcoco
from ki2hoi_jax.evaluation import vcoco_ap
from ki2hoi_jax.evaluation import vcoco_postprocess as vpp

META = metadata.vcoco()
VERB = {n: i for i, n in enumerate(META.verb_classes)}
NAN4 = [float("nan")] * 4

PERSON_A = [10.0, 10.0, 60.0, 110.0]
PERSON_B = [200.0, 10.0, 250.0, 110.0]
CUP = [60.0, 50.0, 80.0, 70.0]
HORSE = [100.0, 60.0, 190.0, 150.0]
FAR = [300.0, 300.0, 340.0, 340.0]


def _gt(file_name, boxes, hois):
  """A test_vcoco.json record; boxes are (bbox, coco category) pairs."""
  return {"file_name": file_name,
          "annotations": [{"bbox": list(b), "category_id": c}
                          for b, c in boxes],
          "hoi_annotation": [{"subject_id": s, "object_id": o,
                              "category_id": VERB[v]} for s, o, v in hois]}


def _det(person, **roles):
  rec = {"person_box": list(person)}
  for name, (box, score) in roles.items():
    rec[name] = list(box) + [score]
  return rec


def _entries(*per_image):
  return [{"file_name": f, "detections": list(d)} for f, d in per_image]


def _ap(metrics, name, scenario="scenario_1"):
  return metrics["per_action"][name][scenario]


# --------------------------------------------------------------- IoU and AP


def test_overlap_plus1_matches_hand_values():
  a = np.array([[0.0, 0.0, 9.0, 9.0]])
  b = np.array([[5.0, 0.0, 14.0, 9.0], [10.0, 0.0, 19.0, 9.0],
                [9.0, 0.0, 18.0, 9.0]])
  iou = vcoco_ap.overlap_plus1(a, b)[0]
  # Areas 100; overlaps 5x10, 0 (x1 = x2 + 1) and 1x10 (touching counts).
  np.testing.assert_allclose(iou, [50 / 150, 0.0, 10 / 190])
  assert np.isnan(vcoco_ap.overlap_plus1(a, np.array([NAN4]))[0, 0])


def test_voc_ap_all_point_by_hand():
  # Ranked TP, FP, TP with 2 positives: recall .5, .5, 1; precision 1, .5, 2/3.
  ap = vcoco_ap.average_precision(np.array([0.9, 0.8, 0.7]),
                               np.array([True, False, True]), 2)
  assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
  # FP, TP, TP with 3 positives: envelope 2/3 up to recall 2/3.
  ap = vcoco_ap.average_precision(np.array([0.9, 0.8, 0.7]),
                               np.array([False, True, True]), 3)
  assert ap == pytest.approx(2 / 3 * 2 / 3)
  # Order comes from the scores, not the input order.
  ap = vcoco_ap.average_precision(np.array([0.7, 0.9, 0.8]),
                               np.array([True, False, True]), 3)
  assert ap == pytest.approx(2 / 3 * 2 / 3)
  assert vcoco_ap.average_precision(np.zeros(0), np.zeros(0, bool), 4) == 0.0
  assert math.isnan(vcoco_ap.average_precision(np.zeros(0), np.zeros(0, bool), 0))


# ---------------------------------------------------------- role AP cases


def _hold_ride_gt():
  # Person A holds the cup and rides the horse (and stands).
  return _gt("a.jpg", [(PERSON_A, 1), (CUP, 47), (HORSE, 19)],
             [(0, 1, "hold_obj"), (0, 2, "ride_instr"), (0, -1, "stand")])


def test_perfect_detections_score_100():
  gt = [_hold_ride_gt()]
  dets = _entries(("a.jpg", [_det(PERSON_A, hold_obj=(CUP, 0.9),
                                  ride_instr=(HORSE, 0.8))]))
  m = vcoco.evaluate(gt, dets)
  assert m["scenario_1"] == pytest.approx(100.0)
  assert m["scenario_2"] == pytest.approx(100.0)
  assert _ap(m, "hold_obj") == pytest.approx(100.0)
  assert _ap(m, "ride_instr", "scenario_2") == pytest.approx(100.0)
  assert math.isnan(_ap(m, "look_obj"))  # No positives: NaN, not in the mean.


def test_wrong_role_box_is_false_positive():
  gt = [_hold_ride_gt()]
  dets = _entries(("a.jpg", [_det(PERSON_A, hold_obj=(FAR, 0.9),
                                  ride_instr=(HORSE, 0.8))]))
  m = vcoco.evaluate(gt, dets)
  for s in vcoco_ap.SCENARIOS:
    assert _ap(m, "hold_obj", s) == 0.0
    assert _ap(m, "ride_instr", s) == pytest.approx(100.0)
    assert m[s] == pytest.approx(50.0)  # Mean of 0 and 100.
  # A NaN role box against an annotated role object is wrong too.
  dets = _entries(("a.jpg", [_det(PERSON_A, hold_obj=(NAN4, 0.9))]))
  assert _ap(vcoco.evaluate(gt, dets), "hold_obj", "scenario_2") == 0.0


def _missing_object_gt():
  # Person A holds something that is not annotated (object_id -1).
  return [_gt("a.jpg", [(PERSON_A, 1), (CUP, 47)], [(0, -1, "hold_obj")])]


@pytest.mark.parametrize("box,expected_s1,expected_s2", [
    (CUP, 0.0, 100.0),             # A predicted box: wrong in S1, right in S2.
    (NAN4, 100.0, 100.0),          # No role predicted (NaN): right in both.
    ([0.0] * 4, 100.0, 100.0),     # No role predicted (zeros): right in both.
])
def test_missing_role_object_scenarios(box, expected_s1, expected_s2):
  dets = _entries(("a.jpg", [_det(PERSON_A, hold_obj=(box, 0.9))]))
  m = vcoco.evaluate(_missing_object_gt(), dets)
  assert _ap(m, "hold_obj", "scenario_1") == pytest.approx(expected_s1)
  assert _ap(m, "hold_obj", "scenario_2") == pytest.approx(expected_s2)
  assert m["scenario_1"] == pytest.approx(expected_s1)


def test_duplicate_detection_and_ranking():
  # Two persons hold cups; ranked TP (A), duplicate FP (A), TP (B).
  cup_b = [250.0, 50.0, 270.0, 70.0]
  gt = [_gt("a.jpg", [(PERSON_A, 1), (CUP, 47), (PERSON_B, 1), (cup_b, 47)],
            [(0, 1, "hold_obj"), (2, 3, "hold_obj")])]
  dets = _entries(("a.jpg", [
      _det(PERSON_A, hold_obj=(CUP, 0.9)),
      _det([11.0, 11.0, 61.0, 111.0], hold_obj=(CUP, 0.8)),
      _det(PERSON_B, hold_obj=(cup_b, 0.7))]))
  m = vcoco.evaluate(gt, dets)
  assert _ap(m, "hold_obj") == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
  # The duplicate ranked last no longer hurts: AP 100.
  dets[0]["detections"][1]["hold_obj"][4] = 0.1
  assert _ap(vcoco.evaluate(gt, dets), "hold_obj") == pytest.approx(100.0)


def test_person_without_labels_is_skipped():
  # Person B has no action label: its detection is neither TP nor FP.
  gt = [_gt("a.jpg", [(PERSON_A, 1), (CUP, 47), (PERSON_B, 1)],
            [(0, 1, "hold_obj")])]
  dets = _entries(("a.jpg", [_det(PERSON_B, hold_obj=(CUP, 0.95)),
                             _det(PERSON_A, hold_obj=(CUP, 0.9))]))
  m = vcoco.evaluate(gt, dets)
  assert _ap(m, "hold_obj") == pytest.approx(100.0)  # Would be 50 if counted.
  result = vcoco_ap.role_ap(gt, dets)
  assert result.num_detections[result.names.index("hold_obj")] == 1


def test_low_person_iou_and_wrong_action_are_false_positives():
  gt = [_hold_ride_gt()]
  shifted = [40.0, 10.0, 90.0, 110.0]  # IoU with person A = 21 / 81.
  assert vcoco_ap.overlap_plus1([shifted], [PERSON_A])[0, 0] < 0.5
  dets = _entries(("a.jpg", [_det(shifted, hold_obj=(CUP, 0.9)),
                             _det(PERSON_A, look_obj=(CUP, 0.8))]))
  m = vcoco.evaluate(gt, dets)
  assert _ap(m, "hold_obj") == 0.0
  assert math.isnan(_ap(m, "look_obj"))  # FP, but look has no positives.


def test_ranking_across_images_fp_tp_tp():
  # Three images, one positive each: ranked FP (.9), TP (.8), TP (.7).
  gts = [_gt(f"{i}.jpg", [(PERSON_A, 1), (HORSE, 19)], [(0, 1, "ride_instr")])
         for i in range(3)]
  dets = _entries(("0.jpg", [_det(PERSON_A, ride_instr=(FAR, 0.9))]),
                  ("1.jpg", [_det(PERSON_A, ride_instr=(HORSE, 0.8))]),
                  ("2.jpg", [_det(PERSON_A, ride_instr=(HORSE, 0.7))]),
                  ("unknown.jpg", [_det(PERSON_A, ride_instr=(HORSE, 0.99))]))
  m = vcoco.evaluate(gts, dets)
  assert _ap(m, "ride_instr") == pytest.approx(100 * 4 / 9)


def test_two_role_action_and_excluded_classes():
  # Person A eats with an instrument (HORSE box stands in) and an object; also
  # points at the cup: point_instr has an AP but is not in the mean.
  gt = [_gt("a.jpg", [(PERSON_A, 1), (CUP, 47), (HORSE, 44)],
            [(0, 1, "eat_obj"), (0, 2, "eat_instr"), (0, 1, "point_instr"),
             (0, -1, "run")])]
  dets = _entries(("a.jpg", [_det(PERSON_A, eat_obj=(CUP, 0.9),
                                  eat_instr=(CUP, 0.8),
                                  point_instr=(CUP, 0.7)) | {
                                      "run_agent": 0.9, "eat_agent": 0.9}]))
  m = vcoco.evaluate(gt, dets)
  assert _ap(m, "eat_obj") == pytest.approx(100.0)
  assert _ap(m, "eat_instr") == 0.0
  assert _ap(m, "point_instr") == pytest.approx(100.0)
  assert m["scenario_1"] == pytest.approx(50.0)  # point_instr left out.
  names = set(m["per_action"])
  assert len(names) == 25 and "point_instr" in names
  assert not names & {"stand", "walk", "run", "smile"}
  reported = [n for n in vcoco_ap.role_classes().names
              if vcoco_ap.role_classes().reported[
                  vcoco_ap.role_classes().column[n]]]
  assert len(reported) == 24 and "point_instr" not in reported
  assert reported == list(metadata.vcoco().verb_classes[i]
                          for i in META.role_ap_classes)


def test_image_without_detections_counts_positives():
  gts = [_hold_ride_gt(), _gt("b.jpg", [(PERSON_A, 1), (CUP, 47)],
                              [(0, 1, "hold_obj")])]
  dets = _entries(("a.jpg", [_det(PERSON_A, hold_obj=(CUP, 0.9))]))
  m = vcoco.evaluate(gts, dets)
  assert _ap(m, "hold_obj") == pytest.approx(50.0)
  assert _ap(m, "ride_instr") == 0.0


# ------------------------------------------------- independent reference


def _reference_role_ap(gt_records, entries, thr=0.5):
  """Plain-loop port of the official `_do_role_eval` on the JSON records."""
  role_names = [n for n, r in zip(META.verb_classes, META.verb_class_role) if r]
  npos = {}
  results = {s: {n: [] for n in role_names} for s in vcoco_ap.SCENARIOS}
  dets_by_file = {}
  for e in entries:
    dets_by_file.setdefault(e["file_name"], []).extend(e["detections"])

  def iou(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]) + 1.0, 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]) + 1.0, 0.0)
    inter = iw * ih
    union = ((a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0)
             + (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0) - inter)
    return inter / union

  for rec in gt_records:
    anns = rec["annotations"]
    hois = rec["hoi_annotation"]
    persons = [i for i, a in enumerate(anns) if a["category_id"] == 1]
    for h in hois:
      if h["subject_id"] not in persons:
        persons.append(h["subject_id"])
    persons.sort()
    acts = {p: set() for p in persons}
    roles = {}
    for h in hois:
      verb = META.verb_classes[h["category_id"]]
      acts[h["subject_id"]].add(META.verb_class_action[h["category_id"]])
      key = (h["subject_id"], verb)
      if h["object_id"] >= 0 and key not in roles:
        roles[key] = anns[h["object_id"]]["bbox"]
    for p in persons:
      for a in acts[p]:
        npos[a] = npos.get(a, 0) + 1
    dets = dets_by_file.get(rec["file_name"], [])
    for name in role_names:
      action = META.verb_class_action[META.verb_classes.index(name)]
      cand = [d for d in dets if name in d and not math.isnan(d[name][4])]
      cand.sort(key=lambda d: -d[name][4])
      for scenario in vcoco_ap.SCENARIOS:
        covered = set()
        for d in cand:
          if not persons:
            results[scenario][name].append((d[name][4], 0))
            continue
          ovs = [iou(d["person_box"], anns[p]["bbox"]) for p in persons]
          j = int(np.argmax(ovs))
          p = persons[j]
          if not acts[p]:
            continue
          box = d[name][:4]
          if (p, name) in roles:
            ov_role = iou(roles[(p, name)], box)
          elif scenario == "scenario_2":
            ov_role = 1.0
          elif all(x == 0 for x in box) or all(math.isnan(x) for x in box):
            ov_role = 1.0
          else:
            ov_role = 0.0
          ok = action in acts[p] and ovs[j] >= thr and ov_role >= thr
          if ok and p not in covered:
            covered.add(p)
            results[scenario][name].append((d[name][4], 1))
          else:
            results[scenario][name].append((d[name][4], 0))

  out = {}
  for scenario in vcoco_ap.SCENARIOS:
    out[scenario] = {}
    for name in role_names:
      n = npos.get(META.verb_class_action[META.verb_classes.index(name)], 0)
      if n == 0:
        out[scenario][name] = float("nan")
        continue
      ranked = sorted(results[scenario][name], key=lambda t: -t[0])
      tp = fp = 0
      rec, prec = [], []
      for _, t in ranked:
        tp += t
        fp += 1 - t
        rec.append(tp / n)
        prec.append(tp / max(tp + fp, 1e-300))
      mrec = [0.0] + rec + [1.0]
      mpre = [0.0] + prec + [0.0]
      for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
      ap = sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]
               for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])
      out[scenario][name] = 100.0 * ap
  return out


def _random_case(rng, num_images=6):
  role_verbs = [v for v, r in enumerate(META.verb_class_role) if r]
  gts, entries = [], []
  used_verbs = rng.choice(role_verbs, size=4, replace=False)
  agent_verbs = [v for v, r in enumerate(META.verb_class_role) if not r]

  def jitter(box, scale):
    return [float(x) for x in np.asarray(box) + rng.normal(0, scale, 4)]

  for i in range(num_images):
    anns, hois = [], []
    for _ in range(rng.integers(0, 4)):
      x, y = rng.uniform(0, 300, 2)
      anns.append({"bbox": [x, y, x + rng.uniform(20, 80),
                            y + rng.uniform(40, 120)], "category_id": 1})
    num_persons = len(anns)
    for _ in range(rng.integers(1, 4)):
      x, y = rng.uniform(0, 300, 2)
      anns.append({"bbox": [x, y, x + rng.uniform(10, 60),
                            y + rng.uniform(10, 60)],
                   "category_id": int(rng.integers(2, 90))})
    for p in range(num_persons):
      if rng.random() < 0.25:
        continue  # Unlabelled person.
      for v in rng.choice(used_verbs, size=rng.integers(1, 3), replace=False):
        obj = (-1 if rng.random() < 0.3
               else int(rng.integers(num_persons, len(anns))))
        hois.append({"subject_id": p, "object_id": obj, "category_id": int(v)})
      if rng.random() < 0.5:
        hois.append({"subject_id": p, "object_id": -1,
                     "category_id": int(rng.choice(agent_verbs))})
    gts.append({"file_name": f"{i}.jpg", "annotations": anns,
                "hoi_annotation": hois})
    roles = {}
    for h in hois:
      if h["object_id"] >= 0:
        roles.setdefault((h["subject_id"], h["category_id"]), h["object_id"])
    dets = []
    for _ in range(rng.integers(0, 10)):
      p = int(rng.integers(num_persons)) if num_persons else -1
      if p >= 0 and rng.random() < 0.85:
        person = jitter(anns[p]["bbox"], 6.0)
      else:
        person = jitter([100, 100, 150, 200], 50.0)
      own = [h["category_id"] for h in hois
             if h["subject_id"] == p and META.verb_class_role[h["category_id"]]]
      rec = {"person_box": person}
      for v in rng.choice(used_verbs, size=rng.integers(1, 4), replace=False):
        if own and rng.random() < 0.6:
          v = own[int(rng.integers(len(own)))]
        u = rng.random()
        if u < 0.15:
          box = NAN4
        elif u < 0.25:
          box = [0.0] * 4
        elif (p, v) in roles and u < 0.8:
          box = jitter(anns[roles[(p, v)]]["bbox"], 4.0)
        else:
          box = jitter(anns[int(rng.integers(len(anns)))]["bbox"], 5.0)
        rec[META.verb_classes[v]] = list(box) + [float(rng.random())]
      dets.append(rec)
    entries.append({"file_name": f"{i}.jpg", "detections": dets})
  return gts, entries


@pytest.mark.parametrize("seed", range(12))
def test_matches_plain_loop_reference_on_random_cases(seed):
  rng = np.random.default_rng(seed)
  gts, entries = _random_case(rng)
  got = vcoco.evaluate(gts, entries)
  want = _reference_role_ap(gts, entries)
  for s in vcoco_ap.SCENARIOS:
    for name, ap in want[s].items():
      if math.isnan(ap):
        assert math.isnan(got["per_action"][name][s]), (s, name)
      else:
        assert got["per_action"][name][s] == pytest.approx(ap, abs=1e-9), (
            s, name)
    reported = [want[s][META.verb_classes[c]] for c in META.role_ap_classes]
    reported = [a for a in reported if not math.isnan(a)]
    if reported:
      assert got[s] == pytest.approx(np.mean(reported))
    else:  # Only point_instr has positives: no reported class.
      assert math.isnan(got[s])


# ------------------------------------------------------- post-processing


def _sig(x):
  return 1.0 / (1.0 + math.exp(-x))


def _outputs(num_queries=3):
  """Single-image outputs: everything very unlikely unless set."""
  return {
      "pred_sub_boxes": np.full((num_queries, 4), 0.25, np.float32),
      "pred_obj_boxes": np.full((num_queries, 4), 0.25, np.float32),
      "pred_obj_logits": np.full((num_queries, 82), -8.0, np.float32),
      "pred_human_logits": np.tile(np.array([[2.0, 0.0]], np.float32),
                                   (num_queries, 1)),
      "pred_interaction_logits": np.full((num_queries, 29), -9.0, np.float32),
  }


def test_verb_class_score_formula_and_prior_mask():
  out = _outputs(1)
  cup = META.objects.index("cup")
  prior = META.verb_object_matrix()
  assert prior[VERB["hold_obj"], cup] == 1 and prior[VERB["stand"], cup] == 0
  out["pred_obj_logits"][0, cup] = 1.0
  out["pred_obj_logits"][0, 80] = -1.0
  out["pred_interaction_logits"][0, VERB["hold_obj"]] = 0.5
  out["pred_interaction_logits"][0, VERB["stand"]] = 2.0
  scores, labels = vpp.verb_class_scores(out["pred_interaction_logits"],
                                         out["pred_obj_logits"],
                                         score_fusion="genvlkt")
  assert labels[0, VERB["hold_obj"]] == cup
  assert scores[0, VERB["hold_obj"]] == pytest.approx(
      _sig(0.5) + _sig(1.0) ** 2)
  # 'stand' only allows no_object (80), although 'cup' has the larger logit.
  assert labels[0, VERB["stand"]] == 80
  assert scores[0, VERB["stand"]] == pytest.approx(_sig(2.0) + _sig(-1.0) ** 2)
  # Paper fusion: S_h + S_o + S_verb with softmax S_h and S_o.
  s_sum, _ = vpp.verb_class_scores(out["pred_interaction_logits"],
                                   out["pred_obj_logits"],
                                   out["pred_human_logits"], score_fusion="sum")
  logits = out["pred_obj_logits"][0].astype(np.float64)
  p_obj = np.exp(logits) / np.exp(logits).sum()
  p_h = _sig(2.0)  # softmax([2, 0])[0]
  assert s_sum[0, VERB["hold_obj"]] == pytest.approx(
      p_h + p_obj[cup] + _sig(0.5))
  s_prod, _ = vpp.verb_class_scores(out["pred_interaction_logits"],
                                    out["pred_obj_logits"],
                                    out["pred_human_logits"],
                                    score_fusion="product")
  assert s_prod[0, VERB["stand"]] == pytest.approx(p_h * p_obj[80] * _sig(2.0))


def test_postprocess_records_nan_box_and_agent_scores():
  out = _outputs(2)
  cake, knife = META.objects.index("cake"), META.objects.index("knife")
  # Query 0: a person cutting a cake (cut_obj allows cake, not knife) with a
  # knife (cut_instr allows knife, not cake); query 1: a person standing and
  # looking at something unseen (no_object).
  out["pred_sub_boxes"][0] = [0.25, 0.5, 0.5, 1.0]
  out["pred_obj_boxes"][0] = [0.75, 0.5, 0.5, 0.5]
  out["pred_obj_logits"][0, cake] = 3.0
  out["pred_obj_logits"][0, knife] = 2.5
  out["pred_interaction_logits"][0, VERB["cut_obj"]] = 1.0
  out["pred_interaction_logits"][0, VERB["cut_instr"]] = 0.0
  out["pred_interaction_logits"][0, VERB["hold_obj"]] = -1.0
  out["pred_obj_logits"][1, 80] = 3.0
  out["pred_interaction_logits"][1, VERB["stand"]] = 2.0
  out["pred_interaction_logits"][1, VERB["look_obj"]] = 1.5
  records = vpp.postprocess_image(out, (100, 200), score_fusion="genvlkt",
                                  top_k=5, nms=True)
  assert len(records) == 2
  stand_rec = records[0]  # Best score first: stand.
  np.testing.assert_allclose(stand_rec["person_box"], [25, 12.5, 75, 37.5])
  assert stand_rec["stand_agent"] == pytest.approx(_sig(2.0) + _sig(3.0) ** 2)
  # look_obj -> no_object: NaN role box; single-role agent = role score.
  assert all(math.isnan(x) for x in stand_rec["look_obj"][:4])
  assert stand_rec["look_obj"][4] == pytest.approx(_sig(1.5) + _sig(3.0) ** 2)
  assert stand_rec["look_agent"] == stand_rec["look_obj"][4]
  cut = records[1]
  np.testing.assert_allclose(cut["person_box"], [0, 0, 100, 100])
  np.testing.assert_allclose(cut["cut_obj"][:4], [100, 25, 200, 75])
  np.testing.assert_allclose(cut["cut_instr"][:4], [100, 25, 200, 75])
  assert cut["cut_obj"][4] == pytest.approx(_sig(1.0) + _sig(3.0) ** 2)
  assert cut["cut_instr"][4] == pytest.approx(_sig(0.0) + _sig(2.5) ** 2)
  assert cut["hold_obj"][4] == pytest.approx(_sig(-1.0) + _sig(3.0) ** 2)
  # cut: two roles, agent = the larger role score.
  assert cut["cut_agent"] == cut["cut_obj"][4]
  assert cut["hold_agent"] == cut["hold_obj"][4]
  # top_k counts Q x 29 candidates: 5 kept = 2 + 3 scored keys.
  scored = sum(k.endswith(("_obj", "_instr")) or k == "stand_agent"
               for r in records for k in r)
  assert scored == 5
  assert set(cut) == {"person_box", "cut_obj", "cut_instr", "cut_agent",
                      "hold_obj", "hold_agent"}


def test_top_k_and_triplet_nms():
  out = _outputs(3)
  for q in range(3):
    out["pred_obj_logits"][q, 41] = 2.0
    out["pred_interaction_logits"][q, VERB["hold_obj"]] = 1.0 - 0.1 * q
  out["pred_sub_boxes"][2] = [0.75, 0.75, 0.2, 0.2]  # Query 2 elsewhere.
  records = vpp.postprocess_image(out, (100, 100), score_fusion="genvlkt",
                                  top_k=3, nms=True)
  # Queries 0 and 1 are the same triplet: NMS keeps query 0 only.
  assert len(records) == 2
  assert records[0]["hold_obj"][4] > records[1]["hold_obj"][4]
  np.testing.assert_allclose(records[1]["person_box"], [65, 65, 85, 85])
  no_nms = vpp.postprocess_image(out, (100, 100), score_fusion="genvlkt",
                                 top_k=3, nms=False)
  assert len(no_nms) == 3
  top1 = vpp.postprocess_image(out, (100, 100), score_fusion="genvlkt",
                               top_k=1, nms=False)
  assert len(top1) == 1 and list(top1[0]) == ["person_box", "hold_agent",
                                               "hold_obj"]
  # Different object classes are different NMS groups.
  # Same boxes, but another object class (cup vs bottle): another NMS group.
  out["pred_obj_logits"][1, META.objects.index("bottle")] = 2.5
  records = vpp.postprocess_image(out, (100, 100), score_fusion="genvlkt",
                                  top_k=3, nms=True)
  assert len(records) == 3
  nms = vpp.hico_postprocess.triplet_nms
  keep = nms(np.array([[0, 0, 9, 9]] * 2, float),
             np.array([[0, 0, 9, 9], [0, 0, 9, 5]], float),
             np.array([0.8, 0.9]), np.array([3, 3]), 0.7)
  # IoU_o = 60/100; 1 * sqrt(0.6) = 0.77 > 0.7: only the best survives.
  assert keep.tolist() == [1]


def test_postprocess_end_to_end_perfect_score(tmp_path):
  # The image is 200 (h) x 400 (w); one person rides a horse and stands.
  h, w = 200.0, 400.0
  person = [40.0, 20.0, 120.0, 180.0]
  horse = [100.0, 60.0, 300.0, 190.0]
  gt = [_gt("COCO_val2014_000000000042.jpg", [(person, 1), (horse, 19)],
            [(0, 1, "ride_instr"), (0, -1, "stand"), (0, -1, "look_obj")])]

  def cxcywh(b):
    return [(b[0] + b[2]) / 2 / w, (b[1] + b[3]) / 2 / h,
            (b[2] - b[0]) / w, (b[3] - b[1]) / h]

  out = _outputs(2)
  out["pred_sub_boxes"][0] = cxcywh(person)
  out["pred_obj_boxes"][0] = cxcywh(horse)
  out["pred_obj_logits"][0, META.objects.index("horse")] = 4.0
  out["pred_interaction_logits"][0, VERB["ride_instr"]] = 3.0
  out["pred_sub_boxes"][1] = cxcywh(person)
  out["pred_obj_logits"][1, 80] = 4.0
  out["pred_interaction_logits"][1, VERB["look_obj"]] = 2.0
  batch = {k: v[None] for k, v in out.items()}
  records = vpp.postprocess(batch, np.array([[h, w]]), score_fusion="genvlkt",
                            top_k=10)[0]
  entry = vpp.prediction_entry("COCO_val2014_000000000042.jpg", records)
  assert entry["image_id"] == 42
  path = tmp_path / "preds.json"
  vcoco.save_predictions(str(path), [entry])
  raw = json.loads(path.read_text())  # Strict JSON: NaN written as null.
  assert set(raw[0]) == {"file_name", "image_id", "detections"}
  look = max((r for r in raw[0]["detections"] if "look_obj" in r),
             key=lambda r: r["look_obj"][4])
  assert look["look_obj"][:4] == [None] * 4
  metrics_path = tmp_path / "metrics.json"
  assert vcoco.main(["vcoco", "--annotations", str(_write(tmp_path, gt)),
                     "--predictions", str(path),
                     "--output", str(metrics_path)]) == 0
  written = json.loads(metrics_path.read_text())
  assert _ap(written, "ride_instr") == pytest.approx(100.0)
  assert _ap(written, "look_obj") == pytest.approx(100.0)  # NaN box, S1 TP.
  assert set(written) == {"scenario_1", "scenario_2", "per_action"}
  assert written["scenario_1"] == pytest.approx(100.0)
  assert set(written["per_action"]["ride_instr"]) == set(vcoco_ap.SCENARIOS)
  # No positives: NaN, written as null.
  assert written["per_action"]["hold_obj"]["scenario_1"] is None
  official = vcoco.to_official_detections(vcoco.load_predictions(str(path)))
  assert all(d["image_id"] == 42 for d in official)
  assert len(official[0]) == 2 + 26 + 25
  assert math.isnan(official[0]["smile_agent"])
  assert all(math.isnan(x) for x in official[0]["cut_obj"])


def _write(tmp_path, gt):
  path = tmp_path / "test_vcoco.json"
  path.write_text(json.dumps(gt))
  return path


def test_synthetic_vcoco_ground_truth_as_detections(tmp_path):
  """GT pairs of the synthetic V-COCO set fed back as detections score 100;
  moving every role box off its object scores 0 in scenario 1."""
  from ki2hoi_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  synthetic.generate(str(tmp_path), num_train=1, num_test=10, seed=1,
                     image_size=96, dataset="vcoco")
  gt = json.loads((tmp_path / "annotations" / "test_vcoco.json").read_text())
  entries, shifted = [], []
  for rec in gt:
    anns = rec["annotations"]
    dets, bad = {}, {}
    for h in rec["hoi_annotation"]:
      v = h["category_id"]
      if not META.verb_class_role[v]:
        continue
      box = (anns[h["object_id"]]["bbox"] if h["object_id"] >= 0 else NAN4)
      # Off the object; a box where there is none (wrong in scenario 1).
      off = [x + 500.0 for x in box] if h["object_id"] >= 0 else [0, 0, 9, 9]
      for out, b in ((dets, box), (bad, off)):
        out.setdefault(h["subject_id"], {
            "person_box": anns[h["subject_id"]]["bbox"]})[
                META.verb_classes[v]] = list(b) + [0.9]
    entries.append({"file_name": rec["file_name"],
                    "detections": list(dets.values())})
    shifted.append({"file_name": rec["file_name"],
                    "detections": list(bad.values())})
  m = vcoco.evaluate(gt, entries)
  assert m["scenario_1"] == pytest.approx(100.0)
  assert m["scenario_2"] == pytest.approx(100.0)
  m = vcoco.evaluate(gt, shifted)
  assert m["scenario_1"] == 0.0
