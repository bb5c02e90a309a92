"""Tests of the training losses (train/losses.py) against hand values."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ki2hoi_jax.config_lib import base
from ki2hoi_jax.data import metadata
from ki2hoi_jax.evaluation import vocabulary
from ki2hoi_jax.train import losses


def _loss_config(**overrides):
  cfg = ml_collections.ConfigDict(base.get_config().loss.to_dict())
  cfg.update(overrides)
  return cfg


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_weighted_cross_entropy_with_no_object_weight():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0], [0.0, 1.0, 3.0]])
  target = jnp.array([0, 2, 2])  # Class 2 is no-object.
  s, w = losses.weighted_cross_entropy(logits, target, 0.1, jnp.ones(3))
  lp = _log_softmax(np.asarray(logits))
  expected = (-lp[0, 0] - 0.1 * lp[1, 2] - 0.1 * lp[2, 2]) / 1.2
  np.testing.assert_allclose(float(s / w), expected, rtol=1e-6)
  # Hand value of the first row alone: log(e^2 + 1 + e^-1) - 2.
  s0, w0 = losses.weighted_cross_entropy(logits[:1], target[:1], 0.1,
                                         jnp.ones(1))
  np.testing.assert_allclose(float(s0 / w0), 0.1698460, rtol=1e-5)


def test_focal_loss_hand_values():
  # Logit 0 (p = 0.5), alpha 0.5, gamma 2: positive 0.5 * 0.25 * ln 2,
  # negative the same.
  s, n = losses.focal_loss(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0]]), 0.5,
                           2.0, jnp.ones(1))
  np.testing.assert_allclose(float(s), 2 * 0.5 * 0.25 * np.log(2), rtol=1e-6)
  assert float(n) == 1.0
  # Logit ln 3 (p = 0.75), alpha 0.25, gamma 2, negative label:
  # (1 - 0.25) * 0.75^2 * -ln(0.25).
  s, n = losses.focal_loss(jnp.array([[np.log(3.0)]]), jnp.array([[0.0]]),
                           0.25, 2.0, jnp.ones(1))
  np.testing.assert_allclose(float(s), 0.75 * 0.5625 * np.log(4.0), rtol=1e-6)
  assert float(n) == 0.0
  # Large logits stay finite.
  s, _ = losses.focal_loss(jnp.array([[80.0, -80.0]]),
                           jnp.array([[0.0, 1.0]]), 0.5, 2.0, jnp.ones(1))
  np.testing.assert_allclose(float(s), 0.5 * 80 * 2, rtol=1e-4)


def _toy_case():
  """One image, Q = 3, P = 2 (one valid pair matched to query 1)."""
  outputs = {
      "pred_sub_boxes": jnp.array([[[0.2, 0.2, 0.1, 0.1],
                                    [0.5, 0.5, 0.2, 0.2],
                                    [0.8, 0.8, 0.1, 0.1]]]),
      "pred_obj_boxes": jnp.array([[[0.2, 0.2, 0.1, 0.1],
                                    [0.55, 0.5, 0.2, 0.2],
                                    [0.8, 0.8, 0.1, 0.1]]]),
      "pred_obj_logits": jnp.array([[[0.0, 1.0, 2.0],
                                     [2.0, 0.0, -1.0],
                                     [0.5, 0.5, 1.0]]]),
      "pred_human_logits": jnp.array([[[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]]]),
      "pred_interaction_logits": jnp.zeros((1, 3, 2)),
  }
  targets = {
      "sub_boxes": jnp.array([[[0.55, 0.5, 0.2, 0.2], [0.0] * 4]]),
      "obj_boxes": jnp.array([[[0.55, 0.5, 0.2, 0.2], [0.0] * 4]]),
      "obj_labels": jnp.array([[0, 0]]),
      "interaction_labels": jnp.array([[[1.0, 0.0], [0.0, 0.0]]]),
      "pair_mask": jnp.array([[True, False]]),
      "example_mask": jnp.array([True]),
  }
  indices = jnp.array([[[1, 0], [0, 1]]], jnp.int32)
  mask = jnp.array([[True, False]])
  return outputs, targets, indices, mask


def test_layer_losses_by_hand():
  outputs, targets, indices, mask = _toy_case()
  terms = losses.layer_losses(outputs, targets, indices, mask,
                              _loss_config(), axis_name=None)
  terms = {k: float(v) for k, v in terms.items()}
  # Human: 0.05 shift in x -> L1 0.05, GIoU 0.6 (intersection 0.03, union and
  # enclosing 0.05). Object box identical -> 0 and 0.
  np.testing.assert_allclose(terms["loss_sub_bbox"], 0.05, rtol=1e-5)
  np.testing.assert_allclose(terms["loss_sub_giou"], 0.4, rtol=1e-5)
  np.testing.assert_allclose(terms["loss_obj_bbox"], 0.0, atol=1e-6)
  np.testing.assert_allclose(terms["loss_obj_giou"], 0.0, atol=1e-6)
  # Object CE: query 1 -> class 0 (weight 1); queries 0, 2 -> no-object (0.1).
  lp = _log_softmax(np.asarray(outputs["pred_obj_logits"][0]))
  expected = (-lp[1, 0] - 0.1 * lp[0, 2] - 0.1 * lp[2, 2]) / 1.2
  np.testing.assert_allclose(terms["loss_obj_ce"], expected, rtol=1e-5)
  lh = _log_softmax(np.asarray(outputs["pred_human_logits"][0]))
  expected = (-lh[1, 0] - 0.1 * lh[0, 1] - 0.1 * lh[2, 1]) / 1.2
  np.testing.assert_allclose(terms["loss_human_ce"], expected, rtol=1e-5)
  # Focal with zero logits: 6 entries, 1 positive; every entry is
  # 0.5 * 0.25 * ln 2; divided by 1 positive.
  np.testing.assert_allclose(terms["loss_interaction"],
                             6 * 0.5 * 0.25 * np.log(2), rtol=1e-5)
  assert terms["obj_accuracy"] == 1.0


def test_object_cross_entropy_over_the_trained_objects_only():
  # K = 2 objects; object 1 untrained: the softmax runs over
  # [object 0, no-object], and object 1's logits get no gradient.
  outputs, targets, indices, mask = _toy_case()
  trained = np.array([True, False])

  def obj_ce(logits):
    terms = losses.layer_losses(dict(outputs, pred_obj_logits=logits),
                                targets, indices, mask, _loss_config(),
                                axis_name=None, trained_objects=trained)
    return terms["loss_obj_ce"]

  logits = outputs["pred_obj_logits"]
  lp = _log_softmax(np.asarray(logits[0])[:, [0, 2]])
  expected = (-lp[1, 0] - 0.1 * lp[0, 1] - 0.1 * lp[2, 1]) / 1.2
  np.testing.assert_allclose(float(obj_ce(logits)), expected, rtol=1e-5)
  grad = np.asarray(jax.grad(obj_ce)(logits))
  assert np.all(grad[..., 1] == 0.0)
  assert np.all(np.abs(grad[..., [0, 2]]).sum(-1) > 0.0)
  # All objects trained: the plain loss of test_layer_losses_by_hand.
  full = losses.layer_losses(outputs, targets, indices, mask, _loss_config(),
                             axis_name=None)["loss_obj_ce"]
  every = losses.layer_losses(outputs, targets, indices, mask, _loss_config(),
                              axis_name=None,
                              trained_objects=np.ones(2, bool))["loss_obj_ce"]
  np.testing.assert_allclose(float(every), float(full), rtol=1e-6)
  with pytest.raises(ValueError, match="trained_objects"):
    losses.layer_losses(outputs, targets, indices, mask, _loss_config(),
                        axis_name=None, trained_objects=np.ones(3, bool))


def test_no_object_pairs_have_no_object_box_loss():
  outputs, targets, indices, mask = _toy_case()
  targets = dict(targets, obj_boxes=jnp.zeros((1, 2, 4)))
  terms = losses.layer_losses(outputs, targets, indices, mask,
                              _loss_config(), axis_name=None)
  assert float(terms["loss_obj_bbox"]) == 0.0
  assert float(terms["loss_obj_giou"]) == 0.0
  np.testing.assert_allclose(float(terms["loss_sub_bbox"]), 0.05, rtol=1e-5)


@pytest.mark.parametrize("kind,expected", [("l1", 0.375), ("l2", 0.3125),
                                           ("l1+l2", 0.6875)])
def test_reconstruction_loss(kind, expected):
  feat = jnp.array([[1.0, 0.0], [0.5, 0.5], [9.0, 9.0]])
  target = jnp.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
  example = jnp.array([True, True, False])  # Third image is padding.
  # Differences over the two real images: [1, 0], [0, 0.5]:
  # l1 = 1.5 / 4, l2 = 1.25 / 4.
  value = losses.reconstruction_loss(feat, target, kind, example, None)
  np.testing.assert_allclose(float(value), expected, rtol=1e-6)


def test_compute_losses_total_and_aux_suffix():
  outputs, targets, indices, mask = _toy_case()
  aux = [dict(outputs, interaction_clip_feature=jnp.full((1, 4), v))
         for v in (3.0, 2.0)]
  outputs = dict(outputs, aux_outputs=aux,
                 interaction_clip_feature=jnp.ones((1, 4)),
                 clip_image_embedding=jnp.zeros((1, 4)))
  cfg = _loss_config()
  assert cfg.reconstruction_form == "raw_all_layers"  # The default.
  loss, metrics = losses.compute_losses(outputs, targets, cfg, axis_name=None,
                                        matches=[(indices, mask)] * 3)
  assert "loss_obj_ce_aux_0" in metrics and "loss_obj_ce_aux_1" in metrics
  one = sum(getattr(cfg, losses.LOSS_COEFS[k]) * float(metrics[k])
            for k in losses.LOSS_COEFS if k != "loss_re")
  # L_re on every layer: L1 of the raw features against the raw target.
  np.testing.assert_allclose(float(metrics["loss_re"]), 1.0)
  np.testing.assert_allclose(float(metrics["loss_re_aux_0"]), 3.0)
  np.testing.assert_allclose(float(metrics["loss_re_aux_1"]), 2.0)
  np.testing.assert_allclose(float(loss), 3 * one + 20.0 * (1 + 3 + 2),
                             rtol=1e-5)
  assert float(metrics["num_pairs"]) == 1.0
  # Matching computed inside gives the same (query 1 is the best match).
  loss2, _ = losses.compute_losses(outputs, targets, cfg, axis_name=None)
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)


def _genvlkt_mimic(raw_queries, clip_embedding, example, kind):
  """numpy L_re of one layer: GEN-VLKT's F.l1_loss(mean_q feats, clip)."""
  diff = raw_queries.mean(axis=1) - clip_embedding  # [B, E]
  diff = diff[example]  # Padding images contribute nothing.
  return {"l1": np.abs(diff).mean(), "l2": (diff ** 2).mean(),
          "l1+l2": np.abs(diff).mean() + (diff ** 2).mean()}[kind]


def _reconstruction_case(seed=0, layers=3, b=3, n=4, e=6):
  """Per-query raw features [L, B, N, E] and the outputs the model gives."""
  rng = np.random.default_rng(seed)
  raw = rng.normal(size=(layers, b, n, e)) * 2.0 + 0.5
  clip_embedding = rng.normal(size=(b, e)) * 3.0
  unit = raw[-1] / np.linalg.norm(raw[-1], axis=-1, keepdims=True)
  outputs, targets, indices, mask = _toy_case()
  per_image = {k: jnp.repeat(v, b, axis=0) for k, v in outputs.items()}
  layer_dicts = [dict(per_image, interaction_clip_feature=jnp.asarray(
      raw[l].mean(axis=1), jnp.float32)) for l in range(layers)]
  outputs = dict(layer_dicts[-1], aux_outputs=layer_dicts[:-1],
                 interaction_clip_feature_unit=jnp.asarray(
                     unit.mean(axis=1), jnp.float32),
                 clip_image_embedding=jnp.asarray(clip_embedding,
                                                  jnp.float32))
  example = np.array([True] * (b - 1) + [False])
  targets = {k: jnp.repeat(v, b, axis=0) for k, v in targets.items()}
  targets["example_mask"] = jnp.asarray(example)
  targets["pair_mask"] = targets["pair_mask"] & targets["example_mask"][:,
                                                                        None]
  matches = [(jnp.repeat(indices, b, axis=0), jnp.repeat(mask, b, axis=0))
             ] * layers
  return raw, clip_embedding, example, outputs, targets, matches


@pytest.mark.parametrize("kind", ["l1", "l2", "l1+l2"])
def test_reconstruction_raw_all_layers_matches_genvlkt_numpy(kind):
  raw, clip_embedding, example, outputs, targets, matches = (
      _reconstruction_case())
  cfg = _loss_config(reconstruction=kind)
  loss, metrics = losses.compute_losses(outputs, targets, cfg, axis_name=None,
                                        matches=matches)
  expected = [_genvlkt_mimic(raw[l], clip_embedding, example, kind)
              for l in range(3)]
  # Final layer, then aux_0, aux_1 (earlier layers first).
  names = ["loss_re", "loss_re_aux_0", "loss_re_aux_1"]
  for name, value in zip(names, [expected[2], expected[0], expected[1]]):
    np.testing.assert_allclose(float(metrics[name]), value, rtol=1e-5,
                               err_msg=name)
  # The aux layers contribute 20 x their L_re to the total.
  none_loss, _ = losses.compute_losses(
      outputs, targets, _loss_config(reconstruction="none"), axis_name=None,
      matches=matches)
  np.testing.assert_allclose(float(loss) - float(none_loss),
                             20.0 * sum(expected), rtol=1e-5)
  # Without aux losses only the final layer's L_re remains.
  _, no_aux = losses.compute_losses(
      outputs, targets, _loss_config(reconstruction=kind, aux_loss=False),
      axis_name=None, matches=matches[:1])
  assert not any(k.startswith("loss_re_aux") for k in no_aux)
  np.testing.assert_allclose(float(no_aux["loss_re"]), expected[2],
                             rtol=1e-5)


@pytest.mark.parametrize("kind", ["l1", "l2", "l1+l2"])
def test_reconstruction_unit_last_layer_matches_numpy(kind):
  raw, clip_embedding, example, outputs, targets, matches = (
      _reconstruction_case(seed=1))
  cfg = _loss_config(reconstruction=kind, reconstruction_form="unit_last_layer")
  loss, metrics = losses.compute_losses(outputs, targets, cfg, axis_name=None,
                                        matches=matches)
  assert not any(k.startswith("loss_re_aux") for k in metrics)
  unit = raw[-1] / np.linalg.norm(raw[-1], axis=-1, keepdims=True)
  target = clip_embedding / np.linalg.norm(clip_embedding, axis=-1,
                                           keepdims=True)
  diff = (unit.mean(axis=1) - target)[example]
  expected = {"l1": np.abs(diff).mean(), "l2": (diff ** 2).mean(),
              "l1+l2": np.abs(diff).mean() + (diff ** 2).mean()}[kind]
  np.testing.assert_allclose(float(metrics["loss_re"]), expected, rtol=1e-5)
  none_loss, _ = losses.compute_losses(
      outputs, targets, _loss_config(reconstruction="none"), axis_name=None,
      matches=matches)
  np.testing.assert_allclose(float(loss) - float(none_loss), 20.0 * expected,
                             rtol=1e-5)


def test_reconstruction_none_and_bad_form():
  _, _, _, outputs, targets, matches = _reconstruction_case()
  _, metrics = losses.compute_losses(
      outputs, targets, _loss_config(reconstruction="none"), axis_name=None,
      matches=matches)
  assert not any(k.startswith("loss_re") for k in metrics)
  with pytest.raises(ValueError, match="reconstruction_form"):
    losses.compute_losses(outputs, targets,
                          _loss_config(reconstruction_form="raw"),
                          axis_name=None, matches=matches)


def test_pmap_normalisation_equals_global_batch():
  """Mean over 8 devices of the per-device losses = loss of the global batch."""
  rng = np.random.default_rng(0)
  n, q, p, c = 8, 4, 3, 5

  def rand_boxes(*shape):
    cxcy = rng.uniform(0.3, 0.7, shape + (2,))
    wh = rng.uniform(0.1, 0.3, shape + (2,))
    return np.concatenate([cxcy, wh], -1).astype(np.float32)

  outputs = {
      "pred_sub_boxes": rand_boxes(n, q),
      "pred_obj_boxes": rand_boxes(n, q),
      "pred_obj_logits": rng.normal(size=(n, q, 4)).astype(np.float32),
      "pred_human_logits": rng.normal(size=(n, q, 2)).astype(np.float32),
      "pred_interaction_logits": rng.normal(size=(n, q, c)).astype(np.float32),
      "interaction_clip_feature": rng.normal(size=(n, 6)).astype(np.float32),
      "clip_image_embedding": rng.normal(size=(n, 6)).astype(np.float32),
  }
  pair_mask = rng.random((n, p)) < 0.6
  pair_mask[3] = False  # An image with no pair.
  targets = {
      "sub_boxes": rand_boxes(n, p),
      "obj_boxes": rand_boxes(n, p),
      "obj_labels": rng.integers(0, 3, (n, p)).astype(np.int32),
      "interaction_labels": (rng.random((n, p, c)) < 0.3).astype(np.float32),
      "pair_mask": pair_mask,
      "example_mask": np.array([True] * 7 + [False]),
  }
  cfg = _loss_config(aux_loss=False)
  ref_loss, ref_metrics = losses.compute_losses(outputs, targets, cfg,
                                                axis_name=None)

  def per_device(o, t):
    loss, metrics = losses.compute_losses(o, t, cfg, axis_name="batch")
    return jax.lax.pmean((loss, metrics), "batch")

  shard = lambda x: x.reshape((8, 1) + x.shape[1:])
  loss, metrics = jax.pmap(per_device, axis_name="batch")(
      jax.tree.map(shard, outputs), jax.tree.map(shard, targets))
  np.testing.assert_allclose(float(loss[0]), float(ref_loss), rtol=1e-5)
  for k, v in ref_metrics.items():
    np.testing.assert_allclose(float(metrics[k][0]), float(v), rtol=1e-5,
                               atol=1e-6, err_msg=k)


def test_interaction_class_indices_zero_shot():
  cfg = base.get_config()
  assert len(vocabulary.interaction_class_indices(cfg)) == 600
  cfg.dataset.zero_shot_split = "uv"
  hoi = vocabulary.interaction_class_indices(cfg)
  assert len(hoi) == 516
  assert not set(hoi.tolist()) & set(metadata.hico().unseen_hois("uv"))
  assert len(vocabulary.interaction_class_indices(cfg, "eval")) == 600
  cfg.model.interaction_space = "verb"
  verbs = vocabulary.interaction_class_indices(cfg)
  assert len(verbs) == 117 - 20
  assert not set(verbs.tolist()) & set(metadata.hico().unseen_verbs["uv"])
  cfg.dataset.zero_shot_split = "rf_uc"
  assert len(vocabulary.interaction_class_indices(cfg)) == 117


def test_make_targets_selects_columns_and_masks_padding_images():
  batch = {
      "sub_boxes": np.zeros((2, 1, 4), np.float32),
      "obj_boxes": np.zeros((2, 1, 4), np.float32),
      "obj_labels": np.zeros((2, 1), np.int32),
      "hoi_labels": np.tile(np.arange(600, dtype=np.float32), (2, 1, 1)),
      "verb_labels": np.zeros((2, 1, 117), np.float32),
      "pair_mask": np.ones((2, 1), bool),
      "image_index": np.array([5, -1], np.int32),
  }
  t = losses.make_targets(batch, np.array([3, 10]), "hoi")
  np.testing.assert_array_equal(np.asarray(t["interaction_labels"])[0, 0],
                                [3.0, 10.0])
  np.testing.assert_array_equal(np.asarray(t["pair_mask"]), [[True], [False]])


def test_verb_query_prompts_keep_the_training_classes():
  cfg = base.get_config()
  cfg.dataset.zero_shot_split = "uv"
  cfg.model.interaction_space = "verb"
  meta = metadata.hico()
  prompts = vocabulary.closed_vocabulary(cfg).prompts
  assert cfg.model.verb_queries == "training_classes"
  queries = vocabulary.verb_query_prompts(cfg, prompts)
  seen = vocabulary.interaction_class_indices(cfg)
  assert queries == tuple(prompts[i] for i in seen) and len(queries) == 97
  unseen_prompts = {meta.verb_prompts()[v] for v in meta.unseen_verbs["uv"]}
  assert len(unseen_prompts) == 20 and not unseen_prompts & set(queries)
  cfg.model.verb_queries = "all_classes"
  assert vocabulary.verb_query_prompts(cfg, prompts) == prompts
  cfg.model.verb_queries = "seen"
  with pytest.raises(vocabulary.VocabularyError, match="verb_queries"):
    vocabulary.verb_query_prompts(cfg, prompts)


def test_verb_query_embeddings_reuse_rows_or_embed():
  cfg = base.get_config()
  cfg.dataset.zero_shot_split = "uv"
  cfg.model.interaction_space = "verb"
  prompts = vocabulary.closed_vocabulary(cfg).prompts
  emb = np.arange(len(prompts) * 2, dtype=np.float32).reshape(-1, 2)

  def never(_):
    raise AssertionError("embedded although every query had a row")

  seen = vocabulary.interaction_class_indices(cfg)
  np.testing.assert_array_equal(
      vocabulary.verb_query_embeddings(cfg, prompts, emb, never), emb[seen])
  # An open vocabulary without the training classes: the queries are embedded.
  got = vocabulary.verb_query_embeddings(
      cfg, prompts[:3], emb[:3], lambda q: np.full((len(q), 2), 7.0))
  np.testing.assert_array_equal(got, np.full((len(seen), 2), 7.0))
