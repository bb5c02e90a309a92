"""The official HICO-DET protocol: hand-worked cases, .mat files, a reference.

The reference (`_reference_ap`) is a literal per-detection loop over the
rules of the MATLAB code (eval_one.m + VOCevaldet_bboxpair.m), written
independently of the vectorised `hico_official`; random cases must agree
within 1e-9.
"""

import os

import numpy as np
import pytest
import scipy.io

from ki2hoi_jax.data import hico_mat
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico_ap
from ki2hoi_jax.evaluation import hico_official
from ki2hoi_jax.evaluation import hico_official_files as files

META = metadata.hico()
# Two HOIs of one object and one of another (official order, 0-based).
H_A, H_B = 0, 1
H_OTHER = int(np.flatnonzero(META.hoi_object != META.hoi_object[0])[0])


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
  """Parsed anno_bbox.mat files are cached under the test's folder."""
  monkeypatch.setenv("KI2HOI_CACHE_DIR", str(tmp_path / "cache"))


def _write(tmp_path, test, train=(), labels=True):
  """anno_bbox.mat (+ anno.mat) from records; returns the read truth."""
  train = list(train) or [{"file_name": "train_0.jpg",
                           "pairs": [(H_A, [1, 1, 5, 5], [2, 2, 6, 6])]}]
  hico_mat.write_anno_bbox(str(tmp_path / "anno_bbox.mat"), train, test)
  if labels:
    hico_mat.write_anno(str(tmp_path / "anno.mat"), train, test)
  return files.read_anno_bbox(str(tmp_path / "anno_bbox.mat"))


def _det(rows):
  """Detections from (image, hoi, score, human box, object box), 0-based."""
  rows = list(rows)
  return hico_ap.Detections(
      image=np.array([r[0] for r in rows], np.int64),
      hoi=np.array([r[1] for r in rows], np.int64),
      score=np.array([r[2] for r in rows], np.float64),
      sub_boxes=np.array([r[3] for r in rows], np.float64).reshape(-1, 4),
      obj_boxes=np.array([r[4] for r in rows], np.float64).reshape(-1, 4),
      num_entries=len({r[0] for r in rows}))


def _shift(box):  # 1-based GT box -> the 0-based detection that hits it.
  return [v - 1 for v in box]


def test_matlab_round_and_thresholds():
  x = np.array([2.5, -2.5, 0.49999999999999994, -0.5, 1.4999, 3.0])
  np.testing.assert_array_equal(hico_official.matlab_round(x),
                                [3, -3, 0, -1, 1, 3])
  t = hico_official.MATLAB_RECALL_THRESHOLDS
  assert t[6] == 0.6 and t[7] == 0.7  # The doubles nearest 0.6 and 0.7 ...
  assert np.arange(0, 1.1, 0.1)[6] > 0.6  # ... where numpy is one ulp above.
  assert t[3] == 3 * 0.1 and t.size == 11 and t[-1] == 1.0


def test_recall_of_exactly_three_fifths_reaches_matlab_0_6(tmp_path):
  gt_box_h, gt_box_o = [11, 11, 30, 30], [41, 41, 60, 60]
  pairs = [(H_A, [k * 100 + 11, 11, k * 100 + 30, 30],
            [k * 100 + 41, 41, k * 100 + 60, 60]) for k in range(5)]
  truth = _write(tmp_path, [{"file_name": "a.jpg", "pairs": pairs}])
  det = _det((0, H_A, 0.9 - 0.1 * k, _shift(p[1]), _shift(p[2]))
             for k, p in enumerate(pairs[:3]))
  out = hico_official.evaluate(truth, det)
  # Precision 1 up to recall 3/5: thresholds 0, 0.1, ..., 0.6 -> 7/11.
  assert out["per_hoi"]["ap"][H_A] == pytest.approx(7 / 11 * 100, abs=1e-12)
  assert out["per_hoi"]["recall"][H_A] == pytest.approx(60.0)
  del gt_box_h, gt_box_o


def test_taken_best_pair_is_a_false_positive_without_fall_back(tmp_path):
  a = ([11, 11, 50, 50], [61, 61, 100, 100])
  b = ([14, 14, 53, 53], [64, 64, 103, 103])  # Overlaps a by > 0.5.
  truth = _write(tmp_path, [{"file_name": "a.jpg",
                             "pairs": [(H_A, *a), (H_A, *b)]}])
  # Both detections sit exactly on a: the second finds a taken and is an
  # FP although b (IoU > 0.5) is free. Third sits exactly on b: TP.
  det = _det([(0, H_A, 0.9, _shift(a[0]), _shift(a[1])),
              (0, H_A, 0.8, _shift(a[0]), _shift(a[1])),
              (0, H_A, 0.7, _shift(b[0]), _shift(b[1]))])
  out = hico_official.evaluate(truth, det)
  # TP, FP, TP: precision 1 at recall 0.5, 2/3 at recall 1.
  expected = (6 * 1.0 + 5 * (2 / 3)) / 11
  assert out["per_hoi"]["ap"][H_A] == pytest.approx(expected * 100, abs=1e-12)
  assert out["counts"]["true_positives"] == 2


def test_tie_takes_the_first_pair_and_iou_border(tmp_path):
  # Two identical GT pairs: a tie, the first connection wins; the second
  # detection then takes it too (taken -> FP), the second pair stays free.
  pair = ([1, 1, 10, 10], [21, 1, 30, 10])
  truth = _write(tmp_path, [{"file_name": "a.jpg",
                             "pairs": [(H_A, *pair), (H_A, *pair)]}])
  # Boxes are deduplicated into one human and one object, connected twice.
  assert truth.gt.hoi.size == 2
  # Human box 1..10 x 1..5 (after +1): area 50 of 100, IoU exactly 0.5 -> hit.
  half = [0, 0, 9, 4]
  det = _det([(0, H_A, 0.9, half, _shift(pair[1])),
              (0, H_A, 0.8, _shift(pair[0]), _shift(pair[1]))])
  out = hico_official.evaluate(truth, det)
  assert out["counts"]["true_positives"] == 1
  # A box that only touches (intersection width 0 after +1) misses.
  det = _det([(0, H_A, 0.9, [10, 0, 19, 9], _shift(pair[1]))])
  out = hico_official.evaluate(truth, det)
  assert out["counts"]["true_positives"] == 0


def test_invisible_hoi_is_skipped(tmp_path):
  pair = ([1, 1, 10, 10], [21, 1, 30, 10])
  truth = _write(tmp_path, [{"file_name": "a.jpg", "invisible": {H_B},
                             "pairs": [(H_A, *pair), (H_B, *pair)]}])
  assert truth.gt.hoi.tolist() == [H_A]
  det = _det([(0, H_B, 0.9, _shift(pair[0]), _shift(pair[1]))])
  out = hico_official.evaluate(truth, det)
  assert out["per_hoi"]["num_gt"][H_B] == 0
  assert out["per_hoi"]["ap"][H_B] == 0.0
  assert out["per_hoi"]["recall"][H_B] is None  # MATLAB's 0/0.


def test_known_object_keeps_only_images_labelled_with_the_object(tmp_path):
  pair = ([1, 1, 10, 10], [21, 1, 30, 10])
  other = ([1, 1, 10, 10], [41, 1, 50, 10])
  truth = _write(tmp_path, [
      {"file_name": "a.jpg", "pairs": [(H_A, *pair)]},
      {"file_name": "b.jpg", "pairs": [(H_OTHER, *other)]}])
  labels = files.read_image_labels(str(tmp_path / "anno.mat"),
                                   truth.gt.file_names)
  assert labels.shape == (600, 2) and labels[H_A, 0] and not labels[H_A, 1]
  # An FP of H_A in image b (no label for its object) ranks first.
  det = _det([(0, H_A, 0.5, _shift(pair[0]), _shift(pair[1])),
              (1, H_A, 0.9, _shift(other[0]), _shift(other[1]))])
  out = hico_official.evaluate(truth, det, labels)
  # FP first, then TP: the only point with recall > 0 has precision 1/2.
  assert out["per_hoi"]["ap"][H_A] == pytest.approx(50.0, abs=1e-12)
  assert out["per_hoi"]["ap_known_object"][H_A] == pytest.approx(100.0)
  # Labels that contradict the GT pairs are an error naming anno.mat.
  with pytest.raises(files.OfficialFileError, match="anno.mat"):
    hico_official.evaluate(truth, det, np.zeros((600, 2), bool))


def test_rare_and_means_over_all_600_classes(tmp_path):
  pair = ([1, 1, 10, 10], [21, 1, 30, 10])
  train = [{"file_name": f"t{k}.jpg", "pairs": [(H_B, *pair)]}
           for k in range(10)]
  truth = _write(tmp_path, [{"file_name": "a.jpg",
                             "pairs": [(H_A, *pair), (H_B, *pair)]}], train)
  assert truth.train_instances[H_B] == 10 and truth.train_instances[H_A] == 0
  det = _det([(0, H_A, 0.9, _shift(pair[0]), _shift(pair[1])),
              (0, H_B, 0.9, _shift(pair[0]), _shift(pair[1]))])
  out = hico_official.evaluate(truth, det)
  assert out["default"]["full"] == pytest.approx(200 / 600)
  # Only H_B has 10 training instances: it alone is non-rare.
  assert out["default"]["non_rare"] == pytest.approx(100.0)
  assert out["default"]["rare"] == pytest.approx(100 / 599)
  assert out["classes_with_gt"]["default"] == pytest.approx(
      {"full": 100.0, "rare": 100.0, "non_rare": 100.0})


def test_cap_keeps_the_best_19999_per_class(tmp_path):
  pair = ([1, 1, 10, 10], [21, 1, 30, 10])
  truth = _write(tmp_path, [{"file_name": "a.jpg", "pairs": [(H_A, *pair)]}])
  n = files.MAX_DETECTIONS_PER_HOI + 2
  miss = [500, 500, 510, 510]
  rows = [(0, H_A, 0.5 + k * 1e-6, miss, miss) for k in range(n - 1)]
  rows.append((0, H_A, 0.01, _shift(pair[0]), _shift(pair[1])))  # Cut.
  out = hico_official.evaluate(truth, _det(rows))
  assert out["counts"]["detections_after_cap"] == files.MAX_DETECTIONS_PER_HOI
  assert out["counts"]["true_positives"] == 0


def _reference_ap(truth, det, labels=None):
  """Literal per-class loop of the MATLAB rules; returns [600] AP."""
  gt = truth.gt
  thresholds = [k * 0.1 for k in range(6)] + [1 - (10 - k) * 0.1
                                              for k in range(6, 11)]
  ap = np.zeros(600)
  for c in range(600):
    rows = []  # Converter: best 19,999 by score x 1000 (stable).
    idx = [i for i in range(det.score.size) if det.hoi[i] == c]
    idx = sorted(idx, key=lambda i: -det.score[i] * 1000)[:19999]
    for i in sorted(idx):  # Back to (image, list) order.
      if labels is not None and not labels[META.hoi_object == META.hoi_object[
          c]][:, det.image[i]].any():
        continue
      r = lambda b: [np.sign(v) * np.floor(abs(v) + 0.5) + 1 for v in b]
      rows.append((det.image[i], r(det.sub_boxes[i]), r(det.obj_boxes[i]),
                   det.score[i] * 1000))
    rows.sort(key=lambda row: -row[3])  # Stable, like MATLAB's sort.
    g = [k for k in range(gt.hoi.size) if gt.hoi[k] == c]
    taken = set()
    tp = []
    for image, h, o, _ in rows:
      best, best_k = -np.inf, None
      for k in g:
        if gt.image[k] != image:
          continue
        ovs = []
        for p, q in ((h, gt.sub_boxes[k]), (o, gt.obj_boxes[k])):
          iw = min(p[2], q[2]) - max(p[0], q[0]) + 1
          ih = min(p[3], q[3]) - max(p[1], q[1]) + 1
          if iw > 0 and ih > 0:
            ua = ((p[2] - p[0] + 1) * (p[3] - p[1] + 1) +
                  (q[2] - q[0] + 1) * (q[3] - q[1] + 1) - iw * ih)
            ovs.append(iw * ih / ua)
          else:
            ovs.append(0.0)
        if min(ovs) > best:
          best, best_k = min(ovs), k
      hit = best >= 0.5 and best_k not in taken
      if hit:
        taken.add(best_k)
      tp.append(hit)
    tp = np.array(tp, bool)
    if not g or not tp.size:
      continue
    ctp = np.cumsum(tp)
    rec = ctp / len(g)
    prec = ctp / (np.cumsum(~tp) + ctp)
    for t in thresholds:
      p = prec[rec >= t]
      ap[c] += (p.max() if p.size else 0.0) / 11
  return ap


def _random_case(rng, tmp_path, num_images=6):
  classes = [H_A, H_B, H_OTHER]
  test = []
  for i in range(num_images):
    pairs = []
    for _ in range(rng.integers(0, 4)):
      x, y = rng.integers(1, 200, 2)
      h = [x, y, x + rng.integers(10, 60), y + rng.integers(10, 60)]
      x, y = rng.integers(1, 200, 2)
      o = [x, y, x + rng.integers(10, 60), y + rng.integers(10, 60)]
      pairs.append((int(rng.choice(classes)), h, o))
    test.append({"file_name": f"img_{i}.jpg", "pairs": pairs})
  truth = _write(tmp_path, test)
  rows = []
  for i, rec in enumerate(test):
    for _ in range(rng.integers(0, 8)):
      if rec["pairs"] and rng.random() < 0.7:
        c, h, o = rec["pairs"][rng.integers(len(rec["pairs"]))]
        h = np.array(h, float) - 1 + rng.normal(0, 4, 4)
        o = np.array(o, float) - 1 + rng.normal(0, 4, 4)
        c = c if rng.random() < 0.8 else int(rng.choice(classes))
      else:
        c = int(rng.choice(classes))
        h = o = np.array([5.0, 5.0, 40.0, 40.0]) + rng.uniform(0, 150)
      score = float(rng.choice([0.3, 0.5, rng.random()]))  # With ties.
      rows.append((i, c, score, list(h), list(o)))
  return truth, _det(rows)


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_the_literal_reference(tmp_path, seed):
  rng = np.random.default_rng(seed)
  truth, det = _random_case(rng, tmp_path)
  labels = files.read_image_labels(str(tmp_path / "anno.mat"),
                                   truth.gt.file_names)
  out = hico_official.evaluate(truth, det, labels)
  ap = np.array(out["per_hoi"]["ap"]) / 100
  np.testing.assert_allclose(ap, _reference_ap(truth, det), atol=1e-9,
                             rtol=0)
  ap_ko = np.array(out["per_hoi"]["ap_known_object"]) / 100
  np.testing.assert_allclose(ap_ko, _reference_ap(truth, det, labels),
                             atol=1e-9, rtol=0)
  assert np.count_nonzero(ap) > 0  # The case is not trivially empty.


def test_export_round_trip(tmp_path):
  truth, det = _random_case(np.random.default_rng(7), tmp_path)
  paths = files.export_detections(str(tmp_path / "dets"), det)
  assert len(paths) == 80 and os.path.basename(paths[0]) == (
      "detections_01.mat")
  rows = scipy.io.loadmat(paths[META.hoi_object[H_A]])["all_boxes"]
  assert rows.shape[1] == 11 and np.all(np.diff(
      rows[rows[:, 9] == H_A - 0][:, 10]) <= 0)  # Best first per HOI.
  back = files.read_exported_detections(str(tmp_path / "dets"))
  assert back.score.size == det.score.size
  a = hico_official.evaluate(truth, det)
  b = hico_official.evaluate(truth, back)
  np.testing.assert_allclose(a["per_hoi"]["ap"], b["per_hoi"]["ap"],
                             atol=1e-9)


def test_bad_files_name_the_file_and_field(tmp_path):
  with pytest.raises(files.OfficialFileError, match="no such file"):
    files.read_anno_bbox(str(tmp_path / "missing.mat"))
  path = str(tmp_path / "bad.mat")
  scipy.io.savemat(path, {"bbox_test": np.zeros((1, 1))})
  with pytest.raises(files.OfficialFileError, match=r"bad.mat.*filename"):
    files.read_anno_bbox(path)
  (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
  with pytest.raises(files.OfficialFileError, match="junk.mat"):
    files.read_anno_bbox(str(tmp_path / "junk.mat"))
  truth = _write(tmp_path, [{"file_name": "a.jpg", "pairs": []}])
  scipy.io.savemat(str(tmp_path / "anno2.mat"),
                   {"anno_test": np.ones((600, 3)), "list_test": ["a.jpg"]})
  with pytest.raises(files.OfficialFileError, match=r"anno_test has shape"):
    files.read_image_labels(str(tmp_path / "anno2.mat"), truth.gt.file_names)


def test_synthetic_writer_files_score_its_own_ground_truth(tmp_path):
  from ki2hoi_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.evaluation import hico_inputs  # pylint: disable=g-import-not-at-top
  synthetic.generate(str(tmp_path), num_train=12, num_test=8, seed=5,
                     image_size=128)
  truth = files.read_anno_bbox(str(tmp_path / "anno_bbox.mat"))
  labels = files.read_image_labels(str(tmp_path / "anno.mat"),
                                   truth.gt.file_names)
  import json  # pylint: disable=g-import-not-at-top
  records = json.loads((tmp_path / "annotations" / "test_hico.json"
                        ).read_text())
  assert [r["file_name"] for r in records] == list(truth.gt.file_names)
  assert truth.gt.hoi.size == sum(len(r["hoi_annotation"]) for r in records)
  preds = [{"file_name": r["file_name"],
            "predictions": [{"bbox": a["bbox"], "category_id": a["category_id"]}
                            for a in r["annotations"]],
            "hoi_prediction": [{"subject_id": p["subject_id"],
                                "object_id": p["object_id"],
                                "category_id": p["category_id"], "score": 0.5}
                               for p in r["hoi_annotation"]]}
           for r in records]
  det = hico_inputs.flatten_predictions(preds, truth.gt.file_names)
  out = hico_official.evaluate(truth, det, labels, zero_shot_split="uv")
  for setting in ("default", "known_object"):
    means = out["classes_with_gt"][setting]
    assert means["full"] == pytest.approx(100.0)
  # Over all 600 classes, the classes without test GT count as AP 0.
  has_gt = np.array(out["per_hoi"]["num_gt"]) > 0
  assert out["default"]["full"] == pytest.approx(100.0 * has_gt.mean())


def _synthetic_with_predictions(tmp_path):
  """Synthetic data and a predictions JSON: every GT pair, jittered boxes."""
  from ki2hoi_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  synthetic.generate(str(tmp_path), num_train=12, num_test=8, seed=6,
                     image_size=128)
  records = json.loads((tmp_path / "annotations" / "test_hico.json"
                        ).read_text())
  rng = np.random.default_rng(0)
  preds = []
  for r in records:
    boxes = [{"bbox": [float(v) for v in np.asarray(a["bbox"]) +
                       rng.normal(0, 1.5, 4)],
              "category_id": a["category_id"]} for a in r["annotations"]]
    hois = [{"subject_id": p["subject_id"], "object_id": p["object_id"],
             "category_id": p["category_id"], "score": float(rng.random())}
            for p in r["hoi_annotation"]]
    preds.append({"file_name": r["file_name"], "predictions": boxes,
                  "hoi_prediction": hois})
  path = tmp_path / "preds.json"
  path.write_text(json.dumps(preds))
  return tmp_path, str(path)


def test_cli_official_protocol_and_export(tmp_path, capsys):
  from ki2hoi_jax.evaluation import hico  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  root, preds = _synthetic_with_predictions(tmp_path)
  out = str(tmp_path / "metrics.json")
  assert hico.main(["hico", "--protocol", "official", "--anno_bbox",
                    str(root / "anno_bbox.mat"), "--anno", str(root / "anno.mat"),
                    "--predictions", preds, "--output", out,
                    "--export_official", str(tmp_path / "dets")]) == 0
  text = capsys.readouterr().out
  assert "Official protocol" in text and "Known object" in text
  metrics = json.loads(open(out).read())
  assert metrics["protocol"] == "official"
  truth = files.read_anno_bbox(str(root / "anno_bbox.mat"))
  det = files.read_exported_detections(str(tmp_path / "dets"))
  again = hico_official.evaluate(truth, det)
  np.testing.assert_allclose(np.array(again["per_hoi"]["ap"]),
                             np.array(metrics["per_hoi"]["ap"]), atol=1e-9)
  assert 0 < metrics["classes_with_gt"]["default"]["full"] < 100 + 1e-9


def test_cli_official_needs_anno_bbox(tmp_path, capsys):
  from ki2hoi_jax.evaluation import hico  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as e:
    hico.main(["hico", "--protocol", "official", "--predictions", "p.json"])
  assert e.value.code == 2
  assert "--anno_bbox" in capsys.readouterr().err


def test_parsed_anno_bbox_is_cached_until_the_file_changes(tmp_path):
  pair = ([1, 1, 10, 10], [21, 1, 30, 10])
  first = _write(tmp_path, [{"file_name": "a.jpg", "pairs": [(H_A, *pair)]}])
  cache = tmp_path / "cache"
  assert len(list(cache.glob("anno_bbox_*.npz"))) == 1
  again = files.read_anno_bbox(str(tmp_path / "anno_bbox.mat"))
  assert again.gt.file_names == first.gt.file_names == ("a.jpg",)
  np.testing.assert_array_equal(again.gt.sub_boxes, first.gt.sub_boxes)
  np.testing.assert_array_equal(again.train_instances, first.train_instances)
  # A rewritten file (new size and time) is parsed anew.
  changed = _write(tmp_path, [{"file_name": "b.jpg", "pairs": []},
                              {"file_name": "c.jpg", "pairs": []}])
  assert changed.gt.file_names == ("b.jpg", "c.jpg")
  uncached = files.read_anno_bbox(str(tmp_path / "anno_bbox.mat"),
                                  cache_dir="")
  assert uncached.gt.file_names == ("b.jpg", "c.jpg")


def test_training_evaluation_reports_both_protocols(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.config_lib import base  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.config_lib import validation  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.train import eval_hook  # pylint: disable=g-import-not-at-top
  root, preds_path = _synthetic_with_predictions(tmp_path)
  config = base.get_config()
  config.dataset.root = str(root)
  gt = json.loads((root / "annotations" / "test_hico.json").read_text())
  preds = json.loads(open(preds_path).read())
  workdir = str(tmp_path / "work")
  metrics = eval_hook.hico_metrics(config, workdir, gt, preds)
  official = metrics["official"]["classes_with_gt"]["default"]["full"]
  summary = eval_hook.summarize_eval(config, metrics)
  assert summary["eval/mAP"] == summary["eval/mAP_full"]
  assert summary["eval/official/mAP_full"] == pytest.approx(official)
  assert "Official protocol" in eval_hook.metrics_table(config, metrics)
  config.eval_protocol = "official"
  summary = eval_hook.summarize_eval(config, metrics)
  assert summary["eval/mAP"] == pytest.approx(official)
  assert "(official protocol)" in eval_hook.headline(config, metrics)
  # anno_bbox.mat of other test images: skipped, or a clear error.
  renamed = [dict(r, file_name="x" + r["file_name"]) for r in gt]
  renamed_preds = [dict(p, file_name="x" + p["file_name"]) for p in preds]
  with pytest.raises(validation.ConfigError, match="other test images"):
    eval_hook.hico_metrics(config, workdir, renamed, renamed_preds)
  config.eval_protocol = "python"
  assert "official" not in eval_hook.hico_metrics(config, workdir, renamed,
                                                  renamed_preds)
  config.eval_protocol = "official"
  # Without anno_bbox.mat: the python protocol alone, or a clear error.
  os.remove(root / "anno_bbox.mat")
  with pytest.raises(validation.ConfigError, match="anno_bbox.mat"):
    eval_hook.hico_metrics(config, workdir, gt, preds)
  config.eval_protocol = "python"
  assert "official" not in eval_hook.hico_metrics(config, workdir, gt, preds)
