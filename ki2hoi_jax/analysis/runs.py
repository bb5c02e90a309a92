"""Locating and loading the evaluations of a training workdir.

A training workdir holds (train/trainer.py, checkpoints/manager.py):

  config.json                      the run's config
  eval/step_<N>/metrics.json       `evaluation.hico.evaluate` output (+ summary)
  eval/step_<N>/predictions.json   GEN-VLKT-format predictions of the test set
  synthetic_<dataset>/             the synthetic dataset when dataset.root is ''

`load_run` reads one evaluation into a `Run`; `ensure_evaluated` first
evaluates the checkpoint when there is none (the trainer, with its
TensorFlow input pipeline, ~6 s to import, is imported only then).
"""

import dataclasses
import functools
import json
import os
import re
from typing import Any, Dict, List, Optional

from ki2hoi_jax.analysis import hoi_metrics
from ki2hoi_jax.config_lib import saved as saved_config
from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import input_pipeline
from ki2hoi_jax.evaluation import hico
from ki2hoi_jax.evaluation import hico_ap
from ki2hoi_jax.evaluation import hico_inputs
from ki2hoi_jax.evaluation import postprocess

_STEP_DIR = re.compile(r"^step_(\d+)$")


def resolve_workdir(workdir: str, root: Optional[str] = None) -> str:
  """Absolute path of `workdir`; a relative one is taken from `root`.

  Args:
    workdir: a run folder, e.g. 'workdirs/demo'.
    root: folder of relative paths (the repository root in the notebooks);
      None = the current directory.

  Returns:
    The absolute path (it need not exist).
  """
  workdir = os.path.expanduser(workdir)
  if not os.path.isabs(workdir) and root is not None:
    workdir = os.path.join(root, workdir)
  return os.path.abspath(workdir)


def dataset_root(config, workdir: str) -> str:
  """The dataset folder of a run (`<workdir>/synthetic_<name>` if no root)."""
  return input_pipeline.dataset_root(config, workdir)


def annotations_path(config, workdir: str, split: str) -> str:
  """Annotation JSON of 'train' or 'test' (docs/datasets.md section 2 layout)."""
  path, _ = annotations.split_paths(dataset_root(config, workdir), split,
                                    config.dataset.name)
  return path


def eval_steps(workdir: str) -> List[int]:
  """Steps with an evaluation (`eval/step_<N>/metrics.json`), ascending."""
  folder = os.path.join(workdir, "eval")
  if not os.path.isdir(folder):
    return []
  steps = []
  for name in os.listdir(folder):
    m = _STEP_DIR.match(name)
    if m and os.path.isfile(os.path.join(folder, name, "metrics.json")):
      steps.append(int(m.group(1)))
  return sorted(steps)


def read_predictions(path: str) -> List[Dict[str, Any]]:
  """A GEN-VLKT predictions file (`postprocess.read_predictions`)."""
  return postprocess.read_predictions(path)


def load_config(workdir: str):
  """The run's config from `<workdir>/config.json` (over ki2hoi_jax/config_lib/base.py).

  Raises:
    FileNotFoundError: the workdir has no config.json.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: {workdir} is not a training "
                            "workdir (python -m ki2hoi_jax.main writes it)")
  with open(path) as f:
    saved = json.load(f)
  return saved_config.config_from_saved(saved)


@dataclasses.dataclass
class Run:
  """One evaluation of a training run.

  Attributes:
    workdir: absolute path of the run folder.
    config: the run's config (ml_collections.ConfigDict).
    step: training step of the evaluation.
    eval_dir: `<workdir>/eval/step_<step>`.
    metrics: the evaluator's metrics (`metrics.json`).
    predictions_path: the GEN-VLKT-format predictions of that evaluation.
    test_annotations: path of the test annotation JSON.
    train_annotations: path of the (unfiltered) training annotation JSON.
  """
  workdir: str
  config: Any
  step: int
  eval_dir: str
  metrics: Dict[str, Any]
  predictions_path: str
  test_annotations: str
  train_annotations: str

  @property
  def zero_shot_split(self) -> str:
    """The run's zero-shot split ('' for a fully supervised run)."""
    return hoi_metrics.metrics_split(self.metrics)

  @functools.cached_property
  def predictions(self) -> List[Dict[str, Any]]:
    """The prediction entries (read on first use)."""
    return read_predictions(self.predictions_path)

  @functools.cached_property
  def ground_truth(self) -> hico_ap.GroundTruth:
    """The flattened test ground truth (read on first use)."""
    return hico_inputs.load_ground_truth(hico.load_json(self.test_annotations))

  @functools.cached_property
  def detections(self) -> hico_ap.Detections:
    """The flattened predictions, in the order of `ground_truth`."""
    return hico_inputs.flatten_predictions(self.predictions,
                                    self.ground_truth.file_names)

  def describe(self) -> str:
    """One paragraph: where everything comes from."""
    c = self.metrics.get("counts", {})
    split = self.zero_shot_split or "none (fully supervised)"
    return (f"Run {self.workdir}\n  evaluation of step {self.step}: "
            f"{self.eval_dir}\n  dataset {self.config.dataset.name} "
            f"({dataset_root(self.config, self.workdir)}), zero-shot split: "
            f"{split}\n  {c.get('images', '?')} test images, "
            f"{c.get('gt_pairs', '?')} GT pairs in "
            f"{c.get('classes_with_gt', '?')} classes, "
            f"{c.get('predictions', '?')} predictions")


def load_run(workdir: str, step: Optional[int] = None) -> Run:
  """The latest (or a given) evaluation of a workdir.

  Args:
    workdir: training workdir.
    step: evaluation step; None = the latest.

  Returns:
    The Run (predictions and ground truth are read lazily).

  Raises:
    FileNotFoundError: no config.json, or no evaluation (of that step).
  """
  workdir = os.path.abspath(workdir)
  config = load_config(workdir)
  steps = eval_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"no evaluation in {workdir}/eval (run "
                            "analysis.ensure_evaluated or mode 'eval')")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise FileNotFoundError(f"no evaluation of step {step} in {workdir}/eval"
                            f" (have {steps})")
  eval_dir = os.path.join(workdir, "eval", f"step_{step}")
  with open(os.path.join(eval_dir, "metrics.json")) as f:
    metrics = json.load(f)
  if "default" not in metrics:
    raise ValueError(f"{eval_dir}/metrics.json is not a HICO-DET evaluation")
  return Run(workdir=workdir, config=config, step=int(step),
             eval_dir=eval_dir, metrics=metrics,
             predictions_path=os.path.join(eval_dir, "predictions.json"),
             test_annotations=annotations_path(config, workdir, "test"),
             train_annotations=annotations_path(config, workdir, "train"))


def ensure_evaluated(workdir: str, config=None) -> Run:
  """`load_run`, after evaluating the checkpoint when no evaluation exists.

  Args:
    workdir: training workdir with a checkpoint.
    config: run config; None = the workdir's config.json.

  Returns:
    The latest evaluation.
  """
  workdir = os.path.abspath(workdir)
  if not eval_steps(workdir):
    # pylint: disable=g-import-not-at-top
    from ki2hoi_jax.train import startup
    from ki2hoi_jax.train import trainer
    # pylint: enable=g-import-not-at-top
    config = config if config is not None else load_config(workdir)
    with startup.started(config, workdir):
      trainer.evaluate(config, workdir)
  return load_run(workdir)
