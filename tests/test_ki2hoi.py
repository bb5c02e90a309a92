"""Full KI2HOI model: contract outputs, padding, gradients, dtypes, sizes."""

import functools

import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ki2hoi_jax.config_lib import base
from configs import demo
from ki2hoi_jax.models import instance_interactor
from ki2hoi_jax.models import ki2hoi
from ki2hoi_jax.models import param_groups

KEY = jax.random.key(0, impl="unsafe_rbg")  # Fast to compile on CPU.
K = 6  # Object classes of the tiny model.
C = 5  # Interaction classes.
E = 16  # CLIP embedding size.


def _tiny_config(roi_size=3, mask_padding=True, frozen_dtype="float32",
                 dtype="float32", norm="batch"):
  config = demo.get_config()
  m = config.model
  m.backbone_depth, m.backbone_width = 18, 8
  # DETR's frozen BN: GroupNorm (the demo's) pools statistics over padding.
  m.backbone_norm = "frozen"
  m.backbone_mask_padding = mask_padding
  m.d_model, m.num_heads, m.dim_feedforward = 16, 2, 32
  m.dropout = 0.0
  m.num_queries = 4
  m.instance_decoder_layers, m.interaction_decoder_layers = 2, 2
  m.verb_decoder_layers, m.encoder_layers = 1, 1
  m.encoder_mlp_ratio = 2
  m.encoder_norm = norm
  m.roi_size = roi_size
  m.dtype, m.frozen_dtype = dtype, frozen_dtype
  c = m.clip
  c.image_size, c.patch_size, c.vision_width = 32, 16, 16
  c.vision_layers, c.vision_heads, c.embed_dim = 1, 2, E
  return config


def _inputs(rng, batch=2, hw=(64, 64)):
  image = rng.normal(size=(batch,) + hw + (3,)).astype(np.float32)
  mask = np.ones((batch,) + hw, bool)
  clip_image = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
  return image, mask, clip_image


def _text(rng, n):
  return rng.normal(size=(n, E)).astype(np.float32)


# Compile-bound on CPU: fewer XLA passes (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


@functools.lru_cache(maxsize=None)
def _model(roi_size=3, frozen_dtype="float32"):
  config = _tiny_config(roi_size, frozen_dtype=frozen_dtype)
  return ki2hoi.build_model(config, num_object_classes=K)


@functools.lru_cache(maxsize=None)
def _variables():
  """(variables, object_text), shared by every tiny model.

  roi_size and the compute dtypes create no parameters, so all tiny variants
  share one initialisation.
  """
  rng = np.random.default_rng(0)
  image, mask, clip_image = _inputs(rng, batch=1)
  obj_text = _text(rng, K)
  variables = jax.jit(_model().init)(KEY, image, mask, clip_image,
                                     _text(rng, C), obj_text)
  return variables, obj_text


def _built(roi_size=3, frozen_dtype="float32"):
  return (_model(roi_size, frozen_dtype),) + _variables()


def _apply(model, variables, *args, train=False, **kw):
  out = model.apply(variables, *args, train=train, mutable=["batch_stats"],
                    **kw)
  return out[0]


def _runner(roi_size=3, train=False):
  """A jitted apply per variant, shared across tests (compiles once/shape)."""
  return _cached_runner(roi_size, train)


@functools.lru_cache(maxsize=None)
def _cached_runner(roi_size, train):
  return jax.jit(functools.partial(_apply, _model(roi_size), train=train))


@pytest.mark.parametrize(
    "roi_size", [3, pytest.param(None, marks=pytest.mark.slow)])
def test_outputs_follow_the_contract(roi_size):
  _, variables, obj_text = _built(roi_size)
  rng = np.random.default_rng(1)
  image, mask, clip_image = _inputs(rng)
  out = _runner(roi_size)(variables, image, mask, clip_image, _text(rng, C))
  b, n = 2, 4
  expected = {"pred_sub_boxes": (b, n, 4), "pred_obj_boxes": (b, n, 4),
              "pred_obj_logits": (b, n, K + 1),
              "pred_human_logits": (b, n, 2),
              "pred_interaction_logits": (b, n, C),
              "interaction_clip_feature": (b, E),
              "interaction_clip_feature_unit": (b, E),
              "clip_image_embedding": (b, E)}
  assert set(out) == set(expected) | {"aux_outputs"}
  for k, shape in expected.items():
    assert out[k].shape == shape, k
    assert out[k].dtype == jnp.float32, k
    assert np.isfinite(np.asarray(out[k])).all(), k
  assert len(out["aux_outputs"]) == 1  # min(2, 2) layers - 1.
  assert set(out["aux_outputs"][0]) == set(ki2hoi.LAYER_KEYS)
  for k in ki2hoi.LAYER_KEYS:
    assert out["aux_outputs"][0][k].shape == out[k].shape
  boxes = np.asarray(out["pred_sub_boxes"])
  assert ((boxes > 0) & (boxes < 1)).all()
  # Top-level parameter groups and the CLIP-initialised object classifier.
  assert set(variables["params"]) == {
      "backbone", "input_proj", "encoder", "clip_visual", "clip_proj",
      "instance_interactor", "verb_decoder", "interaction_decoder",
      "verb_predictor"}
  kernel = variables["params"]["instance_interactor"]["obj_classifier"][
      "obj_visual_projection"]["kernel"]
  unit = obj_text / np.linalg.norm(obj_text, axis=-1, keepdims=True)
  np.testing.assert_allclose(kernel[:, :K], unit.T, rtol=1e-5, atol=1e-6)
  assert set(variables["frozen_bn"]["backbone"]["bn1"]) == {
      "weight", "bias", "running_mean", "running_var"}


def test_interaction_classes_can_be_swapped_and_held_as_constants():
  model, variables, _ = _built(3)
  rng = np.random.default_rng(2)
  image, mask, clip_image = _inputs(rng)
  run = _runner(3)
  text9 = _text(rng, 9)
  out9 = run(variables, image, mask, clip_image, text9)
  assert out9["pred_interaction_logits"].shape == (2, 4, 9)
  # The instance branch does not depend on the class list.
  out5 = run(variables, image, mask, clip_image, text9[:C])
  assert out5["pred_interaction_logits"].shape == (2, 4, C)
  np.testing.assert_allclose(out5["pred_obj_logits"],
                             out9["pred_obj_logits"], rtol=1e-6)
  const = ki2hoi.with_text_embeddings(variables, text9[:C])
  out_const = run(const, image, mask, clip_image)
  np.testing.assert_allclose(out_const["pred_interaction_logits"],
                             out5["pred_interaction_logits"], rtol=1e-6)
  with pytest.raises(ValueError, match="interaction_text_embeddings"):
    model.apply(variables, image, mask, clip_image,
                mutable=["batch_stats"])


def test_verb_queries_of_the_training_classes_keep_seen_logits():
  """Seen-class logits at evaluation equal training's when the verb decoder
  keeps the training classes' queries; new queries change them."""
  _, variables, _ = _built(3)
  rng = np.random.default_rng(3)
  image, mask, clip_image = _inputs(rng)
  run = _runner(3)
  text9 = _text(rng, 9)
  seen = text9[:C]
  trained = run(variables, image, mask, clip_image, seen)
  kept = run(variables, image, mask, clip_image, text9,
             verb_query_text_embeddings=seen)
  np.testing.assert_allclose(kept["pred_interaction_logits"][..., :C],
                             trained["pred_interaction_logits"], rtol=1e-5,
                             atol=1e-5)
  # The default (queries from the scored classes) equals passing them.
  default = run(variables, image, mask, clip_image, text9)
  explicit = run(variables, image, mask, clip_image, text9,
                 verb_query_text_embeddings=text9)
  np.testing.assert_allclose(explicit["pred_interaction_logits"],
                             default["pred_interaction_logits"], rtol=1e-6)
  assert np.abs(default["pred_interaction_logits"][..., :C]
                - trained["pred_interaction_logits"]).max() > 1e-3


@pytest.mark.parametrize("roi_size,train", [
    (3, False), pytest.param(3, True, marks=pytest.mark.slow),
    pytest.param(None, False, marks=pytest.mark.slow)])
def test_full_model_ignores_padding_content_and_amount(roi_size, train):
  """backbone_mask_padding + masked encoder/attention: padding is invisible.

  The valid region (64 x 64) is a multiple of 32, so the padded canvas's
  valid C5 cells equal the unpadded image's; ROI-Align is clamped to the
  valid cells, the encoder masks its convs/norms/attention and the decoders
  mask their memory keys. Same outputs for zero padding, junk padding and no
  padding, in training and inference mode.
  """
  _, variables, _ = _built(roi_size)
  rng = np.random.default_rng(3)
  image, mask, clip_image = _inputs(rng, batch=2)
  text = _text(rng, C)
  canvas = np.zeros((2, 96, 128, 3), np.float32)
  canvas[:, :64, :64] = image
  junk = rng.normal(size=canvas.shape).astype(np.float32) * 10
  junk[:, :64, :64] = image
  canvas_mask = np.zeros((2, 96, 128), bool)
  canvas_mask[:, :64, :64] = True
  run = _runner(roi_size, train)
  ref = run(variables, image, mask, clip_image, text)
  for img in (canvas, junk):
    out = run(variables, img, canvas_mask, clip_image, text)
    for k in ki2hoi.LAYER_KEYS + ("interaction_clip_feature_unit",):
      np.testing.assert_allclose(out[k], ref[k], rtol=2e-4, atol=2e-4,
                                 err_msg=k)


def test_gradients_trainable_nonzero_frozen_zero_and_labels():
  model, variables, _ = _built(3)
  rng = np.random.default_rng(4)
  image, mask, clip_image = _inputs(rng)
  text = _text(rng, C)
  params = variables["params"]
  others = {k: v for k, v in variables.items() if k != "params"}
  out_shapes = jax.eval_shape(functools.partial(_apply, model), variables,
                              image, mask, clip_image, text)
  weights = jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32),
      out_shapes)

  @jax.jit
  def grad_fn(params):
    def loss(p):
      out = _apply(model, {"params": p, **others}, image, mask, clip_image,
                   text, train=True)
      return sum(jnp.sum(o * w) for o, w in zip(
          jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(weights)))
    return jax.grad(loss)(params)

  grads = grad_fn(params)
  labels = param_groups.param_labels(params)
  flat_g = jax.tree_util.tree_leaves_with_path(grads)
  flat_l = jax.tree_util.tree_leaves(labels)
  # Known zeros at initialisation: softmax is invariant to a key bias; and
  # the first instance-decoder layer's self-attention reads zero content
  # (DETR's tgt = 0), so its output is the value/output bias, 0 at init,
  # which leaves its q/k/v/out kernels and norm1 scale without gradient until
  # those biases move (the same holds in DETR).
  first = "['instance_interactor']['layers_0']"
  def zero_ok(name):
    return (("k_proj" in name and "bias" in name)
            or name.startswith(first + "['self_attn']")
            or name == first + "['norm1']['scale']")
  for (path, g), label in zip(flat_g, flat_l):
    name = jax.tree_util.keystr(path)
    g = np.asarray(g)
    assert np.isfinite(g).all(), name
    if name.startswith("['clip_visual']"):
      assert label == "frozen", name
      assert not g.any(), f"{name}: CLIP must get no gradient"
    elif not zero_ok(name):
      assert np.abs(g).max() > 0, f"{name} gets no gradient"
  # Optimizer partition.
  assert labels["backbone"]["conv1"]["kernel"] == "frozen"
  assert labels["backbone"]["layer1_1"]["conv2"]["kernel"] == "frozen"
  assert labels["backbone"]["layer2_0"]["conv1"]["kernel"] == "backbone"
  assert labels["input_proj"]["kernel"] == "default"
  assert labels["verb_predictor"]["logit_scale"] == "default"
  mask = param_groups.trainable_mask(params)
  assert mask["clip_visual"]["proj"] is False
  assert mask["backbone"]["layer4_1"]["conv2"]["kernel"] is True
  all_bb = param_groups.param_labels(params, backbone_frozen_stages=0)
  assert all_bb["backbone"]["conv1"]["kernel"] == "backbone"
  counts = param_groups.param_breakdown(params)
  assert counts["total"] == param_groups.count_params(params)
  assert counts["clip"] == param_groups.count_params(params["clip_visual"])
  assert counts["frozen"] > counts["clip"]


def test_text_initialised_parameters_get_the_clip_label():
  """The 'clip' label covers exactly the weights made from the object text.

  Two initialisations differing only in the object text embeddings: the
  leaves that differ are the object classifier's projection kernel; its
  whole Dense (kernel and bias, as GEN-VLKT's `obj_visual_projection`
  group) is labelled 'clip', nothing else is.
  """
  rng = np.random.default_rng(0)
  image, mask, clip_image = _inputs(rng, batch=1)
  text = _text(rng, C)
  init = jax.jit(_model().init)
  p1 = init(KEY, image, mask, clip_image, text, _text(rng, K))["params"]
  p2 = init(KEY, image, mask, clip_image, text, _text(rng, K))["params"]
  flat = lambda t: {jax.tree_util.keystr(k): v for k, v in
                    jax.tree_util.tree_leaves_with_path(t)}
  a, b = flat(p1), flat(p2)
  changed = {k for k in a if not np.array_equal(a[k], b[k])}
  proj = ("['instance_interactor']['obj_classifier']"
          "['obj_visual_projection']")
  assert changed == {proj + "['kernel']"}
  labels = flat(param_groups.param_labels(p1))
  assert {k for k, v in labels.items() if v == "clip"} == {
      proj + "['kernel']", proj + "['bias']"}
  oc = param_groups.param_labels(p1)["instance_interactor"]["obj_classifier"]
  assert oc["obj_logit_scale"] == "default"
  assert oc["obj_class_fc"]["kernel"] == "default"


def test_frozen_parts_compute_in_bfloat16():
  model, variables, _ = _built(3, frozen_dtype="bfloat16")
  assert all(x.dtype == jnp.float32
             for x in jax.tree_util.tree_leaves(variables["params"]))
  rng = np.random.default_rng(5)
  image, mask, clip_image = _inputs(rng, batch=1)

  @jax.jit
  def run(variables):
    return model.apply(variables, image, mask, clip_image, _text(rng, C),
                       capture_intermediates=True,
                       mutable=["intermediates", "batch_stats"])

  out, state = run(variables)
  inter = state["intermediates"]
  feats, _ = inter["backbone"]["__call__"][0]
  tokens, embedding = inter["clip_visual"]["__call__"][0]
  assert feats.dtype == jnp.bfloat16
  assert tokens.dtype == jnp.bfloat16 and embedding.dtype == jnp.bfloat16
  # The trainable parts stay float32 (model.dtype).
  assert inter["input_proj"]["__call__"][0].dtype == jnp.float32
  assert inter["encoder"]["__call__"][0].dtype == jnp.float32
  assert out["pred_interaction_logits"].dtype == jnp.float32


@pytest.mark.slow
def test_demo_model_forward_backward_jit():
  config = demo.get_config()
  model = ki2hoi.build_model(config)
  _, mask, _, text = ki2hoi.dummy_inputs(config, 2, (160, 192))
  rng = np.random.default_rng(6)
  image, _, _ = _inputs(rng, 2, (160, 192))
  clip_image = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
  text = rng.normal(size=text.shape).astype(np.float32)
  mask = mask.at[1, 128:].set(False)
  image[1, 128:] = 0.0
  variables = jax.jit(model.init)(KEY, image, mask, clip_image, text)
  params = variables["params"]
  others = {k: v for k, v in variables.items() if k != "params"}

  @jax.jit
  def step(params, rng):
    def loss(p):
      out, state = model.apply({"params": p, **others}, image, mask,
                               clip_image, text, train=True,
                               rngs={"dropout": rng},
                               mutable=["batch_stats"])
      l = (jnp.mean(out["pred_interaction_logits"] ** 2)
           + jnp.mean(out["pred_sub_boxes"]) + jnp.mean(out["pred_obj_logits"])
           + jnp.mean(jnp.abs(out["interaction_clip_feature"]
                              - out["clip_image_embedding"])))
      return l, (out, state)
    return jax.value_and_grad(loss, has_aux=True)(params)

  (l, (out, state)), grads = step(params, jax.random.key(2))
  assert out["pred_interaction_logits"].shape == (2, 8, 117)  # Verb space.
  assert out["pred_obj_logits"].shape == (2, 8, 81)
  assert len(out["aux_outputs"]) == 1
  assert np.isfinite(float(l))
  norms = jax.tree_util.tree_map(lambda x: float(jnp.abs(x).max()), grads)
  assert all(np.isfinite(n) for n in jax.tree_util.tree_leaves(norms))
  for group in ("backbone", "input_proj", "encoder", "clip_proj",
                "instance_interactor", "verb_decoder", "interaction_decoder",
                "verb_predictor"):
    assert max(jax.tree_util.tree_leaves(norms[group])) > 0, group
  assert max(jax.tree_util.tree_leaves(norms["clip_visual"])) == 0.0
  # Running statistics moved away from their (0, 1) initialisation.
  stats = state["batch_stats"]["encoder"]["layers_0"]["local_encoder"]["norm"]
  assert np.abs(np.asarray(stats["mean"])).max() > 0


@pytest.mark.slow
def test_paper_model_builds_and_counts_parameters():
  config = base.get_config()
  model = ki2hoi.build_model(config)
  args = ki2hoi.dummy_inputs(config, 1, (800, 1216))
  shapes = jax.eval_shape(model.init, KEY, *args)
  counts = param_groups.param_breakdown(shapes["params"])
  print("KI2HOI paper-size parameters:", counts)
  out = jax.eval_shape(functools.partial(_apply, model), shapes, *args)
  assert out["pred_interaction_logits"].shape == (1, 64, 600)
  assert out["pred_obj_logits"].shape == (1, 64, 81)
  assert len(out["aux_outputs"]) == 2
  # ViT-B/32 image tower (without the text tower): 87.8M.
  assert 87e6 < counts["clip"] < 88.5e6
  # ResNet-50 body without fc: 23.5M.
  assert 23.4e6 < counts["backbone"] < 23.6e6
  # Regression: everything else (encoder, decoders, heads, projections).
  assert counts["rest"] == 22_401_117


def test_l2_normalize_has_finite_gradient_at_zero():
  f = lambda x: instance_interactor.l2_normalize(x).sum()
  g = jax.grad(f)(jnp.zeros((3,)))
  assert np.isfinite(np.asarray(g)).all()
  np.testing.assert_allclose(instance_interactor.l2_normalize(
      jnp.array([3.0, 4.0])), [0.6, 0.8], rtol=1e-6)


def test_box_attention_prior_known_values():
  boxes = jnp.array([[[0.5, 0.5, 0.2, 0.4]]])  # [B=1, Q=1, 4]
  points = jnp.array([[[0.5, 0.5], [0.7, 0.5], [0.5, 0.1], [0.6, 0.7]]])
  prior = instance_interactor._box_attention_prior(  # pylint: disable=protected-access
      boxes, points, jnp.array([1.0, 2.0]))
  assert prior.shape == (1, 2, 1, 4)
  # ((x - cx) / w)^2 + ((y - cy) / h)^2: 0, 1, 1, 0.25 + 0.25.
  np.testing.assert_allclose(prior[0, :, 0], [[0, -1, -1, -0.5],
                                              [0, -2, -2, -1.0]], atol=1e-6)


def test_anchor_queries_refine_reference_boxes_and_ignore_padding():
  config = _tiny_config(roi_size=None)
  config.model.anchor_queries = True
  config.model.backbone_dilation = True  # Stride 16: a 4 x 4 map here.
  model = ki2hoi.build_model(config, num_object_classes=K)
  rng = np.random.default_rng(5)
  image, mask, clip_image = _inputs(rng, batch=2)
  text = _text(rng, C)
  variables = jax.jit(model.init)(KEY, image, mask, clip_image, text,
                                  _text(rng, K))
  inst = variables["params"]["instance_interactor"]
  n, heads = config.model.num_queries, config.model.num_heads
  assert inst["anchor_boxes"].shape == (2 * n, 4)
  assert inst["attention_log_focus"].shape == (heads,)
  assert "query_embed_h" not in inst and "query_embed_o" not in inst
  run = jax.jit(functools.partial(_apply, model))
  ref = run(variables, image, mask, clip_image, text)
  assert not np.allclose(ref["pred_sub_boxes"],
                         ref["aux_outputs"][0]["pred_sub_boxes"])
  # The token centres follow the valid region: padding changes nothing.
  canvas = rng.normal(size=(2, 96, 128, 3)).astype(np.float32) * 10
  canvas[:, :64, :64] = image
  canvas_mask = np.zeros((2, 96, 128), bool)
  canvas_mask[:, :64, :64] = True
  out = run(variables, canvas, canvas_mask, clip_image, text)
  for k in ki2hoi.OUTPUT_KEYS:
    np.testing.assert_allclose(out[k], ref[k], rtol=2e-4, atol=2e-4,
                               err_msg=k)
  # With zero box offsets every layer returns the reference boxes.
  zeroed = jax.tree_util.tree_map(lambda x: x, variables)
  for name in ("sub_bbox_embed", "obj_bbox_embed"):
    last = zeroed["params"]["instance_interactor"][name]["layers_2"]
    last["kernel"] = jnp.zeros_like(last["kernel"])
    last["bias"] = jnp.zeros_like(last["bias"])
  out = run(zeroed, image, mask, clip_image, text)
  anchors = np.asarray(jax.nn.sigmoid(inst["anchor_boxes"]))
  for layer in out["aux_outputs"] + [out]:
    np.testing.assert_allclose(layer["pred_sub_boxes"][0], anchors[:n],
                               atol=1e-5)
    np.testing.assert_allclose(layer["pred_obj_boxes"][1], anchors[n:],
                               atol=1e-5)


def test_reconstruction_outputs_are_raw_features_of_every_layer():
  """L_re inputs: GEN-VLKT's raw `inter_memory` mean per layer, raw CLIP."""
  model, variables, _ = _built(3)
  rng = np.random.default_rng(7)
  image, mask, clip_image = _inputs(rng)
  text = _text(rng, C)

  @jax.jit
  def run(variables):
    return model.apply(
        variables, image, mask, clip_image, text,
        capture_intermediates=lambda mdl, _: mdl.name in ("verb_predictor",
                                                          "clip_visual"),
        mutable=["intermediates", "batch_stats"])

  out, state = run(variables)
  inter = state["intermediates"]
  _, raw = inter["verb_predictor"]["__call__"][0]  # [L, B, N, E]
  _, clip_embedding = inter["clip_visual"]["__call__"][0]  # [B, E]
  raw = np.asarray(raw, np.float64)
  layers = out["aux_outputs"] + [out]
  assert len(layers) == raw.shape[0] == 2
  for l, layer in enumerate(layers):
    np.testing.assert_allclose(layer["interaction_clip_feature"],
                               raw[l].mean(axis=1), rtol=1e-5, atol=1e-6)
  assert not np.allclose(layers[0]["interaction_clip_feature"],
                         layers[1]["interaction_clip_feature"])
  unit = raw[-1] / np.linalg.norm(raw[-1], axis=-1, keepdims=True)
  np.testing.assert_allclose(out["interaction_clip_feature_unit"],
                             unit.mean(axis=1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["clip_image_embedding"], clip_embedding,
                             rtol=1e-6)
  # Raw: neither the CLIP embedding nor the per-query features are unit.
  assert not np.allclose(
      np.linalg.norm(out["clip_image_embedding"], axis=-1), 1.0, atol=1e-2)
  assert not np.allclose(np.linalg.norm(raw, axis=-1), 1.0, atol=1e-2)


# Switch -> (config.model overrides, variable paths it removes, paths it
# keeps or adds).
_ROW_A = {"encoder_type": "detr", "clip_cross_attention": False,
          "classifier": "linear", "verb_decoder": False}
_SWITCHES = {
    "detr_encoder": (
        {"encoder_type": "detr"},
        ("batch_stats", "params/encoder/layers_0/local_encoder",
         "params/encoder/norm"),
        ("params/encoder/layers_0/self_attn/q_proj/kernel",
         "params/encoder/layers_0/linear1/kernel",
         "params/encoder/layers_0/norm2/scale")),
    "no_clip_cross_attention": (
        {"clip_cross_attention": False},
        ("params/clip_proj", "params/interaction_decoder/layers_0/clip_attn",
         "params/interaction_decoder/layers_1/clip_attn"),
        ("params/clip_visual/proj",
         "params/interaction_decoder/layers_0/multihead_attn/q_proj/kernel")),
    "linear_classifier": (
        {"classifier": "linear"},
        ("params/verb_predictor/logit_scale",),
        ("params/verb_predictor/interaction_classifier/kernel",
         "params/instance_interactor/obj_classifier")),
    "no_verb_decoder": (
        {"verb_decoder": False},
        ("params/verb_decoder", "params/interaction_decoder/layers_0/verb_attn",
         "params/verb_predictor/verb_projection"),
        ("params/verb_predictor/inter_projection",
         "params/verb_predictor/logit_scale")),
    "table4_row_a": (
        _ROW_A,
        ("batch_stats", "params/clip_proj", "params/verb_decoder",
         "params/verb_predictor/logit_scale",
         "params/verb_predictor/verb_projection"),
        ("params/encoder/layers_0/self_attn/q_proj/kernel",
         "params/verb_predictor/interaction_classifier/kernel")),
}


def _switched(switches, roi_size=3):
  config = _tiny_config(roi_size)
  for k, v in switches.items():
    config.model[k] = v
  return ki2hoi.build_model(config, num_object_classes=K)


def _shapes(model, rng):
  image, mask, clip_image = _inputs(rng)
  args = (image, mask, clip_image, _text(rng, C))
  variables = jax.eval_shape(model.init, KEY, *args, _text(rng, K))
  out = jax.eval_shape(functools.partial(_apply, model), variables, *args)
  flat = traverse_util.flatten_dict(flax.core.unfreeze(variables), sep="/")
  return {k: v.shape for k, v in flat.items()}, out


@pytest.mark.parametrize("name", sorted(_SWITCHES))
def test_ablation_switch_removes_its_parameters_outputs_keep_shapes(name):
  switches, absent, present = _SWITCHES[name]
  rng = np.random.default_rng(8)
  ref_vars, ref_out = _shapes(_model(), rng)
  variables, out = _shapes(_switched(switches), rng)
  for prefix in absent:
    assert any(k.startswith(prefix) for k in ref_vars), prefix
    assert not any(k.startswith(prefix) for k in variables), prefix
  for prefix in present:
    assert any(k.startswith(prefix) for k in variables), prefix
  assert (jax.tree_util.tree_structure(out)
          == jax.tree_util.tree_structure(ref_out))
  assert jax.tree.map(lambda s: (s.shape, s.dtype), out) == jax.tree.map(
      lambda s: (s.shape, s.dtype), ref_out)
  if not switches.get("verb_decoder", True):  # FFN maps Q_inter alone.
    assert variables["params/interaction_decoder/layers_0/linear1/kernel"] == (
        16, 32)
  if switches.get("classifier") == "linear":  # [D features (+ C), classes].
    width = E if not switches.get("verb_decoder", True) else 2 * E
    assert variables[
        "params/verb_predictor/interaction_classifier/kernel"] == (width, C)


def test_table4_row_a_model_runs_without_clip_text_knowledge():
  model = _switched(_ROW_A)
  rng = np.random.default_rng(9)
  image, mask, clip_image = _inputs(rng)
  text, obj_text = _text(rng, C), _text(rng, K)
  variables = jax.jit(model.init)(KEY, image, mask, clip_image, text,
                                  obj_text)
  # The object classifier is not initialised from the object prompts.
  kernel = variables["params"]["instance_interactor"]["obj_classifier"][
      "obj_visual_projection"]["kernel"]
  unit = obj_text / np.linalg.norm(obj_text, axis=-1, keepdims=True)
  assert not np.allclose(kernel[:, :K], unit.T, atol=1e-2)
  out = jax.jit(functools.partial(_apply, model))(variables, image, mask,
                                                  clip_image, text)
  for k in ki2hoi.LAYER_KEYS:
    assert np.isfinite(np.asarray(out[k])).all(), k
  assert out["pred_interaction_logits"].shape == (2, 4, C)
  # The linear head only scores the classes it was built with.
  with pytest.raises(Exception, match="interaction_classifier"):
    jax.eval_shape(functools.partial(_apply, model), variables, image, mask,
                   clip_image, _text(rng, C + 4))
