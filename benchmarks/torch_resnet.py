"""A torchvision-free PyTorch ResNet-50 body in DETR's layout.

The floor of benchmarks/train_step.py (the same backbone in PyTorch) and the
reference of the DETR converter and backbone tests (tests/test_convert.py,
tests/test_backbone.py). Frozen BN buffers are random (a fixed affine map,
DETR's FrozenBatchNorm2d); `freeze_stem_and_layer1` gives DETR's training
freezing.
"""

import torch
from torch import nn
from torch.nn import functional as F


class FrozenBN(nn.Module):
  """DETR's FrozenBatchNorm2d (buffers only, eps 1e-5)."""

  def __init__(self, c):
    super().__init__()
    self.register_buffer("weight", 1 + 0.2 * torch.randn(c))
    self.register_buffer("bias", 0.1 * torch.randn(c))
    self.register_buffer("running_mean", 0.1 * torch.randn(c))
    self.register_buffer("running_var", 0.5 + torch.rand(c))

  def forward(self, x):
    scale = self.weight * (self.running_var + 1e-5).rsqrt()
    shift = self.bias - self.running_mean * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


class Bottleneck(nn.Module):
  """torchvision Bottleneck (v1.5: stride on the 3x3 conv)."""

  def __init__(self, cin, planes, stride, dilation=1):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = FrozenBN(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation,
                           bias=False)
    self.bn2 = FrozenBN(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = FrozenBN(planes * 4)
    self.downsample = None
    if stride != 1 or cin != planes * 4:
      self.downsample = nn.Sequential(
          nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
          FrozenBN(planes * 4))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50Body(nn.Module):
  """ResNet-50 layout (3, 4, 6, 3) with a narrow stem, no fc.

  `dilation` follows torchvision's `replace_stride_with_dilation=[False,
  False, True]`: layer4 has stride 1, its first block's 3x3 keeps dilation 1
  and the later blocks use dilation 2 (DETR-DC5).
  """

  def __init__(self, width, dilation=False):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = FrozenBN(width)
    cin = width
    for s, n in enumerate((3, 4, 6, 3)):
      planes = width * 2 ** s
      dilated = dilation and s == 3
      blocks = []
      for i in range(n):
        stride = 2 if (i == 0 and s and not dilated) else 1
        blocks.append(Bottleneck(cin, planes, stride,
                                 2 if dilated and i else 1))
        cin = planes * 4
      setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    for s in range(1, 5):
      x = getattr(self, f"layer{s}")(x)
    return x


def freeze_stem_and_layer1(body: ResNet50Body) -> ResNet50Body:
  """DETR's freezing: no gradients for conv1 and layer1 (BN is buffers)."""
  for module in (body.conv1, body.layer1):
    for p in module.parameters():
      p.requires_grad_(False)
  return body
