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
import tempfile
import time
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from ki2hoi_jax import cli
from ki2hoi_jax.data import input_pipeline


def define_flags(flag_values: flags.FlagValues, argv: Sequence[str]) -> None:
  """The command line's flags (`ki2hoi_jax.cli`); `argv` for --config.x=y."""
  config_flags.DEFINE_config_file("config", None, "Config file.",
                                  flag_values=flag_values, lock_config=True,
                                  sys_argv=list(argv))
  flags.mark_flag_as_required("config", flag_values=flag_values)
  flags.DEFINE_integer("num_batches", 30, "Timed batches.",
                       flag_values=flag_values)
  flags.DEFINE_integer("warmup", 3, "Untimed batches first.",
                       flag_values=flag_values)
  flags.DEFINE_enum("split", "train", ["train", "test"],
                    "Training (augmented) or evaluation pipeline.",
                    flag_values=flag_values)
  flags.DEFINE_string("workdir", "", "Synthetic data / TFDS folder.",
                      flag_values=flag_values)
  flags.DEFINE_integer("num_devices", 0, "Local devices of the batch layout.",
                       flag_values=flag_values)


def main(argv) -> int:
  """Command-line program (argv[0]: its name); returns the exit status."""
  args = cli.parse_flags(
      argv, lambda flag_values: define_flags(flag_values, argv), __doc__)
  config = args.config
  workdir = args.workdir or tempfile.mkdtemp(prefix="pipeline_bench_")
  t0 = time.perf_counter()
  builder = input_pipeline.prepare_dataset(config, workdir)
  print(f"dataset ready in {time.perf_counter() - t0:.1f} s "
        f"({builder.data_path})")
  devices = args.num_devices or None
  if args.split == "train":
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
  for _ in range(args.warmup):
    next(it)
  t0 = time.perf_counter()
  n = 0
  for batch in it:
    shapes[batch["image"].shape[-3:-1]] += 1
    n += 1
    if n == args.num_batches:
      break
  dt = time.perf_counter() - t0
  it.close()
  d = config.dataset
  sides = (tuple(d.train_short_sides) if args.split == "train"
           else d.eval_short_side)
  print(f"{args.split} pipeline, {n} batches of {batch_size} images: "
        f"{n * batch_size / dt:.1f} images/s ({dt / n * 1e3:.0f} ms/batch); "
        f"short sides {sides}, "
        f"max_size {d.max_size}, crop {d.crop}, CLIP {d.clip_image_size}; "
        f"padded shapes {dict(shapes)}; {os.cpu_count()} CPUs")
  return 0


if __name__ == "__main__":
  cli.run(main)
