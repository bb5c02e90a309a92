r"""Benchmark of one training step: device compute vs host Hungarian matching.

Runs the real pmapped train step (model, host matching through
`jax.pure_callback`, losses, optimizer) on random inputs of a config's shapes,
with `--per_device_batch` images per device, and prints the mean step time,
the host time spent inside the matching callbacks (summed over devices and
decoder layers; matching.HOST_TIMER), their difference (device compute and
everything else) and the matching share, which should stay below 5 %.

  python benchmarks/train_step.py                       # demo and paper
  python benchmarks/train_step.py --config demo --num_steps 10
  python benchmarks/train_step.py --config paper --num_steps 2 \
      --image_hw 800,1088

The paper config (configs/base.py: ResNet-50, ViT-B/32 CLIP, 64 queries,
600 classes) is slow on a CPU; its default image size here is 512x512 (pass
`--image_hw` for the real multi-scale sizes, up to 800x1333). Weights are
random and the text embeddings are random unit vectors: the speed does not
depend on their values.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from configs import demo
from ki2hoi_jax.data import splits
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.train import losses
from ki2hoi_jax.train import matching
from ki2hoi_jax.train import optimizer
from ki2hoi_jax.train import train_step as ts

MAX_MATCHING_FRACTION = 0.05
_CONFIGS = {"demo": (demo.get_config, (192, 256)),
            "paper": (base.get_config, (512, 512))}


def random_batch(config, num_devices: int, per_device: int, image_hw,
                 seed: int = 0):
  """A random [D, B, ...] batch with the shapes of docs/contracts.md."""
  rng = np.random.default_rng(seed)
  num_verbs, num_hois, num_objects = splits.class_counts(
      config.dataset.name)
  d, b, p = num_devices, per_device, int(config.dataset.max_pairs)
  h, w = image_hw
  s = int(config.dataset.clip_image_size)

  def boxes():
    return np.concatenate([rng.uniform(0.2, 0.8, (d, b, p, 2)),
                           rng.uniform(0.05, 0.4, (d, b, p, 2))],
                          -1).astype(np.float32)
  pair_mask = np.zeros((d, b, p), bool)
  pair_mask[..., :max(1, p // 4)] = True  # A few GT pairs per image.
  return {
      "image": rng.normal(size=(d, b, h, w, 3)).astype(np.float32),
      "mask": np.ones((d, b, h, w), bool),
      "clip_image": rng.normal(size=(d, b, s, s, 3)).astype(np.float32),
      "sub_boxes": boxes(), "obj_boxes": boxes(),
      "obj_labels": rng.integers(0, num_objects, (d, b, p)).astype(np.int32),
      "hoi_labels": (rng.random((d, b, p, num_hois)) < 0.005).astype(
          np.float32),
      "verb_labels": (rng.random((d, b, p, num_verbs)) < 0.02).astype(
          np.float32),
      "pair_mask": pair_mask,
      "image_index": np.arange(d * b, dtype=np.int32).reshape(d, b),
  }


def benchmark(name: str, num_steps: int, warmup: int, per_device: int,
              image_hw=None) -> float:
  """Times the train step of config `name`; returns the matching fraction."""
  get_config, default_hw = _CONFIGS[name]
  config = get_config()
  image_hw = tuple(image_hw or default_hw)
  devices = jax.local_devices()
  classes = losses.interaction_class_indices(config, "train")
  e = int(config.model.clip.embed_dim)
  text = jax.random.normal(jax.random.PRNGKey(1), (len(classes), e))
  text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
  model = ki2hoi.build_model(config, axis_name=ts.AXIS_NAME)
  image, mask, clip_image, _ = ki2hoi.dummy_inputs(config)
  t0 = time.perf_counter()
  variables = jax.device_get(jax.jit(
      lambda k: model.init(k, image, mask, clip_image, text, train=False))(
          jax.random.PRNGKey(0)))
  variables = ki2hoi.with_text_embeddings(variables, text)
  labels = optimizer.flat_labels(ki2hoi.param_labels(
      variables["params"], int(config.model.backbone_frozen_stages)))
  steps_per_epoch = 1000
  tx = optimizer.make_optimizer(config, labels, steps_per_epoch)
  state = ts.replicate(ts.create_train_state(variables, tx, labels))
  p_step = ts.make_p_train_step(
      flax_model=model, tx=tx, labels=labels, loss_config=config.loss,
      class_indices=classes, interaction_space=config.model.interaction_space,
      schedules=optimizer.learning_rate_schedules(config, steps_per_epoch),
      grad_accum_steps=int(config.optimizer.grad_accum_steps))
  batch = random_batch(config, len(devices), per_device, image_hw)
  key = config.model.interaction_space
  batch = {k: v for k, v in batch.items()
           if k != ("verb_labels" if key == "hoi" else "hoi_labels")}
  rng = jax.random.PRNGKey(2)
  print(f"[{name}] {len(devices)} x {jax.devices()[0].platform} device(s), "
        f"{per_device} image(s) per device at {image_hw[0]}x{image_hw[1]}, "
        f"{config.model.num_queries} queries, {config.dataset.max_pairs} GT "
        f"slots, {len(classes)} classes; init {time.perf_counter() - t0:.1f} s",
        flush=True)
  t0 = time.perf_counter()
  for _ in range(warmup):
    state, metrics = p_step(state, batch, rng)
  jax.block_until_ready(metrics)
  print(f"[{name}] compile + {warmup} warm-up step(s): "
        f"{time.perf_counter() - t0:.1f} s", flush=True)
  matching.HOST_TIMER.read_and_reset()
  times = []
  for _ in range(num_steps):
    t0 = time.perf_counter()
    state, metrics = p_step(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  match_s, calls = matching.HOST_TIMER.read_and_reset()
  step = float(np.mean(times))
  match = match_s / num_steps
  fraction = match / step
  print(f"[{name}] step {step * 1e3:.1f} ms (min {min(times) * 1e3:.1f}) = "
        f"device compute and the rest {(step - match) * 1e3:.1f} ms + host "
        f"matching {match * 1e3:.2f} ms ({calls // num_steps} callback calls "
        f"per step); matching/step = {100 * fraction:.2f} % "
        f"({'OK' if fraction < MAX_MATCHING_FRACTION else 'ABOVE'} the "
        f"{100 * MAX_MATCHING_FRACTION:.0f} % budget); loss "
        f"{float(np.asarray(metrics['loss'])[0]):.3f}", flush=True)
  return fraction


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", choices=("demo", "paper", "both"),
                      default="both")
  parser.add_argument("--num_steps", type=int, default=5,
                      help="timed steps (after the warm-up)")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed steps (the first one compiles)")
  parser.add_argument("--per_device_batch", type=int, default=2)
  parser.add_argument("--image_hw", default="",
                      help="H,W of the padded images (default per config)")
  args = parser.parse_args(argv)
  hw = (tuple(int(x) for x in args.image_hw.split(",")) if args.image_hw
        else None)
  names = ("demo", "paper") if args.config == "both" else (args.config,)
  ok = True
  for name in names:
    ok &= benchmark(name, args.num_steps, max(1, args.warmup),
                    args.per_device_batch, hw) < MAX_MATCHING_FRACTION
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
