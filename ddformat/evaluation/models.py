"""Student networks the dataset-distillation papers evaluate with.

A distilled set is judged by the accuracy of a student trained on it, and the papers name the
student they used; :func:`build_model` turns those names (as a recipe's ``architecture`` holds
them) into networks:

* ``ConvNet-D3`` … ``ConvNet-D6``: *n* blocks of 3×3 convolution (128 filters), instance
  normalisation, ReLU and 2×2 average pooling, then one linear layer. The student of DC/DSA/DM
  and MTT and of RUO (D3 for 32×32, D5 for 128×128); IGDS uses D4 for Tiny ImageNet (64×64) and
  D6 for ImageWoof (128×128). ``ConvNet-D3-BN`` swaps in batch normalisation: a small teacher
  whose BN statistics SRe2L-family methods (WMDD) match.
* ``ResNet-18`` (batch norm) and ``ResNet-18-IN`` (instance norm): the cross-architecture
  student of MTT/IGDS and the ImageNet-1K student of the soft-label papers and DDOQ.
* ``ResNetAP-10``: ResNet-10 that downsamples by 2×2 average pooling instead of strided
  convolution, instance-normalised as in IDC, which introduced it; IGDS and DDOQ evaluate
  ImageWoof/ImageNette with it. ``ResNetAP-10-BN`` is its batch-norm variant.

Instance normalisation is ``GroupNorm(c, c)`` with a learnable affine, as the DC/DSA/MTT/IDC code
writes it: per-sample statistics make a student's output independent of its batch, which matters
when a distilled set has one image per class.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

Norm = Literal["batch", "instance"]
Downsample = Literal["stride", "avgpool"]


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """The normalisation every student here uses after a convolution."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    raise ValueError(f"norm must be 'batch' or 'instance', got {norm!r}")


class ConvNet(nn.Module):
    """ConvNet-D``depth``: each block halves the resolution, so ``depth`` must leave at least one pixel."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], depth: int = 3,
                 width: int = 128, norm: Norm = "instance") -> None:
        super().__init__()
        h, w = image_size
        if depth < 1 or h >> depth < 1 or w >> depth < 1:
            deepest = max(min(h, w).bit_length() - 1, 0)
            raise ValueError(f"ConvNet-D{depth} does not fit a {h}×{w} input: each block halves it, "
                             f"so the depth must be 1..{deepest}")
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1), norm_layer(norm, width),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * (h >> depth) * (w >> depth), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection; the first may halve the resolution, by
    stride 2 or, in the AP variant, by 2×2 average pooling after its activation (as IDC places it)."""

    def __init__(self, channels_in: int, channels_out: int, halve: bool, norm: Norm,
                 downsample: Downsample) -> None:
        super().__init__()
        stride = 2 if halve and downsample == "stride" else 1
        pooled = halve and downsample == "avgpool"
        self.residual = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False),
            norm_layer(norm, channels_out), nn.ReLU(inplace=True), *([nn.AvgPool2d(2)] if pooled else []),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False), norm_layer(norm, channels_out))
        if halve or channels_in != channels_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False),
                *([nn.AvgPool2d(2)] if pooled else []), norm_layer(norm, channels_out))
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


SMALL_INPUT = 64
"""Inputs up to this many pixels a side get a stem that keeps the resolution (CIFAR-style)."""
MID_INPUT = 128
"""ResNetAP inputs up to this size (and above ``SMALL_INPUT``) get a stem that halves them (IDC)."""


def _stem(in_channels: int, width: int, image_size: tuple[int, int], norm: Norm,
          downsample: Downsample) -> tuple[nn.Sequential, int]:
    """The layers before the residual stages and by how much they shrink the input.

    Small inputs: 3×3 convolution, stride 1. Larger ones, strided ResNet: ImageNet's 7×7 stride-2
    convolution and 3×3 max-pool (4×); AP ResNet, as IDC: a 3×3 convolution and 2×2 average
    pooling up to 128 pixels, a 7×7 convolution and 4×4 average pooling above.
    """
    side = max(image_size)
    if side <= SMALL_INPUT:
        layers, kernel, shrink = [], 3, 1
    elif downsample == "stride":
        layers, kernel, shrink = [nn.MaxPool2d(3, stride=2, padding=1)], 7, 4
    elif side <= MID_INPUT:
        layers, kernel, shrink = [nn.AvgPool2d(2)], 3, 2
    else:
        layers, kernel, shrink = [nn.AvgPool2d(4)], 7, 4
    stride = 2 if downsample == "stride" and side > SMALL_INPUT else 1
    conv = nn.Conv2d(in_channels, width, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, norm_layer(norm, width), nn.ReLU(inplace=True), *layers), shrink


class ResNet(nn.Module):
    """ResNet of :class:`BasicBlock` stages (64, 128, 256, 512 channels; every stage after the first
    halves the resolution), global average pooling and a linear classifier, so any input size that
    survives the halvings works."""

    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int],
                 blocks: tuple[int, int, int, int] = (2, 2, 2, 2), norm: Norm = "batch",
                 downsample: Downsample = "stride", width: int = 64) -> None:
        super().__init__()
        if downsample not in ("stride", "avgpool"):
            raise ValueError(f"downsample must be 'stride' or 'avgpool', got {downsample!r}")
        self.stem, shrink = _stem(in_channels, width, image_size, norm, downsample)
        halvings = len(blocks) - 1
        final = min(image_size) // shrink
        for _ in range(halvings):
            final = final // 2 if downsample == "avgpool" else (final + 1) // 2
        if final < 1:
            raise ValueError(f"a {image_size[0]}×{image_size[1]} input is pooled below one pixel; "
                             f"average-pooling ResNets need at least {shrink << halvings} pixels a side")
        if norm == "instance" and final < 2:
            raise ValueError(f"a {image_size[0]}×{image_size[1]} input leaves the last stage a 1×1 map, which "
                             f"instance normalisation sets to a constant, so every prediction would be the "
                             f"same; instance-normalised ResNets need at least {shrink << halvings + 1} pixels "
                             f"a side (the batch-norm variants do not)")
        stages: list[nn.Module] = []
        channels = width
        for i, count in enumerate(blocks):
            out = width << i
            for j in range(count):
                stages.append(BasicBlock(channels, out, halve=i > 0 and j == 0, norm=norm, downsample=downsample))
                channels = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))).flatten(1))


Builder = Callable[[int, int, tuple[int, int]], nn.Module]


def _convnet(depth: int, norm: Norm = "instance") -> Builder:
    return lambda c, k, size: ConvNet(c, k, size, depth=depth, norm=norm)


def _resnet(blocks: tuple[int, int, int, int], norm: Norm, downsample: Downsample) -> Builder:
    return lambda c, k, size: ResNet(c, k, size, blocks=blocks, norm=norm, downsample=downsample)


_BUILDERS: dict[str, Builder] = {
    "ConvNet-D3": _convnet(3),
    "ConvNet-D4": _convnet(4),
    "ConvNet-D5": _convnet(5),
    "ConvNet-D6": _convnet(6),
    "ConvNet-D3-BN": _convnet(3, "batch"),
    "ResNet-18": _resnet((2, 2, 2, 2), "batch", "stride"),
    "ResNet-18-IN": _resnet((2, 2, 2, 2), "instance", "stride"),
    "ResNetAP-10": _resnet((1, 1, 1, 1), "instance", "avgpool"),
    "ResNetAP-10-BN": _resnet((1, 1, 1, 1), "batch", "avgpool"),
}
ARCHITECTURES = tuple(_BUILDERS)
"""Canonical student names; :func:`build_model` also takes them in any case and without hyphens."""
_ALIASES = {"convnet": "ConvNet-D3"}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


_BY_KEY = {_key(name): name for name in ARCHITECTURES} | {_key(a): name for a, name in _ALIASES.items()}


def canonical_architecture(name: str) -> str:
    """The canonical spelling of a student name ("resnetap10" → "ResNetAP-10")."""
    if not isinstance(name, str) or _key(name) not in _BY_KEY:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)} "
                         f"(any case, hyphens optional; 'convnet' means ConvNet-D3)")
    return _BY_KEY[_key(name)]


def build_model(architecture: str, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    """A freshly initialised student named as in :data:`ARCHITECTURES`, for ``in_channels`` ×
    ``image_size`` inputs and ``num_classes`` logits."""
    return _BUILDERS[canonical_architecture(architecture)](in_channels, num_classes, tuple(image_size))
