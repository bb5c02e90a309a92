r"""Markdown table of synthetic-detector AP figures (train/pretrain_detector.py).

Reads every `<name>.ap.json` under a folder (default
benchmarks/results/detector/, the committed figures) and prints one row per
file: its settings, held-out box AP@0.5 of people and the mean over the
objects, and each object's AP:

  python benchmarks/detector_table.py [--dir benchmarks/results/detector]
      [--render_into docs/synthetic_benchmarks.md]

`--render_into` also writes the table into a markdown file, between its
`<!-- rendered from results/<--dir name>: begin -->` and `end` comments.
"""

import glob
import json
import os
from typing import Dict, List, Sequence

from absl import flags

from ki2hoi_jax import cli
from ki2hoi_jax.analysis import table_results

_DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "results", "detector")


def format_table(figures: Dict[str, Dict]) -> str:
  """Rows of the figures (name -> the JSON of `pretrain_detector.run`)."""
  objects: List[str] = sorted({o for f in figures.values()
                               for o in f["objects"]})
  head = ["file", "world", "steps x batch", "lr", "corpus", "held-out",
          "seconds", "person", "objects (mean)", *objects]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, f in sorted(figures.items()):
    # Figures written before the world was recorded are of world 'basic'.
    cells = [name, f.get("world", "basic"),
             f"{f['steps']} x {f['batch_size']}",
             f"{f['learning_rate']:g}", str(f["num_images"]),
             str(f.get("num_held_out_images", "")), f"{f['seconds']:.0f}",
             f"{f['person']['ap']:.1f}", f"{f['mean_object_ap']:.1f}"]
    cells += [f"{f['objects'][o]['ap']:.1f}" if o in f["objects"] else ""
              for o in objects]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("dir", _DEFAULT_DIR, "Folder of <name>.ap.json files.",
                      flag_values=flag_values)
  flags.DEFINE_string(
      "render_into", "", "A markdown file whose block between '<!-- rendered "
      "from results/<--dir name>: begin -->' and its 'end' comment is "
      "replaced by the table.", flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(argv, define_flags, __doc__)
  figures = {}
  for path in sorted(glob.glob(os.path.join(args.dir, "*.ap.json"))):
    with open(path) as f:
      figures[os.path.basename(path)[:-len(".ap.json")]] = json.load(f)
  if not figures:
    raise ValueError(f"no *.ap.json files in {args.dir}")
  table = format_table(figures)
  print(table)
  if args.render_into:
    table_results.render_into(args.render_into, args.dir, table)
  return 0


if __name__ == "__main__":
  cli.run(main, user_errors=(OSError, ValueError))
