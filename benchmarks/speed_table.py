r"""The README's speed table: every figure measured in one run, on one machine.

  python benchmarks/speed_table.py                 # About 15 minutes on 2 cores.
  python benchmarks/speed_table.py --render_into README.md
  python benchmarks/speed_table.py --render --render_into README.md

One run measures, on random weights and inputs (the speed does not depend
on their values), in this order:

* the paper-config train step at 640x640 and at 800x1200, batch 2: the
  step and a PyTorch ResNet-50 forward + backward with DETR's freezing (the
  floor, benchmarks/torch_resnet.py) called alternately in one process
  (`train_step.step_and_floor`); median, fastest and slowest call, the
  median over the fastest (steadiness) and the step over the floor;
* inference at 640x640, batch 1: the pmapped eval step per image against a
  PyTorch ResNet-50 forward (`train_step.inference_and_floor`);
* seconds from a fresh process to the end of its first train step, cold
  and warm compilation cache (`startup.py`'s two subprocesses).

It writes the result file `--results_dir/<date>_<commit>.json` (the
figures, every call's time, the machine, the git commit) and prints the
table; `--render_into FILE` also sets the block between
`<!-- rendered from results/speed: begin -->` and its `end` comment in
FILE. `--render` reads the newest result file instead of measuring.
Targets (issue 32): step / floor <= 1.4, median / fastest <= 1.1,
inference no slower than 0.70 s per image, start-up <= 30 s cold and
<= 10 s warm.
"""

import datetime
import glob
import json
import os
import platform
import subprocess
from typing import Any, Dict, List

from absl import flags
import numpy as np

from ki2hoi_jax import cli
from ki2hoi_jax.analysis import table_results

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RESULTS = os.path.join(_REPO, "benchmarks", "results", "speed")
TRAIN_SIZES = ((640, 640), (800, 1200))
INFERENCE_SIZE = (640, 640)
TRAIN_BATCH, INFERENCE_BATCH = 2, 1


def machine() -> Dict[str, Any]:
  """CPU model, cores, memory, OS and library versions of this machine."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jaxlib
  import torch
  # pylint: enable=g-import-not-at-top
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f
                 if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  return {"cpu": cpu, "cores": os.cpu_count(),
          "memory_gib": round(memory / 2 ** 30, 1),
          "system": platform.platform(), "python": platform.python_version(),
          "jax": jax.__version__, "jaxlib": jaxlib.__version__,
          "torch": torch.__version__,
          "devices": f"{jax.local_device_count()} x "
                     f"{jax.devices()[0].platform}"}


def _summary(times: List[float], floor_times: List[float]) -> Dict[str, Any]:
  median, floor = float(np.median(times)), float(np.median(floor_times))
  return {"median_s": median, "min_s": min(times), "max_s": max(times),
          "median_over_min": median / min(times), "floor_s": floor,
          "over_floor": median / floor, "times": times,
          "floor_times": floor_times}


def measure(num_steps: int, warmup: int) -> Dict[str, Any]:
  """Runs every measurement of the table; returns the result (a dict)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import startup
  import step_setup
  import train_step
  # pylint: enable=g-import-not-at-top
  result = {"machine": machine(), "num_steps": num_steps, "warmup": warmup,
            "date": datetime.date.today().isoformat(),
            "commit": table_results.git_commit(_REPO),
            "load_average_at_start": os.getloadavg()[0], "train": {}}
  for hw in TRAIN_SIZES:
    setup = step_setup.build("paper", TRAIN_BATCH, hw)
    whole = train_step.step_and_floor(setup, TRAIN_BATCH, num_steps, warmup)
    result["train"][f"{hw[0]}x{hw[1]}"] = _summary(whole["times"],
                                                   whole["floor_times"])
    print(f"train {hw}: {result['train'][f'{hw[0]}x{hw[1]}']['median_s']:.2f}"
          " s", flush=True)
    del setup
    jax.clear_caches()
  times, floor_times = train_step.inference_and_floor(
      INFERENCE_SIZE, INFERENCE_BATCH, num_steps, warmup)
  result["inference"] = _summary(times, floor_times)
  jax.clear_caches()
  rows = startup.run(["paper"], INFERENCE_SIZE, TRAIN_BATCH)
  result["startup"] = {r["cache"]: r["to_first_step"] for r in rows}
  result["startup_rows"] = rows
  result["load_average_at_end"] = os.getloadavg()[0]
  return result


def format_table(result: Dict[str, Any]) -> str:
  """The markdown table (and the line naming the machine) of a result."""
  m = result["machine"]
  train = [result["train"][f"{h}x{w}"] for h, w in TRAIN_SIZES]
  inf, start = result["inference"], result["startup"]
  sizes = [f"{h}x{w}" for h, w in TRAIN_SIZES]

  def cells(fn) -> str:
    return " | ".join(fn(t) for t in train)

  lines = [
      f"Measured {result['date']} at commit {result['commit'][:7]} by "
      f"`python benchmarks/speed_table.py` on {m['cpu']} ({m['cores']} "
      f"cores, {m['memory_gib']} GiB; {m['devices']}; jax {m['jax']}, "
      f"PyTorch {m['torch']}), {result['num_steps']} timed calls each:",
      "",
      f"| paper config | {' | '.join(sizes)} |",
      "|---|---|---|",
      f"| train step, batch {TRAIN_BATCH}: median (fastest-slowest) | "
      + cells(lambda t: f"{t['median_s']:.2f} s ({t['min_s']:.2f}-"
              f"{t['max_s']:.2f})") + " |",
      "| steadiness: median / fastest (target <= 1.1) | "
      + cells(lambda t: f"{t['median_over_min']:.2f}") + " |",
      "| PyTorch ResNet-50 fwd+bwd, same run (floor) | "
      + cells(lambda t: f"{t['floor_s']:.2f} s") + " |",
      "| **step / floor** (target <= 1.4) | "
      + cells(lambda t: f"**{t['over_floor']:.2f}x**") + " |",
      f"| inference per image, batch {INFERENCE_BATCH} (PyTorch ResNet-50 "
      f"forward) | {inf['median_s'] / INFERENCE_BATCH:.2f} s "
      f"({inf['floor_s'] / INFERENCE_BATCH:.2f} s) | |",
      f"| process start to first train step: cold / warm cache | "
      f"{start['cold']:.0f} s / {start['warm']:.0f} s | |",
  ]
  return "\n".join(lines)


def newest_result(results_dir: str) -> Dict[str, Any]:
  """The newest result file of `results_dir` (by name: date, then commit)."""
  paths = sorted(glob.glob(os.path.join(results_dir, "*.json")))
  if not paths:
    raise FileNotFoundError(f"no result file in {results_dir}")
  with open(paths[-1]) as f:
    return json.load(f)


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_integer("num_steps", 5, "Timed calls of each measurement.",
                       flag_values=flag_values)
  flags.DEFINE_integer("warmup", 2, "Untimed calls first (the first "
                       "compiles).", flag_values=flag_values)
  flags.DEFINE_string("results_dir", _RESULTS, "Folder of the result files.",
                      flag_values=flag_values)
  flags.DEFINE_bool("render", False, "Print the newest result file's table; "
                    "measure nothing.", flag_values=flag_values)
  flags.DEFINE_string("render_into", "", "A markdown file whose 'rendered "
                      "from results/speed' block gets the table.",
                      flag_values=flag_values)


def main(argv) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  if args.render:
    result = newest_result(args.results_dir)
  else:
    result = measure(args.num_steps, max(1, args.warmup))
    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir,
                        f"{result['date']}_{result['commit'][:7]}.json")
    with open(path, "w") as f:
      json.dump(result, f, indent=1)
    print(f"Wrote {path}")
  table = format_table(result)
  print(table)
  if args.render_into:
    table_results.render_into(args.render_into, args.results_dir, table)
  return 0


if __name__ == "__main__":
  cli.run(main)
