"""Start-up path (train/startup.py) and the GPU benchmark's table (CPU, tiny).

* `init_variables` (init compiled at LLVM -O1) gives the same bits as the
  plain `jax.jit(model.init)` of before, for a tiny demo model (every kind of
  initialiser the paper model uses: convolutions, dense, embeddings,
  constants, anchors, frozen and batch-norm statistics).
* `enable_compilation_cache` points JAX (and the text tower's output cache)
  at `<workdir>/jax_cache`, which a compiled program then fills;
  `compilation_cache=False` leaves JAX alone.
* benchmarks/gpu.py in tiny mode prints a table whose columns and values
  parse.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import demo_utils  # tests/ is on sys.path (pytest rootdir conftest).
from configs import demo
from ki2hoi_jax.clip import text_embeddings
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.train import startup

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The columns of benchmarks/gpu.py's table.
_GPU_COLUMNS = ("config", "dtype", "batch", "image", "train_img_s",
                "infer_img_s", "step_ms", "train_compile_s",
                "infer_compile_s", "peak_gib")


@pytest.mark.slow  # Two init compiles: about 100 s on the busy 2-core machine.
def test_init_variables_is_bit_identical_to_plain_jit_init():
  config = demo_utils.tiny_config()
  model = ki2hoi.build_model(config, axis_name="batch")
  image, mask, clip_image, text = ki2hoi.dummy_inputs(config)
  key = jax.random.PRNGKey(3)
  got = startup.init_variables(model, key, image, mask, clip_image, text,
                               train=False)
  want = jax.device_get(jax.jit(lambda k: model.init(
      k, image, mask, clip_image, text, train=False))(key))
  got_flat = jax.tree_util.tree_leaves_with_path(got)
  want_flat = jax.tree_util.tree_leaves_with_path(want)
  assert [p for p, _ in got_flat] == [p for p, _ in want_flat]
  assert len(got_flat) > 100
  for (path, a), (_, b) in zip(got_flat, want_flat):
    assert a.dtype == b.dtype and a.shape == b.shape, path
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), path


def test_compilation_cache_in_workdir(tmp_path, monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  before = jax.config.values["jax_compilation_cache_dir"]
  config = demo.get_config()
  config.compilation_cache = False
  assert startup.enable_compilation_cache(config, str(tmp_path)) is None
  assert jax.config.values["jax_compilation_cache_dir"] == before
  config.compilation_cache = True
  min_time = jax.config.values["jax_persistent_cache_min_compile_time_secs"]
  try:
    path = startup.enable_compilation_cache(config, str(tmp_path))
    assert path == os.path.join(str(tmp_path), "jax_cache")
    assert jax.config.values["jax_compilation_cache_dir"] == path
    # The text tower's outputs are kept beside the programs.
    assert text_embeddings.cache_folder() == path
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.jit(lambda x: jnp.sin(x) * 3.0 + 0.25)(jnp.arange(7.0)).block_until_ready()
    assert os.listdir(path)  # The program was written.
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
    startup.compilation_cache.reset_cache()


@pytest.mark.slow  # Train and eval step compiles: about 140 s at load 8.
def test_gpu_benchmark_tiny_table_parses():
  """benchmarks/gpu.py, run as a script, prints its table with one row."""
  cmd = [sys.executable, os.path.join(_REPO, "benchmarks", "gpu.py"),
         "--config", "demo", "--batches", "8", "--dtypes", "float32",
         "--steps", "1", "--warmup", "1", "--image_hw", "64,64",
         "--in_process"] + [
             f"--set={k}={v}" for k, v in demo_utils.TINY_MODEL.items()]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_DISABLE_MOST_OPTIMIZATIONS="true")  # As `fast_compile`.
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        timeout=1200, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [line.split() for line in proc.stdout.splitlines()]
  start = lines.index(list(_GPU_COLUMNS))
  rows = [dict(zip(_GPU_COLUMNS, line)) for line in lines[start + 1:]]
  assert len(rows) == 1
  row = rows[0]
  assert set(row) == set(_GPU_COLUMNS)
  assert (row["config"], row["dtype"], int(row["batch"]), row["image"]) == (
      "demo", "float32", 8, "64x64")
  for column in ("train_img_s", "infer_img_s", "step_ms"):
    value = float(row[column])
    assert np.isfinite(value) and value > 0, column
  peak = float(row["peak_gib"])
  assert np.isnan(peak) or peak > 0  # nan on CPU.
