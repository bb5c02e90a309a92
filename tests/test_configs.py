"""Every config file loads, validates, and rejects bad overrides."""

import glob
import importlib
import os
import subprocess
import sys

import pytest

from ki2hoi_jax.config_lib import validation
from ki2hoi_jax.data import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = sorted(
    os.path.splitext(os.path.basename(p))[0]
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not p.endswith("__init__.py"))


def _load(name):
  return importlib.import_module(f"configs.{name}").get_config()


def test_expected_config_files_exist():
  expected = {"base", "default", "rf_uc", "nf_uc", "uc", "uo", "uv", "vcoco",
              "demo"}
  assert expected <= set(CONFIG_NAMES)


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_loads_and_validates(name):
  config = _load(name)
  validation.validate(config)
  # Every experiment only changes values, never adds fields to the base.
  base_keys = set(_flatten(_load("base")))
  assert set(_flatten(config)) == base_keys


def _flatten(config, prefix=""):
  out = {}
  for k, v in config.items():
    if hasattr(v, "items"):
      out.update(_flatten(v, prefix + k + "."))
    else:
      out[prefix + k] = v
  return out


@pytest.mark.parametrize("split", metadata.ZERO_SHOT_SPLITS)
def test_zero_shot_configs_name_their_split(split):
  config = _load(split)
  assert config.dataset.zero_shot_split == split
  assert len(metadata.hico().unseen_hois(split)) in (84, 100, 120)


def test_paper_defaults():
  config = _load("base")
  assert config.optimizer.learning_rate == 1e-4
  assert config.optimizer.backbone_learning_rate == 1e-5
  assert config.optimizer.lr_drop_epoch == 60
  assert config.optimizer.num_epochs == 90
  assert config.model.num_queries == 64 and config.model.d_model == 256
  assert config.loss.focal_alpha == 0.5 and config.loss.focal_gamma == 2.0
  assert config.inference.nms_threshold == 0.7
  assert _load("vcoco").model.interaction_space == "verb"


@pytest.mark.parametrize("path,value,match", [
    ("inference.score_fusion", "summ", "score_fusion"),
    ("dataset.zero_shot_split", "rf-uc", "zero_shot_split"),
    ("model.interaction_space", "hoii", "interaction_space"),
    ("batch_size", 0, "batch_size"),
    ("dataset.train_fraction", 1.5, "train_fraction"),
])
def test_bad_values_name_the_field(path, value, match):
  config = _load("default")
  node = config
  *parents, leaf = path.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(validation.ConfigError, match=match):
    validation.validate(config)


def _main(*args):
  return subprocess.run(
      [sys.executable, "-m", "ki2hoi_jax.main", *args],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_cli_rejects_misspelled_override(tmp_path):
  result = _main("--config=configs/demo.py", f"--workdir={tmp_path}",
                 "--config.model.roi_sz=3")
  assert result.returncode == 2
  assert "roi_size" in result.stderr and "Traceback" not in result.stderr


def test_cli_rejects_bad_value(tmp_path):
  result = _main("--config=configs/demo.py", f"--workdir={tmp_path}",
                 "--config.mode=trian")
  assert result.returncode == 2
  assert "config.mode" in result.stderr
