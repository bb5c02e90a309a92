"""Tiny demo workdirs for the slow end-to-end tests, and random model weights.

`make_demo_workdir` runs `python -m ki2hoi_jax.main --config=configs/demo.py`
in a subprocess (its own JAX, one CPU device unless XLA_FLAGS says otherwise)
with `TINY_OVERRIDES`: 16 synthetic training and 8 test images, 4 training
steps. Mode 'train' takes about 70 s on 2 CPU cores and leaves:

  config.json, checkpoints/4, checkpoints_best/4, metrics.jsonl,
  eval/step_4/{metrics.json, predictions.json},
  synthetic_hico_det_compositional/, tfds/

Mode 'all' also re-evaluates (about +40 s) and writes predictions/ (+15 s).
A module-scoped fixture can share one workdir between tests:

  @pytest.fixture(scope="module")
  def demo_workdir(tmp_path_factory):
    return demo_utils.make_demo_workdir(str(tmp_path_factory.mktemp("demo")))

`TINY_MODEL` is the tests' tiny model: the fields of configs/demo.py it
shrinks (one decoder layer of each kind, one CLIP layer per tower, 4 queries
and 4 pairs). `tiny_config` is configs/demo.py with them (and a test's own
overrides) applied in process; `tiny_flags` writes them as `--config.x=y`.

`random_variables` fills a variables tree of ShapeDtypeStructs with small
random weights (unit norm scales and variances), for checkpoints of an
untrained model.
"""

import os
import subprocess
import sys
from typing import Any, List, Mapping, Optional, Sequence

import jax
import ml_collections
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
    "--config.init.synthetic_detector_steps=0",  # A random detector too.
    # A random CLIP has no crop score worth reading (and the fusion would
    # compile one more CLIP pass per eval); test_clip_pair_scores tests it.
    "--config.inference.clip_pair_fusion=0",
)


# The tests' tiny model: dotted fields of configs/demo.py and their values.
TINY_MODEL = {
    "model.instance_decoder_layers": 1,
    "model.interaction_decoder_layers": 1,
    "model.clip.vision_layers": 1,
    "model.clip.text_layers": 1,
    "model.num_queries": 4,
    "dataset.max_pairs": 4,
}


def tiny_config(overrides: Optional[Mapping[str, Any]] = None
                ) -> ml_collections.ConfigDict:
  """configs/demo.py with `TINY_MODEL`, then `overrides` (dotted fields).

  Raises:
    KeyError: an override names a field configs/demo.py does not have.
  """
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config().lock()  # A misspelt field is an error.
  config.update_from_flattened_dict({**TINY_MODEL, **(overrides or {})})
  return config.unlock()


def tiny_flags(overrides: Optional[Mapping[str, Any]] = None) -> List[str]:
  """`TINY_MODEL` and `overrides` as `--config.field=value` flags."""
  return [f"--config.{k}={v}"
          for k, v in {**TINY_MODEL, **(overrides or {})}.items()]


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
