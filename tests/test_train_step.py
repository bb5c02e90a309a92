"""Tests of the pmapped train/eval steps (train/train_step.py, optimizer.py).

A `_TinyHOI` stand-in model with the KI2HOI output contract keeps compile
times small: a frozen 'clip_visual' Dense, a 'backbone' conv, a synced
BatchNorm over the 'batch' axis, a `frozen_bn` constant collection, and an
auxiliary decoder layer.
"""

import functools
from typing import Optional

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.evaluation import postprocess
from ki2hoi_jax.train import losses
from ki2hoi_jax.train import optimizer
from ki2hoi_jax.train import train_step as ts

Q, P, K, C, E = 4, 3, 80, 6, 8


# Compile-bound on CPU: fewer XLA passes (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


class _TinyHOI(nn.Module):
  """Test-only model with the docs/contracts.md outputs."""
  num_queries: int = Q
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, image, mask, clip_image, text=None, *, train=False,
               verb_query_text_embeddings=None):
    del verb_query_text_embeddings  # No verb decoder.
    if text is None:
      text = self.get_variable("constants", "interaction_text_embeddings")
    shift = self.variable("frozen_bn", "shift", jnp.zeros, (4,)).value
    # No conv bias: BN would cancel it and Adam would amplify its ~0 gradient.
    x = nn.Conv(4, (3, 3), strides=(2, 2), use_bias=False,
                name="backbone")(image) + shift
    x = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name,
                     momentum=0.9, name="norm")(x)
    m = mask[:, ::2, ::2, None].astype(x.dtype)
    feat = jnp.sum(x * m, (1, 2)) / jnp.maximum(jnp.sum(m, (1, 2)), 1.0)
    clip_emb = jax.lax.stop_gradient(
        nn.Dense(E, name="clip_visual")(clip_image.mean((1, 2))))
    queries = self.param("queries", nn.initializers.normal(1.0),
                         (self.num_queries, 4))
    layers = []
    h = queries[None] + feat[:, None, :]  # [B, Q, 4]
    for i in range(2):
      h = nn.tanh(nn.Dense(16, name=f"layer_{i}")(h))
      proj = nn.Dense(E, name=f"proj_{i}")(h)
      layers.append({
          "pred_sub_boxes": nn.sigmoid(nn.Dense(4, name=f"sub_{i}")(h)),
          "pred_obj_boxes": nn.sigmoid(nn.Dense(4, name=f"obj_{i}")(h)),
          "pred_obj_logits": nn.Dense(K + 1, name=f"cls_{i}")(h),
          "pred_human_logits": nn.Dense(2, name=f"hum_{i}")(h),
          "pred_interaction_logits": proj @ text.T,
          "interaction_clip_feature": jnp.mean(proj, axis=1),
      })
      h = h[..., :4]
    out = dict(layers[-1])
    out["aux_outputs"] = layers[:-1]
    out["clip_image_embedding"] = clip_emb
    return out


def _labels(params):
  flat = {}
  for k in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = "/".join(p.key for p in k[0])
    flat[path] = ("frozen" if path.startswith("clip_visual") else
                  "backbone" if path.startswith("backbone") else
                  "clip" if path.startswith("cls_") else "default")
  return flat


def _config(**optim):
  cfg = base.get_config()
  cfg.loss.aux_loss = True
  cfg.optimizer.learning_rate = 1e-2
  cfg.optimizer.backbone_learning_rate = 1e-3
  cfg.optimizer.clip_learning_rate = 2e-3
  cfg.optimizer.grad_clip_norm = 0.1
  cfg.optimizer.lr_drop_epoch = 1
  cfg.batch_size = 8
  for k, v in optim.items():
    cfg.optimizer[k] = v
  return cfg


def _batch(n, seed=0):
  rng = np.random.default_rng(seed)
  def boxes(*shape):
    return np.concatenate([rng.uniform(0.3, 0.7, shape + (2,)),
                           rng.uniform(0.1, 0.3, shape + (2,))],
                          -1).astype(np.float32)
  pair_mask = rng.random((n, P)) < 0.7
  pair_mask[:, 0] = True
  pair_mask[1] = False  # An image without pairs.
  mask = np.ones((n, 8, 8), bool)
  mask[:, 6:] = False  # Padding rows.
  return {
      "image": (rng.normal(size=(n, 8, 8, 3)).astype(np.float32) *
                mask[..., None]),
      "mask": mask,
      "clip_image": rng.normal(size=(n, 4, 4, 3)).astype(np.float32),
      "sub_boxes": boxes(n, P),
      "obj_boxes": boxes(n, P),
      "obj_labels": rng.integers(0, K, (n, P)).astype(np.int32),
      "hoi_labels": (rng.random((n, P, C)) < 0.4).astype(np.float32),
      "verb_labels": np.zeros((n, P, 3), np.float32),
      "pair_mask": pair_mask,
      "image_index": np.arange(n, dtype=np.int32),
  }


def _setup(cfg, steps_per_epoch=2):
  model = _TinyHOI(axis_name="batch")
  batch = _batch(2)
  text = jax.random.normal(jax.random.PRNGKey(1), (C, E))
  variables = model.init(jax.random.PRNGKey(0), batch["image"], batch["mask"],
                         batch["clip_image"], text)
  variables = dict(variables)
  variables["constants"] = {"interaction_text_embeddings": text}
  labels = _labels(variables["params"])
  tx = optimizer.make_optimizer(cfg, labels, steps_per_epoch)
  state = ts.create_train_state(variables, tx, labels)
  kwargs = dict(flax_model=model, tx=tx, labels=labels,
                loss_config=cfg.loss, class_indices=np.arange(C),
                interaction_space="hoi",
                schedules=optimizer.learning_rate_schedules(
                    cfg, steps_per_epoch),
                grad_accum_steps=cfg.optimizer.grad_accum_steps)
  return model, state, kwargs, labels


def _run(state, kwargs, batches, num_devices, return_states=False):
  devices = jax.local_devices()[:num_devices]
  step = ts.make_p_train_step(devices=devices, **kwargs)
  state = ts.replicate(state, devices)
  history, states = [], []
  for b in batches:
    shard = jax.tree.map(
        lambda x: x.reshape((num_devices, -1) + x.shape[1:]), b)
    state, metrics = step(state, shard, jax.random.PRNGKey(3))
    history.append(ts.unreplicate(metrics))
    states.append(ts.unreplicate(state))
  if return_states:
    return states, history
  return states[-1], history


def test_eight_devices_equal_one_device_on_the_global_batch():
  cfg = _config()
  _, state, kwargs, _ = _setup(cfg)
  batches = [_batch(8, seed=s) for s in (1, 2)]
  s8, h8 = _run(state, kwargs, batches, 8)
  s1, h1 = _run(state, kwargs, batches, 1)
  for m8, m1 in zip(h8, h1):
    for k in m1:
      np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, atol=1e-6,
                                 err_msg=k)
  leaves8 = jax.tree_util.tree_leaves_with_path(s8)
  leaves1 = jax.tree_util.tree_leaves(s1)
  for (path, a), b in zip(leaves8, leaves1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  assert int(s8.step) == 2
  # Loss terms of every layer are reported, aux included.
  assert {"loss", "loss_interaction", "loss_obj_ce_aux_0", "loss_re",
          "grad_norm", "lr_default", "lr_backbone", "lr_clip"} <= set(h8[0])
  # BN statistics moved away from their init (they are synced and used).
  assert np.abs(s8.batch_stats["norm"]["mean"]).sum() > 0


def _one_program_step(state, batch, rng, *, flax_model, tx, labels,
                      loss_config, class_indices, interaction_space,
                      schedules, grad_accum_steps):
  """Reference: the whole step as one program, matching inside by callback."""
  del schedules, grad_accum_steps
  step_rng = jax.random.fold_in(jax.random.fold_in(rng, state.step),
                                jax.lax.axis_index("batch"))
  trainable, frozen = optimizer.split_params(state.params, labels)
  targets = losses.make_targets(batch, class_indices, interaction_space)

  def loss_fn(params):
    variables = dict(state.model_state)
    variables["params"] = optimizer.merge_params(params, frozen)
    variables["batch_stats"] = state.batch_stats
    outputs, new_vars = flax_model.apply(
        variables, batch["image"], batch["mask"], batch["clip_image"],
        train=True, rngs={"dropout": step_rng}, mutable=["batch_stats"])
    loss, metrics = losses.compute_losses(outputs, targets, loss_config,
                                          "batch")  # matching.match inside.
    return loss, (metrics, new_vars["batch_stats"])

  (_, (metrics, stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(trainable)
  grads = jax.lax.pmean(grads, "batch")
  updates, _ = tx.update(grads, state.opt_state, trainable)
  return (optax.apply_updates(trainable, updates), stats,
          jax.lax.pmean(metrics, "batch"))


def test_two_programs_equal_one_program_with_the_matching_inside():
  """The split step (host matching between programs) = the callback step."""
  cfg = _config()
  _, state, kwargs, labels = _setup(cfg)
  devices = jax.local_devices()[:2]
  batch = jax.tree.map(lambda x: x.reshape((2, -1) + x.shape[1:]),
                       _batch(8, seed=4))
  reference = jax.pmap(
      functools.partial(_one_program_step, **kwargs), axis_name="batch",
      in_axes=(0, 0, None), devices=devices)(
          ts.replicate(state, devices), batch, jax.random.PRNGKey(3))
  trainable, stats, metrics = ts.unreplicate(reference)
  new_state, new_metrics = ts.make_p_train_step(devices=devices, **kwargs)(
      ts.replicate(state, devices), batch, jax.random.PRNGKey(3))
  new_state, new_metrics = ts.unreplicate((new_state, new_metrics))
  new_trainable, _ = optimizer.split_params(new_state.params, labels)
  # Float32; the programs differ only in where XLA fuses: 1e-5 relative.
  for k, v in metrics.items():
    np.testing.assert_allclose(new_metrics[k], v, rtol=1e-5, atol=1e-6,
                               err_msg=k)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(new_trainable),
                          jax.tree_util.tree_leaves(trainable)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  for a, b in zip(jax.tree_util.tree_leaves(new_state.batch_stats),
                  jax.tree_util.tree_leaves(stats)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert new_metrics["loss"] > 0 and int(new_state.step) == 1


def test_frozen_params_bit_identical_and_not_in_optimizer_state():
  cfg = _config()
  _, state, kwargs, labels = _setup(cfg)
  new, history = _run(state, kwargs, [_batch(8, 1), _batch(8, 2)], 8)
  frozen_keys = [k for k, v in labels.items() if v == "frozen"]
  assert frozen_keys
  flat_old = traverse_util.flatten_dict(state.params, sep="/")
  flat_new = traverse_util.flatten_dict(new.params, sep="/")
  for k in flat_old:
    same = np.array_equal(np.asarray(flat_old[k]), flat_new[k])
    if k in frozen_keys:
      assert same and flat_new[k].tobytes() == np.asarray(
          flat_old[k]).tobytes(), k
    else:
      assert not same, f"{k} did not train"
  np.testing.assert_array_equal(new.model_state["frozen_bn"]["shift"],
                                np.zeros(4))
  # Adam moments exist for trainable leaves only.
  num_trainable = sum(np.size(flat_old[k]) for k in flat_old
                      if k not in frozen_keys)
  moments = [x for x in jax.tree.leaves(state.opt_state)
             if np.ndim(x) > 0]
  assert sum(np.size(x) for x in moments) == 2 * num_trainable
  # Learning rates: the drop boundary is 1 epoch = 2 updates.
  assert history[0]["lr_default"] == np.float32(1e-2)
  assert history[1]["lr_backbone"] == np.float32(1e-3)
  assert history[1]["lr_clip"] == np.float32(2e-3)
  # Gradient norm is reported before clipping (clip 0.1).
  assert history[0]["grad_norm"] > 0.1


def test_learning_rate_drops_at_epoch_boundary():
  cfg = _config(lr_drop_epoch=3)
  sched = optimizer.learning_rate_schedules(cfg, steps_per_epoch=5)
  np.testing.assert_allclose(float(sched["default"](14)), 1e-2)
  np.testing.assert_allclose(float(sched["default"](15)), 1e-3)
  np.testing.assert_allclose(float(sched["backbone"](15)), 1e-4)
  assert optimizer.num_train_steps(5, cfg) == 90 * 5
  cfg.optimizer.grad_accum_steps = 2
  # 10 micro-steps per epoch = 5 updates: the drop is at update 15 again.
  sched = optimizer.learning_rate_schedules(cfg, steps_per_epoch=10)
  np.testing.assert_allclose(float(sched["default"](14)), 1e-2)
  np.testing.assert_allclose(float(sched["default"](15)), 1e-3)
  cfg.num_train_steps = 7
  assert optimizer.num_train_steps(10, cfg) == 7


def test_each_label_updates_at_its_learning_rate():
  """First AdamW step from 0 with gradient g: the update is -lr * sign(g)."""
  cfg = _config(learning_rate=1e-2, backbone_learning_rate=1e-3,
                clip_learning_rate=1e-5, grad_clip_norm=0.0)
  labels = {"a/kernel": "default", "b/kernel": "backbone",
            "c/kernel": "clip", "d/kernel": "frozen"}
  tx = optimizer.make_optimizer(cfg, labels, steps_per_epoch=2)
  params = {k: {"kernel": jnp.zeros(3)} for k in "abc"}
  grads = {k: {"kernel": jnp.array([1.0, -2.0, 0.5])} for k in "abc"}
  updates, _ = tx.update(grads, tx.init(params), params)
  sign = np.array([-1.0, 1.0, -1.0])
  for name, lr in (("a", 1e-2), ("b", 1e-3), ("c", 1e-5)):
    np.testing.assert_allclose(updates[name]["kernel"], lr * sign,
                               rtol=1e-5, err_msg=name)
  sched = optimizer.learning_rate_schedules(cfg, steps_per_epoch=2)
  assert set(sched) == {"default", "backbone", "clip"}
  np.testing.assert_allclose(float(sched["clip"](1)), 1e-5)
  np.testing.assert_allclose(float(sched["clip"](2)), 1e-6)  # Epoch 1 drop.
  # clip_learning_rate 0 keeps them fixed (GEN-VLKT's --fix_clip), bit for
  # bit, weight decay included.
  cfg.optimizer.clip_learning_rate = 0.0
  tx = optimizer.make_optimizer(cfg, labels, steps_per_epoch=2)
  params["c"]["kernel"] = jnp.array([0.3, -0.7, 1.1])
  updates, _ = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  assert np.asarray(new["c"]["kernel"]).tobytes() == np.asarray(
      params["c"]["kernel"]).tobytes()


def test_pretrained_anchor_pulls_detector_parameters_to_their_start():
  """Adam's first step is lr * sign(g); the anchor adds lr * r * (p - p0)."""
  cfg = _config(learning_rate=1e-2, backbone_learning_rate=1e-3,
                grad_clip_norm=0.0, weight_decay=0.0)
  labels = {"backbone/kernel": "backbone",
            "instance_interactor/kernel": "default",
            "verb_decoder/kernel": "default"}
  start = {k: {"kernel": jnp.array([0.5, -0.5, 1.0])}
           for k in ("backbone", "instance_interactor", "verb_decoder")}
  grads = jax.tree.map(lambda p: jnp.array([1.0, -2.0, 0.5]), start)
  # Off (the default): plain AdamW, no start values in the state.
  tx = optimizer.make_optimizer(cfg, labels, steps_per_epoch=2)
  plain, _ = tx.update(grads, tx.init(start), start)
  cfg.optimizer.pretrained_anchor = 10.0
  tx = optimizer.make_optimizer(cfg, labels, steps_per_epoch=2)
  opt_state = tx.init(start)
  moved = jax.tree.map(lambda p: p + 0.1, start)  # 0.1 from the start.
  updates, _ = tx.update(grads, opt_state, moved)
  for name, lr in (("backbone", 1e-3), ("instance_interactor", 1e-2)):
    np.testing.assert_allclose(
        updates[name]["kernel"],
        plain[name]["kernel"] - lr * 10.0 * 0.1, rtol=1e-5, atol=1e-8,
        err_msg=name)
  # Outside the detector's modules: no pull.
  np.testing.assert_allclose(updates["verb_decoder"]["kernel"],
                             plain["verb_decoder"]["kernel"], rtol=1e-6)
  # At the start the pull is zero.
  at_start, _ = tx.update(grads, opt_state, start)
  np.testing.assert_allclose(at_start["backbone"]["kernel"],
                             plain["backbone"]["kernel"], rtol=1e-6)
  # In the pmapped step (state donated): the start values stay in the
  # optimizer state, bit for bit, while the parameters move.
  cfg = _config(pretrained_anchor=1.0)
  _, state, kwargs, _ = _setup(cfg)
  (s1, s2), _ = _run(state, kwargs, [_batch(4, 1), _batch(4, 2)], 1,
                     return_states=True)
  def starts(s):
    return [np.asarray(x) for x in jax.tree.leaves(s.opt_state)
            if np.shape(x) == np.shape(state.params["backbone"]["kernel"])]
  assert starts(s1) and any(
      np.array_equal(x, np.asarray(state.params["backbone"]["kernel"]))
      for x in starts(s2))
  assert not np.array_equal(s2.params["backbone"]["kernel"],
                            np.asarray(state.params["backbone"]["kernel"]))


def test_gradient_accumulation_updates_every_k_steps():
  cfg = _config(grad_accum_steps=2)
  _, state, kwargs, labels = _setup(cfg)
  trainable = [k for k, v in labels.items() if v != "frozen"]
  (s1, s2), h2 = _run(state, kwargs, [_batch(4, 1), _batch(4, 2)], 2,
                      return_states=True)
  old = traverse_util.flatten_dict(state.params, sep="/")
  after1 = traverse_util.flatten_dict(s1.params, sep="/")
  after2 = traverse_util.flatten_dict(s2.params, sep="/")
  for k in trainable:
    np.testing.assert_array_equal(after1[k], np.asarray(old[k]))  # No update.
  assert any(not np.array_equal(after2[k], np.asarray(old[k]))
             for k in trainable)
  assert np.isfinite(h2[1]["loss"])


def test_training_on_a_fixed_batch_lowers_the_loss():
  cfg = _config(grad_clip_norm=1.0)
  _, state, kwargs, _ = _setup(cfg, steps_per_epoch=10**6)
  _, history = _run(state, kwargs, [_batch(8, 1)] * 25, 8)
  first, last = history[0]["loss"], history[-1]["loss"]
  assert last < 0.8 * first, (first, last)


def test_eval_step_selects_top_k_on_device():
  cfg = _config()
  model, state, _, _ = _setup(cfg)
  text600 = jax.random.normal(jax.random.PRNGKey(2), (600, E))
  table = postprocess.candidate_table("hoi")
  step = ts.make_p_eval_step(flax_model=model, table=table,
                             score_fusion="sum", top_k=5)
  batch = _batch(8)
  shard = jax.tree.map(lambda x: x.reshape((8, 1) + x.shape[1:]), batch)
  out = step(ts.replicate(state), shard, text600)
  assert out["scores"].shape == (8, 1, 5)
  assert out["pred_sub_boxes"].shape == (8, 1, Q, 4)
  # Same as post-processing the raw outputs on the host.
  variables = {"params": state.params, "batch_stats": state.batch_stats,
               "frozen_bn": state.model_state["frozen_bn"]}
  raw = model.apply(variables, batch["image"][:1], batch["mask"][:1],
                    batch["clip_image"][:1], text600)
  ref = postprocess.select_top_k(raw, table, "sum", 5)
  np.testing.assert_allclose(np.asarray(out["scores"][0, 0]),
                             np.asarray(ref["scores"][0]), rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out["queries"][0, 0]),
                                np.asarray(ref["queries"][0]))
