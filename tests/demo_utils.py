"""Tiny demo workdirs for the slow end-to-end tests, and random model weights.

`make_demo_workdir` runs `python -m ki2hoi_jax.main --config=configs/demo.py`
in a subprocess (its own JAX, one CPU device unless XLA_FLAGS says otherwise)
with `TINY_OVERRIDES`: 16 synthetic training and 8 test images, 4 training
steps. Mode 'train' takes about 70 s on 2 CPU cores and leaves:

  config.json, checkpoints/4, checkpoints_best/4, metrics.jsonl,
  eval/step_4/{metrics.json, predictions.json}, synthetic_hico_det/, tfds/

Mode 'all' also re-evaluates (about +40 s) and writes predictions/ (+15 s).
A module-scoped fixture can share one workdir between tests:

  @pytest.fixture(scope="module")
  def demo_workdir(tmp_path_factory):
    return demo_utils.make_demo_workdir(str(tmp_path_factory.mktemp("demo")))

`random_variables` fills a variables tree of ShapeDtypeStructs with small
random weights (unit norm scales and variances), for checkpoints of an
untrained model.
"""

import os
import subprocess
import sys
from typing import List, Sequence

import jax
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every batch size divides 8, so up to 8 devices work too.
TINY_OVERRIDES = (
    "--config.num_train_steps=4",
    "--config.dataset.synthetic_num_train=16",
    "--config.dataset.synthetic_num_test=8",
    "--config.batch_size=8",
    "--config.eval_batch_size=8",
    "--config.log_every_steps=2",
    "--config.progress_bar=False",
    "--config.init.synthetic_clip_steps=0",  # A random CLIP: no pretraining.
    # A random CLIP has no crop score worth reading (and the fusion would
    # compile one more CLIP pass per eval); test_clip_pair_scores tests it.
    "--config.inference.clip_pair_fusion=0",
)


def demo_command(workdir: str, mode: str = "train",
                 overrides: Sequence[str] = ()) -> List[str]:
  """The command line of a tiny demo run (later overrides win)."""
  return ([sys.executable, "-m", "ki2hoi_jax.main",
           "--config=configs/demo.py", f"--workdir={workdir}",
           f"--config.mode={mode}"] + list(TINY_OVERRIDES) + list(overrides))


def make_demo_workdir(workdir: str, mode: str = "train",
                      overrides: Sequence[str] = (),
                      timeout: float = 600.0) -> str:
  """Runs the tiny demo into `workdir` and returns its absolute path.

  Args:
    workdir: run folder (created).
    mode: `config.mode` ('train', 'all', ...).
    overrides: more `--config.x=y` flags.
    timeout: seconds before the run is killed.

  Raises:
    RuntimeError: the run failed (the message ends with its output).
  """
  workdir = os.path.abspath(workdir)
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  proc = subprocess.run(demo_command(workdir, mode, overrides), cwd=REPO_ROOT,
                        env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=timeout,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"demo run failed (exit {proc.returncode}):\n"
                       f"{proc.stdout[-6000:]}")
  return workdir


def random_variables(shapes, seed=0):
  """Random values for a variables tree of ShapeDtypeStructs."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if name.endswith(("running_var", "/var", "/scale")) or (
        name.startswith("frozen_bn") and name.endswith("weight")):
      return np.ones(s.shape, s.dtype)
    if name.endswith(("running_mean", "/mean")) or name.startswith(
        "frozen_bn"):
      return np.zeros(s.shape, s.dtype)
    return (rng.standard_normal(s.shape) * 0.1).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)
