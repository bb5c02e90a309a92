"""Synthetic Table I (benchmarks/zero_shot_table.py): evaluations and table.

`evaluation_plan` says with which (verb-query mode, CLIP crop fusion) each
trained model of the table is evaluated; `format_table` prints the finished
runs' mAP as a markdown table, mean ± spread over seeds, where the spread is
half the range, (max - min) / 2.
"""

from typing import Dict, List, Optional, Sequence, Tuple

SPLITS = ("rf_uc", "nf_uc", "uc", "uo", "uv", "")
SPLIT_NAMES = {"rf_uc": "RF-UC", "nf_uc": "NF-UC", "uc": "UC", "uo": "UO",
               "uv": "UV", "": "Fully supervised"}
CLIPS = ("synthetic", "random")
COLUMNS = ("full", "seen", "unseen")


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
    cells = [_cell([r[c] for r in group if c in r]) for c in COLUMNS]
    seeds = ",".join(str(r["seed"]) for r in group)
    split, clip, variant, mode, w = k
    lines.append(f"| {SPLIT_NAMES[split]} | {clip} | {variant or 'default'} "
                 f"| {mode} | {w:g} | " + " | ".join(cells) + f" | {seeds} |")
  return "\n".join(lines)


def format_pair_counts(rows: List[Dict]) -> str:
  """Markdown: unseen test pairs per seed, and how many the detector found.

  One line per (setting, CLIP, variant, seed): the unseen test pairs, the
  unseen HOIs with test pairs and, from the row with localisation counts
  (the model's last evaluation), how many of the pairs had their object
  boxed, were kept as a pair and were kept with their own class
  (`hoi_metrics.unseen_pair_localisation`; '-' where not recorded), and
  the run's wall time in minutes (training and every evaluation). Rows
  without `unseen_test_pairs` are left out.
  """
  lines = ["| setting | CLIP | variant | seed | unseen test pairs | unseen HOIs "
           "with test pairs | object boxed | pair kept | kept, own class | "
           "run minutes |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  best = {}
  for r in rows:
    if not r["split"] or "unseen_test_pairs" not in r:
      continue
    k = (r["split"], r["clip"], r.get("variant", ""), r["seed"])
    if k not in best or "unseen_pairs_kept" in r:
      best[k] = r
  for k in sorted(best, key=lambda k: (SPLITS.index(k[0]),
                                       CLIPS.index(k[1]), k[2], k[3])):
    r = best[k]
    found = [str(r.get(f"unseen_pairs_{c}", "-"))
             for c in ("object_boxed", "kept", "kept_right_class")]
    found.append(f"{r['wall_seconds'] / 60:.1f}" if "wall_seconds" in r
                 else "-")
    lines.append(f"| {SPLIT_NAMES[k[0]]} | {k[1]} | {k[2] or 'default'} | "
                 f"{k[3]} | {r['unseen_test_pairs']} | "
                 f"{r['unseen_hois_with_test_pairs']} | " + " | ".join(found)
                 + " |")
  return "\n".join(lines)
