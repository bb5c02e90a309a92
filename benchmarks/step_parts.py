"""Parts of the train step timed alone (train_step.py --breakdown); the floor.

`record_part_calls` runs one jitted training forward of the model and
records, with `flax.linen.intercept_methods`, the inputs of each top-level
submodule and the outputs; `part_function` jits one submodule alone with its
own variables and those inputs, as forward + VJP; `loss_function` and
`optimizer_function` time the losses and the optimizer update. The floor is a
PyTorch ResNet-50 (torch_resnet.py) at the same size and batch
(`torch_resnet50_times`). train_step.py's docstring says what each part
covers.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.train import losses
from ki2hoi_jax.train import optimizer
import step_setup

TORCH_THREADS = 2
# Top-level submodules timed alone in --breakdown, with their labels.
PARTS = (
    ("backbone", "backbone fwd+bwd (ResNet-50, layer2-4 trained)"),
    ("clip_visual", "CLIP image tower (fwd, frozen)"),
    ("encoder", "Ho-Pair Encoder fwd+bwd"),
    ("instance_interactor", "instance interactor fwd+bwd"),
    ("verb_decoder", "verb extraction decoder fwd+bwd"),
    ("interaction_decoder", "interaction decoder fwd+bwd"),
    ("verb_predictor", "verb predictor fwd+bwd"),
)


@functools.lru_cache(maxsize=4)
def _torch_resnet50(image_hw, batch: int, train: bool) -> Callable[[], Any]:
  """A warmed-up PyTorch ResNet-50 call at [batch, 3, H, W] (see below)."""
  import torch
  import torch_resnet
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


# ----------------------------------------------------------- the parts


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


def record_part_calls(setup: step_setup.Setup, batch, rng
                      ) -> Tuple[Dict[str, _Call], Dict[str, Any]]:
  """Inputs of each top-level part and the outputs of one training forward.

  The forward runs under `jax.jvp` w.r.t. the trained parameters, so an
  input that depends on them arrives as a JVPTracer: those are the inputs
  whose gradient the whole step computes.
  """
  model = ki2hoi.build_model(setup.config)  # No device axis outside pmap.
  names = {n for n, _ in PARTS}
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


def part_function(name: str, call: _Call, setup: step_setup.Setup, rng):
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


def loss_function(setup: step_setup.Setup, batch, outputs):
  """A jitted () -> gradient of the losses w.r.t. the model outputs."""
  config = setup.config
  targets = losses.make_targets(batch, setup.classes,
                                config.model.interaction_space)

  def loss_grad(outputs):
    return jax.grad(lambda o: losses.compute_losses(
        o, targets, config.loss, None)[0])(outputs)

  fn = jax.jit(loss_grad)
  return lambda: fn(outputs)


def optimizer_function(setup: step_setup.Setup):
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
