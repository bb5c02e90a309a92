r"""Throughput of the training input pipeline alone (images/s) for a config.

  python benchmarks/input_pipeline.py --config=configs/default.py \
      [--num_batches=30] [--warmup=3] [--split=train|test] [--workdir=DIR] \
      [--num_devices=0] [--config.dataset.synthetic_image_size=640]

With `dataset.root == ''` the synthetic dataset is generated (and the TFDS
build written) under --workdir (a temporary folder by default); the images are
`dataset.synthetic_image_size` pixels on the long side, so set it to ~640 to
mimic HICO-DET's JPEG decoding cost. The batches are produced at the
config's resolution (multi-scale training sizes, crops, CLIP branch) and laid
out for --num_devices local devices (0 = jax.local_device_count()); nothing
runs on an accelerator. Prints images/s (after --warmup batches) and the
padded shapes seen.
"""

import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from ki2hoi_jax.data import input_pipeline

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 30, "Timed batches.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed batches first.")
_SPLIT = flags.DEFINE_enum("split", "train", ["train", "test"],
                           "Training (augmented) or evaluation pipeline.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Synthetic data / TFDS folder.")
_NUM_DEVICES = flags.DEFINE_integer("num_devices", 0,
                                    "Local devices of the batch layout.")


def main(argv):
  del argv
  config = _CONFIG.value
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="pipeline_bench_")
  t0 = time.perf_counter()
  builder = input_pipeline.prepare_dataset(config, workdir)
  print(f"dataset ready in {time.perf_counter() - t0:.1f} s "
        f"({builder.data_path})")
  devices = _NUM_DEVICES.value or None
  if _SPLIT.value == "train":
    batch_size = config.batch_size
    it = input_pipeline.create_train_iterator(
        config, builder, num_local_devices=devices, process_index=0,
        process_count=1)
  else:
    batch_size = config.eval_batch_size
    it = input_pipeline.create_eval_iterator(
        config, builder, num_local_devices=devices, process_index=0,
        process_count=1)
  shapes = collections.Counter()
  for _ in range(_WARMUP.value):
    next(it)
  t0 = time.perf_counter()
  n = 0
  for batch in it:
    shapes[batch["image"].shape[-3:-1]] += 1
    n += 1
    if n == _NUM_BATCHES.value:
      break
  dt = time.perf_counter() - t0
  it.close()
  d = config.dataset
  sides = (tuple(d.train_short_sides) if _SPLIT.value == "train"
           else d.eval_short_side)
  print(f"{_SPLIT.value} pipeline, {n} batches of {batch_size} images: "
        f"{n * batch_size / dt:.1f} images/s ({dt / n * 1e3:.0f} ms/batch); "
        f"short sides {sides}, "
        f"max_size {d.max_size}, crop {d.crop}, CLIP {d.clip_image_size}; "
        f"padded shapes {dict(shapes)}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
