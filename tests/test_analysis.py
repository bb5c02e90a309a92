"""Tests of ki2hoi_jax/analysis/ on hand-built runs with known answers."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from ki2hoi_jax import analysis
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import hico_inputs
from ki2hoi_jax.inference import drawing

META = metadata.hico()
PERSON = 1  # COCO id.


def _coco(obj_index):
  return META.coco_category_ids[obj_index]


def _pair_record(name, pairs):
  """A test/train record: pairs of (hoi, human box, object box)."""
  anns, hois = [], []
  for hoi, h_box, o_box in pairs:
    verb, obj = META.hois[hoi]
    anns.append({"bbox": list(h_box), "category_id": PERSON})
    anns.append({"bbox": list(o_box), "category_id": _coco(obj)})
    hois.append({"subject_id": len(anns) - 2, "object_id": len(anns) - 1,
                 "category_id": verb + 1, "hoi_category_id": hoi + 1})
  return {"file_name": name, "annotations": anns, "hoi_annotation": hois}


def _prediction_entry(name, triplets):
  """Prediction entry: triplets of (hoi, human box, object box, score)."""
  boxes, hois = [], []
  for hoi, h_box, o_box, score in triplets:
    verb, obj = META.hois[hoi]
    boxes.append({"bbox": list(h_box), "category_id": PERSON})
    boxes.append({"bbox": list(o_box), "category_id": _coco(obj)})
    hois.append({"subject_id": len(boxes) - 2, "object_id": len(boxes) - 1,
                 "category_id": verb + 1, "hoi_category_id": hoi + 1,
                 "score": score})
  return {"file_name": name, "predictions": boxes, "hoi_prediction": hois}


H = 0  # board airplane: seen in 'uv', non-rare.
U = 4  # An unseen HOI of 'uv'.
H1, O1 = (0, 0, 9, 9), (20, 20, 29, 29)
H2, O2 = (50, 50, 59, 59), (70, 70, 79, 79)
FAR = (200, 200, 209, 209)


def _pr_case():
  """Image A: 2 GT pairs of H; image B: 1 GT pair of H and 1 of U.

  Ranked predictions of H (score): A/GT1 0.9 (TP), A/GT1 again 0.8 (FP,
  duplicate), A/far 0.6 (FP) and B/GT 0.6 (TP; the tie is ordered by image,
  A first), A/GT2 0.5 (TP). U gets one TP. A prediction of another class on
  the GT boxes must not change anything.
  """
  gt = [_pair_record("A.jpg", [(H, H1, O1), (H, H2, O2)]),
        _pair_record("B.jpg", [(H, H1, O1), (U, H2, O2)])]
  preds = [
      _prediction_entry("B.jpg", [(H, H1, O1, 0.6), (U, H2, O2, 0.4)]),
      _prediction_entry("A.jpg", [(H, H1, O1, 0.9), (H, H1, O1, 0.8),
                                  (H, FAR, FAR, 0.6), (H, H2, O2, 0.5),
                                  (1, H1, O1, 0.95)]),
  ]
  return gt, preds


# ----------------------------------------------------------- PR curves, AP


def test_precision_recall_curve_hand_built():
  gt, preds = _pr_case()
  curve = analysis.precision_recall_curve(gt, preds, H)
  assert curve.name == "board airplane"
  assert curve.num_gt == 3
  np.testing.assert_array_equal(curve.tp, [True, False, False, True, True])
  np.testing.assert_allclose(curve.score, [0.9, 0.8, 0.6, 0.6, 0.5])
  np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1.0])
  np.testing.assert_allclose(curve.precision, [1.0, 0.5, 1 / 3, 0.5, 0.6])
  # 11-point AP: t <= 0.3 -> 1; 0.4..0.6 -> 0.6; 0.7..1.0 -> 0.6.
  assert curve.ap == pytest.approx(100 * (4 + 7 * 0.6) / 11)
  assert curve.max_recall == pytest.approx(100.0)


def test_precision_recall_consistent_with_evaluator():
  gt, preds = _pr_case()
  metrics = hico.evaluate(gt, preds, zero_shot_split="uv")
  ground_truth = hico_inputs.load_ground_truth(gt)
  det = hico_inputs.flatten_predictions(preds, ground_truth.file_names)
  curves = analysis.precision_recall_curves(ground_truth, det, [U, H])
  assert list(curves) == [U, H]
  for h, curve in curves.items():
    assert curve.ap == pytest.approx(metrics["per_hoi"]["ap"][h])
    assert curve.max_recall == pytest.approx(
        metrics["per_hoi"]["max_recall"][h])
    assert curve.recall.size == metrics["per_hoi"]["num_predictions"][h]
  np.testing.assert_allclose(curves[U].precision, [1.0])


def test_precision_recall_from_files_and_errors(tmp_path):
  gt, preds = _pr_case()
  gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
  gt_path.write_text(json.dumps(gt))
  pred_path.write_text(json.dumps(preds))
  curve = analysis.precision_recall_curve(str(gt_path), str(pred_path), H)
  np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1.0])
  with pytest.raises(ValueError, match="no test GT"):
    analysis.precision_recall_curve(gt, preds, 1)
  # A class with GT and no prediction: empty curve, AP 0.
  no_pred = [preds[1]]
  curve = analysis.precision_recall_curve(gt, no_pred, U)
  assert curve.recall.size == 0 and curve.ap == 0.0


# ------------------------------------------------------------ fake metrics


def _fake_metrics(ap, max_recall, num_gt, num_pred=None, split="uv"):
  """Evaluator-shaped metrics for classes with GT given as {hoi: value}."""
  n = META.num_hois
  def lst(d):
    return [d.get(h) if h in num_gt else None for h in range(n)]
  ap_arr = np.array([ap[h] for h in sorted(num_gt)])
  metrics = {
      "default": {"full": float(ap_arr.mean()), "rare": None,
                  "non_rare": float(ap_arr.mean())},
      "known_object": {"full": 1.0, "rare": None, "non_rare": 1.0},
      "per_hoi": {"ap": lst(ap), "max_recall": lst(max_recall),
                  "ap_known_object": lst(ap),
                  "max_recall_known_object": lst(max_recall),
                  "num_gt": [num_gt.get(h, 0) for h in range(n)],
                  "num_predictions": [(num_pred or {}).get(h, 0)
                                      for h in range(n)]},
      "settings": {"zero_shot_split": split or ""},
  }
  if split:
    metrics["zero_shot"] = {"split": split, "full": None, "seen": None,
                            "unseen": None}
  return metrics


# uv: 4, 6, 12, 15, 18 unseen; 0, 1, 2, 3 seen; 8 rare (and seen).
FAKE_AP = {0: 40.0, 1: 20.0, 2: 0.0, 8: 10.0, 4: 50.0, 6: 10.0, 12: 10.0,
           15: 0.0}
FAKE_RECALL = {0: 80.0, 1: 50.0, 2: 0.0, 8: 30.0, 4: 60.0, 6: 40.0,
               12: 20.0, 15: 0.0}
FAKE_GT = {0: 3, 1: 1, 2: 2, 8: 1, 4: 2, 6: 1, 12: 4, 15: 1}
FAKE_PRED = {0: 7, 1: 2, 2: 0, 8: 3, 4: 5, 6: 2, 12: 9, 15: 1}


def test_seen_unseen_summary_means():
  metrics = _fake_metrics(FAKE_AP, FAKE_RECALL, FAKE_GT)
  s = analysis.seen_unseen_summary(metrics)
  assert list(s) == ["full", "seen", "unseen"]
  np.testing.assert_array_equal(s["seen"].hoi, [0, 1, 2, 8])
  np.testing.assert_array_equal(s["unseen"].hoi, [4, 6, 12, 15])
  assert s["seen"].mean_ap == pytest.approx(70 / 4)
  assert s["unseen"].mean_ap == pytest.approx(70 / 4)
  assert s["unseen"].median_ap == pytest.approx(10.0)
  assert s["seen"].mean_max_recall == pytest.approx(160 / 4)
  assert s["full"].num_classes == 8 and s["full"].num_nonzero == 6
  assert s["full"].mean_ap == pytest.approx(140 / 8)
  table = analysis.summary_table(s)
  assert table["classes"].tolist() == ["full", "seen", "unseen"]
  assert table["count"].tolist() == [8, 4, 4]
  # Another split groups the same per-class APs differently.
  rf = set(META.unseen_hois("rf_uc"))
  s2 = analysis.seen_unseen_summary(metrics, "rf_uc")
  assert set(s2["unseen"].hoi.tolist()) == rf & set(FAKE_GT)


def test_seen_unseen_matches_evaluator_means():
  gt, preds = _pr_case()
  metrics = hico.evaluate(gt, preds, zero_shot_split="uv")
  s = analysis.seen_unseen_summary(metrics)
  assert s["seen"].mean_ap == pytest.approx(metrics["zero_shot"]["seen"])
  assert s["unseen"].mean_ap == pytest.approx(metrics["zero_shot"]["unseen"])
  assert s["full"].mean_ap == pytest.approx(metrics["zero_shot"]["full"])


def test_seen_unseen_needs_a_split():
  metrics = _fake_metrics(FAKE_AP, FAKE_RECALL, FAKE_GT, split="")
  with pytest.raises(ValueError, match="fully supervised"):
    analysis.seen_unseen_summary(metrics)
  with pytest.raises(ValueError, match="unknown zero-shot split"):
    analysis.seen_unseen_summary(metrics, "xx")


def test_transfer_ranking():
  metrics = _fake_metrics(FAKE_AP, FAKE_RECALL, FAKE_GT, FAKE_PRED)
  r = analysis.transfer_ranking(metrics, k=3)
  # Unseen: 4 (AP 50), 6 (10, recall 40), 12 (10, recall 20), 15 (0).
  assert r["best"]["HOI"].tolist() == [4, 6, 12]
  assert r["worst"]["HOI"].tolist() == [15, 12, 6]
  assert r["best"]["rank"].tolist() == [1, 2, 3]
  row = tuple(r["best"].iloc[0])
  v, o = META.hois[4]
  assert row == (1, 4, META.verbs[v], META.objects[o], 50.0, 60.0, 2, 5)
  title = r["best"].attrs["title"]
  assert "best" in title and "uv" in title
  assert len(analysis.transfer_ranking(metrics, k=10)["best"]) == 4


def test_unseen_ap_by_verb():
  metrics = _fake_metrics(FAKE_AP, FAKE_RECALL, FAKE_GT)
  table = analysis.unseen_ap_by(metrics, "verb")
  expected = {}
  for h in (4, 6, 12, 15):
    expected.setdefault(META.verbs[META.hois[h][0]], []).append(FAKE_AP[h])
  got = dict(zip(table["verb"], table["mAP"]))
  assert got == pytest.approx({k: np.mean(v) for k, v in expected.items()})
  assert table["mAP"].tolist() == sorted(table["mAP"], reverse=True)
  assert sum(table["classes"]) == 4


def test_per_hoi_sorted_by_frequency():
  metrics = _fake_metrics(FAKE_AP, FAKE_RECALL, FAKE_GT, FAKE_PRED)
  far = (100, 100, 109, 109)
  train = [
      _pair_record("t1.jpg", [(12, H1, O1), (12, H2, O2), (12, far, far)]),
      _pair_record("t2.jpg", [(1, H1, O1), (12, H2, O2)]),
      _pair_record("t3.jpg", [(0, H1, O1), (1, H2, O2), (4, far, far)]),
      _pair_record("t4.jpg", [(599, H1, O1)]),  # No test GT: left out.
  ]
  freq = analysis.per_hoi_ap_sorted_by_frequency(metrics, train)
  # Counts: 12 -> 4, 1 -> 2, 0 -> 1, 4 -> 1, the others 0 (ties by index).
  np.testing.assert_array_equal(freq.hoi, [12, 1, 0, 4, 2, 6, 8, 15])
  np.testing.assert_array_equal(freq.train_count, [4, 2, 1, 1, 0, 0, 0, 0])
  np.testing.assert_allclose(freq.ap, [FAKE_AP[h] for h in freq.hoi])
  np.testing.assert_array_equal(freq.num_gt, [FAKE_GT[h] for h in freq.hoi])
  np.testing.assert_array_equal(freq.num_predictions,
                                [FAKE_PRED[h] for h in freq.hoi])
  np.testing.assert_array_equal(
      freq.unseen, [h in (4, 6, 12, 15) for h in freq.hoi])
  np.testing.assert_array_equal(freq.rare, [h == 8 for h in freq.hoi])
  assert freq.names[0] == META.hoi_name(12)
  table = freq.table(2)
  assert table["HOI"].tolist() == [12, 1]
  assert table["train pairs"].tolist() == [4, 2]
  # Counts given directly; no split marks nothing unseen.
  counts = np.zeros(META.num_hois, np.int64)
  counts[[2, 15]] = [9, 5]
  freq = analysis.per_hoi_ap_sorted_by_frequency(metrics, counts,
                                                 zero_shot_split="")
  np.testing.assert_array_equal(freq.hoi[:3], [2, 15, 0])
  assert not freq.unseen.any()


def test_map_tables_from_evaluator():
  gt, preds = _pr_case()
  metrics = hico.evaluate(gt, preds, zero_shot_split="uv")
  tables = analysis.map_tables(metrics)
  assert list(tables) == ["default", "known_object", "zero_shot"]
  d = tables["default"]
  rows = ["mAP (%)", "mean max recall (%)", "classes"]
  assert d.index.name is None and list(d.index) == rows
  assert list(d.columns) == ["Full", "Rare", "Non-rare"]
  np.testing.assert_array_equal(d.loc["mAP (%)"],  # NaN: no rare class.
                                [metrics["default"]["full"], np.nan,
                                 metrics["default"]["non_rare"]])
  ap_h = 100 * (4 + 7 * 0.6) / 11
  assert d.loc["mAP (%)", "Full"] == pytest.approx((ap_h + 100.0) / 2)
  np.testing.assert_allclose(d.loc["mean max recall (%)"],
                             [100.0, np.nan, 100.0])
  assert d.loc["classes"].tolist() == [2, 0, 2]
  z = tables["zero_shot"]
  assert z.index.name is None and list(z.index) == rows
  assert list(z.columns) == ["Full", "Seen", "Unseen"]
  assert z.loc["mAP (%)", ["Seen", "Unseen"]].tolist() == [
      pytest.approx(ap_h), pytest.approx(100.0)]
  assert z.loc["classes"].tolist() == [2, 1, 1]
  assert "Zero-shot" in z.attrs["title"] and "uv" in z.attrs["title"]
  text = "\n".join(t.to_string() for t in tables.values()).lower()
  assert "full" in text and "rare" in text and "unseen" in text
  # A custom rare set moves H into Rare.
  tables = analysis.map_tables(metrics, rare_hois=[H])
  assert tables["default"].loc["classes"].tolist() == [2, 1, 1]
  # Fully supervised: no zero-shot table.
  metrics = hico.evaluate(gt, preds)
  assert list(analysis.map_tables(metrics)) == ["default", "known_object"]


def test_most_frequent_test_hois():
  metrics = _fake_metrics(FAKE_AP, FAKE_RECALL, FAKE_GT)
  assert analysis.most_frequent_test_hois(metrics, 3) == [12, 0, 2]
  assert len(analysis.most_frequent_test_hois(metrics, 100)) == 8


# -------------------------------------------------------------------- plots


def test_plots_show_the_values():
  metrics = _fake_metrics(FAKE_AP, FAKE_RECALL, FAKE_GT)
  counts = np.arange(META.num_hois)[::-1].copy()
  freq = analysis.per_hoi_ap_sorted_by_frequency(metrics, counts)
  fig = analysis.plot_per_hoi_ap(freq)
  bars = fig.axes[0].patches
  np.testing.assert_allclose([b.get_height() for b in bars], freq.ap)
  np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(),
                             freq.train_count)

  s = analysis.seen_unseen_summary(metrics)
  fig = analysis.plot_seen_unseen(s)
  heights = [b.get_height() for b in fig.axes[0].patches]
  assert heights == pytest.approx([140 / 8, 70 / 4, 70 / 4])

  gt, preds = _pr_case()
  curves = analysis.precision_recall_curves(gt, preds, [H, U])
  fig = analysis.plot_precision_recall(curves)
  lines = fig.axes[0].lines
  assert len(lines) == 2
  np.testing.assert_allclose(lines[0].get_xdata(),
                             [1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
  np.testing.assert_allclose(lines[0].get_ydata(), [1, 0.5, 1 / 3, 0.5, 0.6])
  labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
  assert labels[0].startswith("board airplane (AP 74.5")
  fig.canvas.draw()  # Renders on the Agg canvas.
  assert fig.canvas.buffer_rgba().shape[2] == 4


# ----------------------------------------------------------- runs and grid


def _write_workdir(root, steps, split="uv"):
  """A workdir with config.json and eval/step_<N>/metrics.json."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.checkpoints import manager  # pylint: disable=g-import-not-at-top
  config = demo.get_config()
  config.dataset.zero_shot_split = split
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "config.json"), "w") as f:
    f.write(manager.config_to_json(config))
  gt, preds = _pr_case()
  for step in steps:
    d = os.path.join(root, "eval", f"step_{step}")
    os.makedirs(d)
    metrics = hico.evaluate(gt, preds, zero_shot_split=split)
    metrics["step"] = step
    with open(os.path.join(d, "metrics.json"), "w") as f:
      json.dump(metrics, f)
    with open(os.path.join(d, "predictions.json"), "w") as f:
      json.dump(preds, f)
  ann = os.path.join(input_pipeline.dataset_root(config, root), "annotations")
  os.makedirs(ann, exist_ok=True)
  with open(os.path.join(ann, "test_hico.json"), "w") as f:
    json.dump(gt, f)
  with open(os.path.join(ann, "trainval_hico.json"), "w") as f:
    json.dump(gt, f)
  return config


def test_load_run_picks_latest_step(tmp_path):
  root = str(tmp_path / "run")
  _write_workdir(root, [3, 10])
  os.makedirs(os.path.join(root, "eval", "step_20"))  # No metrics yet.
  assert analysis.eval_steps(root) == [3, 10]
  run = analysis.load_run(root)
  assert run.step == 10 and run.zero_shot_split == "uv"
  assert run.config.dataset.zero_shot_split == "uv"
  assert run.test_annotations == os.path.join(
      root, "synthetic_hico_det_compositional", "annotations", "test_hico.json")
  assert run.train_annotations.endswith("trainval_hico.json")
  assert len(run.predictions) == 2
  assert run.ground_truth.file_names == ("A.jpg", "B.jpg")
  curve = analysis.precision_recall_curve(run.ground_truth, run.detections, H)
  assert curve.ap == pytest.approx(run.metrics["per_hoi"]["ap"][H])
  assert analysis.load_run(root, step=3).step == 3
  with pytest.raises(FileNotFoundError, match="step 4"):
    analysis.load_run(root, step=4)
  assert "step 10" in run.describe()


def test_load_run_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    analysis.load_run(str(tmp_path))
  _write_workdir(str(tmp_path / "r"), [])
  with pytest.raises(FileNotFoundError, match="no evaluation"):
    analysis.load_run(str(tmp_path / "r"))


def test_ensure_evaluated(tmp_path, monkeypatch):
  from ki2hoi_jax.train import trainer  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "run")
  _write_workdir(root, [])
  calls = []

  def fake_evaluate(config, workdir):
    calls.append((config.dataset.zero_shot_split, workdir))
    d = os.path.join(workdir, "eval", "step_7")
    os.makedirs(d)
    gt, preds = _pr_case()
    with open(os.path.join(d, "metrics.json"), "w") as f:
      json.dump(hico.evaluate(gt, preds), f)
    with open(os.path.join(d, "predictions.json"), "w") as f:
      json.dump(preds, f)

  monkeypatch.setattr(trainer, "evaluate", fake_evaluate)
  run = analysis.ensure_evaluated(root)
  assert calls == [("uv", root)] and run.step == 7
  run = analysis.ensure_evaluated(root)  # Already evaluated: no new call.
  assert len(calls) == 1 and run.step == 7


def test_resolve_workdir(tmp_path):
  assert analysis.resolve_workdir("workdirs/demo", "/repo") == (
      "/repo/workdirs/demo")
  assert analysis.resolve_workdir("/abs/run", "/repo") == "/abs/run"
  assert analysis.resolve_workdir("x/../y") == os.path.abspath("y")


def _write_predict_outputs(folder, n, size=(100, 50)):
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    image_path = os.path.join(folder, f"img{i}.jpg")
    Image.new("RGB", size, (255, 255, 255)).save(image_path)
    record = {"image": image_path, "width": size[0], "height": size[1],
              "triplets": [{"human_box": [10, 10, 40, 40],
                            "object_box": [60, 10, 90, 40],
                            "object": "bicycle", "verb": "ride",
                            "score": 0.9},
                           {"human_box": [10, 10, 40, 40],
                            "object_box": [60, 10, 90, 40],
                            "object": "chair", "verb": "sit_on",
                            "score": 0.1}]}
    with open(os.path.join(folder, f"img{i}.json"), "w") as f:
      json.dump(record, f)


def test_draw_record_scales_boxes(tmp_path):
  _write_predict_outputs(str(tmp_path), 1)
  (record,) = analysis.read_predict_outputs(str(tmp_path))
  image = analysis.draw_record(record, cell=200)
  assert image.size == (200, 100)  # Longer side resized to the cell.
  # Human box [10, 10, 40, 40] x 2: its left edge at x = 20.
  assert image.getpixel((20, 60)) == drawing.HUMAN_COLOUR
  assert image.getpixel((5, 95)) == (255, 255, 255)
  # The original image is gone: the PNG beside the JSON is used.
  os.remove(record["image"])
  Image.new("RGB", (30, 20), (1, 2, 3)).save(str(tmp_path / "img0.png"))
  image = analysis.draw_record(record, cell=200)
  assert image.size == (30, 20) and image.getpixel((0, 0)) == (1, 2, 3)


def test_prediction_grid_reads_existing_outputs(tmp_path):
  workdir = tmp_path / "run"
  _write_predict_outputs(str(workdir / "predictions"), 3)
  (workdir / "predictions" / "other.json").write_text("[1, 2]")  # Skipped.
  grid = analysis.prediction_grid(str(workdir), n=3, columns=2, cell=64,
                                  score_threshold=0.5)
  assert grid.image.size == (128, 128)
  assert [os.path.basename(r["json"]) for r in grid.records] == [
      "img0.json", "img1.json", "img2.json"]
  assert grid.image.getpixel((100, 100)) == (255, 255, 255)  # Empty cell.
  assert grid._repr_png_().startswith(b"\x89PNG")
  assert grid.caption().splitlines() == [
      f"{i + 1}. img{i}.jpg: 2 triplet(s)" for i in range(3)]
