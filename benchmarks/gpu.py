r"""Train and inference images/s, peak device memory and compile time (table).

The Python part of benchmarks/gpu.sh. One row per (dtype, global batch); each
dtype runs in a fresh subprocess (its own peak memory), its batch sizes in
increasing order on one model state:

  python benchmarks/gpu.py                                  # paper, 8 and 16, fp32 and bf16
  python benchmarks/gpu.py --config demo --batches 8 --dtypes float32 --steps 2

Per row: the pmapped train step (`run_setup.build_setup` state, random batch of
`step_setup.random_batch`, per-device batch = global batch / local
devices) is compiled and run `--warmup` times, then timed over `--steps`; the
eval step (model forward, score fusion and on-device top-k) likewise. `dtype`
sets `model.dtype` and `model.frozen_dtype`. Columns:

  config, dtype, batch, image, train_img_s, infer_img_s, step_ms,
  train_compile_s, infer_compile_s, peak_gib

`peak_gib` is `device.memory_stats()['peak_bytes_in_use']` of device 0 after
the row (the process's peak so far: the row's own, since batches grow; nan
where the backend keeps no statistics, e.g. CPU); the compile columns are the
first call minus a timed one. `--set path=value` overrides a config field
as `--config.path=value` would (tests shrink the model with it).
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time

from absl import flags

from ki2hoi_jax import cli

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COLUMNS = ("config", "dtype", "batch", "image", "train_img_s", "infer_img_s",
           "step_ms", "train_compile_s", "infer_compile_s", "peak_gib")
_DEFAULT_HW = {"demo": (256, 256), "paper": (800, 1088)}


def _timed(fn, warmup: int, steps: int):
  """(first call seconds, mean seconds of `steps` calls after `warmup`)."""
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  for _ in range(max(0, warmup - 1)):
    jax.block_until_ready(fn())
  t0 = time.perf_counter()
  for _ in range(steps):
    out = fn()
  jax.block_until_ready(out)
  return first, (time.perf_counter() - t0) / steps


def measure(name: str, dtype: str, batches, image_hw, steps: int,
            warmup: int, overrides=()):
  """Yields the rows of `dtype`, one per global batch size, in this process."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from ki2hoi_jax.evaluation import postprocess
  from ki2hoi_jax.train import run_setup
  from ki2hoi_jax.train import train_step as ts
  import step_setup
  # pylint: enable=g-import-not-at-top
  config = step_setup.load_config(
      name, [f"model.dtype={dtype}", f"model.frozen_dtype={dtype}",
             *overrides])
  devices = jax.local_device_count()
  setup = run_setup.build_setup(config, steps_per_epoch=1000)
  p_eval = ts.make_p_eval_step(
      flax_model=setup.model,
      table=postprocess.candidate_table(config.model.interaction_space),
      score_fusion=config.inference.score_fusion,
      top_k=int(config.inference.top_k))
  text = jnp.asarray(setup.eval_text)
  holder = {"state": ts.replicate(setup.state)}
  for global_batch in sorted(batches):
    if global_batch % devices:
      raise ValueError(f"batch {global_batch} is not a multiple of the "
                       f"{devices} local devices")
    p_train, train_batch, batch = step_setup.train_step_and_batch(
        config, setup, devices, global_batch // devices, image_hw)
    eval_batch = {k: batch[k] for k in ("image", "mask", "clip_image")}

    def train(train_batch=train_batch):
      holder["state"], metrics = p_train(holder["state"], train_batch,
                                         setup.rng)
      return metrics

    train_first, train_step = _timed(train, warmup, steps)
    infer_first, infer_step = _timed(
        lambda eval_batch=eval_batch: p_eval(holder["state"], eval_batch,
                                             text), warmup, steps)
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    yield {"config": name, "dtype": dtype, "batch": global_batch,
           "image": f"{image_hw[0]}x{image_hw[1]}",
           "train_img_s": global_batch / train_step,
           "infer_img_s": global_batch / infer_step,
           "step_ms": 1e3 * train_step,
           "train_compile_s": train_first - train_step,
           "infer_compile_s": infer_first - infer_step,
           "peak_gib": float("nan") if peak is None else peak / 2**30}


def format_table(rows) -> str:
  """Fixed-width table: a header line, then one line per row."""
  def cell(v):
    return f"{v:.2f}" if isinstance(v, float) else str(v)
  table = [COLUMNS] + [tuple(cell(r[c]) for c in COLUMNS) for r in rows]
  widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
  return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths))
                   for line in table)


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_enum("config", "paper", ("demo", "paper"), "Config.",
                    flag_values=flag_values)
  flags.DEFINE_string("batches", "8,16", "Global batch sizes.",
                      flag_values=flag_values)
  flags.DEFINE_string("dtypes", "float32,bfloat16",
                      "model.dtype and model.frozen_dtype values.",
                      flag_values=flag_values)
  flags.DEFINE_string("image_hw", "", "H,W of the padded images (paper "
                      "800,1088; demo 256,256).", flag_values=flag_values)
  flags.DEFINE_integer("steps", 10, "Timed calls.", flag_values=flag_values)
  flags.DEFINE_integer("warmup", 2, "Untimed calls (the first compiles).",
                       flag_values=flag_values)
  flags.DEFINE_multi_string("set", [], "Config override PATH=VALUE, as "
                            "--config.PATH=VALUE (repeat for more).",
                            flag_values=flag_values)
  flags.DEFINE_bool("in_process", False, "All rows in this process (peak "
                    "memory is then the maximum so far).",
                    flag_values=flag_values)
  flags.DEFINE_string("row", "", "Internal: the rows of this dtype only, "
                      "printed as JSON (one subprocess per dtype).",
                      flag_values=flag_values)


def main(argv) -> int:
  """Command-line program (argv[0]: its name); 0 when every row ran."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  hw = (tuple(int(x) for x in args.image_hw.split(",")) if args.image_hw
        else _DEFAULT_HW[args.config])
  batches = [int(b) for b in args.batches.split(",")]
  dtypes = args.dtypes.split(",")
  if args.row:
    for row in measure(args.config, args.row, batches, hw, args.steps,
                       args.warmup, args.set):
      print("ROW " + json.dumps(row), flush=True)
    return 0
  rows = []
  with tempfile.TemporaryDirectory(prefix="ki2hoi_gpu_cache_") as cache:
    # Later processes load the init and text-tower programs from the cache.
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.1")
    for dtype in dtypes:
      t0 = time.perf_counter()
      if args.in_process:
        new = list(measure(args.config, dtype, batches, hw, args.steps,
                           args.warmup, args.set))
      else:
        cmd = [sys.executable, os.path.abspath(__file__), "--row", dtype,
               "--config", args.config, "--batches", args.batches,
               "--image_hw", f"{hw[0]},{hw[1]}", "--steps", str(args.steps),
               "--warmup", str(args.warmup)] + [f"--set={s}" for s in args.set]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                             cwd=_REPO, check=False)
        new = [json.loads(l[len("ROW "):]) for l in out.stdout.splitlines()
               if l.startswith("ROW ")]
        if out.returncode:
          print(f"{dtype} failed:\n{out.stderr[-3000:]}", file=sys.stderr,
                flush=True)
      rows += new
      for row in new:
        print(f"[{dtype} batch {row['batch']}] {row['train_img_s']:.1f} "
              f"train img/s, {row['infer_img_s']:.1f} infer img/s", flush=True)
      print(f"[{dtype}] {time.perf_counter() - t0:.0f} s", flush=True)
  print(format_table(rows), flush=True)
  return 0 if len(rows) == len(batches) * len(dtypes) and all(
      math.isfinite(r["train_img_s"]) for r in rows) else 1


if __name__ == "__main__":
  cli.run(main)
