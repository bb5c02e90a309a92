"""Set-up shared by the step benchmarks: configs, random batches, timing.

`load_config('demo' | 'paper')` reads configs/demo.py or the paper config
(ki2hoi_jax/config_lib/base.py) through `config_lib.files`; `build` makes a
config's model (random weights, random unit text embeddings), replicated
train state, pmapped train step and a random batch of the input contract;
`time_calls` / `time_step` time them. Used by train_step.py, gpu.py and
startup.py (run as scripts, with this folder on the module search path).
"""

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.config_lib import files
from ki2hoi_jax.data import splits
from ki2hoi_jax.evaluation import vocabulary
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.models import param_groups
from ki2hoi_jax.train import matching
from ki2hoi_jax.train import optimizer
from ki2hoi_jax.train import trainer
from ki2hoi_jax.train import train_step as ts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Config file and default padded image (H, W) of each benchmarked config.
CONFIGS = {
    "demo": (os.path.join(REPO, "configs", "demo.py"), (192, 256)),
    "paper": (os.path.splitext(base.__file__)[0] + ".py", (512, 512)),
}


def load_config(name: str, overrides: Sequence[str] = ()):
  """The config 'demo' or 'paper', with 'field=value' overrides."""
  return files.load_config(CONFIGS[name][0], overrides)


def random_batch(config, num_devices: int, per_device: int, image_hw,
                 seed: int = 0, pairs_per_image: Optional[int] = None):
  """A random [D, B, ...] batch with the shapes of docs/contracts.md.

  `pairs_per_image` ground-truth pairs per image are valid (default a quarter
  of the `max_pairs` slots).
  """
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
  pair_mask[..., :max(1, pairs_per_image or p // 4)] = True
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


def train_step_and_batch(config, setup, num_devices: int, per_device: int,
                         image_hw):
  """The trainer's pmapped train step of `setup` and a random batch for it.

  Returns:
    (p_train_step, train batch [D, B, ...] of the step's keys, the full
    random batch).
  """
  p_train, keys = trainer.make_train_step(config, setup)
  batch = random_batch(config, num_devices, per_device, image_hw)
  return p_train, {k: batch[k] for k in keys}, batch


@dataclasses.dataclass
class Setup:
  """A config's model, replicated train state, pmapped step and batch."""
  name: str
  config: Any
  model: Any
  variables: Any
  text: Any
  classes: np.ndarray
  labels: Dict[str, str]
  tx: Any
  state: Any
  p_step: Callable
  batch: Dict[str, np.ndarray]
  image_hw: Tuple[int, int]
  init_s: float


def build(name: str, per_device: int, image_hw=None,
          pairs_per_image: Optional[int] = None) -> Setup:
  """Initialises config `name` (random weights) and its pmapped step."""
  config = load_config(name)
  default_hw = CONFIGS[name][1]
  if pairs_per_image and pairs_per_image > config.dataset.max_pairs:
    config.dataset.max_pairs = int(pairs_per_image)
  image_hw = tuple(image_hw or default_hw)
  classes = vocabulary.interaction_class_indices(config, "train")
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
  labels = optimizer.flat_labels(param_groups.param_labels(
      variables["params"], int(config.model.backbone_frozen_stages)))
  steps_per_epoch = 1000
  tx = optimizer.make_optimizer(config, labels, steps_per_epoch)
  state = ts.replicate(ts.create_train_state(variables, tx, labels))
  p_step = ts.make_p_train_step(
      flax_model=model, tx=tx, labels=labels, loss_config=config.loss,
      class_indices=classes, interaction_space=config.model.interaction_space,
      schedules=optimizer.learning_rate_schedules(config, steps_per_epoch),
      grad_accum_steps=int(config.optimizer.grad_accum_steps))
  batch = random_batch(config, len(jax.local_devices()), per_device, image_hw,
                       pairs_per_image=pairs_per_image)
  drop = "verb_labels" if config.model.interaction_space == "hoi" else (
      "hoi_labels")
  batch = {k: v for k, v in batch.items() if k != drop}
  return Setup(name, config, model, variables, text, classes, labels, tx,
               state, p_step, batch, image_hw, time.perf_counter() - t0)


def time_calls(fn: Callable[[], Any], num: int, warmup: int = 1
               ) -> List[float]:
  """Seconds of `num` calls of `fn` (blocked on), after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(num):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return times


def time_step(setup: Setup, num_steps: int, warmup: int):
  """(step times, host matching s per step, callbacks per step, metrics)."""
  holder = {"state": setup.state}
  rng = jax.random.PRNGKey(2)

  def step():
    holder["state"], holder["metrics"] = setup.p_step(holder["state"],
                                                      setup.batch, rng)
    return holder["metrics"]

  t0 = time.perf_counter()
  time_calls(step, 0, warmup)
  compile_s = time.perf_counter() - t0
  matching.HOST_TIMER.read_and_reset()
  times = time_calls(step, num_steps, 0)
  match_s, calls = matching.HOST_TIMER.read_and_reset()
  setup.state = holder["state"]
  n = max(1, num_steps)
  return times, match_s / n, calls // n, holder["metrics"], compile_s
