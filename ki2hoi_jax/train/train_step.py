"""Pure per-device train and eval steps, and their `jax.pmap` wrappers.

A train step is two programs with the host between them, each running on
one device's shard (`[B, ...]`) with the device axis `axis_name` bound:

1. `forward_and_costs(state, batch, rng)`: the model's training forward
   under `jax.vjp` (its pullback kept as residuals) and the matching cost of
   each decoder layer (matching.py);
2. on the host, scipy solves each assignment (`matching.assign_on_host`);
3. `loss_and_update(state, batch, outputs, pullback, batch_stats, matches)`:
   the losses (losses.py), their gradient w.r.t. the outputs pulled back to
   the trainable parameters, `lax.pmean` over devices, and the optimizer on
   the trainable parameters only (optimizer.py).

The split computes what one program with the matching inside would (the
forward runs once; tests/test_train_step.py compares the two), and neither
program calls back into Python, so JAX's persistent compilation cache keeps
both between processes. The encoder batch norm syncs its statistics over
the same axis inside the model (`build_model(config, axis_name='batch')`),
so the `batch_stats` that come back are identical on every device.

Per-step randomness: the dropout key of step s on device d is
`fold_in(fold_in(rng, s), d)`, so a resumed run draws the same keys.

The pmap wrappers are the only place that knows about devices (docs/contributing.md
section 8): a shard_map version over a ('batch',) mesh would replace
`make_p_train_step` / `make_p_eval_step` and nothing else.
"""

import functools
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import flax
from flax import struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ki2hoi_jax.evaluation import clip_fusion
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.train import losses
from ki2hoi_jax.train import matching
from ki2hoi_jax.train import optimizer

AXIS_NAME = "batch"
# Model inputs of a batch (docs/contracts.md).
_MODEL_INPUTS = ("image", "mask", "clip_image")


@struct.dataclass
class TrainState:
  """Training state (replicated over devices under pmap).

  Attributes:
    step: [] int32, train steps done.
    params: all parameters, frozen ones included.
    batch_stats: running batch-norm statistics ({} when none).
    opt_state: optimizer state of the trainable parameters only.
    model_state: other variable collections the model reads and never
      updates (e.g. `frozen_bn`, and `constants` holding the training
      classifier's `interaction_text_embeddings`).
  """
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any
  model_state: Any


def create_train_state(variables: Mapping[str, Any],
                       tx: optax.GradientTransformation,
                       labels: Mapping[str, str]) -> TrainState:
  """A step-0 state from initialised model variables.

  Args:
    variables: model variables (`params`, optional `batch_stats`, and other
      collections, e.g. `frozen_bn`, `constants`).
    tx: optimizer of the trainable subtree (optimizer.make_optimizer).
    labels: flat parameter labels (optimizer.flat_labels).

  Returns:
    The TrainState (host or device arrays, unreplicated).
  """
  variables = dict(flax.core.unfreeze(variables))
  params = variables.pop("params")
  batch_stats = variables.pop("batch_stats", {})
  trainable, _ = optimizer.split_params(params, labels)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=batch_stats, opt_state=tx.init(trainable),
                    model_state=variables)


def checkpoint_items(state: TrainState) -> Dict[str, Any]:
  """The parts of a state that are checkpointed (not `constants`)."""
  extra = {k: v for k, v in state.model_state.items() if k != "constants"}
  return {"step": state.step, "params": state.params,
          "batch_stats": state.batch_stats, "opt_state": state.opt_state,
          "model_state": extra}


def restore_items(state: TrainState, items: Mapping[str, Any]) -> TrainState:
  """`state` with the checkpointed parts replaced by `items`."""
  model_state = dict(state.model_state)
  model_state.update(items.get("model_state", {}))
  return state.replace(step=jnp.asarray(items["step"], jnp.int32),
                       params=items["params"],
                       batch_stats=items["batch_stats"],
                       opt_state=items["opt_state"], model_state=model_state)


def _apply_model(flax_model, variables, batch, train: bool,
                 dropout_rng=None, text_embeddings=None,
                 verb_query_text_embeddings=None):
  args = [batch[k] for k in _MODEL_INPUTS]
  kwargs = {"train": train}
  if text_embeddings is not None:
    args.append(text_embeddings)
  if verb_query_text_embeddings is not None:
    kwargs["verb_query_text_embeddings"] = verb_query_text_embeddings
  if dropout_rng is not None:
    kwargs["rngs"] = {"dropout": dropout_rng}
  return flax_model.apply(variables, *args, mutable=["batch_stats"],
                          **kwargs) if train else (
                              flax_model.apply(variables, *args, **kwargs), {})


def forward_and_costs(state: TrainState, batch: Mapping[str, jnp.ndarray],
                      rng: jnp.ndarray, *, flax_model,
                      labels: Mapping[str, str], loss_config,
                      class_indices: np.ndarray, interaction_space: str,
                      axis_name: str = AXIS_NAME) -> Tuple[Any, ...]:
  """First program of a train step: the forward and the matching costs.

  Args:
    state: the TrainState.
    batch: per-device batch (docs/contracts.md, leading [B]).
    rng: base PRNG key of the run (the same on every device).
    flax_model: the linen model, built with `axis_name` for synced BN.
    labels: flat parameter labels (optimizer.flat_labels).
    loss_config: config.loss (the matching cost weights, `aux_loss`).
    class_indices: [C] label columns of the training classifier.
    interaction_space: 'hoi' | 'verb'.
    axis_name: device axis.

  Returns:
    (outputs, pullback, batch_stats, costs, valid): the model outputs, the
    `jax.vjp` pullback from output cotangents to trainable-parameter
    gradients (a pytree of residuals, passed to `loss_and_update`), the
    updated batch-norm statistics, one [B, Q, P] matching cost per decoder
    layer whose loss counts (`losses.layer_outputs`: the final layer first)
    and the [B, P] valid GT pairs.
  """
  step_rng = jax.random.fold_in(jax.random.fold_in(rng, state.step),
                                jax.lax.axis_index(axis_name))
  trainable, frozen = optimizer.split_params(state.params, labels)
  targets = losses.make_targets(batch, class_indices, interaction_space)

  def forward(trainable_params):
    variables = dict(state.model_state)
    variables["params"] = optimizer.merge_params(trainable_params, frozen)
    variables["batch_stats"] = state.batch_stats
    outputs, new_vars = _apply_model(flax_model, variables, batch, True,
                                     step_rng)
    return outputs, new_vars.get("batch_stats", state.batch_stats)

  outputs, pullback, batch_stats = jax.vjp(forward, trainable, has_aux=True)
  costs = [matching.config_cost(out, targets, loss_config)
           for _, out in losses.layer_outputs(outputs, loss_config.aux_loss)]
  return outputs, pullback, batch_stats, costs, targets["pair_mask"]


def loss_and_update(state: TrainState, batch: Mapping[str, jnp.ndarray],
                    outputs: Any, pullback: Callable, batch_stats: Any,
                    matches: Sequence[Tuple[jnp.ndarray, jnp.ndarray]], *,
                    tx, labels: Mapping[str, str], loss_config,
                    class_indices: np.ndarray, interaction_space: str,
                    schedules: Mapping[str, Callable[[Any], Any]],
                    grad_accum_steps: int = 1,
                    trained_objects: Optional[np.ndarray] = None,
                    axis_name: str = AXIS_NAME) -> Tuple[TrainState, Dict]:
  """Second program of a train step: losses, gradients, optimizer update.

  Args:
    state, batch: as given to `forward_and_costs`.
    outputs, pullback, batch_stats: what `forward_and_costs` returned.
    matches: (indices [B, 2, P] int32, mask [B, P] bool) per layer of the
      costs (matching.py convention), solved on the host.
    tx: optimizer of the trainable subtree.
    labels, loss_config, class_indices, interaction_space: as in
      `forward_and_costs`.
    schedules: name -> learning-rate schedule of the update count, reported
      as `lr_<name>`.
    grad_accum_steps: micro-steps per optimizer update.
    trained_objects: optional [K] bool, the objects of the object
      cross-entropy (`losses.compute_losses`); None: all.
    axis_name: device axis.

  Returns:
    (new state, metrics): the loss terms averaged over devices, `loss`,
    `grad_norm` (before clipping), `lr_*`, `num_pairs`.
  """
  trainable, frozen = optimizer.split_params(state.params, labels)
  targets = losses.make_targets(batch, class_indices, interaction_space)

  def loss_of_outputs(outs):
    return losses.compute_losses(outs, targets, loss_config, axis_name,
                                 matches=matches,
                                 trained_objects=trained_objects)

  (_, metrics), output_grads = jax.value_and_grad(
      loss_of_outputs, has_aux=True)(outputs)
  (grads,) = pullback(output_grads)
  grads = jax.lax.pmean(grads, axis_name)
  metrics = jax.lax.pmean(metrics, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, trainable)
  trainable = optax.apply_updates(trainable, updates)
  new_state = state.replace(
      step=state.step + 1,
      params=optimizer.merge_params(trainable, frozen),
      batch_stats=batch_stats, opt_state=opt_state)
  metrics["grad_norm"] = optax.global_norm(grads)
  update_count = state.step // grad_accum_steps
  for name, fn in schedules.items():
    metrics[f"lr_{name}"] = jnp.asarray(fn(update_count), jnp.float32)
  return new_state, metrics


def eval_step(state: TrainState, batch: Mapping[str, jnp.ndarray],
              text_embeddings: jnp.ndarray,
              verb_query_text_embeddings: Optional[jnp.ndarray] = None,
              clip_fusion_inputs: Optional[Mapping[str, jnp.ndarray]] = None,
              *,
              flax_model,
              table: Optional[postprocess.CandidateTable] = None,
              score_fusion: str = "sum", top_k: int = 100,
              clip_pair_fusion: float = 0.0,
              axis_name: str = AXIS_NAME) -> Dict[str, jnp.ndarray]:
  """Inference on this device's shard with the evaluation classifier.

  Args:
    state: the TrainState (its `constants` are replaced by
      `text_embeddings`).
    batch: per-device batch.
    text_embeddings: [C_eval, E] interaction text embeddings of the evaluated
      classes (all, or the training classes of a linear head).
    verb_query_text_embeddings: [C_q, E] text embeddings of the verb
      decoder's class queries (None: `text_embeddings`;
      `vocabulary.verb_query_prompts`).
    clip_fusion_inputs: what `inference.clip_pair_fusion` gives CLIP's
      crop score after the model (`vocabulary.clip_fusion_inputs`, read by
      `clip_fusion.fuse_clip_crop_scores`); None or {}: the detector's
      scores alone.
    flax_model: the linen model.
    table: candidate table of post-processing; when given, the top-k
      selection runs here on the device (postprocess.select_top_k) and only
      [B, k] arrays and boxes come back; None returns the raw final-layer
      outputs (used for V-COCO, whose post-processing is host-side).
    score_fusion: config.inference.score_fusion.
    top_k: config.inference.top_k.
    clip_pair_fusion: config.inference.clip_pair_fusion, the weight w of
      the fusion inputs.
    axis_name: device axis (unused; kept for the pmap signature).

  Returns:
    Dict with `pred_sub_boxes`, `pred_obj_boxes` [B, Q, 4] and either
    `scores`, `queries`, `candidates` [B, k] or the raw logits.
  """
  del axis_name
  variables = {k: v for k, v in state.model_state.items() if k != "constants"}
  variables["params"] = state.params
  variables["batch_stats"] = state.batch_stats
  outputs, _ = _apply_model(flax_model, variables, batch, False,
                            text_embeddings=text_embeddings,
                            verb_query_text_embeddings=(
                                verb_query_text_embeddings))
  outputs = clip_fusion.fuse_clip_crop_scores(
      outputs, batch["image"], batch["mask"], text_embeddings,
      clip_fusion_inputs or {}, state.params, model=flax_model,
      weight=clip_pair_fusion, crop_size=batch["clip_image"].shape[-2])
  out = {"pred_sub_boxes": outputs["pred_sub_boxes"],
         "pred_obj_boxes": outputs["pred_obj_boxes"]}
  if table is not None:
    out.update(postprocess.select_top_k(outputs, table, score_fusion, top_k))
  else:
    for key in ("pred_obj_logits", "pred_human_logits",
                "pred_interaction_logits", "pred_candidate_logits"):
      if key in outputs:
        out[key] = outputs[key]
  return out


# ------------------------------------------------------------ pmap wrappers


def make_p_train_step(*, flax_model, tx, labels: Mapping[str, str],
                      loss_config, class_indices: np.ndarray,
                      interaction_space: str,
                      schedules: Mapping[str, Callable[[Any], Any]],
                      grad_accum_steps: int = 1,
                      trained_objects: Optional[np.ndarray] = None,
                      devices=None) -> Callable:
  """The train step over local devices: two pmapped programs, host matching.

  Call as `p_train_step(replicated_state, batch [D, B, ...], rng) ->
  (state, metrics)`; `rng` is one unreplicated key, the state is donated.
  `forward_and_costs` runs on the devices, the host solves the assignment
  of each device's costs with scipy (`matching.assign_on_host`), and
  `loss_and_update` runs on the devices. Neither program calls back into
  Python, so both enter JAX's persistent compilation cache and a second
  process loads them instead of compiling (`startup`). Arguments: those of
  the two programs (`trained_objects`: the second's); `devices` those of the
  pmap (default: all local).
  """
  common = dict(labels=labels, loss_config=loss_config,
                class_indices=class_indices,
                interaction_space=interaction_space, axis_name=AXIS_NAME)
  p_forward = jax.pmap(
      functools.partial(forward_and_costs, flax_model=flax_model, **common),
      axis_name=AXIS_NAME, in_axes=(0, 0, None), devices=devices)
  # The state is donated. The outputs and residuals are not: no output of
  # the update has their shapes, and they are freed when the call returns.
  p_update = jax.pmap(
      functools.partial(loss_and_update, tx=tx, schedules=schedules,
                        grad_accum_steps=grad_accum_steps,
                        trained_objects=trained_objects, **common),
      axis_name=AXIS_NAME, devices=devices, donate_argnums=(0,))

  def p_train_step(state, batch, rng):
    outputs, pullback, batch_stats, costs, valid = p_forward(state, batch,
                                                             rng)
    valid = np.asarray(valid)
    matches = [matching.assign_on_host(np.asarray(c), valid) for c in costs]
    return p_update(state, batch, outputs, pullback, batch_stats, matches)

  return p_train_step


def make_p_eval_step(**kwargs) -> Callable:
  """`eval_step` pmapped over local devices.

  Call as `p_eval_step(replicated_state, batch [D, B, ...], text_embeddings,
  verb_query_text_embeddings=None, clip_fusion_inputs=None)`, the
  embeddings and the fusion inputs unreplicated (None queries: the
  interaction text embeddings; None fusion inputs: no CLIP crop scores).
  """
  p_eval_step = jax.pmap(
      functools.partial(eval_step, axis_name=AXIS_NAME, **kwargs),
      axis_name=AXIS_NAME, in_axes=(0, 0, None, None, None))

  def call(state, batch, text_embeddings, verb_query_text_embeddings=None,
           clip_fusion_inputs=None):
    if verb_query_text_embeddings is None:
      verb_query_text_embeddings = text_embeddings
    return p_eval_step(state, batch, text_embeddings,
                       verb_query_text_embeddings, clip_fusion_inputs or {})

  return call


def replicate(tree: Any, devices=None) -> Any:
  """Copies a host or single-device tree onto every local device.

  In a single process the copies get the sharding that the pmapped steps
  give their outputs (a ('batch',) mesh over the devices), so that the
  donated state round-trips without a second compilation. With several
  processes the stacked host arrays are returned and pmap places them.

  Args:
    tree: pytree of arrays.
    devices: devices of the pmap (default: all local devices).

  Returns:
    The tree with a leading device axis.
  """
  devices = list(devices or jax.local_devices())
  stacked = jax.tree.map(
      lambda x: np.stack([np.asarray(x)] * len(devices)), tree)
  if jax.process_count() > 1:
    return stacked
  sharding = jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.array(devices), (AXIS_NAME,)),
      jax.sharding.PartitionSpec(AXIS_NAME))
  return jax.device_put(stacked, sharding)


def _first_replica(x: Any) -> np.ndarray:
  if isinstance(x, jax.Array) and len(x.addressable_shards) > 0:
    # The first local shard, copied to the host without compiling a slice.
    return np.asarray(x.addressable_shards[0].data)[0]
  return np.asarray(x)[0]


def unreplicate(tree: Any) -> Any:
  """Host numpy copy of the first replica of a replicated tree."""
  return jax.tree.map(_first_replica, tree)
