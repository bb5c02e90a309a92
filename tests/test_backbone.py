"""ResNet backbone, sine position encoding and ROI-Align."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ki2hoi_jax.models import backbone
from ki2hoi_jax.models import position_encoding
from ki2hoi_jax.models import roi_align


def _init(model, *args):
  # The XLA RNG compiles much faster on CPU than threefry.
  return jax.jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), *args)


# ------------------------------------------------------------------ ResNet


@pytest.mark.parametrize("depth,blocks,c5", [(18, (2, 2, 2, 2), 8 * 8),
                                             (50, (3, 4, 6, 3), 8 * 8 * 4)])
def test_resnet_shapes_and_torchvision_names(depth, blocks, c5):
  model = backbone.ResNet(depth=depth, width=8)
  image = jnp.zeros((2, 64, 96, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), image)
  params, frozen = variables["params"], variables["frozen_bn"]
  assert set(variables) == {"params", "frozen_bn"}
  expected_blocks = {f"layer{s + 1}_{i}" for s, n in enumerate(blocks)
                     for i in range(n)}
  assert set(params) == {"conv1"} | expected_blocks
  assert set(frozen) == {"bn1"} | expected_blocks
  assert params["conv1"]["kernel"].shape == (7, 7, 3, 8)  # HWIO.
  assert set(frozen["bn1"]) == {"weight", "bias", "running_mean",
                                "running_var"}
  if depth == 50:
    assert set(params["layer1_0"]) == {"conv1", "conv2", "conv3",
                                       "downsample_0"}
    assert set(frozen["layer2_0"]) == {"bn1", "bn2", "bn3", "downsample_1"}
    assert params["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 16, 16)
  else:
    assert set(params["layer1_0"]) == {"conv1", "conv2"}  # No projection.
    assert "downsample_0" in params["layer2_0"]
  out, mask = jax.eval_shape(model.apply, variables, image)
  assert out.shape == (2, 2, 3, c5)
  assert mask.shape == (2, 2, 3)
  assert model.num_channels == c5


def test_frozen_batch_norm_matches_formula():
  bn = backbone.FrozenBatchNorm()
  x = jnp.arange(12.0).reshape(2, 2, 3)
  stats = {"weight": jnp.array([1.0, 2.0, 0.5]),
           "bias": jnp.array([0.0, 1.0, -1.0]),
           "running_mean": jnp.array([1.0, 0.0, 2.0]),
           "running_var": jnp.array([4.0, 1.0, 0.25])}
  y = bn.apply({"frozen_bn": stats}, x)
  s = {k: np.asarray(v) for k, v in stats.items()}
  expected = ((np.asarray(x) - s["running_mean"])
              / np.sqrt(s["running_var"] + 1e-5) * s["weight"] + s["bias"])
  np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_resnet_mask_padding_is_exactly_padding_invariant():
  """With mask_padding, the valid C5 cells ignore the padding entirely."""
  model = backbone.ResNet(depth=18, width=8, mask_padding=True)
  rng = np.random.default_rng(0)
  valid = rng.normal(size=(1, 64, 64, 3)).astype(np.float32)
  canvas_zero = np.zeros((1, 96, 128, 3), np.float32)
  canvas_zero[:, :64, :64] = valid
  canvas_junk = rng.normal(size=canvas_zero.shape).astype(np.float32) * 5
  canvas_junk[:, :64, :64] = valid
  mask = np.zeros((1, 96, 128), bool)
  mask[:, :64, :64] = True
  variables = _init(model, jnp.asarray(valid))
  apply = jax.jit(model.apply)
  ref, ref_mask = apply(variables, valid)
  out_zero, m_zero = apply(variables, canvas_zero, mask)
  out_junk, _ = apply(variables, canvas_junk, mask)
  assert ref.shape[1:3] == (2, 2) and out_zero.shape[1:3] == (3, 4)
  np.testing.assert_array_equal(m_zero[0], np.pad(np.ones((2, 2), bool),
                                                  ((0, 1), (0, 2))))
  assert bool(ref_mask.all())
  np.testing.assert_allclose(out_zero[:, :2, :2], ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out_junk[:, :2, :2], ref, rtol=1e-4, atol=1e-4)
  # Without masking the border cells see the padding (DETR behaviour).
  plain = backbone.ResNet(depth=18, width=8, mask_padding=False)
  out_plain = jax.jit(plain.apply)(variables, canvas_junk, mask)[0]
  assert not np.allclose(out_plain[:, :2, :2], ref, atol=1e-3)


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_dilation_keeps_parameters_and_halves_stride(depth):
  plain = backbone.ResNet(depth=depth, width=8)
  dilated = backbone.ResNet(depth=depth, width=8, dilation=True)
  image = jnp.asarray(np.random.default_rng(0).normal(size=(1, 64, 96, 3)),
                      jnp.float32)
  variables = _init(plain, image)
  assert (jax.tree_util.tree_structure(variables)
          == jax.tree_util.tree_structure(_init(dilated, image)))
  assert plain.stride == 32 and dilated.stride == 16
  out, mask = jax.jit(dilated.apply)(variables, image)
  ref, _ = jax.jit(plain.apply)(variables, image)
  assert out.shape == (1, 4, 6, ref.shape[-1]) and mask.shape == (1, 4, 6)
  assert ref.shape == (1, 2, 3, ref.shape[-1])


def test_resnet_bfloat16_compute_float32_params():
  model = backbone.ResNet(depth=18, width=8, dtype=jnp.bfloat16)
  image = jnp.ones((1, 32, 32, 3))
  variables = _init(model, image)
  assert all(x.dtype == jnp.float32
             for x in jax.tree_util.tree_leaves(variables))
  out, _ = jax.jit(model.apply)(variables, image)
  assert out.dtype == jnp.bfloat16


@pytest.mark.parametrize("cin", [5, backbone._GEMM_MIN_IN_CHANNELS])
@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (3, 2, 1),
                                               (3, 1, 2), (7, 2, 1)])
def test_conv_kxk_matches_lax_conv_values_and_gradients(k, stride, dilation,
                                                        cin):
  """The kernel gradient (GEMMs on CPU from 64 input channels) equals XLA's,
  forward and input gradient too."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 11, 9, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(k, k, cin, 6)), jnp.float32)
  pad = dilation * (k // 2)

  def ref(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), ((pad, pad), (pad, pad)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def fast(x, w):
    return backbone.conv_kxk(x, w, stride, dilation)

  y_ref, vjp_ref = jax.vjp(ref, x, w)
  y, vjp = jax.vjp(fast, x, w)
  g = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for got, want in zip(vjp(g), vjp_ref(g)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("k,stride", [(1, 1), (1, 2), (3, 2)])
def test_conv_is_nn_conv_with_the_same_parameter(k, stride):
  """Same `kernel` name, shape and init as nn.Conv; same outputs."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 7, 4)),
                  jnp.float32)
  pad = k // 2
  ref = nn.Conv(6, (k, k), strides=(stride, stride),
                padding=((pad, pad), (pad, pad)), use_bias=False,
                kernel_init=nn.initializers.variance_scaling(
                    2.0, "fan_out", "normal"))
  conv = backbone.Conv(6, k, stride)
  v_ref = ref.init(jax.random.key(3), x)
  v = conv.init(jax.random.key(3), x)
  np.testing.assert_array_equal(v["params"]["kernel"],
                                v_ref["params"]["kernel"])
  np.testing.assert_allclose(conv.apply(v, x), ref.apply(v_ref, x),
                             rtol=1e-5, atol=1e-5)


def test_resnet50_matches_torch_forward_and_gradients():
  """Folded frozen BN, 1x1 matmuls, GEMM kernel gradients, stop_gradient.

  A width-8 ResNet-50 against benchmarks/torch_resnet.py with the same
  weights (DETR names, random frozen BN): C5 within 1e-4 relative, the
  gradients of layer2..4 within 1e-4 of the largest, zero ones for the stem
  and layer1 (frozen_stages=1, DETR's freezing in PyTorch).
  """
  torch = pytest.importorskip("torch")
  from benchmarks import torch_resnet  # pylint: disable=g-import-not-at-top
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from ki2hoi_jax.weights import convert_detr  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  body = torch_resnet.freeze_stem_and_layer1(torch_resnet.ResNet50Body(8))
  flat = convert_detr._backbone(  # pylint: disable=protected-access
      {f"backbone.0.body.{k}": v.detach().numpy()
       for k, v in body.state_dict().items()})
  variables = traverse_util.unflatten_dict(
      {k.replace("/backbone/", "/", 1): v for k, v in flat.items()}, sep="/")
  rng = np.random.default_rng(2)
  image = rng.normal(size=(2, 64, 96, 3)).astype(np.float32)
  x = torch.from_numpy(image.transpose(0, 3, 1, 2).copy())
  out_t = body(x)
  cot = rng.normal(size=out_t.shape).astype(np.float32)
  (out_t * torch.from_numpy(cot)).sum().backward()

  model = backbone.ResNet(depth=50, width=8, frozen_stages=1)
  cot_nhwc = jnp.asarray(cot.transpose(0, 2, 3, 1))

  def loss(params):
    c5, _ = model.apply({"params": params,
                         "frozen_bn": variables["frozen_bn"]}, image)
    return jnp.sum(c5 * cot_nhwc), c5

  grads, c5 = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  ref = out_t.detach().numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(c5, ref, rtol=1e-4,
                             atol=1e-4 * np.abs(ref).max())
  g_flat = traverse_util.flatten_dict(grads, sep="/")
  torch_grads = {n: p.grad for n, p in body.named_parameters()}
  for name, g in g_flat.items():  # layer2_0/conv1/kernel: layer2.0.conv1
    torch_name = name.replace("/kernel", ".weight").replace(
        "/", ".").replace("_", ".")
    t = torch_grads[torch_name]
    if t is None:  # Frozen in PyTorch: no gradient through it here either.
      assert not np.any(np.asarray(g)), torch_name
      continue
    want = t.numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(g, want, rtol=1e-4,
                               atol=1e-4 * np.abs(want).max(),
                               err_msg=torch_name)


# ------------------------------------------------------- position encoding


def test_sine_position_encoding_known_values():
  mask = np.ones((1, 2, 4), bool)
  pos = np.asarray(position_encoding.sine_position_encoding(mask, 8,
                                                            eps=0.0))
  assert pos.shape == (1, 2, 4, 8)
  # y of row i is (i + 1) / 2 * 2 pi; x of column j is (j + 1) / 4 * 2 pi.
  # Channels: [sin(y), cos(y), sin(y/100), cos(y/100), same for x].
  i, j = 0, 2
  y, x = (i + 1) / 2 * 2 * math.pi, (j + 1) / 4 * 2 * math.pi
  expected = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100),
              math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
  np.testing.assert_allclose(pos[0, i, j], expected, atol=1e-6)


def test_sine_position_encoding_ignores_padding_amount():
  small = np.ones((1, 3, 5), bool)
  big = np.zeros((1, 7, 9), bool)
  big[:, :3, :5] = True
  p_small = position_encoding.sine_position_encoding(small, 16)
  p_big = position_encoding.sine_position_encoding(big, 16)
  np.testing.assert_allclose(p_big[:, :3, :5], p_small, atol=1e-6)
  assert np.isfinite(np.asarray(p_big)).all()


def test_sine_point_encoding_equals_the_map_encoding_at_cells():
  mask = np.ones((1, 4, 6), bool)
  grid = np.asarray(position_encoding.sine_position_encoding(mask, 16))
  # Cell (row i, column j) sits at normalised (x, y) = ((j+1)/6, (i+1)/4).
  points = np.array([[(j + 1) / 6, (i + 1) / 4] for i in range(4)
                     for j in range(6)], np.float32)
  enc = np.asarray(position_encoding.sine_point_encoding(points, 16))
  np.testing.assert_allclose(enc, grid.reshape(24, 16), atol=1e-5)
  assert position_encoding.sine_point_encoding(
      np.zeros((3, 5, 2)), 8).shape == (3, 5, 8)


def test_downsample_mask_is_ceil():
  mask = np.zeros((1, 100, 70), bool)
  mask[:, :65, :33] = True
  m = np.asarray(position_encoding.downsample_mask(mask, 32))
  assert m.shape == (1, 4, 3)
  assert m.sum(axis=1).max() == 3 and m.sum(axis=2).max() == 2


# ------------------------------------------------------------------ ROI-Align


def _numpy_roi_align(feat, box, out_hw, ratio, valid):
  """Straight loop reference: aligned=True, clamped to the valid region."""
  h_valid, w_valid = valid
  x1, y1, x2, y2 = [float(v) - 0.5 for v in box[:2]] + [
      float(v) - 0.5 for v in box[2:]]
  out = np.zeros(out_hw + (feat.shape[-1],))
  bh, bw = (y2 - y1) / out_hw[0], (x2 - x1) / out_hw[1]
  for i in range(out_hw[0]):
    for j in range(out_hw[1]):
      acc = 0.0
      for a in range(ratio):
        for c in range(ratio):
          y = min(max(y1 + (i + (a + 0.5) / ratio) * bh, 0.0), h_valid - 1)
          x = min(max(x1 + (j + (c + 0.5) / ratio) * bw, 0.0), w_valid - 1)
          y0, x0 = int(math.floor(y)), int(math.floor(x))
          ya, xa = min(y0 + 1, h_valid - 1), min(x0 + 1, w_valid - 1)
          ly, lx = y - y0, x - x0
          acc = acc + ((1 - ly) * (1 - lx) * feat[y0, x0]
                       + (1 - ly) * lx * feat[y0, xa]
                       + ly * (1 - lx) * feat[ya, x0] + ly * lx * feat[ya, xa])
      out[i, j] = acc / ratio**2
  return out


def test_roi_align_hand_computed():
  # One bin, one sample at the centre of cells (0..1, 0..1): the mean.
  feat = jnp.array([[1.0, 5.0], [3.0, 11.0]])[None, :, :, None]
  out = roi_align.roi_align(feat, jnp.array([[[0.5, 0.5, 1.5, 1.5]]]), (1, 1),
                            sampling_ratio=1)
  np.testing.assert_allclose(out[0, 0, 0, 0, 0], 5.0)
  # Sample at (y, x) = (0.25, 0.75): 1*.75*.25 + 5*.75*.75 + 3*.25*.25
  # + 11*.25*.75 = 5.25.
  out = roi_align.roi_align(feat, jnp.array([[[1.0, 0.5, 1.5, 1.0]]]), (1, 1),
                            sampling_ratio=1)
  np.testing.assert_allclose(out[0, 0, 0, 0, 0], 5.25, rtol=1e-6)
  # Linear map f(y, x) = 4y + x: a bin's value is 4 * mean(y) + mean(x).
  lin = jnp.arange(16.0).reshape(1, 4, 4, 1)
  out = roi_align.roi_align(lin, jnp.array([[[0.0, 0.0, 4.0, 4.0]]]), (2, 2),
                            sampling_ratio=2)
  # Sample coordinates per bin: (0, 1) -> mean 0.5; (2, 3) -> mean 2.5.
  np.testing.assert_allclose(out[0, 0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])


def test_roi_align_matches_loop_reference_and_ignores_padding():
  rng = np.random.default_rng(1)
  feat = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
  boxes = np.array([[[0.0, 0.0, 4.3, 3.1], [1.2, 0.7, 3.9, 2.2]],
                    [[0.0, 0.0, 2.6, 4.0], [0.3, 0.2, 6.9, 5.8]]], np.float32)
  valid = np.array([[4, 5], [5, 3]], np.int32)
  out = np.asarray(roi_align.roi_align(feat, boxes, (3, 2), 2,
                                       valid_size=valid))
  for b in range(2):
    for r in range(2):
      ref = _numpy_roi_align(feat[b], boxes[b, r], (3, 2), 2, valid[b])
      np.testing.assert_allclose(out[b, r], ref, rtol=1e-5, atol=1e-5)
  junk = feat.copy()
  for b, (vh, vw) in enumerate(valid):
    junk[b, vh:] = 1e3
    junk[b, :, vw:] = -1e3
  out_junk = roi_align.roi_align(junk, boxes, (3, 2), 2, valid_size=valid)
  np.testing.assert_allclose(out_junk, out, rtol=1e-5, atol=1e-5)


def test_roi_align_is_differentiable():
  feat = jnp.ones((1, 5, 5, 2))
  boxes = jnp.array([[[0.5, 0.5, 3.5, 4.0]]])
  x_map = jnp.arange(5.0)[None, None, :, None]  # Value = column index.

  def f(feat, boxes):
    return roi_align.roi_align(feat * x_map, boxes, (2, 2)).sum()

  g_feat, g_box = jax.grad(f, argnums=(0, 1))(feat, boxes)
  # f is linear in the features: sum(g * feat) at feat = 1 is f itself.
  np.testing.assert_allclose(g_feat.sum(), f(feat, boxes), rtol=1e-5)
  # Sum over 2 channels x 2 rows of (mean x of bin 0 + mean x of bin 1)
  # = 4 * (x1 + x2 - 1), so d/dx1 = d/dx2 = 4 and the y-derivatives are 0.
  np.testing.assert_allclose(f(feat, boxes), 4 * (0.5 + 3.5 - 1), rtol=1e-5)
  np.testing.assert_allclose(g_box[0, 0], [4.0, 0.0, 4.0, 0.0], atol=1e-5)


def _torchvision_roi_align(feat, box, out_hw, sampling_ratio):
  """Loop transcription of torchvision's CPU `roi_align(aligned=True)`.

  Independent of `roi_align`: per sample, per output bin, in float32 like
  torchvision's kernel; `sampling_ratio <= 0` is the adaptive grid of
  ceil(roi_h / out_h) x ceil(roi_w / out_w) samples per bin.

  Args:
    feat: [H, W, C] feature map.
    box: (x1, y1, x2, y2) in feature cells (spatial_scale 1).
    out_hw: (pooled_h, pooled_w).
    sampling_ratio: torchvision's argument.

  Returns:
    [pooled_h, pooled_w, C] float64.
  """
  f32 = np.float32
  height, width = feat.shape[:2]
  ph_n, pw_n = out_hw
  start_w, start_h = f32(box[0]) - f32(0.5), f32(box[1]) - f32(0.5)
  roi_w = (f32(box[2]) - f32(0.5)) - start_w
  roi_h = (f32(box[3]) - f32(0.5)) - start_h
  bin_h, bin_w = f32(roi_h / f32(ph_n)), f32(roi_w / f32(pw_n))
  grid_h = (sampling_ratio if sampling_ratio > 0
            else int(math.ceil(f32(roi_h / f32(ph_n)))))
  grid_w = (sampling_ratio if sampling_ratio > 0
            else int(math.ceil(f32(roi_w / f32(pw_n)))))
  count = max(grid_h * grid_w, 1)

  def bilinear(y, x):
    if y < -1.0 or y > height or x < -1.0 or x > width:
      return np.zeros(feat.shape[-1])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
      y_high = y_low = height - 1
      y = float(y_low)
    else:
      y_high = y_low + 1
    if x_low >= width - 1:
      x_high = x_low = width - 1
      x = float(x_low)
    else:
      x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * feat[y_low, x_low] + hy * lx * feat[y_low, x_high]
            + ly * hx * feat[y_high, x_low] + ly * lx * feat[y_high, x_high])

  out = np.zeros((ph_n, pw_n, feat.shape[-1]))
  for ph in range(ph_n):
    for pw in range(pw_n):
      acc = np.zeros(feat.shape[-1])
      for iy in range(grid_h):
        y = float(start_h + ph * bin_h + (iy + f32(0.5)) * bin_h / grid_h)
        for ix in range(grid_w):
          x = float(start_w + pw * bin_w + (ix + f32(0.5)) * bin_w / grid_w)
          acc += bilinear(y, x)
      out[ph, pw] = acc / count
  return out


# Boxes inside a 25 x 38 map (a 800 x 1216 image at stride 32): the whole
# map, non-integer extents (padded-image ROIs), a bin count that divides the
# extent, small boxes (1 sample per bin) and an offset box.
_ADAPTIVE_BOXES = [(0.0, 0.0, 38.0, 25.0), (0.0, 0.0, 37.5, 24.25),
                   (0.0, 0.0, 21.0, 14.0), (0.0, 0.0, 29.90625, 18.03125),
                   (3.2, 1.7, 9.1, 6.4), (10.4, 2.2, 33.3, 23.9),
                   (0.0, 0.0, 5.5, 3.0)]


@pytest.mark.parametrize("box", _ADAPTIVE_BOXES)
def test_roi_align_adaptive_matches_torchvision_reference(box):
  """Adaptive sampling equals torchvision's exactly (atol 1e-5, float32)."""
  rng = np.random.default_rng(2)
  feat = rng.normal(size=(25, 38, 3)).astype(np.float32)
  ref = _torchvision_roi_align(feat, box, (7, 7), 0)
  out = jax.jit(roi_align.roi_align, static_argnums=(2, 3))(
      jnp.asarray(feat)[None], jnp.array([[box]], jnp.float32), (7, 7), 0)
  np.testing.assert_allclose(np.asarray(out[0, 0]), ref, rtol=1e-5,
                             atol=1e-5)


def test_roi_align_adaptive_batches_boxes_of_different_sizes():
  """Per-box counts in one call; a valid region acts as a cropped map."""
  rng = np.random.default_rng(3)
  feat = rng.normal(size=(2, 25, 38, 4)).astype(np.float32)
  valid = np.array([[25, 38], [19, 30]], np.int32)
  boxes = np.array([[[0.0, 0.0, 38.0, 25.0], [3.2, 1.7, 9.1, 6.4]],
                    [[0.0, 0.0, 29.90625, 18.03125], [1.0, 2.0, 6.5, 17.5]]],
                   np.float32)
  out = np.asarray(roi_align.roi_align(feat, boxes, (7, 5), -1,
                                       valid_size=valid))
  for b in range(2):
    vh, vw = valid[b]
    for r in range(2):  # The boxes lie inside the valid region.
      ref = _torchvision_roi_align(feat[b, :vh, :vw], boxes[b, r], (7, 5), 0)
      np.testing.assert_allclose(out[b, r], ref, rtol=1e-5, atol=1e-5)


def test_roi_align_reference_agrees_with_fixed_ratio():
  """The torchvision transcription and the old loop agree for ratio 2."""
  rng = np.random.default_rng(4)
  feat = rng.normal(size=(6, 7, 2)).astype(np.float32)
  box = (1.2, 0.7, 3.9, 2.2)
  np.testing.assert_allclose(
      _torchvision_roi_align(feat, box, (3, 2), 2),
      _numpy_roi_align(feat, box, (3, 2), 2, (6, 7)), atol=1e-5)
  out = roi_align.roi_align(feat[None], jnp.array([[box]]), (3, 2), 2)
  np.testing.assert_allclose(
      out[0, 0], _torchvision_roi_align(feat, box, (3, 2), 2), atol=1e-5)


def test_roi_align_adaptive_reads_every_covered_cell():
  """A bin of a 21-cell-wide box (3 cells, 3 samples) averages its cells.

  With 2 samples the bin [0, 3) of f(x) = x^2 reads x = 0.25 and 1.75 (mean
  1.5625); adaptive reads the cell centres 0.5, 1.5, 2.5 exactly: mean of
  f(0), f(1), f(2) = 5/3.
  """
  x = np.arange(21.0)
  feat = jnp.asarray((x ** 2)[None, None, :, None], jnp.float32)
  box = jnp.array([[[0.0, 0.0, 21.0, 1.0]]])
  adaptive = roi_align.roi_align(feat, box, (1, 7), 0)[0, 0, 0, :, 0]
  np.testing.assert_allclose(adaptive[0], 5.0 / 3.0, rtol=1e-6)
  np.testing.assert_allclose(
      adaptive, [np.mean(x[3 * i:3 * i + 3] ** 2) for i in range(7)],
      rtol=1e-6)


def test_roi_align_adaptive_is_differentiable():
  """Gradients flow to features and box coordinates (counts are constant).

  On a map linear in (y, x) bilinear sampling is exact, so the output is
  smooth in the box while the counts stay fixed and central differences
  check the box gradient.
  """
  yy, xx = np.meshgrid(np.arange(9.0), np.arange(11.0), indexing="ij")
  feat = jnp.asarray(np.stack([0.3 * yy - 0.2 * xx, 0.1 * yy + 0.4 * xx + 1],
                              -1)[None], jnp.float32)
  boxes = jnp.array([[[0.7, 0.6, 10.2, 8.3]]])  # 4 x 3 samples per bin.

  def f(feat, boxes):
    return (roi_align.roi_align(feat, boxes, (3, 3), 0) ** 2).sum()

  g_feat, g_box = jax.grad(f, argnums=(0, 1))(feat, boxes)
  assert np.all(np.isfinite(g_feat)) and np.abs(g_feat).sum() > 0
  eps = 1e-2
  for i in range(4):
    d = jnp.zeros(4).at[i].set(eps)[None, None]
    num = (f(feat, boxes + d) - f(feat, boxes - d)) / (2 * eps)
    np.testing.assert_allclose(g_box[0, 0, i], num, rtol=1e-3, atol=1e-3)
  # An empty box has no samples: zeros, finite gradients.
  empty = jnp.array([[[2.0, 2.0, 2.0, 2.0]]])
  assert np.all(np.asarray(roi_align.roi_align(feat, empty, (3, 3), 0)) == 0)
  assert np.all(np.isfinite(jax.grad(f, argnums=1)(feat, empty)))
