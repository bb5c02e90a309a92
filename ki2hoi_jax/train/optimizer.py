"""Optimizer: AdamW, backbone and CLIP learning rates, step decay, clipping.

docs/architecture.md "Training recipe": AdamW, lr 1e-4 (backbone 1e-5), weight decay
1e-4, global-norm clipping 0.1, learning rates x 0.1 from `lr_drop_epoch`.
Weights initialised from CLIP text embeddings (the object classifier) train
at `clip_learning_rate` 1e-5, GEN-VLKT's `--lr_clip` with its
`--ft_clip_with_small_lr`.

Frozen parameters (CLIP towers, frozen batch-norm of the backbone) are not
given to the optimizer at all: the train step splits the parameter tree with
`split_params` into a trainable and a frozen part, differentiates and updates
only the trainable part and puts the frozen part back unchanged (bit for bit),
so they have no Adam moments and no gradient buffers. The remaining parameters
are routed with `optax.multi_transform` by their label: 'backbone' gets
`backbone_learning_rate`, 'clip' `clip_learning_rate`, everything else
`learning_rate`.

With `optimizer.pretrained_anchor` r > 0, the detector's parameters
(`DETECTOR_MODULES`: backbone, input projection, encoder, instance
interactor, as a DETR or synthetic detector checkpoint initialises them)
also decay toward the values they started from: `r * (params - start)` is
added to Adam's update before the learning rate scales it, AdamW's decoupled
weight decay with the pretrained values as its centre instead of zero (the
L2-SP idea of Li et al., 2018, decoupled as in AdamW). Under Adam's
normalised steps this bounds the drift of each parameter from its start to
about 1 / r. The start values live in the optimizer state (checkpointed, so
a resumed run keeps them).

Steps: `config.batch_size` is the global batch of one optimizer update. With
`optimizer.grad_accum_steps = k > 1` each train step sees batch_size / k
images and `optax.MultiSteps` applies an update every k train steps; step
counters (checkpoint, log, eval, `num_train_steps`, steps per epoch) count
train steps, the learning-rate schedule counts updates.
"""

from typing import Any, Callable, Dict, Mapping, NamedTuple, Tuple

from flax import traverse_util
import jax
import jax.numpy as jnp
import optax

from ki2hoi_jax.models import instance_detector

FROZEN = "frozen"
BACKBONE = "backbone"
DEFAULT = "default"
CLIP = "clip"
GROUPS = (DEFAULT, BACKBONE, CLIP)  # Trainable groups, one AdamW each.
# Top-level modules a detector checkpoint initialises: what
# `pretrained_anchor` holds.
DETECTOR_MODULES = instance_detector.MODULES


def normalise_label(label: str) -> str:
  """Maps a parameter label to 'frozen' | 'backbone' | 'clip' | 'default'."""
  label = str(label).lower()
  if label in (FROZEN, BACKBONE, CLIP):
    return label
  return DEFAULT


def flat_labels(labels: Mapping[str, Any]) -> Dict[str, str]:
  """Nested label tree -> {'a/b/c': 'frozen' | 'backbone' | 'clip' | ...}."""
  flat = traverse_util.flatten_dict(labels, sep="/")
  return {k: normalise_label(v) for k, v in flat.items()}


def split_params(params: Mapping[str, Any], labels: Mapping[str, str]
                 ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """Splits a nested parameter tree into (trainable, frozen) nested trees.

  Args:
    params: nested parameter dict.
    labels: flat labels from `flat_labels` (every parameter must have one).

  Returns:
    (trainable, frozen) nested dicts holding the same leaf objects.
  """
  flat = traverse_util.flatten_dict(params, sep="/")
  missing = sorted(set(flat) - set(labels))
  if missing:
    raise KeyError(f"parameters without a label: {missing[:10]}")
  trainable = {k: v for k, v in flat.items() if labels[k] != FROZEN}
  frozen = {k: v for k, v in flat.items() if labels[k] == FROZEN}
  return (traverse_util.unflatten_dict(trainable, sep="/"),
          traverse_util.unflatten_dict(frozen, sep="/"))


def merge_params(trainable: Mapping[str, Any],
                 frozen: Mapping[str, Any]) -> Dict[str, Any]:
  """Inverse of `split_params`."""
  flat = dict(traverse_util.flatten_dict(trainable, sep="/"))
  flat.update(traverse_util.flatten_dict(frozen, sep="/"))
  return traverse_util.unflatten_dict(flat, sep="/")


def trainable_labels(labels: Mapping[str, str]) -> Dict[str, Any]:
  """Nested 'backbone'/'clip'/'default' labels of the trainable subtree."""
  return traverse_util.unflatten_dict(
      {k: v for k, v in labels.items() if v != FROZEN}, sep="/")


def num_train_steps(steps_per_epoch: int, config) -> int:
  """Total train steps: `num_train_steps` if > 0, else epochs x steps/epoch."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return int(config.optimizer.num_epochs) * int(steps_per_epoch)


def learning_rate_schedules(config, steps_per_epoch: int
                            ) -> Dict[str, Callable[[Any], Any]]:
  """Step-decay schedules of the update count, per parameter group.

  Args:
    config: experiment config (`optimizer.*`).
    steps_per_epoch: train steps (micro-batches) per epoch.

  Returns:
    {'default': schedule, 'backbone': schedule, 'clip': schedule}: the
    learning rate as a function of the number of optimizer updates done;
    x 0.1 from update `lr_drop_epoch * steps_per_epoch // grad_accum_steps`
    on.
  """
  boundary = (int(config.optimizer.lr_drop_epoch) * int(steps_per_epoch) //
              int(config.optimizer.grad_accum_steps))
  def make(base):
    return optax.piecewise_constant_schedule(float(base), {boundary: 0.1})
  return {DEFAULT: make(config.optimizer.learning_rate),
          BACKBONE: make(config.optimizer.backbone_learning_rate),
          CLIP: make(config.optimizer.clip_learning_rate)}


class DecayTowardStartState(NamedTuple):
  """The parameters' values at `init` (the centre of the decay)."""
  start: Any


def decay_toward_start(rate: float) -> optax.GradientTransformation:
  """Adds `rate * (params - start)` to the updates; start: params at init.

  Place it between `scale_by_adam` and `scale_by_learning_rate`, where
  `add_decayed_weights` sits in `optax.adamw`.
  """
  def init_fn(params):
    return DecayTowardStartState(
        start=jax.tree.map(lambda p: jnp.array(p, copy=True), params))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("decay_toward_start needs the parameters")
    updates = jax.tree.map(lambda u, p, s: u + rate * (p - s), updates,
                           params, state.start)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def detector_mask(params: Any) -> Any:
  """True on the parameters of `DETECTOR_MODULES` (a tree like `params`)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[0], "key", None) in DETECTOR_MODULES,
      params)


def make_optimizer(config, labels: Mapping[str, str],
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """The optimizer of the trainable subtree.

  Args:
    config: experiment config (`optimizer.*`, `batch_size`).
    labels: flat labels of all parameters (`flat_labels`); frozen ones are
      dropped here because the optimizer never sees them.
    steps_per_epoch: train steps (micro-batches) per epoch.

  Returns:
    An optax transformation over `split_params(params, labels)[0]`.
  """
  schedules = learning_rate_schedules(config, steps_per_epoch)
  wd = float(config.optimizer.weight_decay)
  anchor = float(config.optimizer.pretrained_anchor)
  def group(schedule):
    if anchor <= 0:
      return optax.adamw(schedule, weight_decay=wd)
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(wd),
                       optax.masked(decay_toward_start(anchor),
                                    detector_mask),
                       optax.scale_by_learning_rate(schedule))
  groups = {name: group(schedules[name]) for name in GROUPS}
  chain = []
  if config.optimizer.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(config.optimizer.grad_clip_norm))
  chain.append(optax.multi_transform(groups, trainable_labels(labels)))
  tx = optax.chain(*chain)
  accum = int(config.optimizer.grad_accum_steps)
  if accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  return tx
