"""A short V-COCO run: configs/vcoco_demo.py trained and evaluated end to end.

`python -m ki2hoi_jax.main --config=configs/vcoco_demo.py` runs once in a
subprocess (2 fake CPU devices, XLA optimisations off, one padded image shape)
on a tiny synthetic V-COCO dataset (16 training, 8 test images, 4 steps) with
a 1-layer variant of the demo model. The tests check the role AP metrics the
trainer wrote, the predictions file, and that the evaluator's command line
reproduces the numbers from that file. About 1 min on 2 CPU cores (marked
slow); the table `trainer.evaluate` prints is checked on a hand-built dict.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import vcoco
from ki2hoi_jax.evaluation import vcoco_ap
from ki2hoi_jax.train import metrics_writer

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEPS = 4
_OVERRIDES = (
    "--config.mode=train",
    f"--config.num_train_steps={_STEPS}",
    "--config.dataset.synthetic_num_train=16",
    "--config.dataset.synthetic_num_test=8",
    "--config.dataset.synthetic_image_size=128",
    "--config.dataset.train_short_sides=(112,128)",
    "--config.dataset.eval_short_side=128",
    "--config.dataset.max_size=160",
    "--config.dataset.size_buckets=1",  # One padded shape: one compilation.
    "--config.batch_size=8",
    "--config.eval_batch_size=8",
    "--config.model.instance_decoder_layers=1",
    "--config.model.interaction_decoder_layers=1",
    "--config.model.clip.vision_layers=1",
    "--config.model.clip.text_layers=1",
    "--config.log_every_steps=2",
    "--config.progress_bar=False",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Workdir, CLI output and paths of the finished tiny V-COCO run."""
  workdir = str(tmp_path_factory.mktemp("vcoco_demo"))
  env = dict(os.environ)
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2",
             JAX_DISABLE_MOST_OPTIMIZATIONS="1", TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "ki2hoi_jax.main",
       "--config=configs/vcoco_demo.py", f"--workdir={workdir}",
       *_OVERRIDES], cwd=_REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-6000:]
  eval_dir = os.path.join(workdir, "eval", f"step_{_STEPS}")
  gt_path, _ = annotations.split_paths(
      os.path.join(workdir, "synthetic_vcoco"), "test", "vcoco")
  return {"workdir": workdir, "log": proc.stdout,
          "metrics": os.path.join(eval_dir, "metrics.json"),
          "predictions": os.path.join(eval_dir, "predictions.json"),
          "gt": gt_path}


def _load(path):
  with open(path) as f:
    return json.load(f)


def _classes_with_positives(gt_records):
  """Role classes whose action some test person does (they have an AP)."""
  meta = metadata.vcoco()
  rc = vcoco_ap.role_classes()
  done = {meta.verb_class_action[int(h["category_id"])]
          for r in gt_records for h in r["hoi_annotation"]}
  return {n for n, a in zip(rc.names, rc.actions) if a in done}


@pytest.mark.slow
def test_training_ran_the_requested_steps(run):
  with open(os.path.join(run["workdir"], "config.json")) as f:
    config = json.load(f)
  assert config["dataset"]["name"] == "vcoco"
  assert config["model"]["interaction_space"] == "verb"
  assert "Interaction classifier: 29 training classes, 29 at evaluation" in (
      run["log"])
  losses = {r["step"]: r["loss"] for r in metrics_writer.read_jsonl(
      os.path.join(run["workdir"], "metrics.jsonl")) if "loss" in r}
  assert sorted(losses) == [2, 4]
  assert all(math.isfinite(v) for v in losses.values())


@pytest.mark.slow
def test_role_ap_metrics(run):
  metrics = _load(run["metrics"])
  assert {"scenario_1", "scenario_2", "per_action"} <= set(metrics)
  names = vcoco_ap.role_classes().names
  assert list(metrics["per_action"]) == list(names)  # 25 role classes.
  reported = {metadata.vcoco().verb_classes[c]
              for c in metadata.vcoco().role_ap_classes}
  assert len(reported) == 24 and reported <= set(names)
  for s in vcoco_ap.SCENARIOS:
    assert 0.0 <= metrics[s] <= 100.0
  assert metrics["summary"]["eval/role_AP_scenario_1"] == metrics["scenario_1"]
  assert metrics["summary"]["eval/role_AP_scenario_2"] == metrics["scenario_2"]
  # A class has an AP exactly when some test person does its action.
  positive = _classes_with_positives(_load(run["gt"]))
  assert positive & reported  # The means average at least one class.
  for name, ap in metrics["per_action"].items():
    if name in positive:
      assert 0.0 <= ap["scenario_1"] <= ap["scenario_2"] + 1e-9 <= 100.0 + 1e-9
    else:
      assert math.isnan(ap["scenario_1"]) and math.isnan(ap["scenario_2"])
  # The means are those of the reported classes with positives.
  for s in vcoco_ap.SCENARIOS:
    values = [metrics["per_action"][n][s] for n in sorted(positive & reported)]
    assert metrics[s] == pytest.approx(sum(values) / len(values), abs=1e-9)
  print("role AP scenario 1 %.4f, scenario 2 %.4f" % (metrics["scenario_1"],
                                                      metrics["scenario_2"]))


@pytest.mark.slow
def test_predictions_file(run):
  entries = vcoco.load_predictions(run["predictions"])
  gt = _load(run["gt"])
  assert sorted(e["file_name"] for e in entries) == sorted(
      r["file_name"] for r in gt)
  meta = metadata.vcoco()
  agent_keys = {vcoco_ap.agent_key(a) for a in range(len(meta.actions))}
  role_keys = set(vcoco_ap.role_classes().names)
  num_records = 0
  for entry in entries:
    assert entry["image_id"] == vcoco.image_id_from_file_name(
        entry["file_name"])
    for rec in entry["detections"]:
      num_records += 1
      assert len(rec["person_box"]) == 4
      assert all(math.isfinite(v) for v in rec["person_box"])
      assert set(rec) - {"person_box"} <= agent_keys | role_keys
      for key in set(rec) & role_keys:
        box, score = rec[key][:4], rec[key][4]
        assert math.isfinite(score)
        # A role object is a box or 'no object' (all NaN), never a mix.
        assert all(map(math.isnan, box)) or all(map(math.isfinite, box))
        action = meta.actions[meta.verb_class_action[
            meta.verb_classes.index(key)]]
        assert rec[action + "_agent"] >= score
  assert num_records > 0


def _cli(annotations_path, predictions_path, out):
  proc = subprocess.run(
      [sys.executable, "-m", "ki2hoi_jax.evaluation.vcoco",
       f"--annotations={annotations_path}",
       f"--predictions={predictions_path}", f"--output={out}"], cwd=_REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      timeout=120, check=False)
  assert proc.returncode == 0, proc.stdout[-4000:]
  assert "Role mAP scenario 1" in proc.stdout
  return _load(out)


def _assert_same(cli, metrics):
  """CLI output (NaN written as null) equals an `evaluate` dict."""
  assert set(cli) == {"scenario_1", "scenario_2", "per_action"}
  for s in vcoco_ap.SCENARIOS:
    assert cli[s] == pytest.approx(metrics[s], abs=1e-9)
  assert list(cli["per_action"]) == list(metrics["per_action"])
  for name, ap in metrics["per_action"].items():
    for s in vcoco_ap.SCENARIOS:
      if math.isnan(ap[s]):
        assert cli["per_action"][name][s] is None
      else:
        assert cli["per_action"][name][s] == pytest.approx(ap[s], abs=1e-9)


@pytest.mark.slow
def test_cli_reproduces_the_trainer_numbers(run, tmp_path):
  cli = _cli(run["gt"], run["predictions"], str(tmp_path / "role_ap.json"))
  _assert_same(cli, _load(run["metrics"]))


def _oracle_records(record, score):
  """One perfect detection per GT person of a test record, at `score`."""
  meta = metadata.vcoco()
  boxes = [a["bbox"] for a in record["annotations"]]
  out = {}
  for h in record["hoi_annotation"]:
    verb, obj = int(h["category_id"]), int(h["object_id"])
    rec = out.setdefault(h["subject_id"],
                         {"person_box": boxes[h["subject_id"]]})
    rec[vcoco_ap.agent_key(meta.verb_class_action[verb])] = score
    if meta.verb_class_role[verb]:
      rec[meta.verb_classes[verb]] = (
          list(boxes[obj]) if obj >= 0 else [None] * 4) + [score]
  return list(out.values())


@pytest.mark.slow
def test_cli_on_trained_plus_oracle_detections(run, tmp_path):
  """Perfect detections ranked below the model's: 0 < AP, CLI == evaluate."""
  entries = vcoco.load_predictions(run["predictions"])
  low = min(v[4] if isinstance(v, list) else v
            for e in entries for r in e["detections"]
            for k, v in r.items() if k != "person_box")
  by_name = {r["file_name"]: r for r in _load(run["gt"])}
  for e in entries:
    e["detections"] += _oracle_records(by_name[e["file_name"]], low / 2)
  path = str(tmp_path / "mixed.json")
  vcoco.save_predictions(path, entries)
  expected = vcoco.evaluate(list(by_name.values()),
                            vcoco.load_predictions(path))
  cli = _cli(run["gt"], path, str(tmp_path / "mixed_ap.json"))
  _assert_same(cli, expected)
  trained = _load(run["metrics"])
  for s in vcoco_ap.SCENARIOS:
    assert trained[s] < expected[s] <= 100.0
  for name, ap in expected["per_action"].items():
    if not math.isnan(ap["scenario_1"]):
      assert 0.0 <= ap["scenario_1"] <= ap["scenario_2"] + 1e-9


def test_format_metrics_table():
  """The table `trainer.evaluate` prints, from a metrics.json-style dict."""
  names = vcoco_ap.role_classes().names
  per_action = {n: {"scenario_1": float("nan"), "scenario_2": None}
                for n in names}
  per_action["hold_obj"] = {"scenario_1": 12.5, "scenario_2": 50.0}
  per_action["point_instr"] = {"scenario_1": 1.0, "scenario_2": 2.0}
  lines = vcoco.format_metrics({"scenario_1": 12.5, "scenario_2": 50.0,
                                "per_action": per_action}).splitlines()
  assert len(lines) == 1 + 25 + 2
  assert lines[1].split() == ["hold_obj", "12.50", "50.00"]
  point = [l for l in lines if l.split()[0] == "point_instr"][0]
  assert point.split() == ["point_instr", "1.00", "2.00", "(not", "in",
                           "mean)"]
  assert lines[2].split()[1:] == ["nan", "nan"]
  assert lines[-2:] == ["Role mAP scenario 1: 12.50",
                        "Role mAP scenario 2: 50.00"]
