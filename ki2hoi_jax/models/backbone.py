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

Reference: torchvision `models/resnet.py` (v1.5: stride on the 3x3 conv) and
facebookresearch/detr `models/backbone.py`.
"""

from typing import Any, Optional

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

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """[..., C] -> [..., C]."""
    c = x.shape[-1]
    col = FROZEN_BN_COLLECTION
    weight = self.variable(col, "weight", jnp.ones, (c,), jnp.float32).value
    bias = self.variable(col, "bias", jnp.zeros, (c,), jnp.float32).value
    mean = self.variable(col, "running_mean", jnp.zeros, (c,),
                         jnp.float32).value
    var = self.variable(col, "running_var", jnp.ones, (c,), jnp.float32).value
    scale = weight * jax.lax.rsqrt(var + self.eps)
    shift = bias - mean * scale
    return x * scale.astype(self.dtype) + shift.astype(self.dtype)


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


def _conv(features, kernel, stride, name, dtype, dilation=1):
  pad = dilation * (kernel // 2)  # torch-style symmetric padding.
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_dilation=(dilation, dilation), dtype=dtype, name=name,
                 kernel_init=nn.initializers.variance_scaling(
                     2.0, "fan_out", "normal"))


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
    y = _conv(self.planes, 3, self.stride, "conv1", self.dtype,
              self.first_dilation)(x)
    y = nn.relu(_norm(self.norm, "bn1", self.dtype)(y))
    y = _apply_mask(y, mask_out)
    y = _conv(self.planes, 3, 1, "conv2", self.dtype, self.dilation)(y)
    y = _norm(self.norm, "bn2", self.dtype)(y)
    if self.downsample:
      x = _conv(self.planes, 1, self.stride, "downsample_0", self.dtype)(x)
      x = _norm(self.norm, "downsample_1", self.dtype)(x)
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
    y = _conv(self.planes, 1, 1, "conv1", self.dtype)(x)
    y = nn.relu(_norm(self.norm, "bn1", self.dtype)(y))
    y = _apply_mask(y, mask_in)
    y = _conv(self.planes, 3, self.stride, "conv2", self.dtype,
              self.first_dilation)(y)
    y = nn.relu(_norm(self.norm, "bn2", self.dtype)(y))
    y = _apply_mask(y, mask_out)
    y = _conv(self.planes * 4, 1, 1, "conv3", self.dtype)(y)
    y = _norm(self.norm, "bn3", self.dtype)(y)
    if self.downsample:
      x = _conv(self.planes * 4, 1, self.stride, "downsample_0", self.dtype)(x)
      x = _norm(self.norm, "downsample_1", self.dtype)(x)
    return _apply_mask(nn.relu(y + x), mask_out)


class ResNet(nn.Module):
  """ResNet body returning the C5 map (stride 32, or 16 dilated) and its mask.

  Attributes:
    depth: 18 | 34 | 50 | 101.
    width: stem channels (64 standard); stage i has width * 2^i planes.
    mask_padding: zero padded positions before every conv (see module doc).
    norm: 'frozen' (DETR's FrozenBatchNorm) | 'group' (trainable GroupNorm).
    dilation: dilate the last stage instead of striding it (DC5, stride 16).
    dtype: compute dtype (parameters stay float32).
  """
  depth: int = 50
  width: int = 64
  mask_padding: bool = False
  norm: str = "frozen"
  dilation: bool = False
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
    x = _conv(self.width, 7, 2, "conv1", self.dtype)(x)
    x = nn.relu(_norm(self.norm, "bn1", self.dtype)(x))
    x = _apply_mask(x, m(2))
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
    return x, position_encoding.downsample_mask(mask, self.stride)
