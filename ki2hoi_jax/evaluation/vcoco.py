r"""V-COCO role AP (scenario 1 and 2): evaluator entry point, files and CLI.

This module owns the entry point `evaluate`, the predictions-file format and
its I/O, the conversion to the official evaluator's detections, the tables and
the CLI. The evaluation itself (a re-implementation of the official
`_do_role_eval` of s-gupta/v-coco on `annotations/test_vcoco.json`, with its
semantics and known differences) is in `vcoco_ap`.

Predictions file (JSON), one entry per image:

  [{"file_name": "COCO_val2014_000000000042.jpg",
    "image_id": 42,                      # optional COCO id (official pickle)
    "detections": [                      # one record per (person, object) pair
      {"person_box": [x1, y1, x2, y2],
       "hold_agent": 0.83,               # <action>_agent: agent score
       "hold_obj": [x1, y1, x2, y2, 0.83],   # <action>_<role>: role box + score
       "stand_agent": 0.61,              # agent-only actions: agent key only
       "eat_agent": 0.52, "eat_obj": [null, null, null, null, 0.52]},
      ...]}]

Boxes are absolute pixel corners in the original image. The role keys are the
V-COCO verb-class names (`metadata.vcoco().verb_classes`, e.g. `cut_instr`).
`null` coordinates (NaN in memory) mean "no role object predicted". A key that
is absent means "not detected" (NaN score in the official format; never
ranked); `to_official_detections` fills every key for the official pickle.
Only the `<action>_<role>` keys matter for role AP.

Command line:

  python -m ki2hoi_jax.evaluation.vcoco --annotations test_vcoco.json \
      --predictions preds.json [--output metrics.json]
"""

import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from absl import flags
import numpy as np

from ki2hoi_jax import cli
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import vcoco_ap


# -------------------------------------------------------------- evaluation


def evaluate(gt_records: Sequence[Mapping[str, Any]],
             detections: Union[Sequence[Mapping[str, Any]],
                               Mapping[str, Sequence[vcoco_ap.Record]]],
             iou_threshold: float = 0.5) -> Dict[str, Any]:
  """V-COCO role mAP.

  Args:
    gt_records: the records of `test_vcoco.json`.
    detections: predictions-file entries or file_name -> records (see
      `vcoco_ap.role_ap`).
    iou_threshold: person and role IoU threshold.

  Returns:
    {'scenario_1': mAP in %, 'scenario_2': mAP in %, 'per_action':
    {role-class name: {'scenario_1': AP in %, 'scenario_2': AP in %}}}; the
    means are over the 24 reported classes, `per_action` lists all 25 role
    classes (point_instr included). NaN for classes without positives.
  """
  return vcoco_ap.role_ap(gt_records, detections, iou_threshold).as_dict()


# ----------------------------------------------------------- file helpers


def _nan_to_none(x: Any) -> Any:
  if isinstance(x, float) and math.isnan(x):
    return None
  if isinstance(x, (list, tuple)):
    return [_nan_to_none(v) for v in x]
  if isinstance(x, dict):
    return {k: _nan_to_none(v) for k, v in x.items()}
  return x


def _none_to_nan(x: Any) -> Any:
  if x is None:
    return float("nan")
  if isinstance(x, list):
    return [_none_to_nan(v) for v in x]
  return x


def save_predictions(path: str, entries: Sequence[Mapping[str, Any]]) -> None:
  """Writes predictions-file entries as JSON (NaN written as null)."""
  with open(path, "w") as f:
    json.dump(_nan_to_none(list(entries)), f)


def load_predictions(path: str) -> List[Dict[str, Any]]:
  """Reads a predictions file (null box coordinates become NaN)."""
  with open(path) as f:
    entries = json.load(f)
  for entry in entries:
    entry["detections"] = [
        {k: (_none_to_nan(v) if k != "person_box" else v)
         for k, v in rec.items()}
        for rec in entry["detections"]]
  return entries


def image_id_from_file_name(file_name: str) -> Optional[int]:
  """COCO image id of 'COCO_val2014_000000000042.jpg' (42), else None."""
  match = re.search(r"(\d+)\.\w+$", file_name)
  return int(match.group(1)) if match else None


def to_official_detections(entries: Sequence[Mapping[str, Any]]
                           ) -> List[Dict[str, Any]]:
  """Converts predictions-file entries to the official evaluator's list.

  Every record gets `image_id` and all `<action>_agent` / `<action>_<role>`
  keys; absent ones are NaN (never ranked by the official code). Pickle the
  result (protocol 2) for s-gupta/v-coco's `vsrl_eval.py`.

  Args:
    entries: predictions-file entries.

  Returns:
    A flat list of detection dicts with numpy-free float values.
  """
  meta = metadata.vcoco()
  keys_agent = [vcoco_ap.agent_key(a) for a in range(len(meta.actions))]
  keys_role = list(vcoco_ap.role_classes().names)
  out = []
  for entry in entries:
    image_id = entry.get("image_id")
    if image_id is None:
      image_id = image_id_from_file_name(entry["file_name"])
    for rec in entry["detections"]:
      det = {"image_id": image_id,
             "person_box": [float(v) for v in rec["person_box"]]}
      for k in keys_agent:
        det[k] = float(rec.get(k, float("nan")))
      for k in keys_role:
        det[k] = [float("nan") if v is None else float(v)
                  for v in rec.get(k, [float("nan")] * 5)]
      out.append(det)
  return out


# --------------------------------------------------------------------- CLI


def format_table(result: vcoco_ap.RoleAPResult) -> str:
  """Per-class role AP table with the two 24-class means."""
  lines = [f"{'class':>24} {'S1 AP':>7} {'S2 AP':>7} {'#pos':>6} {'#det':>7}"]
  for i, name in enumerate(result.names):
    note = "" if result.reported[i] else "  (not in mean)"
    lines.append(
        f"{name:>24} {100 * result.ap['scenario_1'][i]:7.2f} "
        f"{100 * result.ap['scenario_2'][i]:7.2f} "
        f"{int(result.num_positives[i]):6d} {int(result.num_detections[i]):7d}"
        f"{note}")
  used = int(np.sum(result.reported & (result.num_positives > 0)))
  for s in vcoco_ap.SCENARIOS:
    lines.append(f"Role mAP {s.replace('_', ' ')}: {result.mean_ap(s):.2f} "
                 f"(mean of {used} of the {int(result.reported.sum())} "
                 f"reported classes; the others have no positives)")
  return "\n".join(lines)


def format_metrics(metrics: Mapping[str, Any]) -> str:
  """Per-class role AP table of an `evaluate` dict (e.g. metrics.json).

  Args:
    metrics: {'scenario_1', 'scenario_2', 'per_action': {name: {'scenario_1',
      'scenario_2'}}} with values in % (NaN or None = no positives).

  Returns:
    One line per role class, then the two 24-class means.
  """
  def pct(v):
    return float("nan") if v is None else float(v)
  rc = vcoco_ap.role_classes()
  reported = dict(zip(rc.names, rc.reported))
  lines = [f"{'class':>24} {'S1 AP':>7} {'S2 AP':>7}"]
  for name, ap in metrics["per_action"].items():
    note = "" if reported.get(name, False) else "  (not in mean)"
    lines.append(f"{name:>24} {pct(ap['scenario_1']):7.2f} "
                 f"{pct(ap['scenario_2']):7.2f}{note}")
  for s in vcoco_ap.SCENARIOS:
    lines.append(f"Role mAP {s.replace('_', ' ')}: {pct(metrics[s]):.2f}")
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_string("annotations", None, "GEN-VLKT-style test_vcoco.json.",
                      required=True, flag_values=flag_values)
  flags.DEFINE_string("predictions", None,
                      "Predictions JSON (format in the module docstring).",
                      required=True, flag_values=flag_values)
  flags.DEFINE_string("output", "", "Where to write the metrics JSON.",
                      flag_values=flag_values)
  flags.DEFINE_float("iou_threshold", 0.5,
                     "IoU of a true positive (agent and role boxes).",
                     flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name): prints the role AP tables.

  Returns:
    The exit status, 0.
  """
  args = cli.parse_flags(argv, define_flags, __doc__)
  with open(args.annotations) as f:
    gt_records = json.load(f)
  result = vcoco_ap.role_ap(gt_records, load_predictions(args.predictions),
                            args.iou_threshold)
  print(format_table(result))
  if args.output:
    with open(args.output, "w") as f:
      json.dump(_nan_to_none(result.as_dict()), f, indent=2)
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.evaluation.vcoco` and `ki2hoi-eval-vcoco`."""
  cli.run(main, user_errors=(OSError, json.JSONDecodeError))


if __name__ == "__main__":
  entry_point()
