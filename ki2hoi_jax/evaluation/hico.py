r"""HICO-DET mAP: GEN-VLKT's python protocol, or the official one.

  python -m ki2hoi_jax.evaluation.hico \
      --annotations hico_20160224_det/annotations/test_hico.json \
      --predictions preds.json [--zero_shot_split rf_uc|nf_uc|uc|uo|uv] \
      [--train_annotations trainval_hico.json] [--output metrics.json] \
      [--compat_averaging_bug]
  python -m ki2hoi_jax.evaluation.hico --protocol official \
      --anno_bbox anno_bbox.mat [--anno anno.mat] --predictions preds.json \
      [--zero_shot_split ...] [--output metrics.json] [--export_official DIR]

`--protocol official` scores the same predictions JSON by the rules of
HICO-DET's MATLAB evaluation and GEN-VLKT's converter, the protocol of the
published numbers (`hico_official`, docs/datasets.md section 8), with
Default and (given anno.mat) Known-Object Full / Rare / Non-rare.
`--export_official DIR` writes the converter's `detections_XX.mat` files,
so the MATLAB code can score exactly what was scored here.

This module owns the entry point `evaluate` (on test records and prediction
entries, or on the arrays of `hico_ap`), the means, the rare split, reading
the JSON files, the table and the CLI; reading records into arrays (with the
input checks) lives in `hico_inputs`, matching and per-class AP in `hico_ap`.

Semantics (docs: docs/datasets.md section 6; README "Evaluation"), identical to the
GEN-VLKT python evaluator after its Aug-2023 averaging fix:

* Ground truth, predictions, matching and the per-class 11-point AP: see
  `hico_ap` (the same protocol on flat arrays). Prediction classes with no GT
  pair in the test set are ignored.
* Means: unweighted over the classes with at least one test GT (a class with
  GT but no prediction has AP 0). Full / Rare / Non-rare (rare = fewer than
  10 training instances); with a zero-shot split also Full / Seen / Unseen.
  `compat_averaging_bug=True` reproduces the pre-fix GEN-VLKT (and HOICLIP)
  averaging: classes without any prediction drop out of the Rare/Non-rare
  (Unseen/Seen) means but count as 0 in Full.
* Known object (KO): for an HOI with object o, only predictions in images
  whose GT pairs include object o are kept; GT unchanged. (The official KO
  mode uses image-level object labels; this is the closest substitute
  available from the JSON files.)

NOTE: the numbers published by GEN-VLKT, HOICLIP and KI2HOI come from the
official MATLAB evaluation of HICO-DET; this python protocol is for monitoring
and can differ slightly from them (GEN-VLKT issue #10, PPDM issue #5).
"""

import contextlib
import gc
import logging
import sys
import time
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple, Union)

from absl import flags
import numpy as np
import orjson

from ki2hoi_jax import cli
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico_ap
from ki2hoi_jax.evaluation import hico_inputs
from ki2hoi_jax.evaluation import hico_official
from ki2hoi_jax.evaluation import hico_official_files

RARE_MAX_COUNT = 10  # Rare: fewer than this many training instances.
PERSON_COCO_ID = 1
ZERO_SHOT_CHOICES = tuple(metadata.ZERO_SHOT_SPLITS) + (
    "uc0", "uc1", "uc2", "uc3", "uc4")

_MATLAB_NOTE = (
    "Python protocol (GEN-VLKT's evaluator, after its 2023 averaging fix). "
    "Published HICO-DET numbers (GEN-VLKT, HOICLIP, KI2HOI) come from the "
    "official MATLAB evaluation: --protocol official.")



@contextlib.contextmanager
def _gc_paused():
  """Pauses the cyclic garbage collector (restored on exit).

  Parsing and flattening create millions of small containers; without this,
  repeated full collections over them cost more than the work itself.
  """
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def load_json(path: str) -> Any:
  """Reads a JSON file with orjson.

  Raises:
    hico_inputs.EvaluationInputError (a ValueError): an empty file or invalid
      JSON (truncated, NaN, ...); the message names the path.
  """
  with open(path, "rb") as f:
    data = f.read()
  if not data or data.isspace():
    raise hico_inputs.EvaluationInputError(
        f"{path}: empty file ({len(data)} bytes), not JSON")
  with _gc_paused():
    try:
      return orjson.loads(data)
    except orjson.JSONDecodeError as e:
      raise hico_inputs.EvaluationInputError(
          f"{path}: not valid JSON ({e})") from e


def _load_entry_list(path: str, what: str) -> List[Any]:
  """A JSON file holding a non-empty list."""
  data = load_json(path)
  hico_inputs.check_entry_list(data, path, what)
  if not data:
    raise hico_inputs.EvaluationInputError(f"{path}: an empty list, no {what}")
  return data


def load_annotations(path: str) -> List[Any]:
  """Reads a test (or training) annotation JSON: a non-empty list of records.

  Raises:
    hico_inputs.EvaluationInputError: as `load_json`, or not a non-empty list.
  """
  return _load_entry_list(path, "annotation records")


def load_predictions(path: str) -> List[Any]:
  """Reads a predictions JSON: a non-empty list of per-image entries.

  An empty file (0 bytes or `[]`) is an error: evaluating it would give 0 mAP
  without a word. (`evaluate` itself accepts an empty list of records.)

  Raises:
    hico_inputs.EvaluationInputError: as `load_json`, or not a non-empty list.
  """
  return _load_entry_list(path, "per-image prediction entries")


def hoi_instance_counts(records: Iterable[Mapping[str, Any]]) -> np.ndarray:
  """[600] number of annotated pairs of each HOI (for the rare split).

  Counted as GEN-VLKT does over the unfiltered training JSON: one count per
  pair with a person subject box, class from (verb, object box category).
  Pairs with box indices outside `annotations` are skipped (and logged).
  """
  meta = metadata.hico()
  coco_index = {c: i for i, c in enumerate(meta.coco_category_ids)}
  counts = np.zeros(meta.num_hois, np.int64)
  skipped = 0
  for rec in records:
    anns = rec.get("annotations") or []
    for p in rec.get("hoi_annotation") or []:
      s, o = p["subject_id"], p["object_id"]
      if not (0 <= s < len(anns) and 0 <= o < len(anns)):
        skipped += 1
        continue
      if anns[s]["category_id"] != PERSON_COCO_ID:
        continue
      obj = coco_index.get(anns[o]["category_id"])
      h = None if obj is None else meta.hoi_index(p["category_id"] - 1, obj)
      if h is not None:
        counts[h] += 1
  if skipped:
    logging.warning("rare split: skipped %d training pairs that refer to a "
                    "missing box", skipped)
  return counts


def rare_hois_from_annotations(records: Iterable[Mapping[str, Any]]
                               ) -> Tuple[int, ...]:
  """HOIs with fewer than 10 training instances (0 included)."""
  return tuple(np.flatnonzero(
      hoi_instance_counts(records) < RARE_MAX_COUNT).tolist())


def _mean(values: np.ndarray) -> Optional[float]:
  """Mean in percent; None (JSON null) for an empty set."""
  return float(np.mean(values) * 100.0) if values.size else None


def _split_means(ap: np.ndarray, has_gt: np.ndarray, has_det: np.ndarray,
                 in_subset: np.ndarray, compat_averaging_bug: bool
                 ) -> Tuple[Optional[float], Optional[float], Optional[float]]:
  """(Full, subset, complement) mAP in percent."""
  eligible = has_det if compat_averaging_bug else np.ones_like(has_gt)
  sub = has_gt & in_subset & eligible
  rest = has_gt & ~in_subset & eligible
  return _mean(ap[has_gt]), _mean(ap[sub]), _mean(ap[rest])


def _percent_list(values: np.ndarray, has_gt: np.ndarray) -> List[Any]:
  return [float(v) * 100.0 if g else None for v, g in zip(values, has_gt)]


def evaluate(gt_records: Union[Sequence[Mapping[str, Any]],
                              hico_ap.GroundTruth],
             predictions: Union[Sequence[Mapping[str, Any]],
                                hico_ap.Detections],
             zero_shot_split: Optional[str] = None,
             rare_hois: Optional[Sequence[int]] = None,
             compat_averaging_bug: bool = False, *,
             annotations_source: str = "annotations",
             predictions_source: str = "predictions") -> Dict[str, Any]:
  """HICO-DET mAP in the default, known-object and zero-shot settings.

  Args:
    gt_records: test annotation records (or a `hico_ap.GroundTruth`).
    predictions: prediction entries (or `hico_ap.Detections` built from the
      same ground truth).
    zero_shot_split: '' / None, or 'rf_uc' | 'nf_uc' | 'uc' | 'uo' | 'uv'
      (also 'uc0'..'uc4'): adds the Seen/Unseen means.
    rare_hois: rare HOI indices; None = `metadata.hico().rare_hois` (138).
    compat_averaging_bug: reproduce the pre-2023 GEN-VLKT / HOICLIP means.
    annotations_source: the name of `gt_records` in error messages (the
      file path; records passed in-process are 'annotations').
    predictions_source: the name of `predictions` in error messages.

  Returns:
    `{"default": {"full", "rare", "non_rare"}, "known_object": {...},
    ["zero_shot": {"split", "full", "seen", "unseen"}], "mean_max_recall",
    "known_object_mean_max_recall", "per_hoi": {"ap", "max_recall",
    "ap_known_object", "max_recall_known_object", "num_gt",
    "num_predictions"}, "counts": {...}, "settings": {...}}`. All mAP, AP
    and recall values are in percent; per-HOI values are None for classes
    without GT, means over an empty set are None.

  Raises:
    hico_inputs.EvaluationInputError (a ValueError): malformed records or
      entries (see `hico_inputs.load_ground_truth`, `hico_inputs.flatten_predictions`);
      the message names the source, the image and the item.
  """
  meta = metadata.hico()
  num_classes = meta.num_hois
  with _gc_paused():
    gt = (gt_records if isinstance(gt_records, hico_ap.GroundTruth)
          else hico_inputs.load_ground_truth(gt_records, annotations_source))
    det = (predictions if isinstance(predictions, hico_ap.Detections)
           else hico_inputs.flatten_predictions(predictions, gt.file_names,
                                            predictions_source))
  num_gt = np.bincount(gt.hoi, minlength=num_classes)
  has_gt = num_gt > 0

  by_score = hico_ap.descending_order(det.score)
  tp = hico_ap.match_detections(gt, det, num_classes, by_score)
  order = hico_ap.class_major_order(det.hoi, by_score, num_classes)
  evaluated = has_gt[det.hoi]
  known = evaluated & gt.object_present[det.image, meta.hoi_object[det.hoi]]
  # Known-object filtering removes whole (image, class) groups, so the
  # matching of the kept detections is unchanged.
  sel = order[evaluated[order]]
  ap, max_rec, n_det = hico_ap.ap_class_sorted(det.hoi[sel], tp[sel], num_gt)
  sel = order[known[order]]
  ap_ko, max_rec_ko, n_det_ko = hico_ap.ap_class_sorted(det.hoi[sel],
                                                        tp[sel], num_gt)

  rare = np.zeros(num_classes, bool)
  rare[list(meta.rare_hois if rare_hois is None else rare_hois)] = True
  full, r, nr = _split_means(ap, has_gt, n_det > 0, rare,
                             compat_averaging_bug)
  full_ko, r_ko, nr_ko = _split_means(ap_ko, has_gt, n_det_ko > 0, rare,
                                      compat_averaging_bug)
  out = {
      "default": {"full": full, "rare": r, "non_rare": nr},
      "known_object": {"full": full_ko, "rare": r_ko, "non_rare": nr_ko},
  }
  if zero_shot_split:
    unseen = metadata.indices_to_mask(meta.unseen_hois(zero_shot_split),
                                      num_classes)
    z_full, z_unseen, z_seen = _split_means(ap, has_gt, n_det > 0, unseen,
                                            compat_averaging_bug)
    out["zero_shot"] = {"split": zero_shot_split, "full": z_full,
                        "seen": z_seen, "unseen": z_unseen}
  out["mean_max_recall"] = _mean(max_rec[has_gt])
  out["known_object_mean_max_recall"] = _mean(max_rec_ko[has_gt])
  out["per_hoi"] = {
      "ap": _percent_list(ap, has_gt),
      "max_recall": _percent_list(max_rec, has_gt),
      "ap_known_object": _percent_list(ap_ko, has_gt),
      "max_recall_known_object": _percent_list(max_rec_ko, has_gt),
      "num_gt": num_gt.tolist(),
      "num_predictions": n_det.tolist(),
  }
  out["counts"] = {
      "images": gt.num_images,
      "images_with_predictions": det.num_entries,
      "gt_pairs": int(gt.hoi.size),
      "classes_with_gt": int(has_gt.sum()),
      "predictions": int(det.score.size),
      "predictions_evaluated": int(evaluated.sum()),
      "true_positives": int(tp[evaluated].sum()),
  }
  out["settings"] = {"zero_shot_split": zero_shot_split or "",
                     "compat_averaging_bug": bool(compat_averaging_bug),
                     "num_rare": int((rare & has_gt).sum())}
  return out


def format_table(metrics: Mapping[str, Any]) -> str:
  """A readable table of the means in `metrics` (percent)."""
  def f(v):
    return "   n/a" if v is None else f"{v:6.2f}"
  lines = [f"HICO-DET mAP (%)      {'Full':>6}  {'Rare':>6}  {'Non-rare':>8}"]
  for key, name in (("default", "Default"), ("known_object", "Known object")):
    m = metrics[key]
    lines.append(f"{name:<20}  {f(m['full'])}  {f(m['rare'])}  "
                 f"  {f(m['non_rare'])}")
  if "zero_shot" in metrics:
    z = metrics["zero_shot"]
    lines.append(f"{'Zero-shot ' + z['split']:<20}  {'Full':>6}  "
                 f"{'Unseen':>6}  {'Seen':>8}")
    lines.append(f"{'':<20}  {f(z['full'])}  {f(z['unseen'])}  "
                 f"  {f(z['seen'])}")
  c = metrics.get("counts", {})
  ko_recall = metrics.get("known_object_mean_max_recall")
  lines.append(f"Mean max recall: {f(metrics.get('mean_max_recall'))} "
               f"(known object {f(ko_recall)})")
  if c:
    lines.append(f"{c['images']} images ({c['images_with_predictions']} with "
                 f"predictions), {c['gt_pairs']} GT pairs in "
                 f"{c['classes_with_gt']} classes, {c['predictions']} "
                 f"predictions ({c['predictions_evaluated']} of classes with "
                 f"GT, {c['true_positives']} TP)")
  if metrics.get("settings", {}).get("compat_averaging_bug"):
    lines.append("NOTE: --compat_averaging_bug: classes without predictions "
                 "are left out of the Rare/Non-rare (Unseen/Seen) means.")
  lines.append("NOTE: " + _MATLAB_NOTE)
  return "\n".join(lines)


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command line's flags (`ki2hoi_jax.cli`)."""
  flags.DEFINE_enum("protocol", "python", ("python", "official"),
                    "'python': GEN-VLKT's python evaluator on --annotations; "
                    "'official': HICO-DET's MATLAB protocol on --anno_bbox "
                    "(and --anno for Known-Object), as the papers report.",
                    flag_values=flag_values)
  flags.DEFINE_string("annotations", "",
                      "test_hico.json (PPDM/GEN-VLKT format); needed by "
                      "--protocol python.", flag_values=flag_values)
  flags.DEFINE_string("anno_bbox", "",
                      "HICO-DET's anno_bbox.mat; needed by --protocol "
                      "official.", flag_values=flag_values)
  flags.DEFINE_string("anno", "",
                      "HICO-DET's anno.mat (image-level labels): adds the "
                      "official Known-Object setting.", flag_values=flag_values)
  flags.DEFINE_string("export_official", "",
                      "Also write detections_01..80.mat (GEN-VLKT's converter "
                      "layout) here, to score them with the MATLAB code.",
                      flag_values=flag_values)
  flags.DEFINE_string("predictions", None,
                      "Predictions JSON: list of {file_name, predictions, "
                      "hoi_prediction}.", required=True,
                      flag_values=flag_values)
  flags.DEFINE_enum("zero_shot_split", "", ("",) + ZERO_SHOT_CHOICES,
                    "Also report Full/Seen/Unseen for this split.",
                    flag_values=flag_values)
  flags.DEFINE_string("train_annotations", "",
                      "trainval_hico.json: recompute the rare set (< 10 "
                      "training pairs) from it instead of the packaged list.",
                      flag_values=flag_values)
  flags.DEFINE_string("output", "",
                      "Write all metrics (incl. per-HOI AP) as JSON.",
                      flag_values=flag_values)
  flags.register_multi_flags_validator(
      ["protocol", "annotations", "anno_bbox"],
      lambda f: bool(f["anno_bbox"] if f["protocol"] == "official"
                     else f["annotations"]),
      "--protocol python needs --annotations; --protocol official needs "
      "--anno_bbox", flag_values=flag_values)
  flags.DEFINE_bool("compat_averaging_bug", False,
                    "Reproduce the pre-2023 GEN-VLKT/HOICLIP averaging: "
                    "classes without predictions drop out of the Rare/"
                    "Non-rare (Unseen/Seen) means but count 0 in Full.",
                    flag_values=flag_values)


def main(argv: Sequence[str]) -> int:
  """Command-line program (argv[0]: its name); returns the exit status.

  Raises:
    hico_inputs.EvaluationInputError, OSError: a bad or missing input file
      (`entry_point` prints them as one line).
  """
  args = cli.parse_flags(argv, define_flags, __doc__)
  if args.protocol == "official" or args.export_official:
    truth, det = _official_inputs(args)
    if args.export_official:
      paths = hico_official_files.export_detections(args.export_official, det)
      print(f"{len(paths)} detections_XX.mat files written to "
            f"{args.export_official}")
    if args.protocol == "official":
      return _report_official(args, truth, det)
  t0, c0 = time.perf_counter(), time.process_time()
  gt_records = load_annotations(args.annotations)
  predictions = load_predictions(args.predictions)
  rare = None
  if args.train_annotations:
    rare = rare_hois_from_annotations(
        load_annotations(args.train_annotations))
  t1, c1 = time.perf_counter(), time.process_time()
  metrics = evaluate(gt_records, predictions,
                     zero_shot_split=args.zero_shot_split or None,
                     rare_hois=rare,
                     compat_averaging_bug=args.compat_averaging_bug,
                     annotations_source=args.annotations,
                     predictions_source=args.predictions)
  t2, c2 = time.perf_counter(), time.process_time()
  metrics["settings"]["rare_source"] = (
      args.train_annotations if args.train_annotations else "metadata")
  print(format_table(metrics))
  if args.output:
    with open(args.output, "wb") as f:
      f.write(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    print(f"metrics written to {args.output}")
  print(f"(read JSON {t1 - t0:.2f} s wall / {c1 - c0:.2f} s CPU, evaluation "
        f"{t2 - t1:.2f} s wall / {c2 - c1:.2f} s CPU)", file=sys.stderr)
  return 0


def _official_inputs(args: flags.FlagValues
                     ) -> Tuple[Optional[hico_official_files.OfficialGroundTruth],
                                hico_ap.Detections]:
  """anno_bbox.mat (if given) and the predictions in its image order.

  Without --anno_bbox (an export under --protocol python), image ids follow
  the order of the test JSON.
  """
  truth = None
  if args.anno_bbox:
    truth = hico_official_files.read_anno_bbox(args.anno_bbox)
    file_names = truth.gt.file_names
  else:
    file_names = tuple(r["file_name"]
                       for r in load_annotations(args.annotations))
  with _gc_paused():
    det = hico_inputs.flatten_predictions(load_predictions(args.predictions),
                                          file_names, args.predictions)
  return truth, det


def _report_official(args: flags.FlagValues,
                     truth: hico_official_files.OfficialGroundTruth,
                     det: hico_ap.Detections) -> int:
  """Evaluates by the official protocol, prints and writes the metrics."""
  t0 = time.perf_counter()
  labels = (hico_official_files.read_image_labels(args.anno,
                                                  truth.gt.file_names)
            if args.anno else None)
  metrics = hico_official.evaluate(truth, det, labels,
                                   zero_shot_split=args.zero_shot_split or None)
  print(hico_official.format_table(metrics))
  if args.output:
    with open(args.output, "wb") as f:
      f.write(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
    print(f"metrics written to {args.output}")
  print(f"(official evaluation {time.perf_counter() - t0:.2f} s wall)",
        file=sys.stderr)
  return 0


def entry_point() -> None:
  """`python -m ki2hoi_jax.evaluation.hico` and `ki2hoi-eval-hico`."""
  cli.run(main, user_errors=(hico_inputs.EvaluationInputError,
                             hico_official_files.OfficialFileError, OSError))


if __name__ == "__main__":
  entry_point()
