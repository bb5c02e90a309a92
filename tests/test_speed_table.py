"""benchmarks/speed_table.py: the README's speed table from one result file."""

import importlib.util
import os

import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
  spec = importlib.util.spec_from_file_location(
      "speed_table", os.path.join(_REPO, "benchmarks", "speed_table.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _result(script):
  train = {}
  for (h, w), times, floor in zip(script.TRAIN_SIZES,
                                  ([2.0, 2.2, 3.0], [6.0, 6.6, 7.0]),
                                  ([1.6, 1.5, 1.7], [5.0, 5.5, 4.5])):
    train[f"{h}x{w}"] = script._summary(times, floor)  # pylint: disable=protected-access
  return {"machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 8.0,
                      "devices": "1 x cpu", "jax": "0.x", "torch": "2.x"},
          "date": "2026-12-08", "commit": "abcdef0123", "num_steps": 3,
          "train": train,
          "inference": script._summary([0.5, 0.7, 0.6], [0.3, 0.4, 0.2]),  # pylint: disable=protected-access
          "startup": {"cold": 111.6, "warm": 43.5}}


def test_table_cells_are_the_result_figures():
  script = _script()
  table = script.format_table(_result(script))
  assert "on Test CPU (2 cores, 8.0 GiB; 1 x cpu" in table
  assert "at commit abcdef0" in table
  # Medians 2.2 and 6.6 s; floors 1.6 and 5.0 s.
  assert "| 2.20 s (2.00-3.00) | 6.60 s (6.00-7.00) |" in table
  assert "| 1.10 | 1.10 |" in table  # 2.2 / 2.0, 6.6 / 6.0.
  assert "| **1.38x** | **1.32x** |" in table  # 2.2 / 1.6, 6.6 / 5.0.
  assert "| 0.60 s (0.30 s) | |" in table  # Batch 1: per image.
  assert "| 112 s / 44 s | |" in table


def test_readme_table_is_the_newest_committed_result():
  script = _script()
  results = os.path.join(_REPO, "benchmarks", "results", "speed")
  table = script.format_table(script.newest_result(results))
  with open(os.path.join(_REPO, "README.md")) as f:
    readme = f.read()
  assert table in readme


def test_no_result_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no result file"):
    _script().newest_result(str(tmp_path))
