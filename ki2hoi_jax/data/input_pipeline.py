"""tf.data input pipeline: deterministic, resumable, static-shape HOI batches.

Usage (see docs/contracts.md for the batch layout):

  builder = input_pipeline.prepare_dataset(config, workdir)   # builds once
  train_iter = input_pipeline.create_train_iterator(config, builder,
                                                    start_step=step)
  batch = next(train_iter)       # dict of numpy arrays [D, B, ...]
  for batch in input_pipeline.create_eval_iterator(config, builder): ...
  info = splits.image_info(builder, 'test')  # image_index -> meta

This module owns the tf.data pipeline, its iterators and the preparation of
the dataset; the numpy side is in splits.py (split annotations, training
selection) and batching.py (batch plan, padded shapes, targets).

How it works:

1. The TFDS build (tfds_builder.py) holds the validated records of each split
   as ArrayRecord files (random access by position) plus their annotations as
   arrays in the builder metadata.
2. Training examples are selected in numpy from that metadata
   (`splits.select_training`: train fraction, zero-shot filtering).
3. A host-side planner (`batching.Planner`) fixes every global batch from
   (config, seed, step) alone: its examples, their augmentations, its padded
   shape and the targets. Resuming at step k (`start_step=k`) reproduces the
   batches an uninterrupted run sees at step k.
4. Each host keeps its slice [p * L, (p + 1) * L) of every global batch
   (L = global_batch / process_count), reads those records, and tf.data
   decodes and augments them in parallel (order-preserving), then reshapes to
   [local_devices, per_device_batch, ...] and prefetches `dataset.prefetch`
   batches.

The iterators are `PipelineIterator`s: the planner runs as a Python generator
inside tf.data, so every live iterator is closed at interpreter exit (else
TensorFlow's threads can hang the exit); `close()` releases one earlier.
`prepare_dataset` builds into a data dir: in a multi-host run, build once
beforehand (python -m ki2hoi_jax.data.tfds_builder) so that the hosts do not
race on it.
"""

import atexit
import gc
import itertools
import os
import threading
import weakref
from typing import Dict, Iterator, Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from ki2hoi_jax.data import annotations
from ki2hoi_jax.data import batching
from ki2hoi_jax.data import splits
from ki2hoi_jax.data import tfds_builder
from ki2hoi_jax.data import transforms


Batch = Dict[str, np.ndarray]
_TARGET_KEYS = ("sub_boxes", "obj_boxes", "obj_labels", "verb_labels",
                "hoi_labels", "pair_mask")


# ----------------------------------------------------------- tf.data



def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow (tf.data, on the host) off the GPUs, which belong to JAX.

  Entry points that run the input pipeline on a machine with GPUs call it
  once, before TensorFlow touches a device (main, predict); without it
  TensorFlow reserves GPU memory that JAX then lacks.
  """
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):  # Already initialised: too late to hide.
    pass

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
  d, b, p = batching.layout(global_batch, num_local_devices, process_index,
                            process_count)
  local = d * b
  planner = batching.Planner(config, builder, split, train, global_batch)
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
  data = splits.split_data(builder, "train")
  sel = splits.select_training(data, builder.info.metadata["dataset"],
                               config.dataset.zero_shot_split,
                               config.dataset.train_fraction, int(config.seed))
  return len(sel.positions) // int(batch_size or config.batch_size)


def num_eval_steps(config, builder, split: str = "test",
                   batch_size: Optional[int] = None) -> int:
  """Eval steps covering the split once (the last batch is padded)."""
  builder = _as_builder(config, builder)
  n = len(splits.split_data(builder, split))
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


_ROOT_NAME = "config.dataset.root"


def dataset_root(config, workdir: str, generate: bool = False) -> str:
  """The dataset folder of a run: `dataset.root`, or the synthetic dataset.

  With `dataset.root == ''` that is `<workdir>/synthetic_<name>` (world
  'basic') or `<workdir>/synthetic_<name>_<world>` (`dataset.synthetic_world`),
  which `generate=True` creates (ki2hoi_jax.data.synthetic) when it is missing.

  Raises:
    annotations.DatasetRootError: `dataset.root` is not a folder or has no
      annotations/ folder.
  """
  cfg = config.dataset
  if cfg.root:
    annotations.check_root(cfg.root, cfg.name, name=_ROOT_NAME, full=False)
    return cfg.root
  world = cfg.synthetic_world
  suffix = "" if world == "basic" else f"_{world}"
  root = os.path.join(workdir, f"synthetic_{cfg.name}{suffix}")
  ann, _ = annotations.split_paths(root, "test", cfg.name)
  if generate and not os.path.exists(ann):
    from ki2hoi_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    synthetic.generate(root, num_train=cfg.synthetic_num_train,
                       num_test=cfg.synthetic_num_test, seed=config.seed,
                       image_size=cfg.synthetic_image_size, dataset=cfg.name,
                       world=world)
  return root


def prepare_dataset(config, workdir: str) -> tfds.core.DatasetBuilder:
  """Builds (once) the TFDS dataset of `config` and returns its builder.

  `dataset.root == ''` generates the synthetic dataset
  (ki2hoi_jax.data.synthetic) into <workdir>/synthetic_<name> first;
  `dataset.tfds_data_dir == ''` writes the build to <workdir>/tfds. A build
  whose inputs changed since (annotation files, image files, validator
  options) is rebuilt (tfds_builder.build).

  Raises:
    annotations.DatasetRootError: `dataset.root` lacks the dataset layout.
    annotations.DatasetError: other problems of the dataset (bad
      annotations: `AnnotationError`, naming the file and record).
  """
  cfg = config.dataset
  root = dataset_root(config, workdir, generate=True)
  annotations.check_root(root, cfg.name, name=_ROOT_NAME if cfg.root else
                         "the synthetic dataset root (config.dataset.root='')")
  data_dir = cfg.tfds_data_dir or os.path.join(workdir, "tfds")
  return tfds_builder.build(root, data_dir, cfg.name,
                            on_bad_box=cfg.on_bad_box,
                            on_bad_image=cfg.on_bad_image)
