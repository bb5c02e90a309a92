"""ResNet backbone with frozen batch-norm (DETR's `Backbone`), stride 32 or 16.

Parameter names mirror torchvision / DETR (`backbone.0.body.*`) so a DETR-R50
checkpoint maps one-to-one:

* stem: `conv1` (7x7/2), `bn1`, 3x3/2 max-pool;
* stages `layer{1..4}_{i}` (torchvision `layer1.0` -> `layer1_0`), each block
  with `conv1`/`bn1`/`conv2`/`bn2` (+ `conv3`/`bn3` for bottlenecks) and, in
  the first block of a stage, `downsample_0` (1x1 conv) / `downsample_1`
  (frozen BN);
* convolutions have no bias; their `kernel` is HWIO (torch OIHW transposed);
* frozen BN stores `weight`, `bias`, `running_mean`, `running_var` (all
  [C], float32) in the **`frozen_bn` collection**, not in `params`: they are
  constants of the model (DETR's FrozenBatchNorm2d buffers), never updated and
  never seen by the optimizer. A converter writes
  `variables['frozen_bn']['backbone']['layer1_0']['bn1']['weight']` from
  `backbone.0.body.layer1.0.bn1.weight`.

Dilation (DETR's `--dilation`, the DC5 models): the last stage keeps stride
16 and dilates its 3x3 convolutions by 2 instead (torchvision
`replace_stride_with_dilation=[False, False, True]`; the first block's
formerly strided 3x3 keeps dilation 1), so C5 has twice the resolution with
the same parameters.

The 1x1 projection of C5 to d_model is `input_proj` in `ki2hoi.py` (a
top-level module, as in DETR, so it trains at the main learning rate).

Padding: with `mask_padding=True` every convolution input is multiplied by
the validity mask at its resolution, so the features of the valid region do
not depend on the padding content nor on the amount of padding (exactly, for
valid sizes that are multiples of the stride; the conv then sees the same
zeros as its own zero padding on an unpadded image). DETR does not do this
(its border features see the padding), which is the default here so that a
DETR checkpoint behaves as trained.

Speed (issue 18; the layer math is unchanged, outputs equal within float
rounding, see tests/test_backbone.py):

* 1x1 convolutions are matrix products over channels (`einsum`, a strided
  one subsamples first). XLA:CPU ran their weight gradients as convolutions
  with the batch axis moved innermost, at a tenth of the forward speed; as a
  `dot` the gradient is a GEMM over B*H*W on every backend (cuBLAS on GPU,
  where a 1x1 NHWC convolution is the same GEMM).
* The k x k convolutions (3x3, the stem) keep `lax.conv_general_dilated`
  forward and input gradient; on CPU only, and from 64 input channels on,
  their kernel gradient is k*k GEMMs of shifted input windows with the
  output gradient (`_conv`'s custom VJP,
  chosen per platform by `lax.platform_dependent`; GPU and TPU keep XLA's
  own kernel-gradient convolution).
* With `norm='frozen'` each frozen BN is folded into the convolution before
  it: kernel * scale, then + shift (computed inside the forward from the
  `frozen_bn` collection, which stays as stored, so DETR checkpoints load
  unchanged). One pass over the activation instead of two, on any backend.
* `frozen_stages`: the stem and stages 1..n run under `stop_gradient`, so
  nothing differentiates through layers the optimizer never updates.

Reference: torchvision `models/resnet.py` (v1.5: stride on the 3x3 conv) and
facebookresearch/detr `models/backbone.py`.
"""

import functools
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ki2hoi_jax.models import position_encoding

FROZEN_BN_COLLECTION = "frozen_bn"

STAGE_SIZES = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}
BOTTLENECK_DEPTHS = (50, 101)


class FrozenBatchNorm(nn.Module):
  """Batch norm with fixed statistics and affine terms (DETR, eps 1e-5).

  Attributes:
    eps: variance epsilon.
    dtype: compute dtype.
  """
  eps: float = 1e-5
  dtype: Any = jnp.float32

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """[..., C] -> [..., C]."""
    scale, shift = self.affine(x.shape[-1])
    return x * scale.astype(self.dtype) + shift.astype(self.dtype)

  @nn.compact
  def affine(self, c: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
    """(scale, shift) [C] float32: the norm is `x * scale + shift`."""
    col = FROZEN_BN_COLLECTION
    weight = self.variable(col, "weight", jnp.ones, (c,), jnp.float32).value
    bias = self.variable(col, "bias", jnp.zeros, (c,), jnp.float32).value
    mean = self.variable(col, "running_mean", jnp.zeros, (c,),
                         jnp.float32).value
    var = self.variable(col, "running_var", jnp.ones, (c,), jnp.float32).value
    scale = weight * jax.lax.rsqrt(var + self.eps)
    return scale, bias - mean * scale


def _norm(kind: str, name: str, dtype):
  """The backbone's normalisation layer.

  'frozen' is DETR's FrozenBatchNorm (statistics from a checkpoint, in the
  `frozen_bn` collection). 'group' is a trainable GroupNorm (8 groups, or fewer
  for narrow layers) for backbones trained from scratch (the demo): a frozen
  BN without a checkpoint is the identity, i.e. no normalisation at all.
  """
  if kind == "frozen":
    return FrozenBatchNorm(dtype=dtype, name=name)
  if kind == "group":
    return lambda x: nn.GroupNorm(num_groups=min(8, x.shape[-1]), epsilon=1e-5,
                                  dtype=dtype, name=name)(x)
  raise ValueError(f"model.backbone_norm must be 'frozen' or 'group', got "
                   f"{kind!r}")


def _conv_nhwc(x, kernel, stride: int, dilation: int):
  pad = dilation * (kernel.shape[0] // 2)  # torch-style symmetric padding.
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
      rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Narrower inputs keep XLA's kernel gradient on CPU too: on the demo model
# (ResNet-18, width 16) GEMMs for every 3x3 made the step 496 ms against
# 369 ms with XLA's, and 353 ms with GEMMs from 64 input channels on. Every
# trained 3x3 convolution of the paper's ResNet-50 has >= 64.
_GEMM_MIN_IN_CHANNELS = 64


def _kernel_grad_gemm(x, g, kernel_shape, stride: int, dilation: int):
  """d conv / d kernel as k*k GEMMs: window (i, j) of x against g."""
  k = kernel_shape[0]
  pad = dilation * (k // 2)
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = g.shape[1:3]
  rows = []
  for i in range(k):
    cols = []
    for j in range(k):
      win = jax.lax.slice(
          xp, (0, i * dilation, j * dilation, 0),
          (xp.shape[0], i * dilation + (ho - 1) * stride + 1,
           j * dilation + (wo - 1) * stride + 1, xp.shape[3]),
          (1, stride, stride, 1))
      cols.append(jnp.einsum("bhwc,bhwo->co", win, g,
                             preferred_element_type=jnp.float32))
    rows.append(jnp.stack(cols))
  return jnp.stack(rows).astype(g.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_kxk(x, kernel, stride: int = 1, dilation: int = 1):
  """NHWC x HWIO convolution, 'same'-style padding dilation * (k // 2).

  The same values and gradients as `lax.conv_general_dilated`; on CPU the
  kernel gradient is computed by `_kernel_grad_gemm` (XLA:CPU's
  kernel-gradient convolution was the slowest part of the train step),
  elsewhere by XLA's transposed convolution.
  """
  return _conv_nhwc(x, kernel, stride, dilation)


def _conv_kxk_fwd(x, kernel, stride, dilation):
  return _conv_nhwc(x, kernel, stride, dilation), (x, kernel)


def _conv_kxk_bwd(stride, dilation, residuals, g):
  x, kernel = residuals
  _, x_vjp = jax.vjp(lambda a: _conv_nhwc(a, kernel, stride, dilation), x)
  (gx,) = x_vjp(g)

  def xla_kernel_grad(x, g):
    _, k_vjp = jax.vjp(lambda w: _conv_nhwc(x, w, stride, dilation), kernel)
    return k_vjp(g)[0]

  if kernel.shape[2] < _GEMM_MIN_IN_CHANNELS:
    return gx, xla_kernel_grad(x, g).astype(kernel.dtype)
  gk = jax.lax.platform_dependent(
      x, g, cpu=lambda x, g: _kernel_grad_gemm(x, g, kernel.shape, stride,
                                               dilation),
      default=xla_kernel_grad)
  return gx, gk.astype(kernel.dtype)


conv_kxk.defvjp(_conv_kxk_fwd, _conv_kxk_bwd)


class Conv(nn.Module):
  """Bias-free square convolution with an `nn.Conv`-compatible `kernel`.

  The parameter is `kernel` [k, k, Cin, features] (HWIO) with nn.Conv's
  name, shape and initialiser, so checkpoints and `init` values are those of
  `nn.Conv(features, (k, k), use_bias=False)`. 1x1 kernels run as a channel
  matmul, k x k ones through `conv_kxk`.

  Attributes:
    features: output channels.
    kernel_size: k.
    stride: spatial stride.
    dilation: kernel dilation (padding dilation * (k // 2)).
    dtype: compute dtype (the parameter stays float32).
  """
  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, scale=None, shift=None):
    """x [B, H, W, Cin] -> [B, H', W', features].

    Args:
      x: input.
      scale: optional [features] float32 multiplier folded into the kernel.
      shift: optional [features] float32 added to the output.
    """
    k = self.kernel_size
    kernel = self.param(
        "kernel", nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        (k, k, x.shape[-1], self.features), jnp.float32)
    if scale is not None:
      kernel = kernel * scale  # Folded frozen BN (float32, then cast).
    kernel = kernel.astype(self.dtype)
    x = x.astype(self.dtype)
    if k == 1:
      s = self.stride
      y = jnp.einsum("bhwc,co->bhwo", x[:, ::s, ::s] if s > 1 else x,
                     kernel[0, 0])
    else:
      y = conv_kxk(x, kernel, self.stride, self.dilation)
    if shift is not None:
      y = y + shift.astype(self.dtype)
    return y


def _conv_norm(x, features, kernel, stride, norm, dtype, conv_name, norm_name,
               dilation=1):
  """Convolution `conv_name` then norm `norm_name` (folded when frozen)."""
  conv = Conv(features, kernel, stride, dilation, dtype, name=conv_name)
  if norm == "frozen":
    scale, shift = FrozenBatchNorm(dtype=dtype, name=norm_name).affine(
        features)
    return conv(x, scale, shift)
  return _norm(norm, norm_name, dtype)(conv(x))


def _apply_mask(x, mask):
  if mask is None:
    return x
  return x * mask[..., None].astype(x.dtype)


class BasicBlock(nn.Module):
  """ResNet-18/34 block: two 3x3 convs.

  Attributes:
    planes: output channels.
    stride: stride of the first conv.
    downsample: add the 1x1 projection shortcut.
    norm: 'frozen' | 'group' (see `_norm`).
    dtype: compute dtype.
    dilation: dilation of the second 3x3 conv.
    first_dilation: dilation of the first 3x3 conv.
  """
  planes: int
  stride: int = 1
  downsample: bool = False
  norm: str = "frozen"
  dtype: Any = jnp.float32
  dilation: int = 1
  first_dilation: int = 1
  expansion = 1

  @nn.compact
  def __call__(self, x, mask_in=None, mask_out=None):
    """x: [B, H, W, Cin] (already masked) -> [B, H/s, W/s, planes]."""
    cn = functools.partial(_conv_norm, norm=self.norm, dtype=self.dtype)
    y = cn(x, self.planes, 3, self.stride, conv_name="conv1", norm_name="bn1",
           dilation=self.first_dilation)
    y = _apply_mask(nn.relu(y), mask_out)
    y = cn(y, self.planes, 3, 1, conv_name="conv2", norm_name="bn2",
           dilation=self.dilation)
    if self.downsample:
      x = cn(x, self.planes, 1, self.stride, conv_name="downsample_0",
             norm_name="downsample_1")
    return _apply_mask(nn.relu(y + x), mask_out)


class Bottleneck(nn.Module):
  """ResNet-50/101 block: 1x1, 3x3 (strided), 1x1 x4.

  Attributes:
    planes: bottleneck channels (output is 4 * planes).
    stride: stride of the 3x3 conv (torchvision v1.5).
    downsample: add the 1x1 projection shortcut.
    norm: 'frozen' | 'group' (see `_norm`).
    dtype: compute dtype.
    dilation: unused (the 3x3 conv takes `first_dilation`, torchvision's
      choice).
    first_dilation: dilation of the 3x3 conv.
  """
  planes: int
  stride: int = 1
  downsample: bool = False
  norm: str = "frozen"
  dtype: Any = jnp.float32
  dilation: int = 1
  first_dilation: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x, mask_in=None, mask_out=None):
    """x: [B, H, W, Cin] (already masked) -> [B, H/s, W/s, 4 * planes]."""
    cn = functools.partial(_conv_norm, norm=self.norm, dtype=self.dtype)
    y = cn(x, self.planes, 1, 1, conv_name="conv1", norm_name="bn1")
    y = _apply_mask(nn.relu(y), mask_in)
    y = cn(y, self.planes, 3, self.stride, conv_name="conv2",
           norm_name="bn2", dilation=self.first_dilation)
    y = _apply_mask(nn.relu(y), mask_out)
    y = cn(y, self.planes * 4, 1, 1, conv_name="conv3", norm_name="bn3")
    if self.downsample:
      x = cn(x, self.planes * 4, 1, self.stride, conv_name="downsample_0",
             norm_name="downsample_1")
    return _apply_mask(nn.relu(y + x), mask_out)


class ResNet(nn.Module):
  """ResNet body returning the C5 map (stride 32, or 16 dilated) and its mask.

  Attributes:
    depth: 18 | 34 | 50 | 101.
    width: stem channels (64 standard); stage i has width * 2^i planes.
    mask_padding: zero padded positions before every conv (see module doc).
    norm: 'frozen' (DETR's FrozenBatchNorm) | 'group' (trainable GroupNorm).
    dilation: dilate the last stage instead of striding it (DC5, stride 16).
    frozen_stages: the stem and stages 1..n (n >= 1) run under
      `stop_gradient` (`model.backbone_frozen_stages`: the optimizer never
      updates them, and nothing upstream is trainable); 0 differentiates all.
    dtype: compute dtype (parameters stay float32).
  """
  depth: int = 50
  width: int = 64
  mask_padding: bool = False
  norm: str = "frozen"
  dilation: bool = False
  frozen_stages: int = 0
  dtype: Any = jnp.float32

  @property
  def stride(self) -> int:
    """Output stride of C5."""
    return 16 if self.dilation else 32

  @property
  def num_channels(self) -> int:
    """Channels of the C5 output."""
    expansion = 4 if self.depth in BOTTLENECK_DEPTHS else 1
    return self.width * 8 * expansion

  @nn.compact
  def __call__(self, image: jnp.ndarray,
               mask: Optional[jnp.ndarray] = None):
    """Runs the body.

    Args:
      image: [B, H, W, 3] ImageNet-normalised image.
      mask: [B, H, W] bool, True on valid pixels (default: all valid).

    Returns:
      (features [B, ceil(H/s), ceil(W/s), num_channels] in `dtype`,
       mask [B, ceil(H/s), ceil(W/s)] bool), s = `self.stride`.
    """
    if self.depth not in STAGE_SIZES:
      raise ValueError(f"Unsupported ResNet depth {self.depth}.")
    if mask is None:
      mask = jnp.ones(image.shape[:3], bool)
    block_cls = Bottleneck if self.depth in BOTTLENECK_DEPTHS else BasicBlock
    use = self.mask_padding

    def m(stride):
      return position_encoding.downsample_mask(mask, stride) if use else None

    x = _apply_mask(image.astype(self.dtype), m(1))
    x = _conv_norm(x, self.width, 7, 2, self.norm, self.dtype, "conv1", "bn1")
    x = _apply_mask(nn.relu(x), m(2))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = _apply_mask(x, m(4))
    stride = 4
    for stage, num_blocks in enumerate(STAGE_SIZES[self.depth]):
      planes = self.width * 2**stage
      dilated = self.dilation and stage == 3
      for i in range(num_blocks):
        block_stride = 2 if (i == 0 and stage > 0 and not dilated) else 1
        in_stride, out_stride = stride, stride * block_stride
        needs_proj = i == 0 and (stage > 0 or block_cls is Bottleneck)
        x = block_cls(planes, stride=block_stride, downsample=needs_proj,
                      norm=self.norm, dtype=self.dtype,
                      dilation=2 if dilated else 1,
                      first_dilation=2 if dilated and i > 0 else 1,
                      name=f"layer{stage + 1}_{i}")(
                          x, m(in_stride), m(out_stride))
        stride = out_stride
      if stage + 1 == self.frozen_stages:
        x = jax.lax.stop_gradient(x)
    return x, position_encoding.downsample_mask(mask, self.stride)
