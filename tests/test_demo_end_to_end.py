"""The demo path end to end: data -> train -> eval -> predict, and it learns.

A full demo run takes minutes; here the same command (configs/demo.py, mode
'all') trains on 8 synthetic images that are also its test set, so that a few
hundred steps suffice to show learning: the untrained model (evaluated at step
0 by `eval_at_start`) scores ~0 mAP and the trained one must score far more.
Generalisation to held-out images is what the full demo reports.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from ki2hoi_jax.data import synthetic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_STEPS = 200


def _memorisation_dataset(root: str) -> None:
  """8 synthetic training images whose test split is the same images."""
  synthetic.generate(root, num_train=8, num_test=2, seed=0, image_size=128)
  shutil.rmtree(os.path.join(root, "images", "test2015"))
  shutil.copytree(os.path.join(root, "images", "train2015"),
                  os.path.join(root, "images", "test2015"))
  shutil.copy(os.path.join(root, "annotations", "trainval_hico.json"),
              os.path.join(root, "annotations", "test_hico.json"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("memorise"))
  _memorisation_dataset(root)
  workdir = str(tmp_path_factory.mktemp("demo_workdir"))
  cmd = [sys.executable, "-m", "ki2hoi_jax.main", "--config=configs/demo.py",
         f"--workdir={workdir}", f"--config.dataset.root={root}",
         f"--config.num_train_steps={NUM_STEPS}",
         "--config.optimizer.lr_drop_epoch=100000",
         "--config.dataset.zero_shot_split=",
         "--config.init.synthetic_clip_steps=0",
         "--config.init.synthetic_detector_steps=0",
         "--config.dataset.train_short_sides=(128,)",
         "--config.dataset.eval_short_side=128",
         "--config.dataset.max_size=160", "--config.dataset.hflip=False",
         "--config.dataset.color_jitter=0.0", "--config.log_every_steps=50",
         "--config.progress_bar=False", "--config.predict.score_threshold=0.0"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=1200, env=env, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return workdir, result.stdout


def _full_map(workdir: str, step: int) -> float:
  with open(os.path.join(workdir, "eval", f"step_{step}",
                         "metrics.json")) as f:
    return float(json.load(f)["default"]["full"])


@pytest.mark.slow
def test_demo_learns(demo_run):
  workdir, _ = demo_run
  untrained, trained = _full_map(workdir, 0), _full_map(workdir, NUM_STEPS)
  assert untrained < 5.0
  assert trained >= 20.0
  assert trained >= 5 * untrained


@pytest.mark.slow
def test_demo_writes_and_summarises_everything(demo_run):
  workdir, stdout = demo_run
  assert os.path.isdir(os.path.join(workdir, "checkpoints", str(NUM_STEPS)))
  assert os.path.isdir(os.path.join(workdir, "checkpoints_best"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  preds = os.path.join(workdir, "predictions")
  jsons = sorted(f for f in os.listdir(preds) if f.endswith(".json"))
  pngs = sorted(f for f in os.listdir(preds) if f.endswith(".png"))
  assert jsons and len(jsons) == len(pngs)
  with open(os.path.join(preds, jsons[0])) as f:
    record = json.load(f)
  assert set(record) >= {"image", "width", "height", "triplets"}
  for t in record["triplets"]:
    assert set(t) == {"human_box", "object_box", "object", "verb", "score",
                      "rank_score", "pair"}
    assert 0.0 <= t["score"] <= 1.0  # The confidence S_h * S_o * S_verb.
  # The mAP table and the final summary of where things went.
  assert "Summary" in stdout and "untrained model" in stdout
  assert "trained model:   full mAP" in stdout
  assert workdir in stdout
