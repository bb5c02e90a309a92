"""Host-side plan of the global batches: examples, geometry, targets (numpy).

Owns the planner (`Planner`: which examples, augmentations and padded shape
each global batch has), the per-example targets (`build_targets`) and the
split of a global batch over hosts and devices (`layout`). The tf.data side
that decodes the planned examples is input_pipeline.py.

Plan: for global step s, the planner draws epoch e = s // steps_per_epoch
and the epoch's permutation of the selected images (splits.select_training)
from default_rng([seed, 1, e]); every example's augmentation (flip, colour
jitter, scale, crop; transforms.py) comes from default_rng([seed, 2, e,
image_index]). Batch s therefore depends on (config, seed, s) only:
resuming at step k (`start_step=k`) reproduces the batches an uninterrupted
run sees at step k, at the cost of one permutation, and the global batch
does not depend on the number of hosts. An epoch has
floor(num_selected / global_batch) steps (the remainder is dropped).

Padded shape: the planner knows every output size of the global batch
before decoding, so it picks the batch's padded shape: each side of the
largest image is rounded up to one of `dataset.size_buckets` lengths
(transforms.bucket_sides, multiples of 32 up to `dataset.max_size`). Every
image of the global batch (all devices and hosts, as pmap needs) is padded
to it.

Targets (numpy, per example, docs/datasets.md section 3): boxes are clipped to the
image, flipped/scaled/cropped with the pixels, and boxes with zero width or
height (degenerate, or cropped away) are removed together with every pair
that uses them. In training, only pairs whose boxes are both among the
first `model.num_queries` boxes of the record are kept (GEN-VLKT truncates
the annotations to num_queries boxes). Labels of the same (subject, object)
pair are merged into one target with multi-hot verb and HOI vectors; the
first `dataset.max_pairs` distinct pairs (in annotation order) are kept.
Boxes are cxcywh normalised by the valid (unpadded) image size. V-COCO pairs
without an object get object label 80 and an all-zero object box.

Evaluation: records in split order, each exactly once; the last global batch
is completed with dummy examples (image_index -1, all-zero image and CLIP
image, full mask, size = orig_size = padded shape, no pairs). Eval batches
keep all pairs (for an eval loss only; the evaluator should take its ground
truth from `splits.split_records` or the annotation file).
"""

import dataclasses
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ki2hoi_jax.data import splits
from ki2hoi_jax.data import transforms


# ----------------------------------------------------------- targets


def build_targets(boxes: np.ndarray, box_valid: np.ndarray,
                  labels: np.ndarray, pairs: np.ndarray,
                  pair_keep: np.ndarray, out_size: Tuple[int, int], *,
                  max_pairs: int, num_verbs: int, num_hois: int,
                  max_boxes: int = 0, no_object_label: int = 80
                  ) -> Dict[str, np.ndarray]:
  """Padded, merged targets of one example.

  Args:
    boxes: [N, 4] absolute xyxy in the output image.
    box_valid: [N] bool, False for removed boxes.
    labels: [N] object indices.
    pairs: [M, 4] (subject, object, verb, hoi); object -1 = no object
      (V-COCO); hoi -1 = no HOI class.
    pair_keep: [M] bool, labels to use.
    out_size: (h, w) of the valid image region.
    max_pairs: P.
    num_verbs: V.
    num_hois: number of HOI classes.
    max_boxes: keep only pairs whose boxes are among the first `max_boxes`
      (0 = all).
    no_object_label: object label of pairs without object.

  Returns:
    dict with sub_boxes/obj_boxes [P, 4] cxcywh normalised, obj_labels [P]
    int32, verb_labels [P, V] and hoi_labels [P, num_hois] float32 multi-hot,
    pair_mask [P] bool.
  """
  h, w = out_size
  sub, obj = pairs[:, 0], pairs[:, 1]
  ok = pair_keep & box_valid[sub] & ((obj < 0) | box_valid[np.maximum(obj, 0)])
  if max_boxes:
    ok &= (sub < max_boxes) & (obj < max_boxes)
  cxcywh = transforms.xyxy_to_cxcywh(boxes, h, w) if len(boxes) else boxes
  out = {"sub_boxes": np.zeros((max_pairs, 4), np.float32),
         "obj_boxes": np.zeros((max_pairs, 4), np.float32),
         "obj_labels": np.zeros((max_pairs,), np.int32),
         "verb_labels": np.zeros((max_pairs, num_verbs), np.float32),
         "hoi_labels": np.zeros((max_pairs, num_hois), np.float32),
         "pair_mask": np.zeros((max_pairs,), bool)}
  slots: Dict[Tuple[int, int], int] = {}
  for k in np.flatnonzero(ok):
    s, o, v, c = (int(x) for x in pairs[k])
    slot = slots.get((s, o))
    if slot is None:
      if len(slots) == max_pairs:
        continue
      slot = slots[(s, o)] = len(slots)
      out["sub_boxes"][slot] = cxcywh[s]
      if o >= 0:
        out["obj_boxes"][slot] = cxcywh[o]
        out["obj_labels"][slot] = labels[o]
      else:
        out["obj_labels"][slot] = no_object_label
      out["pair_mask"][slot] = True
    out["verb_labels"][slot, v] = 1.0
    if c >= 0:
      out["hoi_labels"][slot, c] = 1.0
  return out


# ----------------------------------------------------------- planner


@dataclasses.dataclass
class _Item:
  position: int  # -1 = dummy.
  geom: transforms.Geometry


class Planner:
  """Host-side plan of the global batches of one split (numpy only)."""

  def __init__(self, config, builder, split: str, train: bool,
               global_batch: int):
    cfg = config.dataset
    self.cfg = cfg
    self.dataset = builder.info.metadata["dataset"]
    self.data = splits.split_data(builder, split)
    self.train = train
    self.global_batch = global_batch
    self.seed = int(config.seed)
    self.max_boxes = int(config.model.num_queries) if train else 0
    self.num_verbs, self.num_hois, _ = splits.class_counts(self.dataset)
    self.sides = transforms.bucket_sides(cfg.max_size, cfg.size_buckets)
    if train:
      sel = splits.select_training(self.data, self.dataset, cfg.zero_shot_split,
                                   cfg.train_fraction, self.seed)
      self.positions, self.pair_keep = sel.positions, sel.pair_keep
      self.steps_per_epoch = len(self.positions) // global_batch
      logging.info("%s/train selection (zero_shot_split=%r, train_fraction="
                   "%s): %s", self.dataset, cfg.zero_shot_split,
                   cfg.train_fraction, sel.stats)
      if self.steps_per_epoch == 0:
        raise ValueError(f"{len(self.positions)} training images left, fewer "
                         f"than one global batch of {global_batch}")
      self._log_overflow()
    else:
      self.positions = np.arange(len(self.data))
      self.pair_keep = np.ones(len(self.data.pairs), bool)
      self.num_steps = -(-len(self.positions) // global_batch)
    self._epoch, self._perm = None, None

  def _log_overflow(self):
    over = 0
    for i in self.positions:
      p = self.data.pairs_of(i)[self.pair_keep[
          self.data.pair_start[i]:self.data.pair_start[i + 1]]]
      over += len({(int(s), int(o)) for s, o in p[:, :2]}) > self.cfg.max_pairs
    if over:
      logging.warning("%d training images have more than dataset.max_pairs=%d "
                      "distinct pairs; the extra pairs are not used", over,
                      self.cfg.max_pairs)

  def items(self, step: int) -> List[_Item]:
    """The global batch of `step`: positions and geometries."""
    data, cfg = self.data, self.cfg
    if self.train:
      epoch, b = divmod(step, self.steps_per_epoch)
      if epoch != self._epoch:
        rng = np.random.default_rng([self.seed, 1, epoch])
        self._epoch, self._perm = epoch, rng.permutation(self.positions)
      positions = self._perm[b * self.global_batch:(b + 1) *
                             self.global_batch]
      out = []
      for pos in positions:
        rng = np.random.default_rng(
            [self.seed, 2, epoch, int(data.image_index[pos])])
        h, w = data.sizes[pos]
        out.append(_Item(int(pos), transforms.sample_train_geometry(
            rng, int(h), int(w), cfg)))
      return out
    out = []
    for k in range(step * self.global_batch, (step + 1) * self.global_batch):
      if k < len(self.positions):
        h, w = data.sizes[k]
        out.append(_Item(k, transforms.eval_geometry(
            int(h), int(w), cfg.eval_short_side, cfg.max_size)))
      else:
        out.append(_Item(-1, transforms.Geometry()))
    return out

  def pad_size(self, items: Sequence[_Item]) -> Tuple[int, int]:
    real = [it.geom.out_size for it in items if it.position >= 0]
    return transforms.bucket_shape(max(h for h, _ in real),
                                   max(w for _, w in real), self.sides)

  def example(self, item: _Item, pad: Tuple[int, int]) -> Dict[str, Any]:
    """Everything but the image bytes of one example (numpy)."""
    g = item.geom
    ex = {"dummy": item.position < 0, "flip": g.flip,
          "jitter": np.asarray(g.jitter, np.float32),
          "jitter_order": np.asarray(g.jitter_order, np.int32),
          "crop": g.crop, "resize1": np.asarray(g.resize1, np.int32),
          "crop_window": np.asarray(g.crop_window, np.int32),
          "pad_size": np.asarray(pad, np.int32)}
    if item.position < 0:
      ex.update(size=np.asarray(pad, np.int32),
                orig_size=np.asarray(pad, np.int32),
                out_size=np.asarray(pad, np.int32),
                image_index=np.int32(-1),
                **build_targets(np.zeros((0, 4), np.float32),
                                np.zeros(0, bool), np.zeros(0, np.int32),
                                np.zeros((0, 4), np.int32), np.zeros(0, bool),
                                pad, max_pairs=self.cfg.max_pairs,
                                num_verbs=self.num_verbs,
                                num_hois=self.num_hois))
      return ex
    i, d = item.position, self.data
    h, w = (int(v) for v in d.sizes[i])
    boxes, valid = transforms.transform_boxes(d.boxes_of(i), h, w, g)
    keep = self.pair_keep[d.pair_start[i]:d.pair_start[i + 1]]
    ex.update(size=np.asarray(g.out_size, np.int32),
              orig_size=np.asarray((h, w), np.int32),
              out_size=np.asarray(g.out_size, np.int32),
              image_index=np.int32(d.image_index[i]),
              **build_targets(boxes, valid, d.labels_of(i), d.pairs_of(i),
                              keep, g.out_size, max_pairs=self.cfg.max_pairs,
                              num_verbs=self.num_verbs, num_hois=self.num_hois,
                              max_boxes=self.max_boxes))
    return ex


# ----------------------------------------------------------- devices


def layout(global_batch: int, num_local_devices: Optional[int],
           process_index: Optional[int], process_count: Optional[int]
           ) -> Tuple[int, int, int]:
  """(local devices D, per-device batch B, process index)."""
  import jax  # pylint: disable=g-import-not-at-top
  d = num_local_devices or jax.local_device_count()
  p = jax.process_index() if process_index is None else process_index
  n = jax.process_count() if process_count is None else process_count
  if global_batch % (n * d):
    raise ValueError(f"global batch {global_batch} is not divisible by "
                     f"{n} processes x {d} local devices")
  return d, global_batch // (n * d), p
