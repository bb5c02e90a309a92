"""A run's one start-up, and what runs once before its first step.

* `started(config, workdir)`: the one start-up path of every run (`main.run`
  enters it once for all the modes of a run; tests and notebooks that call
  `trainer.train_and_evaluate` or `trainer.evaluate` directly enter it around
  them). In this order:

  1. `validation.validate(config)`: a value the code cannot use stops here;
  2. `jax.distributed.initialize` when `config.distributed`
     (`maybe_initialize_distributed`);
  3. the workdir (created), and its lock (`checkpoints.workdir_lock`,
     process 0) for every mode but 'predict', which only reads checkpoints;
  4. a config that contradicts `<workdir>/config.json` while the workdir
     holds checkpoints stops with one `ConfigError` line naming the fields
     (`check_workdir_config`);
  5. JAX's persistent compilation cache in the workdir
     (`enable_compilation_cache`).

  A run refused in 3 or 4 leaves the workdir as it was (but for an empty
  `.lock`) and JAX's compilation cache settings as they were.
* `enable_compilation_cache(config, workdir)`: JAX's persistent compilation
  cache in `<workdir>/jax_cache` (`config.compilation_cache`), so that a
  resumed run, `--config.mode=eval` after training, or a second run in the
  same workdir loads the parameter init, CLIP text tower and eval step from
  disk instead of compiling them again. The train step's two programs are
  cached too (the host matching runs between them, not as a callback, which
  JAX would never write to the cache), and so are the text tower's outputs
  (`clip/text_embeddings.py`, `<cache>/text_tower/`).
* `init_variables(model, key, *inputs)`: `model.init` under `jax.jit`.
  Tracing at the small `ki2hoi.dummy_inputs` size costs about a second and
  XLA drops the forward pass (only parameter and state initialisers reach the
  compiled program); what costs is compiling the random initialisers of
  every parameter (800 of them in the paper config). They are compiled with
  LLVM at -O1 instead of -O3: the same HLO, no fast-math, so the same bits
  (tests/test_startup.py compares it with a plain `jax.jit(model.init)`),
  in about 40 % less compile time.
"""

import contextlib
import json
import os
from typing import Any, Iterator, Optional

from absl import logging
import jax
from jax.experimental.compilation_cache import compilation_cache

from ki2hoi_jax.checkpoints import restore
from ki2hoi_jax.checkpoints import workdir_lock
from ki2hoi_jax.config_lib import saved
from ki2hoi_jax.config_lib import validation

CACHE_DIR = "jax_cache"  # Under the workdir.
# Programs that compile faster than this are not written (tiny eager ops).
MIN_COMPILE_TIME_SECS = 0.1
# LLVM optimisation level of the one-off init program (XLA's default: 3).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@contextlib.contextmanager
def started(config, workdir: str) -> Iterator[None]:
  """Starts a run of `config.mode` in `workdir`; holds its lock while inside.

    with startup.started(config, workdir):
      trainer.train_and_evaluate(config, workdir)

  Args:
    config: the run config; `mode` 'predict' takes no lock.
    workdir: the run folder (created).

  Raises:
    ConfigError: a field value the code cannot use, or a config that
      contradicts the workdir's saved one.
    WorkdirLockedError: another run (or an enclosing `started` of this
      process) holds `workdir`.
  """
  validation.validate(config)
  maybe_initialize_distributed(config)  # The lock is process 0's.
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  os.makedirs(workdir, exist_ok=True)
  lock = (contextlib.nullcontext() if config.mode == "predict"
          else workdir_lock.hold(workdir, config.mode))
  with lock:
    check_workdir_config(config, workdir)
    enable_compilation_cache(config, workdir)  # Every mode, predict too.
    yield


def maybe_initialize_distributed(config) -> None:
  """`jax.distributed.initialize` from the config (or the environment)."""
  if not config.distributed or jax.distributed.is_initialized():
    return
  kwargs = {}
  if config.coordinator_address:
    kwargs["coordinator_address"] = config.coordinator_address
  if config.num_processes > 0:
    kwargs["num_processes"] = int(config.num_processes)
  if config.process_id >= 0:
    kwargs["process_id"] = int(config.process_id)
  jax.distributed.initialize(**kwargs)


def check_workdir_config(config, workdir: str) -> None:
  """Raises ConfigError if `config` contradicts the workdir's checkpoints.

  Compares with `<workdir>/config.json` (what the last training run of the
  workdir used) when the workdir holds a checkpoint; a workdir without one
  takes any config (training starts from step 0 and rewrites config.json).
  `saved.check_saved_config` says which fields must match.
  """
  path = os.path.join(os.path.abspath(workdir), "config.json")
  if not os.path.isfile(path):
    return
  try:
    restore.find_checkpoint(workdir)
  except FileNotFoundError:
    return
  with open(path) as f:
    saved.check_saved_config(config, json.load(f), path)


def enable_compilation_cache(config, workdir: str) -> Optional[str]:
  """Points JAX's persistent compilation cache at `<workdir>/jax_cache`.

  A `JAX_COMPILATION_CACHE_DIR` set in the environment wins (one cache shared
  by several workdirs).

  Args:
    config: the run config (`compilation_cache`: False leaves JAX as is).
    workdir: the run folder.

  Returns:
    The cache folder, or None when the cache is off.
  """
  if not config.compilation_cache:
    return None
  path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
      os.path.abspath(workdir), CACHE_DIR)
  if jax.config.values["jax_compilation_cache_dir"] != path:
    compilation_cache.set_cache_dir(path)
    compilation_cache.reset_cache()  # A cache opened earlier in this process.
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    MIN_COMPILE_TIME_SECS)
  return path


def init_variables(model, key: jax.Array, *inputs, **kwargs) -> Any:
  """Host copy of `model.init(key, *inputs, **kwargs)` (one compiled program).

  Args:
    model: a linen module.
    key: PRNG key of the parameter initialisers.
    *inputs: example inputs (shapes only matter; `ki2hoi.dummy_inputs`).
    **kwargs: keyword arguments of the module call (e.g. `train=False`).

  Returns:
    The variables as numpy arrays, bit-identical to
    `jax.jit(lambda k: model.init(k, *inputs, **kwargs))(key)`.
  """
  compiled = jax.jit(lambda k: model.init(k, *inputs, **kwargs)).lower(
      key).compile(compiler_options=INIT_COMPILER_OPTIONS)
  return jax.device_get(compiled(key))
