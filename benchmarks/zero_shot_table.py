r"""Synthetic Table I: zero-shot mAP with a synthetic-knowledge or a random CLIP.

Trains and evaluates the demo-sized model (configs/demo.py) on every zero-shot
split of the paper's Table I (RF-UC, NF-UC, UC, UO, UV) and fully supervised,
each with (a) the synthetic CLIP of `ki2hoi_jax.clip.pretrain` and (b) a
random CLIP, over several seeds, and prints Full / Seen / Unseen mAP (mean and
spread over the seeds, held-out test images only) in the table's layout:

  python benchmarks/zero_shot_table.py --root /tmp/table1          # all of it
  python benchmarks/zero_shot_table.py --root /tmp/t --splits uv --seeds 0
  python benchmarks/zero_shot_table.py --root /tmp/t --epochs 10   # shorter

Every run is `python -m ki2hoi_jax.main --config=configs/demo.py` in a
subprocess with its own workdir `<root>/<split>_<clip>_seed<s>` (kept: a rerun
reuses finished runs, so an interrupted table resumes). The synthetic CLIP is
pretrained once into `<root>/clip/` (or pass `--clip_checkpoint`); its web
corpus and held-out crops come from renderer seed ranges disjoint from the
detector's train and test images (clip/pretrain.py). All variants get the same
budget (`--epochs`, the learning-rate drop at the same fraction).

With `--verb_queries both` (default) each trained model is also evaluated with
`model.verb_queries='all_classes'` wherever that changes the verb decoder's
queries (the training classes differ from the scored ones: UV in the verb
space), and the table prints both rows (issue 15, item 5).

With the demo's `inference.clip_pair_fusion` above 0 each model of a
zero-shot split is also evaluated with it at 0 (the detector's own scores),
and the table prints both (models/clip_pair_scores.py); `--fusions W ...`
picks the values instead (`--fusions 0.5`: the training run's evaluation
only).

`--tag NAME --overrides=--config.x=y [--overrides=...]` trains a variant
(workdirs `<split>_<clip>_NAME_seed<s>`), e.g. an ablation on the same
benchmark. The printed table and `<root>/table.json` hold every finished run
under `--root`.
Spread is half the range over the seeds, (max - min) / 2.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import demo
from ki2hoi_jax.evaluation import vocabulary
# pylint: enable=g-import-not-at-top,wrong-import-position

SPLITS = ("rf_uc", "nf_uc", "uc", "uo", "uv", "")
_SPLIT_NAMES = {"rf_uc": "RF-UC", "nf_uc": "NF-UC", "uc": "UC", "uo": "UO",
                "uv": "UV", "": "Fully supervised"}
CLIPS = ("synthetic", "random")
_COLUMNS = ("full", "seen", "unseen")


def _run(args: Sequence[str], log_path: str) -> None:
  """Runs `python -m ki2hoi_jax.main args` (output to log_path)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  with open(log_path, "a") as log:
    proc = subprocess.run(
        [sys.executable, "-m", "ki2hoi_jax.main", "--config=configs/demo.py",
         *args, "--config.progress_bar=False"],
        cwd=_REPO, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
  if proc.returncode:
    raise RuntimeError(f"run failed (exit {proc.returncode}); see {log_path}")


def _final_metrics(workdir: str) -> Dict[str, float]:
  """mAP (%) of the newest eval/step_<n>/metrics.json of a workdir."""
  eval_dir = os.path.join(workdir, "eval")
  steps = sorted(int(d.split("_")[1]) for d in os.listdir(eval_dir)
                 if d.startswith("step_"))
  with open(os.path.join(eval_dir, f"step_{steps[-1]}", "metrics.json")) as f:
    metrics = json.load(f)
  summary = metrics["summary"]
  out = {"step": steps[-1]}
  for column in _COLUMNS:
    if f"eval/mAP_{column}" in summary:
      out[column] = float(summary[f"eval/mAP_{column}"])
  return out


def queries_differ(split: str) -> bool:
  """True when the verb decoder's training-class queries differ from all."""
  config = demo.get_config()
  config.dataset.zero_shot_split = split
  prompts = vocabulary.closed_vocabulary(config).prompts
  return len(vocabulary.verb_query_prompts(config, prompts)) != len(prompts)


def evaluation_plan(split: str, verb_queries: str,
                    fusions: Optional[Sequence[float]], distinct_queries: bool,
                    demo_fusion: float) -> List[Tuple[str, float]]:
  """(model.verb_queries, inference.clip_pair_fusion) of each evaluation.

  The first is the training run's own. Each verb-query mode asked for
  (`verb_queries` 'both': training_classes then all_classes; one mode when
  `distinct_queries` is False, i.e. the two modes give the same queries) is
  evaluated at the first fusion, then the first mode at each further
  fusion. `fusions` None: the demo's and, when that is above 0, also 0 (the
  detector's own scores, the paper's pipeline). The fully supervised setting
  (`split` '') has no unseen classes to fuse: its first fusion only.
  """
  modes = ["training_classes", "all_classes"] if verb_queries == "both" else [
      verb_queries]
  if not distinct_queries:
    modes = modes[:1]
  if fusions is None:
    fusions = [demo_fusion, 0.0] if demo_fusion > 0 else [demo_fusion]
  if not split:
    fusions = fusions[:1]
  return [(m, fusions[0]) for m in modes] + [
      (modes[0], w) for w in fusions[1:]]


def train_and_evaluate(root: str, split: str, clip: str, seed: int,
                       clip_checkpoint: str, epochs: int, verb_queries: str,
                       tag: str = "", overrides: Sequence[str] = (),
                       fusions: Optional[Sequence[float]] = None
                       ) -> List[Dict]:
  """One trained model, evaluated with each requested verb-query mode.

  `fusions`: the `inference.clip_pair_fusion` values it is evaluated with in
  a zero-shot split (the first is the training run's own); default the
  demo's and, when that is above 0, also 0.
  """
  name = f"{split or 'full'}_{clip}{'_' + tag if tag else ''}_seed{seed}"
  workdir = os.path.join(root, name)
  log = workdir + ".log"
  overrides = [
      f"--workdir={workdir}", f"--config.seed={seed}",
      f"--config.dataset.zero_shot_split={split}",
      f"--config.init.clip_checkpoint="
      f"{clip_checkpoint if clip == 'synthetic' else ''}",
      # The demo config pretrains a synthetic CLIP when no checkpoint is
      # given: the random row must not.
      "--config.init.synthetic_clip_steps=0",
      f"--config.optimizer.num_epochs={epochs}",
      f"--config.optimizer.lr_drop_epoch={max(1, round(epochs * 5 / 6))}",
      "--config.eval_at_start=False", *overrides]
  evaluations = evaluation_plan(
      split, verb_queries, fusions, queries_differ(split),
      float(demo.get_config().inference.clip_pair_fusion))
  rows = []
  done = os.path.join(workdir, "table_rows.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  start = time.perf_counter()
  own_queries, own_fusion = evaluations[0]
  _run(overrides + ["--config.mode=train",
                    f"--config.model.verb_queries={own_queries}",
                    f"--config.inference.clip_pair_fusion={own_fusion}"],
       log)
  train_seconds = time.perf_counter() - start
  for i, (mode, w) in enumerate(evaluations):
    if i:
      # The best checkpoint: the only evaluated one, the last step's.
      _run(overrides + ["--config.mode=eval",
                        f"--config.model.verb_queries={mode}",
                        f"--config.inference.clip_pair_fusion={w}"], log)
    rows.append(dict(_final_metrics(workdir), split=split, clip=clip,
                     variant=tag, seed=seed, verb_queries=mode,
                     clip_pair_fusion=w, train_seconds=train_seconds))
  with open(done, "w") as f:
    json.dump(rows, f, indent=1)
  return rows


def _cell(values: List[float]) -> str:
  if not values:
    return "-"
  mean = sum(values) / len(values)
  spread = (max(values) - min(values)) / 2
  return f"{mean:5.2f} ± {spread:4.2f}"


def format_table(rows: List[Dict]) -> str:
  """Markdown rows: split, CLIP, verb queries, mAP mean ± spread."""
  lines = ["| setting | CLIP | variant | verb queries | CLIP crop fusion "
           "| Full | Seen | Unseen | seeds |",
           "|---|---|---|---|---|---|---|---|---|"]
  def key(r):
    return (r["split"], r["clip"], r.get("variant", ""), r["verb_queries"],
            r.get("clip_pair_fusion", 0.0))
  keys = sorted({key(r) for r in rows}, key=lambda k: (
      SPLITS.index(k[0]), CLIPS.index(k[1]), k[2], k[3], -k[4]))
  for k in keys:
    group = [r for r in rows if key(r) == k]
    cells = [_cell([r[c] for r in group if c in r]) for c in _COLUMNS]
    seeds = ",".join(str(r["seed"]) for r in group)
    split, clip, variant, mode, w = k
    lines.append(f"| {_SPLIT_NAMES[split]} | {clip} | {variant or 'default'} "
                 f"| {mode} | {w:g} | " + " | ".join(cells) + f" | {seeds} |")
  return "\n".join(lines)


def _ensure_clip(root: str, clip_checkpoint: Optional[str],
                 steps: int) -> str:
  if clip_checkpoint:
    return clip_checkpoint
  path = os.path.join(root, "clip", "synthetic_clip.msgpack")
  if not os.path.exists(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run([sys.executable, "-m", "ki2hoi_jax.clip.pretrain",
                    "--out", path, "--steps", str(steps)], cwd=_REPO,
                   check=True)
  return path


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--root", required=True,
                      help="folder of the runs (reused: finished runs are "
                      "read, not rerun)")
  parser.add_argument("--splits", nargs="+", default=list(SPLITS),
                      help="zero-shot splits; 'full' = fully supervised")
  parser.add_argument("--clips", nargs="+", default=list(CLIPS),
                      choices=CLIPS)
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
  parser.add_argument("--epochs", type=int,
                      default=int(demo.get_config().optimizer.num_epochs),
                      help="training epochs of every run (the demo's by "
                      "default)")
  parser.add_argument("--clip_checkpoint", default="",
                      help="a synthetic CLIP (.msgpack); default: pretrain "
                      "one into <root>/clip/")
  parser.add_argument("--clip_steps", type=int, default=1500,
                      help="pretraining steps when --clip_checkpoint is empty")
  parser.add_argument("--verb_queries", default="both",
                      choices=("both", "training_classes", "all_classes"))
  parser.add_argument("--tag", default="",
                      help="variant name of --overrides (workdir suffix, "
                      "table column)")
  parser.add_argument("--overrides", action="append", default=[],
                      help="an extra --config.x=y flag of every run, e.g. "
                      "--overrides=--config.loss.reconstruction=none "
                      "(repeat for more)")
  parser.add_argument("--fusions", nargs="+", type=float, default=None,
                      help="inference.clip_pair_fusion values each model of "
                      "a zero-shot split is evaluated with (default: the "
                      "demo's and 0)")
  args = parser.parse_args(argv)
  splits = ["" if s == "full" else s for s in args.splits]
  os.makedirs(args.root, exist_ok=True)
  clip = _ensure_clip(args.root, args.clip_checkpoint, args.clip_steps)
  rows = []
  for split in splits:
    for clip_kind in args.clips:
      for seed in args.seeds:
        t0 = time.perf_counter()
        new = train_and_evaluate(args.root, split, clip_kind, seed, clip,
                                 args.epochs, args.verb_queries, args.tag,
                                 args.overrides, args.fusions)
        rows += new
        print(f"{_SPLIT_NAMES[split]:>16} {clip_kind:9} {args.tag} seed "
              f"{seed}: "
              + "; ".join(f"{r['verb_queries']} fusion "
                          f"{r['clip_pair_fusion']:g} full {r['full']:.2f} "
                          f"seen "
                          f"{r.get('seen', float('nan')):.2f} unseen "
                          f"{r.get('unseen', float('nan')):.2f}" for r in new)
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
  # Every finished run under --root, this invocation's and earlier ones'.
  rows = []
  for name in sorted(os.listdir(args.root)):
    done = os.path.join(args.root, name, "table_rows.json")
    if os.path.exists(done):
      with open(done) as f:
        rows += json.load(f)
  with open(os.path.join(args.root, "table.json"), "w") as f:
    json.dump({"epochs": args.epochs, "clip_checkpoint": clip, "rows": rows},
              f, indent=1)
  print(f"\nSynthetic Table I ({args.epochs} epochs, demo model, mAP % on "
        f"held-out images, mean ± half-range over seeds):\n")
  print(format_table(rows))


if __name__ == "__main__":
  main()
