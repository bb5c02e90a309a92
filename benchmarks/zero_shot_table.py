r"""Synthetic Table I: zero-shot mAP with a synthetic-knowledge or a random CLIP.

Trains and evaluates the demo-sized model (configs/demo.py: its world,
'compositional', docs/synthetic_world.md) on every zero-shot split of the
paper's Table I (RF-UC, NF-UC, UC, UO, UV) and fully supervised, each with
(a) the synthetic CLIP of `ki2hoi_jax.clip.pretrain` and (b) a random CLIP,
over several seeds, and prints Full / Seen / Unseen mAP (mean and spread over
the seeds, held-out test images only) in the table's layout:

  python benchmarks/zero_shot_table.py --root /tmp/table1          # all of it
  python benchmarks/zero_shot_table.py --root /tmp/t --splits uv --seeds 0
  python benchmarks/zero_shot_table.py --root /tmp/t --splits uv,uo --seeds 0,1
  python benchmarks/zero_shot_table.py --root /tmp/t --epochs 10   # shorter

Every run trains on the demo's 400 training images of its seed for
`--epochs` (16: about 10 minutes a run on 2 CPU cores) and is tested on
`--num_test` (400) balanced test images of its seed, where every setting has
at least 40 unseen test pairs.

Every run is `python -m ki2hoi_jax.main --config=configs/demo.py` in a
subprocess with its own workdir `<root>/<split>_<clip>_seed<s>` (kept: a rerun
reuses finished runs, so an interrupted table resumes). The synthetic CLIP is
pretrained once into `<root>/clip/` (or pass `--clip_checkpoint`); its web
corpus and held-out crops come from renderer seed ranges disjoint from the
detector's train and test images (clip/pretrain.py). The detector starts from
a synthetic "COCO-DETR" (train/pretrain_detector.py, `--detector_steps`),
pretrained once into `<root>/detector/` from its own renderer range and shared
by every run; `--detector_steps 0` trains the detector from scratch on the
HOI labels (give such runs their own `--root`: the workdir names do not say
which detector they started from, the rows' `detector_checkpoint` does). All
variants get the same budget (`--epochs`, the learning-rate drop at the same
fraction).

With `--verb_queries both` (default) each trained model is also evaluated with
`model.verb_queries='all_classes'` wherever that changes the verb decoder's
queries (the training classes differ from the scored ones: UV in the verb
space), and the table prints both rows (issue 15, item 5).

With the demo's `inference.clip_pair_fusion` above 0 each model of a
zero-shot split is also evaluated with it at 0 (the detector's own scores),
and the table prints both (models/clip_pair_scores.py); `--fusions W,...`
picks the values instead (`--fusions 0.5`: the training run's evaluation
only).

Result files: each trained model writes `<--results_dir>/<name>.json`
(default benchmarks/results/table1/; ki2hoi_jax/analysis/table_results.py:
its rows, overrides, git commit, the settings of its CLIP and detector, and
a fingerprint of the renderer and the config) when it finishes; commit each
as it lands. `--render` prints the table from those files alone and refuses
those whose fingerprint differs from the current code's:

  python benchmarks/zero_shot_table.py --render [--results_dir DIR]
  python benchmarks/zero_shot_table.py --render \
      --render_into docs/synthetic_benchmarks.md   # The docs' table, in place.

`--tag NAME --overrides=--config.x=y [--overrides=...]` trains a variant
(workdirs `<split>_<clip>_NAME_seed<s>`), e.g. an ablation on the same
benchmark. A variant whose overrides change the model (`--config.model.*`,
e.g. `num_queries`) starts from a detector of that model, pretrained the same
way into `<root>/detector_<field=value>/` and shared by the variants of that
model. The printed table and `<root>/table.json` hold every finished run
under `--root` (ki2hoi_jax/analysis/zero_shot_table.py: the evaluations of
each model and the table). Spread is half the range over the seeds,
(max - min) / 2.
"""

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import flags
import numpy as np

from ki2hoi_jax import cli
from ki2hoi_jax.analysis import hoi_metrics
from ki2hoi_jax.analysis import runs
from ki2hoi_jax.analysis import table_results
from ki2hoi_jax.analysis import zero_shot_table as table_lib
from ki2hoi_jax.clip import pretrain as clip_pretrain
from ki2hoi_jax.config_lib import files
from ki2hoi_jax.data import annotations
from ki2hoi_jax.evaluation import vocabulary
from ki2hoi_jax.train import pretrain_detector

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEMO = os.path.join(_REPO, "configs", "demo.py")
_RESULTS = os.path.join(_REPO, "benchmarks", "results", "table1")

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


def _last_metrics(workdir: str) -> Tuple[int, Dict]:
  """(step, metrics.json) of the newest eval/step_<n>/ of a workdir."""
  eval_dir = os.path.join(workdir, "eval")
  steps = sorted(int(d.split("_")[1]) for d in os.listdir(eval_dir)
                 if d.startswith("step_"))
  with open(os.path.join(eval_dir, f"step_{steps[-1]}", "metrics.json")) as f:
    return steps[-1], json.load(f)


def _pair_counts(metrics: Dict) -> Dict[str, int]:
  """Unseen test pairs and unseen HOIs with test pairs ({} when no split)."""
  split = hoi_metrics.metrics_split(metrics)
  if not split:
    return {}
  num_gt = np.asarray(metrics["per_hoi"]["num_gt"], np.int64)
  unseen = hoi_metrics.unseen_mask(split, len(num_gt))
  return {"unseen_test_pairs": int(num_gt[unseen].sum()),
          "unseen_hois_with_test_pairs": int((num_gt[unseen] > 0).sum())}


def _localisation(workdir: str, split: str) -> Dict[str, Any]:
  """The unseen test pairs of the newest evaluation: found, and outranked.

  How many are boxed / kept / kept with their class
  (`hoi_metrics.unseen_pair_localisation`), and the kinds of false positive
  that outrank them (`hoi_metrics.unseen_false_positives`).
  """
  if not split:
    return {}
  config = runs.load_config(workdir)
  step = runs.eval_steps(workdir)[-1]
  predictions = runs.read_predictions(os.path.join(
      workdir, "eval", f"step_{step}", "predictions.json"))
  test = annotations.load_json(runs.annotations_path(config, workdir, "test"))
  counts = hoi_metrics.unseen_pair_localisation(predictions, test, split)
  out = {f"unseen_pairs_{k}": v for k, v in counts.items()
         if k != "unseen_test_pairs"}
  out["unseen_false_positives"] = hoi_metrics.unseen_false_positives(
      predictions, test, split)
  return out


def _final_metrics(workdir: str) -> Dict[str, float]:
  """mAP (%), pair counts and localisation of a workdir's newest evaluation."""
  step, metrics = _last_metrics(workdir)
  out = {"step": step, **_pair_counts(metrics),
         **_localisation(workdir, hoi_metrics.metrics_split(metrics))}
  for column in table_lib.COLUMNS:
    if f"eval/mAP_{column}" in metrics["summary"]:
      out[column] = float(metrics["summary"][f"eval/mAP_{column}"])
  return out


def queries_differ(split: str) -> bool:
  """True when the verb decoder's training-class queries differ from all."""
  config = files.load_config(_DEMO)
  config.dataset.zero_shot_split = split
  prompts = vocabulary.closed_vocabulary(config).prompts
  return len(vocabulary.verb_query_prompts(config, prompts)) != len(prompts)


def train_and_evaluate(root: str, split: str, clip: str, seed: int,
                       clip_checkpoint: str, detector_checkpoint: str,
                       epochs: int, num_test: int, verb_queries: str,
                       tag: str = "", overrides: Sequence[str] = (),
                       fusions: Optional[Sequence[float]] = None,
                       results_dir: str = "") -> List[Dict]:
  """One trained model, evaluated with each requested verb-query mode.

  `fusions`: the `inference.clip_pair_fusion` values it is evaluated with in
  a zero-shot split (the first is the training run's own); default the
  demo's and, when that is above 0, also 0. With `results_dir`, the model's
  result file (analysis/table_results.py) is written there unless it exists.
  """
  name = f"{split or 'full'}_{clip}{'_' + tag if tag else ''}_seed{seed}"
  workdir = os.path.join(root, name)
  log = workdir + ".log"
  # What defines the run (its result file's config fingerprint); the
  # checkpoint paths are recorded as the checkpoints' own settings.
  pinned = [
      f"seed={seed}", f"dataset.zero_shot_split={split}",
      # The demo config pretrains a synthetic CLIP when no checkpoint is
      # given: the random row must not.
      "init.synthetic_clip_steps=0",
      # The detector starts from `detector_checkpoint` or from scratch,
      # never from one of its own.
      "init.synthetic_detector_steps=0",
      f"dataset.synthetic_num_test={num_test}",
      f"optimizer.num_epochs={epochs}",
      f"optimizer.lr_drop_epoch={max(1, round(epochs * 5 / 6))}",
      "eval_at_start=False",
      *(o[len("--config."):] for o in overrides)]
  args = [f"--workdir={workdir}",
          f"--config.init.clip_checkpoint="
          f"{clip_checkpoint if clip == 'synthetic' else ''}",
          f"--config.init.detr_checkpoint={detector_checkpoint}",
          *(f"--config.{o}" for o in pinned)]
  evaluations = table_lib.evaluation_plan(
      split, verb_queries, fusions, queries_differ(split),
      float(files.load_config(_DEMO).inference.clip_pair_fusion))
  done = os.path.join(workdir, "table_rows.json")
  if os.path.exists(done):
    with open(done) as f:
      rows = json.load(f)
    for r in rows:  # Rows written before the pair counts were recorded.
      r.update(_pair_counts(_last_metrics(workdir)[1]))
    if rows and "unseen_pairs_kept" not in rows[-1]:
      # The newest evaluation's predictions are those of the last row.
      rows[-1].update(_localisation(workdir, split))
    with open(done, "w") as f:
      json.dump(rows, f, indent=1)
  else:
    rows = _train_and_evaluate(workdir, args, evaluations, log, split=split,
                               clip=clip, variant=tag, seed=seed,
                               detector_checkpoint=detector_checkpoint)
    with open(done, "w") as f:
      json.dump(rows, f, indent=1)
  if results_dir and not os.path.exists(
      os.path.join(results_dir, name + ".json")):
    table_results.write_result(
        results_dir, name, rows, pinned, _DEMO, _REPO,
        detector=_settings(pretrain_detector.ap_path(detector_checkpoint)
                           if detector_checkpoint else ""),
        clip=_settings(clip_pretrain.accuracy_path(clip_checkpoint)
                       if clip == "synthetic" else ""))
  return rows


def _train_and_evaluate(workdir: str, args: List[str],
                        evaluations: List, log: str, **row) -> List[Dict]:
  """Trains in `workdir`, evaluates each (verb queries, fusion); the rows."""
  start = time.perf_counter()
  own_queries, own_fusion = evaluations[0]
  _run(args + ["--config.mode=train",
               f"--config.model.verb_queries={own_queries}",
               f"--config.inference.clip_pair_fusion={own_fusion}"], log)
  train_seconds = time.perf_counter() - start
  rows = []
  for i, (mode, w) in enumerate(evaluations):
    if i:
      # The best checkpoint: the only evaluated one, the last step's.
      _run(args + ["--config.mode=eval",
                   f"--config.model.verb_queries={mode}",
                   f"--config.inference.clip_pair_fusion={w}"], log)
    rows.append(dict(_final_metrics(workdir), **row, verb_queries=mode,
                     clip_pair_fusion=w, train_seconds=train_seconds))
  for r in rows:  # Training and every evaluation, from start to end.
    r["wall_seconds"] = time.perf_counter() - start
  return rows


def _settings(figure_path: str) -> Optional[Dict]:
  """The settings and headline of a pretraining's figure file (None: none)."""
  if not figure_path:
    return None
  with open(figure_path) as f:
    figure = json.load(f)
  return {k: v for k, v in figure.items()
          if not isinstance(v, dict) or k in ("person", "hoi", "object")}


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
  _check_made_with(clip_pretrain.accuracy_path(path), steps=steps,
                   world=files.load_config(_DEMO).dataset.synthetic_world)
  return path


def _ensure_detector(root: str, steps: int,
                     overrides: Sequence[str] = ()) -> str:
  """The synthetic detector of every run under `root` ('' when `steps` is 0).

  Pretrained once (seed 0, the demo's corpus size) into `<root>/detector/`
  and shared by every split, CLIP and seed, as one public DETR-R50 serves
  every run of the paper (its corpus has no interaction labels, so no split
  sees its unseen HOIs through it). Variants whose `overrides` change the
  model (`--config.model.*`) share a detector of that model, pretrained the
  same way into `<root>/detector_<field=value>[_...]/` (e.g.
  `detector_num_queries=16`).
  """
  if steps <= 0:
    return ""
  model_overrides = sorted(o for o in overrides
                           if o.startswith("--config.model."))
  folder = "_".join(["detector"] + [o[len("--config.model."):]
                                    for o in model_overrides])
  path = os.path.join(root, folder, "synthetic_detr.msgpack")
  figure = pretrain_detector.ap_path(path)  # Written last.
  config = files.load_config(
      _DEMO, [o[len("--config."):] for o in model_overrides])
  if not os.path.exists(figure):
    subprocess.run([sys.executable, "-m", "ki2hoi_jax.train.pretrain_detector",
                    "--config", _DEMO, *model_overrides, "--out", path,
                    "--steps", str(steps), "--seed", "0"], cwd=_REPO,
                   check=True)
  wanted = {"steps": steps, "world": config.dataset.synthetic_world}
  if model_overrides:
    wanted["model"] = pretrain_detector.detector_model(config)
  _check_made_with(figure, **wanted)
  return path


def _check_made_with(figure_path: str, **wanted) -> None:
  """Raises ValueError when a pretraining's figure file has other settings."""
  with open(figure_path) as f:
    figure = json.load(f)
  differ = [f"{k} {figure.get(k)!r} (wanted {v!r})" for k, v in wanted.items()
            if figure.get(k) != v]
  if differ:
    raise ValueError(f"{figure_path} was made with {', '.join(differ)}: "
                     "remove its folder to make it again, or use another "
                     "--root")


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("root", None, "Folder of the runs (reused: finished "
                      "runs are read, not rerun); needed unless --render.",
                      flag_values=flag_values)
  flags.DEFINE_list("splits", [s or "full" for s in table_lib.SPLITS],
                    "Zero-shot splits; 'full' = fully supervised.",
                    flag_values=flag_values)
  flags.DEFINE_list("clips", list(table_lib.CLIPS),
                    f"CLIPs, of {table_lib.CLIPS}.", flag_values=flag_values)
  flags.register_validator(
      "clips", lambda clips: set(clips) <= set(table_lib.CLIPS),
      f"--clips takes values of {table_lib.CLIPS}", flag_values=flag_values)
  flags.DEFINE_list("seeds", ["0", "1"], "Seeds (integers).",
                    flag_values=flag_values)
  flags.DEFINE_integer(
      "epochs", 16, "Training epochs of every run (the learning rate drops "
      "after 5/6 of them): 16 of the demo's 400 images keep a run near 10 "
      "minutes on 2 CPU cores.", flag_values=flag_values)
  flags.DEFINE_integer(
      "num_test", 400, "Test images of every run (the compositional world's "
      "balanced test split: >= 40 unseen test pairs in every setting for "
      "seeds 0-3).", flag_values=flag_values)
  flags.DEFINE_string("clip_checkpoint", "", "A synthetic CLIP (.msgpack); "
                      "default: pretrain one into <root>/clip/.",
                      flag_values=flag_values)
  flags.DEFINE_integer("clip_steps", 1500, "Pretraining steps when "
                       "--clip_checkpoint is empty.", flag_values=flag_values)
  flags.DEFINE_integer(
      "detector_steps", 3000,
      "Synthetic detector pretraining steps (train/pretrain_detector.py), "
      "one detector under <root>/detector/ for every run (--overrides that "
      "change the model: <root>/detector_<field=value>/); 0 trains the "
      "detector from scratch on the HOI labels.", flag_values=flag_values)
  flags.DEFINE_enum("verb_queries", "both",
                    ("both", "training_classes", "all_classes"),
                    "Verb-query modes each model is evaluated with.",
                    flag_values=flag_values)
  flags.DEFINE_string("tag", "", "Variant name of --overrides (workdir "
                      "suffix, table column).", flag_values=flag_values)
  flags.DEFINE_multi_string("overrides", [], "An extra --config.x=y flag of "
                            "every run, e.g. --overrides=--config.loss."
                            "reconstruction=none (repeat for more).",
                            flag_values=flag_values)
  flags.DEFINE_list("fusions", None, "inference.clip_pair_fusion values each "
                    "model of a zero-shot split is evaluated with (default: "
                    "the demo's and 0).", flag_values=flag_values)
  flags.DEFINE_string("results_dir", _RESULTS, "Folder of the result files "
                      "(one JSON per trained model, written when it "
                      "finishes; '' writes none).", flag_values=flag_values)
  flags.DEFINE_bool("render", False, "Print the table of --results_dir's "
                    "files (refusing those whose fingerprint differs) and "
                    "run nothing.", flag_values=flag_values)
  flags.DEFINE_string(
      "render_into", "", "With --render: a markdown file whose block between "
      "'<!-- rendered from results/<results_dir name>: begin -->' and its "
      "'end' comment is replaced by the table.", flag_values=flag_values)


def main(argv) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  if args.render:
    table = table_results.render(args.results_dir, _DEMO)
    print(table)
    if args.render_into:
      table_results.render_into(args.render_into, args.results_dir, table)
    return 0
  if not args.root:
    raise ValueError("--root is needed (or --render)")
  seeds = [int(s) for s in args.seeds]
  fusions = None if args.fusions is None else [float(w) for w in args.fusions]
  splits = ["" if s == "full" else s for s in args.splits]
  os.makedirs(args.root, exist_ok=True)
  clip = _ensure_clip(args.root, args.clip_checkpoint, args.clip_steps)
  detector = _ensure_detector(args.root, args.detector_steps, args.overrides)
  rows = []
  for split in splits:
    for clip_kind in args.clips:
      for seed in seeds:
        t0 = time.perf_counter()
        new = train_and_evaluate(args.root, split, clip_kind, seed, clip,
                                 detector, args.epochs, args.num_test,
                                 args.verb_queries,
                                 args.tag, args.overrides, fusions,
                                 args.results_dir)
        rows += new
        print(f"{table_lib.SPLIT_NAMES[split]:>16} {clip_kind:9} {args.tag} "
              f"seed {seed}: "
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
  print(table_lib.format_table(rows))
  print("\n" + table_lib.format_pair_counts(rows))
  return 0


if __name__ == "__main__":
  cli.run(main, user_errors=(OSError, ValueError))
