"""tf.data input pipeline: deterministic, resumable, static-shape HOI batches.

Usage (see docs/contracts.md for the batch layout):

  builder = input_pipeline.prepare_dataset(config, workdir)   # builds once
  train_iter = input_pipeline.create_train_iterator(config, builder,
                                                    start_step=step)
  batch = next(train_iter)       # dict of numpy arrays [D, B, ...]
  for batch in input_pipeline.create_eval_iterator(config, builder): ...
  info = input_pipeline.image_info(builder, 'test')  # image_index -> meta

How it works:

1. The TFDS build (tfds_builder.py) holds the validated records of each split
   as ArrayRecord files (random access by position) plus their annotations as
   arrays in the builder metadata.
2. Training examples are selected in numpy from that metadata
   (`select_training`): `dataset.train_fraction` keeps a fixed random subset
   of the training images (seeded by `config.seed`), then zero-shot filtering
   (hico.md section 3): every (subject, object) pair with at least one label in
   the split's unseen HOIs loses all its labels, and images left without
   labels are dropped. The test split is never filtered.
3. A host-side planner draws, for global step s, epoch e = s // steps_per_epoch
   and the epoch's permutation of the selected images from
   default_rng([seed, 1, e]); every example's augmentation (flip, colour
   jitter, scale, crop; transforms.py) comes from default_rng([seed, 2, e,
   image_index]). Batch s therefore depends on (config, seed, s) only:
   resuming at step k (`start_step=k`) reproduces the batches an uninterrupted
   run sees at step k, at the cost of one permutation, and the global batch
   does not depend on the number of hosts. An epoch has
   floor(num_selected / global_batch) steps (the remainder is dropped).
4. The planner knows every output size of the global batch before decoding,
   so it picks the batch's padded shape: each side of the largest image is
   rounded up to one of `dataset.size_buckets` lengths (transforms.
   bucket_sides, multiples of 32 up to `dataset.max_size`). Every image of the
   global batch (all devices and hosts, as pmap needs) is padded to it.
5. Each host keeps its slice [p * L, (p + 1) * L) of every global batch
   (L = global_batch / process_count), reads those records, and tf.data
   decodes and augments them in parallel (order-preserving), then reshapes to
   [local_devices, per_device_batch, ...] and prefetches `dataset.prefetch`
   batches.

Targets (numpy, per example, hico.md section 3): boxes are clipped to the
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
truth from `split_records` or the annotation file).

The iterators are `PipelineIterator`s: the planner runs as a Python generator
inside tf.data, so every live iterator is closed at interpreter exit (else
TensorFlow's threads can hang the exit); `close()` releases one earlier.
`prepare_dataset` builds into a data dir: in a multi-host run, build once
beforehand (python -m ki2hoi_jax.data.tfds_builder) so that the hosts do not
race on it.
"""

import atexit
import dataclasses
import gc
import itertools
import logging
import os
import threading
import weakref
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import metadata
from ki2hoi_jax.data import tfds_builder
from ki2hoi_jax.data import transforms

try:  # The accelerators belong to JAX.
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # pragma: no cover - already initialised.
  pass

Batch = Dict[str, np.ndarray]
_TARGET_KEYS = ("sub_boxes", "obj_boxes", "obj_labels", "verb_labels",
                "hoi_labels", "pair_mask")


# --------------------------------------------------------------- split data


@dataclasses.dataclass(frozen=True)
class SplitData:
  """Annotations of one split of a TFDS build (position i = i-th example).

  Attributes:
    image_index: [N] record index in the annotation file.
    file_names: N image file names.
    sizes: [N, 2] int32 original (height, width).
    box_start: [N + 1] offsets of each image's boxes in `boxes`.
    boxes: [T, 4] float32 absolute xyxy.
    labels: [T] int32 object indices.
    pair_start: [N + 1] offsets of each image's pairs in `pairs`.
    pairs: [U, 4] int32 (subject, object, verb, hoi).
  """
  image_index: np.ndarray
  file_names: Tuple[str, ...]
  sizes: np.ndarray
  box_start: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray
  pair_start: np.ndarray
  pairs: np.ndarray

  def __len__(self) -> int:
    return len(self.image_index)

  def boxes_of(self, i: int) -> np.ndarray:
    return self.boxes[self.box_start[i]:self.box_start[i + 1]]

  def labels_of(self, i: int) -> np.ndarray:
    return self.labels[self.box_start[i]:self.box_start[i + 1]]

  def pairs_of(self, i: int) -> np.ndarray:
    return self.pairs[self.pair_start[i]:self.pair_start[i + 1]]

  def record(self, i: int) -> annotations.ImageRecord:
    h, w = self.sizes[i]
    return annotations.ImageRecord(
        index=int(self.image_index[i]), file_name=self.file_names[i],
        boxes=self.boxes_of(i).copy(), labels=self.labels_of(i).copy(),
        pairs=self.pairs_of(i).copy(), height=int(h), width=int(w))


def _offsets(counts: Sequence[int]) -> np.ndarray:
  return np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))])


_SPLIT_CACHE: Dict[Tuple[str, str], SplitData] = {}


def _split_data_from_builder(builder, split: str) -> SplitData:
  meta = builder.info.metadata
  if meta.get("format_version") != tfds_builder.FORMAT_VERSION:
    raise ValueError(f"{builder.data_path}: metadata format "
                     f"{meta.get('format_version')} != "
                     f"{tfds_builder.FORMAT_VERSION}; rebuild the dataset")
  c = meta["splits"][split]
  return SplitData(
      image_index=np.asarray(c["image_index"], np.int32),
      file_names=tuple(c["file_name"]),
      sizes=np.asarray(c["size"], np.int32).reshape(-1, 2),
      box_start=_offsets(c["num_boxes"]),
      boxes=np.asarray(c["boxes"], np.float32).reshape(-1, 4),
      labels=np.asarray(c["labels"], np.int32),
      pair_start=_offsets(c["num_pairs"]),
      pairs=np.asarray(c["pairs"], np.int32).reshape(-1, 4))


def split_data(builder, split: str) -> SplitData:
  """The `SplitData` of a prepared builder (cached per data path and split)."""
  key = (os.fspath(builder.data_path), split)
  if key not in _SPLIT_CACHE:
    _SPLIT_CACHE[key] = _split_data_from_builder(builder, split)
  return _SPLIT_CACHE[key]


def image_info(builder, split: str = "test"
               ) -> Dict[int, Tuple[str, Tuple[int, int]]]:
  """image_index -> (file_name, (orig_height, orig_width)) for evaluation."""
  data = split_data(builder, split)
  return {int(i): (f, (int(s[0]), int(s[1])))
          for i, f, s in zip(data.image_index, data.file_names, data.sizes)}


def split_records(builder, split: str = "test"
                  ) -> List[annotations.ImageRecord]:
  """The validated records of a split (boxes, labels, pairs, sizes)."""
  data = split_data(builder, split)
  return [data.record(i) for i in range(len(data))]


def class_counts(dataset: str) -> Tuple[int, int, int]:
  """(num verb classes V, num HOI classes, num object classes K)."""
  if dataset == "vcoco":
    m = metadata.vcoco()
    return m.num_verb_classes, len(m.hoi_pairs), len(m.objects)
  m = metadata.hico()
  return m.num_verbs, m.num_hois, m.num_objects


# ----------------------------------------------------------- selection


@dataclasses.dataclass(frozen=True)
class TrainSelection:
  """Training images and pair labels after fraction and zero-shot filtering.

  Attributes:
    positions: [K] sorted positions (in the split) of the kept images.
    pair_keep: [U] bool over `SplitData.pairs`: label kept.
    stats: counters for the log.
  """
  positions: np.ndarray
  pair_keep: np.ndarray
  stats: Dict[str, int]


def select_training(data: SplitData, dataset: str, zero_shot_split: str = "",
                    train_fraction: float = 1.0, seed: int = 0
                    ) -> TrainSelection:
  """Applies `train_fraction` and zero-shot filtering (hico.md section 3).

  Args:
    data: the training split.
    dataset: 'hico_det' | 'vcoco'.
    zero_shot_split: '' or one of metadata.ZERO_SHOT_SPLITS (HICO-DET only).
    train_fraction: fraction of training images kept, in (0, 1].
    seed: seed of the fraction's random subset.

  Returns:
    The selection.
  """
  n = len(data)
  if not 0 < train_fraction <= 1:
    raise ValueError(f"dataset.train_fraction must be in (0, 1], got "
                     f"{train_fraction}")
  if zero_shot_split and dataset != "hico_det":
    raise ValueError("dataset.zero_shot_split is only defined for hico_det")
  stats = {"images": n, "pairs": len(data.pairs)}
  image_keep = np.ones(n, bool)
  if train_fraction < 1:
    k = max(1, int(round(train_fraction * n)))
    chosen = np.random.default_rng([seed, 3]).choice(n, k, replace=False)
    image_keep[:] = False
    image_keep[chosen] = True
    stats["fraction_dropped_images"] = n - k
  num_pairs = np.diff(data.pair_start)
  pair_image = np.repeat(np.arange(n), num_pairs)
  pair_keep = image_keep[pair_image].copy()
  if zero_shot_split:
    unseen = np.zeros(metadata.hico().num_hois, bool)
    unseen[list(metadata.hico().unseen_hois(zero_shot_split))] = True
    hoi = data.pairs[:, 3]
    is_unseen = (hoi >= 0) & unseen[np.maximum(hoi, 0)]
    # One key per (image, subject, object); obj may be -1 (V-COCO).
    key = ((pair_image.astype(np.int64) * 4096 + data.pairs[:, 0]) * 4096
           + data.pairs[:, 1] + 1)
    bad = np.isin(key, key[is_unseen & pair_keep])
    stats["zero_shot_dropped_labels"] = int((bad & pair_keep).sum())
    stats["zero_shot_unseen_labels"] = int((is_unseen & pair_keep).sum())
    pair_keep &= ~bad
  kept_per_image = np.bincount(pair_image[pair_keep], minlength=n)
  empty = image_keep & (kept_per_image == 0)
  if zero_shot_split:
    stats["zero_shot_dropped_images"] = int(empty.sum())
  image_keep &= kept_per_image > 0
  stats["kept_images"] = int(image_keep.sum())
  stats["kept_pairs"] = int(pair_keep.sum())
  return TrainSelection(np.flatnonzero(image_keep), pair_keep, stats)


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


class _Planner:
  """Host-side plan of the global batches of one split (numpy only)."""

  def __init__(self, config, builder, split: str, train: bool,
               global_batch: int):
    cfg = config.dataset
    self.cfg = cfg
    self.dataset = builder.info.metadata["dataset"]
    self.data = split_data(builder, split)
    self.train = train
    self.global_batch = global_batch
    self.seed = int(config.seed)
    self.max_boxes = int(config.model.num_queries) if train else 0
    self.num_verbs, self.num_hois, _ = class_counts(self.dataset)
    self.sides = transforms.bucket_sides(cfg.max_size, cfg.size_buckets)
    if train:
      sel = select_training(self.data, self.dataset, cfg.zero_shot_split,
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


# ----------------------------------------------------------- tf.data


def _layout(global_batch: int, num_local_devices: Optional[int],
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


def _signature(cfg, num_verbs: int, num_hois: int) -> Dict[str, tf.TensorSpec]:
  p = cfg.max_pairs
  spec = tf.TensorSpec
  return {
      "jpeg": spec([], tf.string), "dummy": spec([], tf.bool),
      "flip": spec([], tf.bool), "jitter": spec([3], tf.float32),
      "jitter_order": spec([3], tf.int32), "crop": spec([], tf.bool),
      "resize1": spec([2], tf.int32), "crop_window": spec([4], tf.int32),
      "out_size": spec([2], tf.int32), "pad_size": spec([2], tf.int32),
      "size": spec([2], tf.int32), "orig_size": spec([2], tf.int32),
      "image_index": spec([], tf.int32),
      "sub_boxes": spec([p, 4], tf.float32),
      "obj_boxes": spec([p, 4], tf.float32),
      "obj_labels": spec([p], tf.int32),
      "verb_labels": spec([p, num_verbs], tf.float32),
      "hoi_labels": spec([p, num_hois], tf.float32),
      "pair_mask": spec([p], tf.bool)}


def _read_jpeg(source, position: int, image_index: int) -> bytes:
  example = tf.train.Example.FromString(source[position])
  feature = example.features.feature
  stored = feature["image_index"].int64_list.value[0]
  if stored != image_index:
    raise RuntimeError(f"TFDS example {position} has image_index {stored}, "
                       f"metadata says {image_index}; rebuild the dataset")
  return feature["image"].bytes_list.value[0]


def _make_dataset(config, builder, split: str, train: bool, global_batch: int,
                  steps: Iterator[int], num_local_devices, process_index,
                  process_count, stop: threading.Event) -> tf.data.Dataset:
  cfg = config.dataset
  d, b, p = _layout(global_batch, num_local_devices, process_index,
                    process_count)
  local = d * b
  planner = _Planner(config, builder, split, train, global_batch)
  source = builder.as_data_source(
      split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  signature = _signature(cfg, planner.num_verbs, planner.num_hois)

  def generate():
    for step in steps:
      if stop.is_set():
        return
      items = planner.items(step)
      pad = planner.pad_size(items)
      for item in items[p * local:(p + 1) * local]:
        ex = planner.example(item, pad)
        ex["jpeg"] = (b"" if item.position < 0 else _read_jpeg(
            source, item.position, int(ex["image_index"])))
        yield ex

  clip_size = int(cfg.clip_image_size)
  use_jitter = train and cfg.color_jitter > 0

  def process(ex):
    def real():
      img = transforms.decode_jpeg(ex["jpeg"])
      tf.debugging.assert_equal(tf.shape(img)[:2], ex["orig_size"],
                                message="decoded image size != metadata")
      img = transforms.augment_image(
          img, ex["flip"], ex["jitter"], ex["jitter_order"], ex["crop"],
          ex["resize1"], ex["crop_window"], ex["out_size"], use_jitter)
      image, mask = transforms.normalize_and_pad(img, ex["pad_size"])
      return image, mask, transforms.clip_view(img, clip_size)

    def dummy():
      return (tf.zeros(tf.concat([ex["pad_size"], [3]], 0)),
              tf.ones(ex["pad_size"], tf.bool),
              tf.zeros([clip_size, clip_size, 3]))

    image, mask, clip = tf.cond(ex["dummy"], dummy, real)
    out = {k: ex[k] for k in ("size", "orig_size", "image_index")
           + _TARGET_KEYS}
    out.update(image=image, mask=mask, clip_image=clip)
    return out

  def to_devices(batch):
    return {k: tf.reshape(v, tf.concat([[d, b], tf.shape(v)[1:]], 0))
            for k, v in batch.items()}

  ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
  ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  ds = ds.map(to_devices, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  if cfg.prefetch:
    ds = ds.prefetch(int(cfg.prefetch))
  return ds


def _as_builder(config, builder):
  """A prepared builder, or the path of a TFDS data dir holding one."""
  if isinstance(builder, (str, os.PathLike)):
    return tfds_builder.load(os.fspath(builder), config.dataset.name)
  return builder


_LIVE_ITERATORS = weakref.WeakSet()


class PipelineIterator:
  """Iterator of numpy batches over a tf.data pipeline; `close()` stops it.

  The pipeline calls back into Python (the planner), so its background
  threads must stop before the interpreter shuts down: TensorFlow threads
  that are still running a Python generator at exit can hang or abort the
  process. Every live iterator is therefore closed by an `atexit` hook; call
  `close()` (or use it as a context manager) to release it earlier.
  """

  def __init__(self, ds: tf.data.Dataset, stop: threading.Event):
    self._stop = stop
    self._it = iter(ds)
    _LIVE_ITERATORS.add(self)

  def __iter__(self) -> "PipelineIterator":
    return self

  def __next__(self) -> Batch:
    if self._it is None:
      raise StopIteration
    batch = next(self._it)
    return {k: v.numpy() for k, v in batch.items()}

  def close(self) -> None:
    """Stops the planner and deletes the tf.data iterator (idempotent)."""
    self._stop.set()
    self._it = None
    _LIVE_ITERATORS.discard(self)

  def __enter__(self) -> "PipelineIterator":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


@atexit.register
def _close_live_iterators() -> None:
  for it in list(_LIVE_ITERATORS):
    it.close()
  gc.collect()


def train_steps_per_epoch(config, builder,
                          batch_size: Optional[int] = None) -> int:
  """Training steps per epoch (selected images // global batch)."""
  builder = _as_builder(config, builder)
  data = split_data(builder, "train")
  sel = select_training(data, builder.info.metadata["dataset"],
                        config.dataset.zero_shot_split,
                        config.dataset.train_fraction, int(config.seed))
  return len(sel.positions) // int(batch_size or config.batch_size)


def num_eval_steps(config, builder, split: str = "test",
                   batch_size: Optional[int] = None) -> int:
  """Eval steps covering the split once (the last batch is padded)."""
  builder = _as_builder(config, builder)
  n = len(split_data(builder, split))
  gb = int(batch_size or config.eval_batch_size)
  return -(-n // gb)


def create_train_iterator(config, builder, *, start_step: int = 0,
                          batch_size: Optional[int] = None,
                          num_local_devices: Optional[int] = None,
                          process_index: Optional[int] = None,
                          process_count: Optional[int] = None
                          ) -> "PipelineIterator":
  """Infinite iterator of training batches from global step `start_step`.

  Args:
    config: the run config (dataset.*, seed, batch_size, model.num_queries).
    builder: a prepared builder (`prepare_dataset` / tfds_builder.build), or
      the TFDS data dir holding the build of `config.dataset.name`.
    start_step: first global step; the batches equal those an uninterrupted
      run sees from this step on.
    batch_size: global batch size (default config.batch_size).
    num_local_devices: D (default jax.local_device_count()).
    process_index: this host (default jax.process_index()).
    process_count: hosts (default jax.process_count()).

  Returns:
    Iterator of dicts of numpy arrays [D, B, ...] (docs/contracts.md).
  """
  builder = _as_builder(config, builder)
  gb = int(batch_size or config.batch_size)
  stop = threading.Event()
  ds = _make_dataset(config, builder, "train", True, gb,
                     itertools.count(start_step), num_local_devices,
                     process_index, process_count, stop)
  return PipelineIterator(ds, stop)


def create_eval_iterator(config, builder, *, split: str = "test",
                         batch_size: Optional[int] = None,
                         num_local_devices: Optional[int] = None,
                         process_index: Optional[int] = None,
                         process_count: Optional[int] = None
                         ) -> "PipelineIterator":
  """Finite iterator over a split in order (`num_eval_steps` batches).

  Every record appears exactly once over all hosts; padding examples have
  image_index -1. Arguments as `create_train_iterator` (batch_size defaults
  to config.eval_batch_size).
  """
  builder = _as_builder(config, builder)
  gb = int(batch_size or config.eval_batch_size)
  steps = range(num_eval_steps(config, builder, split, gb))
  stop = threading.Event()
  ds = _make_dataset(config, builder, split, False, gb, iter(steps),
                     num_local_devices, process_index, process_count, stop)
  return PipelineIterator(ds, stop)


def dataset_root(config, workdir: str, generate: bool = False) -> str:
  """The dataset folder of a run: `dataset.root`, or the synthetic dataset.

  With `dataset.root == ''` that is `<workdir>/synthetic_<name>`, which
  `generate=True` creates (ki2hoi_jax.data.synthetic) when it is missing.
  """
  cfg = config.dataset
  if cfg.root:
    return cfg.root
  root = os.path.join(workdir, f"synthetic_{cfg.name}")
  ann, _ = annotations.split_paths(root, "test", cfg.name)
  if generate and not os.path.exists(ann):
    from ki2hoi_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    synthetic.generate(root, num_train=cfg.synthetic_num_train,
                       num_test=cfg.synthetic_num_test, seed=config.seed,
                       image_size=cfg.synthetic_image_size, dataset=cfg.name)
  return root


def prepare_dataset(config, workdir: str) -> tfds.core.DatasetBuilder:
  """Builds (once) the TFDS dataset of `config` and returns its builder.

  `dataset.root == ''` generates the synthetic dataset
  (ki2hoi_jax.data.synthetic) into <workdir>/synthetic_<name> first;
  `dataset.tfds_data_dir == ''` writes the build to <workdir>/tfds.
  """
  cfg = config.dataset
  root = dataset_root(config, workdir, generate=True)
  data_dir = cfg.tfds_data_dir or os.path.join(workdir, "tfds")
  return tfds_builder.build(root, data_dir, cfg.name,
                            on_bad_box=cfg.on_bad_box,
                            on_bad_image=cfg.on_bad_image)
