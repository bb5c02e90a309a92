r"""Train and inference images/s, peak device memory and compile time (table).

The Python part of benchmarks/gpu.sh. One row per (dtype, global batch); each
dtype runs in a fresh subprocess (its own peak memory), its batch sizes in
increasing order on one model state:

  python benchmarks/gpu.py                                  # paper, 8 and 16, fp32 and bf16
  python benchmarks/gpu.py --config demo --batches 8 --dtypes float32 --steps 2

Per row: the pmapped train step (`trainer.build_setup` state, random batch of
`benchmarks/train_step.random_batch`, per-device batch = global batch / local
devices) is compiled and run `--warmup` times, then timed over `--steps`; the
eval step (model forward, score fusion and on-device top-k) likewise. `dtype`
sets `model.dtype` and `model.frozen_dtype`. Columns:

  config, dtype, batch, image, train_img_s, infer_img_s, step_ms,
  train_compile_s, infer_compile_s, peak_gib

`peak_gib` is `device.memory_stats()['peak_bytes_in_use']` of device 0 after
the row (the process's peak so far: the row's own, since batches grow; nan
where the backend keeps no statistics, e.g. CPU); the compile columns are the
first call minus a timed one. `--set path=value` overrides
config fields (tests shrink the model with it).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

COLUMNS = ("config", "dtype", "batch", "image", "train_img_s", "infer_img_s",
           "step_ms", "train_compile_s", "infer_compile_s", "peak_gib")
_DEFAULT_HW = {"demo": (256, 256), "paper": (800, 1088)}


def _override(config, assignment: str) -> None:
  path, value = assignment.split("=", 1)
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  try:
    parsed = json.loads(value)
  except ValueError:
    parsed = value  # A string.
  node[leaf] = tuple(parsed) if isinstance(parsed, list) else parsed


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


def train_step_and_batch(config, setup, num_devices: int, per_device: int,
                         image_hw):
  """The trainer's pmapped train step of `setup` and a random batch for it.

  Returns:
    (p_train_step, train batch [D, B, ...] of the step's keys, the full
    random batch).
  """
  # pylint: disable=g-import-not-at-top
  from benchmarks import train_step as bench
  from ki2hoi_jax.train import trainer
  from ki2hoi_jax.train import train_step as ts
  # pylint: enable=g-import-not-at-top
  p_train = ts.make_p_train_step(
      flax_model=setup.model, tx=setup.tx, labels=setup.labels,
      loss_config=config.loss, class_indices=setup.train_classes,
      interaction_space=config.model.interaction_space,
      schedules=setup.schedules,
      grad_accum_steps=int(config.optimizer.grad_accum_steps))
  label_key = ("hoi_labels" if config.model.interaction_space == "hoi"
               else "verb_labels")
  batch = bench.random_batch(config, num_devices, per_device, image_hw)
  keys = trainer._TRAIN_KEYS + (label_key,)  # pylint: disable=protected-access
  return p_train, {k: batch[k] for k in keys}, batch


def measure(name: str, dtype: str, batches, image_hw, steps: int,
            warmup: int, overrides=()):
  """Yields the rows of `dtype`, one per global batch size, in this process."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from benchmarks import train_step as bench
  from ki2hoi_jax.evaluation import postprocess
  from ki2hoi_jax.train import trainer
  from ki2hoi_jax.train import train_step as ts
  # pylint: enable=g-import-not-at-top
  config = bench._CONFIGS[name][0]()  # pylint: disable=protected-access
  config.model.dtype = config.model.frozen_dtype = dtype
  for assignment in overrides:
    _override(config, assignment)
  devices = jax.local_device_count()
  setup = trainer.build_setup(config, steps_per_epoch=1000)
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
    p_train, train_batch, batch = train_step_and_batch(
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


def parse_table(text: str) -> list:
  """Rows of a `format_table` text (numbers as floats; nan allowed)."""
  lines = [l.split() for l in text.strip().splitlines()]
  start = next(i for i, l in enumerate(lines) if tuple(l) == COLUMNS)
  rows = []
  for values in lines[start + 1:]:
    if len(values) != len(COLUMNS):
      break
    row = dict(zip(COLUMNS, values))
    for c in COLUMNS[4:]:
      row[c] = float(row[c])
    row["batch"] = int(row["batch"])
    rows.append(row)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", choices=("demo", "paper"), default="paper")
  parser.add_argument("--batches", default="8,16", help="global batch sizes")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--image_hw", default="",
                      help="H,W of the padded images (paper 800,1088; demo "
                      "256,256)")
  parser.add_argument("--steps", type=int, default=10, help="timed calls")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed calls (the first compiles)")
  parser.add_argument("--set", action="append", default=[],
                      metavar="PATH=VALUE", help="config override")
  parser.add_argument("--in_process", action="store_true",
                      help="all rows in this process (peak memory is then "
                      "the maximum so far)")
  parser.add_argument("--row", default="", help=argparse.SUPPRESS)  # A dtype.
  args = parser.parse_args(argv)
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
  sys.exit(main())
