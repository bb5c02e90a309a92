"""HICO-DET mAP by the official protocol (HO-RCNN's MATLAB code), in NumPy.

The numbers the papers publish come from GEN-VLKT's converter
(`detections_XX.mat`) and the official MATLAB evaluation (`eval_one.m`,
`VOCevaldet_bboxpair.m`); docs/datasets.md section 8 has the rules. This
module applies them to `hico_ap.Detections` and the ground truth of
`anno_bbox.mat` (`hico_official_files`):

1. Converter: per HOI class, detections sorted by descending score x 1000,
   at most 19,999 kept (`hico_official_files.ranked_per_class`); box
   coordinates rounded to integers (MATLAB's `round`: halves away from zero)
   and shifted by +1 to the 1-based convention of the ground truth.
2. Per class, all kept detections in (image, rank) order are stably sorted
   by descending score: ties keep image order, then rank.
3. Each detection takes, among its image's visible GT pairs of the class,
   the one with the largest min(IoU_human, IoU_object) (+1-pixel IoU, the
   first pair on ties). At >= 0.5 it is a true positive if that pair is still
   free, else a false positive (no fall-back); below, a false positive.
   This is the same rule as the python protocol's, so `hico_ap` matches.
4. AP: 11-point VOC AP over MATLAB's `0:0.1:1`, whose 0.6 and 0.7 are the
   doubles nearest 0.6 and 0.7 (`MATLAB_RECALL_THRESHOLDS`; numpy's arange
   is one ulp above there). A class without test GT has AP 0.
5. Known-Object: a class's detections are kept only in images whose
   `anno.mat` labels are positive for some HOI of the class's object.
6. Full / Rare / Non-rare: means over the 600 classes, Rare = fewer than 10
   visible training instances in `anno_bbox.mat`.
"""

from typing import Any, Dict, List, Optional

import numpy as np

from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import hico_ap
from ki2hoi_jax.evaluation import hico_official_files as files

RARE_MAX_COUNT = 10
# MATLAB's 0:0.1:1: the first half as k*0.1, the second as 1 - (10-k)*0.1.
MATLAB_RECALL_THRESHOLDS = np.array(
    [k * 0.1 for k in range(6)] + [1.0 - (10 - k) * 0.1 for k in range(6, 11)])


def matlab_round(x: np.ndarray) -> np.ndarray:
  """MATLAB's `round`: to the nearest integer, halves away from zero."""
  x = np.asarray(x, np.float64)
  whole = np.trunc(x)
  return whole + np.sign(x) * (np.abs(x - whole) >= 0.5)


def converted_detections(det: hico_ap.Detections,
                         num_classes: int) -> hico_ap.Detections:
  """Step 1: the detections the MATLAB code reads, in (image, list) order.

  Returns:
    The kept detections with integer 1-based boxes and score x 1000.
  """
  kept = np.sort(files.ranked_per_class(det, num_classes))
  return hico_ap.Detections(
      image=det.image[kept], hoi=det.hoi[kept],
      score=det.score[kept] * files.SCORE_SCALE,
      sub_boxes=matlab_round(det.sub_boxes[kept]) + 1.0,
      obj_boxes=matlab_round(det.obj_boxes[kept]) + 1.0,
      num_entries=det.num_entries)


def known_object_images(image_labels: np.ndarray) -> np.ndarray:
  """[images, 80] bool: some HOI of the object is labelled positive.

  Args:
    image_labels: [600, images] bool, `anno_test == 1` of anno.mat.
  """
  meta = metadata.hico()
  out = np.zeros((image_labels.shape[1], meta.num_objects), bool)
  for o in range(meta.num_objects):
    out[:, o] = image_labels[meta.hoi_object == o].any(axis=0)
  return out


def _check_known_object(gt: hico_ap.GroundTruth, known: np.ndarray) -> None:
  """The MATLAB code asserts every GT pair lies in a known-object image."""
  bad = ~known[gt.image, metadata.hico().hoi_object[gt.hoi]]
  if np.any(bad):
    k = int(np.flatnonzero(bad)[0])
    raise files.OfficialFileError(
        f"anno.mat: image {gt.file_names[gt.image[k]]} has a GT pair of HOI "
        f"{int(gt.hoi[k]) + 1} (1-based) but no positive anno_test label for "
        "its object; anno.mat and anno_bbox.mat disagree")


def _percent(values: np.ndarray) -> List[Optional[float]]:
  return [None if np.isnan(v) else float(v) * 100.0 for v in values]


def _means(ap: np.ndarray, classes: np.ndarray, rare: np.ndarray,
           unseen: Optional[np.ndarray]) -> Dict[str, Any]:
  """Full / Rare / Non-rare (and Seen / Unseen) means in percent."""
  def mean(mask):
    return float(np.mean(ap[mask]) * 100.0) if mask.any() else None
  out = {"full": mean(classes), "rare": mean(classes & rare),
         "non_rare": mean(classes & ~rare)}
  if unseen is not None:
    out.update(seen=mean(classes & ~unseen), unseen=mean(classes & unseen))
  return out


def evaluate(truth: files.OfficialGroundTruth, det: hico_ap.Detections,
             image_labels: Optional[np.ndarray] = None,
             zero_shot_split: Optional[str] = None) -> Dict[str, Any]:
  """HICO-DET mAP by the official protocol (module docstring).

  Args:
    truth: `hico_official_files.read_anno_bbox`.
    det: detections with 0-based pixel boxes, `det.image` indexing
      `truth.gt.file_names`, in (image, list) order
      (`hico_inputs.flatten_predictions`).
    image_labels: [600, images] bool positives of anno.mat (`anno_test`);
      None: no Known-Object setting.
    zero_shot_split: '' / None or a split name: adds Seen / Unseen means.

  Returns:
    `{"protocol": "official", "default": {"full", "rare", "non_rare"[,
    "seen", "unseen"]}, ["known_object": {...}], "classes_with_gt": {the same
    means over the classes with test GT only}, "per_hoi": {"ap", "recall",
    ["ap_known_object", "recall_known_object"], "num_gt", "num_train",
    "num_detections"}, "counts": {...}}`, all in percent. Per-class recall
    is the final recall (None for a class without GT).

  Raises:
    files.OfficialFileError: image labels that contradict the GT pairs.
  """
  meta = metadata.hico()
  num_classes = meta.num_hois
  gt = truth.gt
  num_gt = np.bincount(gt.hoi, minlength=num_classes)
  conv = converted_detections(det, num_classes)
  by_score = hico_ap.descending_order(conv.score)
  tp = hico_ap.match_detections(gt, conv, num_classes, by_score)
  order = hico_ap.class_major_order(conv.hoi, by_score, num_classes)

  settings = {"default": np.ones(conv.score.size, bool)}
  if image_labels is not None:
    known = known_object_images(image_labels)
    _check_known_object(gt, known)
    settings["known_object"] = known[conv.image, meta.hoi_object[conv.hoi]]
  rare = truth.train_instances < RARE_MAX_COUNT
  unseen = (metadata.indices_to_mask(meta.unseen_hois(zero_shot_split),
                                     num_classes).astype(bool)
            if zero_shot_split else None)
  has_gt = num_gt > 0
  out = {"protocol": "official", "classes_with_gt": {}, "per_hoi": {
      "num_gt": num_gt.tolist(), "num_train": truth.train_instances.tolist()}}
  for name, keep in settings.items():
    sel = order[keep[order]]
    ap, rec, n_det = hico_ap.ap_class_sorted(
        conv.hoi[sel], tp[sel], num_gt, MATLAB_RECALL_THRESHOLDS)
    rec = np.where(has_gt | (n_det == 0), rec, np.nan)  # MATLAB: 0/0.
    out[name] = _means(ap, np.ones(num_classes, bool), rare, unseen)
    out["classes_with_gt"][name] = _means(ap, has_gt, rare, unseen)
    suffix = "" if name == "default" else "_known_object"
    out["per_hoi"]["ap" + suffix] = _percent(ap)
    out["per_hoi"]["recall" + suffix] = _percent(rec)
    if name == "default":
      out["per_hoi"]["num_detections"] = n_det.tolist()
  out["counts"] = {
      "images": gt.num_images, "gt_pairs": int(gt.hoi.size),
      "classes_with_gt": int(has_gt.sum()), "rare_classes": int(rare.sum()),
      "detections": int(det.score.size),
      "detections_after_cap": int(conv.score.size),
      "true_positives": int(tp.sum())}
  if zero_shot_split:
    out["zero_shot_split"] = zero_shot_split
  return out


NOTE = ("Official protocol (HICO-DET's MATLAB evaluation, converter included; "
        "docs/datasets.md section 8): the protocol of the published numbers.")


def format_table(metrics: Dict[str, Any]) -> str:
  """A readable table of the means in `metrics` (percent)."""
  def f(v):
    return "   n/a" if v is None else f"{v:6.2f}"
  settings = [(k, n) for k, n in (("default", "Default"),
                                  ("known_object", "Known object"))
              if k in metrics]
  zero_shot = metrics.get("zero_shot_split")
  head = (f"{'Full':>6}  {'Rare':>6}  {'Non-rare':>8}" +
          (f"  {'Seen':>6}  {'Unseen':>6}" if zero_shot else ""))
  lines = []
  scopes = [("over the 600 classes", metrics)]
  c = metrics["counts"]
  if c["classes_with_gt"] < len(metrics["per_hoi"]["ap"]):
    scopes.append((f"over the {c['classes_with_gt']} classes with test GT",
                   metrics["classes_with_gt"]))
  for scope, means in scopes:
    lines.append(f"HICO-DET mAP (%), {scope}")
    lines.append(f"{'':<20}  {head}")
    for key, name in settings:
      m = means[key]
      row = f"{name:<20}  {f(m['full'])}  {f(m['rare'])}    {f(m['non_rare'])}"
      if zero_shot:
        row += f"  {f(m['seen'])}  {f(m['unseen'])}"
      lines.append(row)
  lines.append(
      f"{c['images']} images, {c['gt_pairs']} GT pairs in "
      f"{c['classes_with_gt']} classes ({c['rare_classes']} rare), "
      f"{c['detections']} detections ({c['detections_after_cap']} after the "
      f"converter's cap), {c['true_positives']} TP"
      + (f"; zero-shot split {zero_shot}" if zero_shot else ""))
  if "known_object" not in metrics:
    lines.append("Known object: needs anno.mat (--anno).")
  lines.append("NOTE: " + NOTE)
  return "\n".join(lines)
