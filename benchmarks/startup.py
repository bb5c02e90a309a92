r"""Seconds from a fresh process to its first train step, cold and warm cache.

Runs, in a new subprocess each, the trainer's start-up path on random data of
a config's shapes: `run_setup.build_setup` (CLIP text embeddings, `init`,
optimizer state), the pmapped train step's first call (compile + run) and a
second call (run only), with the persistent compilation cache
(train/startup.py) in a temporary folder: first empty (cold), then filled by
the first process (warm). Prints one line per process and a table:

  python benchmarks/startup.py                      # paper 640x640, batch 2
  python benchmarks/startup.py --config demo
  python benchmarks/startup.py --config paper --image_hw 800,1088

Columns: `imports` (jax, flax, tensorflow, the package), `setup`
(build_setup), `first step` (compile + run of step 1), `compile` (first step
minus the second), `to first step` (process start to the end of step 1).
Warm, the train step's two programs load from the cache (the host
matching runs between them, train/train_step.py); what is left is tracing.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

_START = time.perf_counter()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from ki2hoi_jax import cli
# pylint: enable=g-import-not-at-top,wrong-import-position

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_HW = {"demo": (256, 256), "paper": (640, 640)}


def child(name: str, cache_dir: str, image_hw, per_device: int) -> dict:
  """The start-up of one process; returns its phase times in seconds."""
  # pylint: disable=g-import-not-at-top
  import jax
  from ki2hoi_jax.train import startup
  from ki2hoi_jax.train import run_setup
  from ki2hoi_jax.train import train_step as ts
  import step_setup
  # pylint: enable=g-import-not-at-top
  t_imports = time.perf_counter() - _START
  config = step_setup.load_config(
      name, [f"compilation_cache={bool(cache_dir)}"])
  startup.enable_compilation_cache(config, cache_dir or ".")
  t0 = time.perf_counter()
  setup = run_setup.build_setup(config, steps_per_epoch=1000)
  state = ts.replicate(setup.state)
  t_setup = time.perf_counter() - t0
  p_step, batch, _ = step_setup.train_step_and_batch(
      config, setup, jax.local_device_count(), per_device, image_hw)
  times = []
  for _ in range(2):
    t0 = time.perf_counter()
    state, metrics = p_step(state, batch, setup.rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
    if not times[1:]:
      t_first = time.perf_counter() - _START
  return {"imports": t_imports, "setup": t_setup, "first_step": times[0],
          "compile": times[0] - times[1], "second_step": times[1],
          "to_first_step": t_first}


_COLUMNS = ("imports", "setup", "first_step", "compile", "second_step",
            "to_first_step")


def run(names, image_hw=None, per_device: int = 2) -> list:
  """Cold then warm process per config; returns the rows (dicts)."""
  rows = []
  for name in names:
    hw = tuple(image_hw or _DEFAULT_HW[name])
    with tempfile.TemporaryDirectory(prefix="ki2hoi_startup_") as cache:
      for cache_state in ("cold", "warm"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child",
               "--config", name, "--cache_dir", cache,
               "--image_hw", f"{hw[0]},{hw[1]}",
               "--per_device_batch", str(per_device)]
        out = subprocess.run(cmd, capture_output=True, text=True,
                             check=False, cwd=_REPO)
        lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode or not lines:
          raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        row = {"config": name, "cache": cache_state,
               "image": f"{hw[0]}x{hw[1]}", "batch": per_device,
               **json.loads(lines[-1][len("RESULT "):])}
        print(f"[{name} {cache_state}] " + ", ".join(
            f"{k} {row[k]:.1f} s" for k in _COLUMNS), flush=True)
        rows.append(row)
  return rows


def format_table(rows) -> str:
  head = ("config", "cache", "image", "batch") + _COLUMNS
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    lines.append("| " + " | ".join(
        [str(r[k]) for k in head[:4]] + [f"{r[k]:.1f}" for k in _COLUMNS])
                 + " |")
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_enum("config", "paper", ("demo", "paper", "both"), "Config.",
                    flag_values=flag_values)
  flags.DEFINE_string("image_hw", "", "H,W of the padded images (paper: "
                      "640,640; demo: 256,256, the demo loop's bucket).",
                      flag_values=flag_values)
  flags.DEFINE_integer("per_device_batch", 2, "Images per device.",
                       flag_values=flag_values)
  flags.DEFINE_string("cache_dir", "", "Internal: the child's compilation "
                      "cache.", flag_values=flag_values)
  flags.DEFINE_bool("child", False, "Internal: run one start-up and print "
                    "its times.", flag_values=flag_values)


def main(argv) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  hw = (tuple(int(x) for x in args.image_hw.split(",")) if args.image_hw
        else None)
  if args.child:
    print("RESULT " + json.dumps(child(args.config, args.cache_dir, hw,
                                       args.per_device_batch)), flush=True)
    return 0
  names = ("demo", "paper") if args.config == "both" else (args.config,)
  rows = run(names, hw, args.per_device_batch)
  print(f"load average {os.getloadavg()[0]:.1f} (2-core machine: compile "
        "times scale with it)")
  print(format_table(rows))
  return 0


if __name__ == "__main__":
  cli.run(main)
