"""Test set-up: 8 fake CPU devices and TensorFlow kept off accelerators.

The device count must be set before JAX initialises its backend, so this runs
at import time of the test session.
"""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Parsed official .mat files (evaluation/hico_official_files.py) are cached
# in the session's own folder, also for the subprocesses of the tests.
os.environ["KI2HOI_CACHE_DIR"] = tempfile.mkdtemp(prefix="ki2hoi_cache_")

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
  """A small synthetic HICO-format dataset shared by the whole session."""
  from ki2hoi_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("synthetic_hico")
  synthetic.generate(str(root), num_train=24, num_test=8, seed=0,
                     image_size=128)
  return str(root)


@pytest.fixture(scope="module")
def fast_compile():
  """XLA optimisations off for a module whose tests are compile-bound on CPU.

  Opt in with `pytestmark = pytest.mark.usefixtures("fast_compile")`.
  """
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
