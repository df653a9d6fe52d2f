"""Student networks the dataset-distillation papers evaluate with.

``ConvNet`` is the ConvNet-D*n* of RUO, DM/GM/TM and IGDS: *n* blocks of 3×3 convolution
(128 filters), instance normalisation, ReLU and 2×2 average pooling, then one linear layer.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: tuple[int, int], depth: int = 3,
                 width: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        h, w = image_size
        channels = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1),
                       nn.GroupNorm(width, width, affine=True),  # instance norm with learnable affine
                       nn.ReLU(inplace=True),
                       nn.AvgPool2d(2)]
            channels, h, w = width, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"depth {depth} pools a {image_size} input below 1 pixel")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))
