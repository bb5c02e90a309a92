r"""Benchmark of one training step: device compute, host matching, parts, floor.

Three modes, all on random inputs of a config's shapes with
`--per_device_batch` images per device (random weights and random unit
text embeddings: the speed does not depend on their values):

* default: the real pmapped train step (model, host matching through
  `jax.pure_callback`, losses, optimizer); prints the median step time, the
  host time spent inside the matching callbacks (summed over devices and
  decoder layers; matching.HOST_TIMER), their difference and the matching
  share, which should stay below 5 %.
* `--breakdown` (paper config, default sizes 640x640 and 800x1200): the
  same step, then the wall time of each part of it, then the floor: a
  PyTorch ResNet-50 forward + backward (benchmarks/torch_resnet.py, no
  torchvision) at the same size and batch with DETR's freezing (stem and
  layer1 without gradients, frozen BN as a fixed affine map),
  `torch.set_num_threads(2)`, its calls alternating with the step's in the
  same run; prints the step as a multiple of the floor.
* `--inference` (paper config, default 640x640): the pmapped eval step
  (model + on-device top-k) per image vs the same-run PyTorch ResNet-50
  forward (no grad) per image.

How the parts are timed (`--breakdown`): one jitted training forward of the
model records, with `flax.linen.intercept_methods`, the inputs of each
top-level submodule (backbone, clip_visual, encoder, instance_interactor,
verb_decoder, interaction_decoder, verb_predictor) and the outputs. Each
submodule is then jitted alone with its own variables and those recorded
inputs, as forward + VJP: a random cotangent on every float output, the
gradient taken w.r.t. the parameters the optimizer trains (the backbone's
layer2..4 only) and w.r.t. those of its inputs that depend on trained
parameters (the recording forward runs under `jax.jvp`, which marks them),
as in the whole step: none for the backbone (the image) and the frozen
CLIP tower (forward only), not the text embeddings nor position encodings. The
losses are timed as forward + VJP w.r.t. the model outputs (they include
the matching callbacks, whose host time is subtracted and shown as its own
line, measured inside the whole step), the optimizer as the jitted
`tx.update` + `apply_updates` with donated state. Everything the parts do
not cover (input_proj, ROI-Align, clip_proj, parameter split/merge, pmean,
what XLA fuses across part boundaries) is the `rest` line: the whole step
minus the sum of the parts. All times are medians over `--num_steps` calls
after `--warmup` untimed ones.

`--breakdown` prints the minor page faults per call of the step and of the
PyTorch floor (both run in one process, so glibc malloc tunables set in
`GLIBC_TUNABLES` apply to both; benchmarks/README.md).

  python benchmarks/train_step.py                       # demo and paper
  python benchmarks/train_step.py --config demo --num_steps 10
  python benchmarks/train_step.py --config paper --num_steps 2 \
      --image_hw 800,1088
  python benchmarks/train_step.py --breakdown           # 640x640, 800x1200
  python benchmarks/train_step.py --breakdown --image_hw 640,640 \
      --pairs_per_image 4
  python benchmarks/train_step.py --inference           # 640x640

The paper config (ki2hoi_jax/config_lib/base.py: ResNet-50, ViT-B/32 CLIP, 64 queries,
600 classes) is slow on a CPU; its default image size in the default mode is
512x512 (pass `--image_hw` for the real multi-scale sizes, up to 800x1333).
Speed targets (issue 18, CPU): the paper step <= 1.4x the floor (aim 1.1x),
inference <= 1.1x the PyTorch forward per image; host matching <= 1 % of
the step.
"""

import argparse
import dataclasses
import functools
import os
import resource
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ki2hoi_jax.config_lib import base
from configs import demo
from ki2hoi_jax.data import splits
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.evaluation import vocabulary
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.train import losses
from ki2hoi_jax.train import matching
from ki2hoi_jax.train import optimizer
from ki2hoi_jax.train import train_step as ts

MAX_MATCHING_FRACTION = 0.05
BREAKDOWN_MATCHING_FRACTION = 0.01
FLOOR_BAR, FLOOR_AIM, INFERENCE_BAR = 1.4, 1.1, 1.1
TORCH_THREADS = 2
_CONFIGS = {"demo": (demo.get_config, (192, 256)),
            "paper": (base.get_config, (512, 512))}
_BREAKDOWN_SIZES = ((640, 640), (800, 1200))
_INFERENCE_SIZE = (640, 640)
# Top-level submodules timed alone in --breakdown, with their labels.
_PARTS = (
    ("backbone", "backbone fwd+bwd (ResNet-50, layer2-4 trained)"),
    ("clip_visual", "CLIP image tower (fwd, frozen)"),
    ("encoder", "Ho-Pair Encoder fwd+bwd"),
    ("instance_interactor", "instance interactor fwd+bwd"),
    ("verb_decoder", "verb extraction decoder fwd+bwd"),
    ("interaction_decoder", "interaction decoder fwd+bwd"),
    ("verb_predictor", "verb predictor fwd+bwd"),
)


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
  get_config, default_hw = _CONFIGS[name]
  config = get_config()
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


def benchmark(name: str, num_steps: int, warmup: int, per_device: int,
              image_hw=None, pairs_per_image: Optional[int] = None) -> float:
  """Times the train step of config `name`; returns the matching fraction."""
  setup = build(name, per_device, image_hw, pairs_per_image)
  config, image_hw = setup.config, setup.image_hw
  print(f"[{name}] {len(jax.local_devices())} x {jax.devices()[0].platform} "
        f"device(s), {per_device} image(s) per device at {image_hw[0]}x"
        f"{image_hw[1]}, {config.model.num_queries} queries, "
        f"{config.dataset.max_pairs} GT slots, {len(setup.classes)} classes; "
        f"init {setup.init_s:.1f} s", flush=True)
  times, match, calls, metrics, compile_s = time_step(setup, num_steps,
                                                      warmup)
  print(f"[{name}] compile + {warmup} warm-up step(s): {compile_s:.1f} s",
        flush=True)
  step = float(np.median(times))
  fraction = match / step
  print(f"[{name}] step {step * 1e3:.1f} ms (median; min "
        f"{min(times) * 1e3:.1f}) = device compute and the rest "
        f"{(step - match) * 1e3:.1f} ms + host matching {match * 1e3:.2f} ms "
        f"({calls} callback calls per step); matching/step = "
        f"{100 * fraction:.2f} % "
        f"({'OK' if fraction < MAX_MATCHING_FRACTION else 'ABOVE'} the "
        f"{100 * MAX_MATCHING_FRACTION:.0f} % budget); loss "
        f"{float(np.asarray(metrics['loss'])[0]):.3f}", flush=True)
  return fraction


# ------------------------------------------------------ the PyTorch floor


@functools.lru_cache(maxsize=4)
def _torch_resnet50(image_hw, batch: int, train: bool) -> Callable[[], Any]:
  """A warmed-up PyTorch ResNet-50 call at [batch, 3, H, W] (see below)."""
  import torch
  from benchmarks import torch_resnet
  torch.set_num_threads(TORCH_THREADS)
  torch.manual_seed(0)
  body = torch_resnet.freeze_stem_and_layer1(
      torch_resnet.ResNet50Body(64)).train(train)
  x = torch.randn(batch, 3, *image_hw)
  cot = torch.randn_like(body(x)) if train else None

  def call():
    if not train:
      with torch.no_grad():
        return body(x)
    out = body(x)
    (out * cot).sum().backward()
    return out

  call()  # Warm-up (allocator, kernels).
  return call


def torch_resnet50_times(image_hw, batch: int, num: int, train: bool = True
                         ) -> List[float]:
  """Seconds per call of a PyTorch ResNet-50 at [batch, 3, H, W].

  train: forward + backward of sum(C5 * random cotangent) with DETR's
  freezing (stem and layer1 without gradients); else a no-grad forward.
  """
  call = _torch_resnet50(tuple(image_hw), batch, train)
  times = []
  for _ in range(num):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
  return times


# --------------------------------------------------------------- breakdown


def _is_array(x) -> bool:
  return isinstance(x, (jax.Array, np.ndarray))


def _is_float(x) -> bool:
  return jnp.issubdtype(x.dtype, jnp.floating)


@dataclasses.dataclass
class _Call:
  """A recorded submodule call: the unbound module and its inputs."""
  module: nn.Module
  treedef: Any
  statics: List[Any]  # Non-array leaves of (args, kwargs); None at arrays.
  trained: List[bool]  # Per array leaf: depends on trained parameters.
  arrays: Optional[List[Any]] = None

  def rebuild(self, arrays: Sequence[Any]):
    it = iter(arrays)
    leaves = [next(it) if s is None else s for s in self.statics]
    return jax.tree.unflatten(self.treedef, leaves)


def record_part_calls(setup: Setup, batch, rng) -> Tuple[Dict[str, _Call],
                                                         Dict[str, Any]]:
  """Inputs of each top-level part and the outputs of one training forward.

  The forward runs under `jax.jvp` w.r.t. the trained parameters, so an
  input that depends on them arrives as a JVPTracer: those are the inputs
  whose gradient the whole step computes.
  """
  model = ki2hoi.build_model(setup.config)  # No device axis outside pmap.
  names = {n for n, _ in _PARTS}
  calls: Dict[str, _Call] = {}
  variables = dict(setup.variables)
  trainable, frozen = optimizer.split_params(variables.pop("params"),
                                             setup.labels)

  def forward(trainable, batch, rng):
    def apply(trainable):
      recorded = {}

      def interceptor(next_fun, args, kwargs, context):
        mod = context.module
        path = tuple(mod.path)
        if (context.method_name == "__call__" and len(path) == 1
            and path[0] in names and path[0] not in recorded):
          leaves, treedef = jax.tree.flatten((args, kwargs))
          arrays = [l for l in leaves if _is_array(l)]
          calls[path[0]] = _Call(
              mod.clone(parent=None), treedef,
              [None if _is_array(l) else l for l in leaves],
              [isinstance(a, jax.interpreters.ad.JVPTracer) for a in arrays])
          recorded[path[0]] = arrays
        return next_fun(*args, **kwargs)

      with nn.intercept_methods(interceptor):
        outputs, _ = model.apply(
            dict(variables, params=optimizer.merge_params(trainable, frozen)),
            batch["image"], batch["mask"], batch["clip_image"], train=True,
            rngs={"dropout": rng}, mutable=["batch_stats"])
      return outputs, recorded

    outputs, _, recorded = jax.jvp(
        apply, (trainable,), (jax.tree.map(jnp.zeros_like, trainable),),
        has_aux=True)
    return outputs, recorded

  outputs, recorded = jax.jit(forward)(trainable, batch, rng)
  for name, arrays in recorded.items():
    calls[name].arrays = arrays
  return calls, outputs


def _random_like(tree, seed: int):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), tree)


def part_function(name: str, call: _Call, setup: Setup, rng):
  """A jitted () -> result running part `name` alone (see module doc)."""
  variables = setup.variables
  collections = {c: v[name] for c, v in variables.items()
                 if isinstance(v, dict) and name in v and c != "params"}
  params = variables["params"][name]
  prefix = name + "/"
  sub_labels = {k[len(prefix):]: v for k, v in setup.labels.items()
                if k.startswith(prefix)}
  trainable, frozen = optimizer.split_params(params, sub_labels)
  kinds = [t and _is_float(a) for a, t in zip(call.arrays, call.trained)]
  floats = [a for a, k in zip(call.arrays, kinds) if k]  # Differentiated.
  others = [a for a, k in zip(call.arrays, kinds) if not k]

  def apply(trainable, floats, others, rng):
    fit, oit = iter(floats), iter(others)
    args, kwargs = call.rebuild([next(fit) if k else next(oit)
                                 for k in kinds])
    out, new_state = call.module.apply(
        dict(collections, params=optimizer.merge_params(trainable, frozen)),
        *args, rngs={"dropout": rng}, mutable=["batch_stats"], **kwargs)
    return [l for l in jax.tree.leaves(out) if _is_float(l)], new_state

  if not jax.tree.leaves(trainable):  # The frozen CLIP tower: forward only.
    fwd = jax.jit(apply)
    return lambda: fwd(trainable, floats, others, rng)
  with_inputs = bool(floats)  # Not the backbone: the image is constant.
  out_shapes = jax.eval_shape(apply, trainable, floats, others, rng)[0]
  cotangents = _random_like(out_shapes, 3)

  def fwd_bwd(trainable, floats, others, rng, cotangents):
    if with_inputs:
      _, vjp, state = jax.vjp(lambda p, f: apply(p, f, others, rng),
                              trainable, floats, has_aux=True)
    else:
      _, vjp, state = jax.vjp(lambda p: apply(p, floats, others, rng),
                              trainable, has_aux=True)
    return vjp(cotangents), state

  step = jax.jit(fwd_bwd)
  return lambda: step(trainable, floats, others, rng, cotangents)


def loss_function(setup: Setup, batch, outputs):
  """A jitted () -> gradient of the losses w.r.t. the model outputs."""
  config = setup.config
  targets = losses.make_targets(batch, setup.classes,
                                config.model.interaction_space)

  def loss_grad(outputs):
    return jax.grad(lambda o: losses.compute_losses(
        o, targets, config.loss, None)[0])(outputs)

  fn = jax.jit(loss_grad)
  return lambda: fn(outputs)


def optimizer_function(setup: Setup):
  """A jitted () -> updated parameters: `tx.update` with donated state."""
  params = jax.device_get(setup.variables["params"])
  trainable, _ = optimizer.split_params(params, setup.labels)
  grads = _random_like(trainable, 4)
  holder = {"params": jax.device_put(trainable),
            "opt": setup.tx.init(trainable)}

  def update(grads, opt_state, params):
    updates, opt_state = setup.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  fn = jax.jit(update, donate_argnums=(1, 2))

  def call():
    holder["params"], holder["opt"] = fn(grads, holder["opt"],
                                         holder["params"])
    return holder["params"]

  return call


def _minor_faults() -> int:
  """Minor page faults of this process so far (getrusage)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _median_ms(times) -> float:
  return 1e3 * float(np.median(times))


def breakdown(image_hw, per_device: int, num_steps: int, warmup: int,
              pairs_per_image: Optional[int]) -> bool:
  """Parts of the paper step and the PyTorch floor at one size; True if OK."""
  h, w = image_hw
  tag = f"[breakdown {h}x{w}]"
  setup = build("paper", per_device, image_hw, pairs_per_image)
  # Step and floor alternate, one call each per round, so that a change of
  # the machine's load hits both alike.
  times, floor_times, match_s, calls = [], [], 0.0, 0
  faults, floor_faults = [], []  # Minor page faults per call.
  _, _, _, _, compile_s = time_step(setup, 0, warmup)
  for _ in range(num_steps):
    f0 = _minor_faults()
    t, m, c, _, _ = time_step(setup, 1, 0)
    faults.append(_minor_faults() - f0)
    times += t
    match_s += m
    calls = c
    f0 = _minor_faults()
    floor_times += torch_resnet50_times(image_hw, per_device, 1)
    floor_faults.append(_minor_faults() - f0)
  match = match_s / num_steps
  step_ms = _median_ms(times)
  print(f"{tag} whole train step: {step_ms:.0f} ms (compile + warm-up "
        f"{compile_s:.0f} s); PyTorch ResNet-50 fwd+bwd (floor, alternating "
        f"with the step): {_median_ms(floor_times):.0f} ms; minor page "
        f"faults per call: step {np.median(faults):.0f}, floor "
        f"{np.median(floor_faults):.0f} (GLIBC_TUNABLES="
        f"{os.environ.get('GLIBC_TUNABLES', '')!r})", flush=True)
  batch = {k: v[0] for k, v in setup.batch.items()}  # Device 0's shard.
  rng = jax.random.PRNGKey(5)
  calls_by_part, outputs = record_part_calls(setup, batch, rng)
  rows = []
  for name, label in _PARTS:
    fn = part_function(name, calls_by_part[name], setup, rng)
    rows.append((label, _median_ms(time_calls(fn, num_steps, warmup))))
    print(f"{tag}   {label}: {rows[-1][1]:.0f} ms", flush=True)
  matching.HOST_TIMER.read_and_reset()
  loss_ms = _median_ms(time_calls(loss_function(setup, batch, outputs),
                                  num_steps, warmup))
  loss_match_s, _ = matching.HOST_TIMER.read_and_reset()
  loss_match_ms = 1e3 * loss_match_s / (num_steps + warmup)
  rows.append(("losses fwd+bwd (device)", loss_ms - loss_match_ms))
  rows.append(("host matching (in the whole step)", 1e3 * match))
  rows.append(("optimizer update", _median_ms(time_calls(
      optimizer_function(setup), num_steps, warmup))))
  del setup, calls_by_part, outputs
  floor_ms = _median_ms(floor_times)
  rows.append(("rest (glue, step minus the parts)",
               step_ms - sum(ms for _, ms in rows)))
  print(f"{tag} paper config, batch {per_device}, {num_steps} timed calls "
        f"each (medians), {jax.devices()[0].platform}, load "
        f"{os.getloadavg()[0]:.1f}:")
  for label, ms in rows:
    print(f"{tag}   {label:<48} {ms:8.0f} ms {100 * ms / step_ms:6.1f} %")
  print(f"{tag}   {'whole step':<48} {step_ms:8.0f} ms  100.0 %")
  ratio = step_ms / floor_ms
  fraction = match * 1e3 / step_ms
  print(f"{tag} floor: PyTorch ResNet-50 fwd+bwd {floor_ms:.0f} ms "
        f"(min {1e3 * min(floor_times):.0f}; step min "
        f"{1e3 * min(times):.0f})")
  print(f"{tag} step / floor = {ratio:.2f}x (bar {FLOOR_BAR}x, aim "
        f"{FLOOR_AIM}x: {'OK' if ratio <= FLOOR_BAR else 'ABOVE the bar'}); "
        f"host matching / step = {100 * fraction:.2f} % ({calls} callbacks; "
        f"{'OK' if fraction <= BREAKDOWN_MATCHING_FRACTION else 'ABOVE'} "
        f"the {100 * BREAKDOWN_MATCHING_FRACTION:.0f} % budget)", flush=True)
  jax.clear_caches()
  return ratio <= FLOOR_BAR and fraction <= BREAKDOWN_MATCHING_FRACTION


def inference(image_hw, per_device: int, num_steps: int, warmup: int) -> bool:
  """Per-image eval step of the paper config vs PyTorch ResNet-50 forward."""
  h, w = image_hw
  tag = f"[inference {h}x{w}]"
  setup = build("paper", per_device, image_hw)
  config = setup.config
  p_eval = ts.make_p_eval_step(
      flax_model=setup.model,
      table=postprocess.candidate_table(config.model.interaction_space),
      score_fusion=config.inference.score_fusion,
      top_k=int(config.inference.top_k))
  inputs = {k: setup.batch[k] for k in ("image", "mask", "clip_image")}
  def call():
    return p_eval(setup.state, inputs, setup.text)

  time_calls(call, 0, warmup)
  times, floor_times = [], []
  for _ in range(num_steps):  # Alternating, as in `breakdown`.
    times += time_calls(call, 1, 0)
    floor_times += torch_resnet50_times(image_hw, per_device, 1, train=False)
  ours = _median_ms(times) / per_device
  floor = _median_ms(floor_times) / per_device
  ratio = ours / floor
  print(f"{tag} paper-config inference {ours:.0f} ms per image vs PyTorch "
        f"ResNet-50 forward {floor:.0f} ms per image (alternating calls; "
        f"batch {per_device}, load "
        f"{os.getloadavg()[0]:.1f}): {ratio:.2f}x (bar {INFERENCE_BAR}x: "
        f"{'OK' if ratio <= INFERENCE_BAR else 'ABOVE'})", flush=True)
  return ratio <= INFERENCE_BAR


def _parse_hw(values) -> List[Tuple[int, int]]:
  return [tuple(int(x) for x in v.split(",")) for v in values]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", choices=("demo", "paper", "both"),
                      default="both")
  parser.add_argument("--breakdown", action="store_true",
                      help="parts of the paper step and the PyTorch floor")
  parser.add_argument("--inference", action="store_true",
                      help="paper inference per image vs PyTorch forward")
  parser.add_argument("--num_steps", type=int, default=5,
                      help="timed calls of each thing (after the warm-up)")
  parser.add_argument("--warmup", type=int, default=2,
                      help="untimed steps (the first one compiles)")
  parser.add_argument("--per_device_batch", type=int, default=2)
  parser.add_argument("--image_hw", nargs="*", default=[],
                      help="H,W of the padded images, one or more (default "
                      "per mode and config)")
  parser.add_argument("--pairs_per_image", type=int, default=0,
                      help="valid GT pairs per image (0: max_pairs / 4)")
  args = parser.parse_args(argv)
  sizes = _parse_hw(args.image_hw)
  warmup = max(1, args.warmup)
  pairs = args.pairs_per_image or None
  ok = True
  if args.breakdown or args.inference:
    if args.breakdown:
      for hw in sizes or _BREAKDOWN_SIZES:
        ok &= breakdown(hw, args.per_device_batch, args.num_steps, warmup,
                        pairs)
    if args.inference:
      for hw in sizes or (_INFERENCE_SIZE,):
        ok &= inference(hw, args.per_device_batch, args.num_steps, warmup)
    return 0 if ok else 1
  names = ("demo", "paper") if args.config == "both" else (args.config,)
  for name in names:
    for hw in sizes or (None,):
      ok &= benchmark(name, args.num_steps, warmup, args.per_device_batch,
                      hw, pairs) < MAX_MATCHING_FRACTION
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
