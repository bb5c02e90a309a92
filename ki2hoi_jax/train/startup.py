"""What runs once before the first step: the compilation cache and `init`.

* `enable_compilation_cache(config, workdir)`: JAX's persistent compilation
  cache in `<workdir>/jax_cache` (`config.compilation_cache`), so that a
  resumed run, `--config.mode=eval` after training, or a second run in the
  same workdir loads the parameter init, CLIP text tower and eval step from
  disk instead of compiling them again. JAX does not write programs that
  call back into Python to the cache: the train step (host Hungarian
  matching through `jax.pure_callback`) compiles in every process.
* `init_variables(model, key, *inputs)`: `model.init` under `jax.jit`.
  Tracing at the small `ki2hoi.dummy_inputs` size costs about a second and
  XLA drops the forward pass (only parameter and state initialisers reach the
  compiled program); what costs is compiling the random initialisers of
  every parameter (800 of them in the paper config). They are compiled with
  LLVM at -O1 instead of -O3: the same HLO, no fast-math, so the same bits
  (tests/test_startup.py compares it with a plain `jax.jit(model.init)`),
  in about 40 % less compile time.
"""

import os
from typing import Any, Optional

import jax
from jax.experimental.compilation_cache import compilation_cache

CACHE_DIR = "jax_cache"  # Under the workdir.
# Programs that compile faster than this are not written (tiny eager ops).
MIN_COMPILE_TIME_SECS = 0.1
# LLVM optimisation level of the one-off init program (XLA's default: 3).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


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
