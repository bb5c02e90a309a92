"""The notebooks of experiments/: saved clean, and run top to bottom on a demo.

The slow tests train a tiny demo workdir (tests/demo_utils.py, mode 'train':
about 70 s) and execute both notebooks with nbclient on the venv's 'python3'
kernel. evaluate.ipynb runs on a copy of the workdir without eval/ and
predictions/, so it also evaluates the checkpoint and runs the predictor.
"""

import json
import os
import re
import shutil

import nbformat
import pytest

import demo_utils  # tests/ is on sys.path (pytest rootdir conftest).

EXPERIMENTS = os.path.join(demo_utils.REPO_ROOT, "experiments")
NOTEBOOKS = ("evaluate.ipynb", "zero_shot.ipynb")
CELL_TIMEOUT = 400  # Seconds; evaluating the checkpoint compiles the model.


def _read(name):
  return nbformat.read(os.path.join(EXPERIMENTS, name), as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_saved_without_outputs(name):
  with open(os.path.join(EXPERIMENTS, name)) as f:
    raw = json.load(f)
  assert raw["nbformat"] == 4
  nb = _read(name)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == "python3"
  code = [c for c in nb.cells if c.cell_type == "code"]
  for cell in code:
    assert cell.outputs == [] and cell.execution_count is None
  params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1
  assert ("WORKDIR = os.environ.get('KI2HOI_WORKDIR', 'workdirs/demo')"
          in params[0].source)
  # All logic is in ki2hoi_jax.analysis: no function or class definitions.
  for cell in code:
    assert not re.search(r"^\s*(def|class) ", cell.source, re.M), cell.source


def _execute(name, workdir, monkeypatch, parameters=""):
  """Runs a notebook on `workdir`; returns the executed notebook."""
  import nbclient  # pylint: disable=g-import-not-at-top
  nb = _read(name)
  if parameters:  # Injected after the parameters cell, as papermill does.
    i = next(i for i, c in enumerate(nb.cells)
             if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
  monkeypatch.setenv("KI2HOI_WORKDIR", workdir)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  client = nbclient.NotebookClient(
      nb, timeout=CELL_TIMEOUT, kernel_name="python3",
      resources={"metadata": {"path": EXPERIMENTS}})
  client.execute()  # Raises CellExecutionError on any error.
  return nb


def _outputs(nb):
  """(text of all text outputs, number of PNG outputs)."""
  texts, pngs = [], 0
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      assert out.output_type != "error", out
      if out.output_type == "stream":
        texts.append(out.text)
      data = out.get("data", {})
      texts += [data.get("text/markdown", ""), data.get("text/plain", "")]
      pngs += "image/png" in data
  return "\n".join(texts), pngs


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory):
  return demo_utils.make_demo_workdir(str(tmp_path_factory.mktemp("demo")))


@pytest.mark.slow
def test_evaluate_notebook(demo_workdir, tmp_path, monkeypatch):
  # A copy without evaluation and predictions: the notebook makes both. The
  # TFDS build records the absolute dataset root, so the copy rebuilds it.
  workdir = str(tmp_path / "run")
  shutil.copytree(demo_workdir, workdir,
                  ignore=shutil.ignore_patterns("eval", "predictions", "tfds"))
  nb = _execute("evaluate.ipynb", workdir, monkeypatch,
                "SCORE_THRESHOLD = 0.0\nGRID_IMAGES = 4")
  text, pngs = _outputs(nb)
  lower = text.lower()
  for word in ("default setting", "known-object setting",
               "zero-shot setting (uv)", "mean max recall",
               "evaluation of step 4", "ap per hoi"):
    assert word in lower, word
  # Header lines of the mAP DataFrames (text/plain).
  for header in (r"full +rare +non-rare", r"full +seen +unseen"):
    assert re.search(header, lower), header
  assert pngs >= 3  # Per-HOI AP, precision-recall, prediction grid.
  # The notebook evaluated the checkpoint like the trainer did.
  with open(os.path.join(workdir, "eval", "step_4", "metrics.json")) as f:
    metrics = json.load(f)
  with open(os.path.join(demo_workdir, "eval", "step_4", "metrics.json")) as f:
    reference = json.load(f)
  assert metrics["per_hoi"]["num_gt"] == reference["per_hoi"]["num_gt"]
  assert metrics["default"] == reference["default"]
  # ... and predicted 4 test images with every triplet drawn (threshold 0).
  names = sorted(n for n in os.listdir(os.path.join(workdir, "predictions"))
                 if n.endswith(".json"))
  assert len(names) == 4
  for n in names:
    with open(os.path.join(workdir, "predictions", n)) as f:
      assert json.load(f)["triplets"], n
  assert re.search(r"1\. HICO_test2015_00000001\.jpg: [1-9]\d* triplet",
                   text)


@pytest.mark.slow
def test_zero_shot_notebook(demo_workdir, monkeypatch):
  nb = _execute("zero_shot.ipynb", demo_workdir, monkeypatch)
  text, pngs = _outputs(nb)
  lower = text.lower()
  for word in ("seen vs unseen classes",
               "unseen classes (uv) that transfer best",
               "unseen classes (uv) that transfer worst",
               "unseen classes (uv) by verb"):
    assert word in lower, word
  # Rows of the summary DataFrame (text/plain: index, then the group name).
  for group in ("full", "seen", "unseen"):
    assert re.search(rf"^\d+ +{group} ", lower, re.M), group
  # The verbs of the unseen classes with test GT appear in the by-verb table.
  from ki2hoi_jax.data import metadata  # pylint: disable=g-import-not-at-top
  meta = metadata.hico()
  with open(os.path.join(demo_workdir, "eval", "step_4", "metrics.json")) as f:
    num_gt = json.load(f)["per_hoi"]["num_gt"]
  unseen = [h for h in meta.unseen_hois("uv") if num_gt[h] > 0]
  assert unseen, "the demo test set has no unseen class"
  for h in unseen:  # A row whose first column is the verb (index, verb).
    verb = meta.verbs[meta.hois[h][0]]
    assert re.search(rf"^\d+ +{re.escape(verb)} ", lower, re.M), verb
  assert pngs >= 2  # Seen/unseen plot, per-HOI AP.
  assert not os.path.exists(os.path.join(demo_workdir, "predictions"))
