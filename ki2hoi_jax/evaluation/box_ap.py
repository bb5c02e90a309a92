"""Box AP@0.5 per class of an object detector (PASCAL VOC matching).

Detections of a class are visited in descending score (ties: input order);
each takes the unmatched ground-truth box of its image and class with the
largest IoU when that IoU is >= `IOU_THRESHOLD` (a true positive), else it
is a false positive. IoU is the "+1 pixel" IoU of the HICO-DET evaluators
(`boxes.iou_plus1`), the AP the 11-point interpolated AP of
`hico_ap.ap_class_sorted`. Classes without ground truth get no AP.
"""

from typing import Dict

import numpy as np

from ki2hoi_jax.evaluation import boxes as box_lib
from ki2hoi_jax.evaluation import hico_ap

IOU_THRESHOLD = 0.5


def true_positives(gt_image: np.ndarray, gt_class: np.ndarray,
                   gt_boxes: np.ndarray, det_image: np.ndarray,
                   det_class: np.ndarray, det_boxes: np.ndarray,
                   order: np.ndarray) -> np.ndarray:
  """True-positive flag of every detection (module docstring).

  Args:
    gt_image: [G] int image of each ground-truth box.
    gt_class: [G] int its class.
    gt_boxes: [G, 4] pixel xyxy.
    det_image: [D] int image of each detection.
    det_class: [D] int its class.
    det_boxes: [D, 4] pixel xyxy.
    order: [D] the detections in descending score.

  Returns:
    [D] bool.
  """
  by_key = {}
  for g, key in enumerate(zip(gt_image.tolist(), gt_class.tolist())):
    by_key.setdefault(key, []).append(g)
  taken = np.zeros(gt_image.shape[0], bool)
  tp = np.zeros(det_image.shape[0], bool)
  for d in order:
    cands = by_key.get((int(det_image[d]), int(det_class[d])))
    if not cands:
      continue
    iou = box_lib.iou_plus1(det_boxes[d][None], gt_boxes[cands])
    iou = np.where(taken[cands], -1.0, iou)
    best = int(np.argmax(iou))
    if iou[best] >= IOU_THRESHOLD:
      taken[cands[best]] = True
      tp[d] = True
  return tp


def box_ap(gt_image: np.ndarray, gt_class: np.ndarray, gt_boxes: np.ndarray,
           det_image: np.ndarray, det_class: np.ndarray,
           det_boxes: np.ndarray, det_score: np.ndarray,
           num_classes: int) -> Dict[int, Dict[str, float]]:
  """AP@0.5 of every class with ground truth.

  Args:
    gt_image, gt_class, gt_boxes: ground truth (`true_positives`).
    det_image, det_class, det_boxes: detections (`true_positives`).
    det_score: [D] float confidence.
    num_classes: C, classes are 0..C-1.

  Returns:
    {class: {'ap' (%), 'max_recall' (%), 'num_instances',
    'num_detections'}} for each class with ground truth.
  """
  by_score = hico_ap.descending_order(np.asarray(det_score, np.float64))
  tp = true_positives(gt_image, gt_class, gt_boxes, det_image, det_class,
                      det_boxes, by_score)
  num_gt = np.bincount(gt_class, minlength=num_classes)
  has_gt = num_gt > 0
  # ap_class_sorted needs num_gt > 0: classes without GT are dropped first.
  keep = by_score[has_gt[det_class[by_score]]]
  dense = np.cumsum(has_gt) - 1  # Class -> index among the classes with GT.
  order = hico_ap.class_major_order(dense[det_class], keep,
                                    int(has_gt.sum()))
  ap, max_recall, counts = hico_ap.ap_class_sorted(
      dense[det_class[order]], tp[order], num_gt[has_gt])
  return {int(c): {"ap": 100.0 * float(ap[j]),
                   "max_recall": 100.0 * float(max_recall[j]),
                   "num_instances": int(num_gt[c]),
                   "num_detections": int(counts[j])}
          for j, c in enumerate(np.flatnonzero(has_gt))}
