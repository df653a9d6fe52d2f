"""RUO's upsampler and synthesis decoder: integer latents → image, in float on the device.

The upsampler is one learned 8×8 transposed-convolution kernel (stride 2, C3's kernel size 8)
shared by all scales: scale l is upsampled l times, each time cropped to the next finer grid,
so the L scales arrive at full resolution as L channels. The synthesis network is paper 000's
Table A1 decoder: 1×1 convolutions L→D₁ (ReLU) [→D₂ (ReLU) when D₂ > 0] →D₃, then two 3×3
residual convolutions (the first followed by ReLU), D₃ = image channels; 3×3 layers pad by
replicating edges.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .grid import scale_shapes

DECODER_VERSIONS = {
    "v4-40": (40, 0), "v4-160": (160, 0), "v4-240": (240, 0), "v4-480": (480, 0),
    "v4-960": (960, 0), "v4-1200": (1200, 0), "v5-240": (240, 40), "v5-320": (320, 40),
}
"""Table A1 of paper 000: version → (D₁, D₂); D₃ is the number of image channels."""

UPSAMPLE_KERNEL = 8


def _bilinear_kernel() -> torch.Tensor:
    taps = torch.tensor([-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375])
    return torch.outer(taps, taps)[None, None]


class Upsampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(_bilinear_kernel().clone())

    def forward(self, latents: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Per-scale latents (N, h_l, w_l) → (N, L, H, W)."""
        shapes = scale_shapes(size[0], size[1], len(latents))
        channels = []
        for level, z in enumerate(latents):
            x = z[:, None]
            for finer in reversed(range(level)):
                x = F.conv_transpose2d(x, self.kernel, stride=2, padding=(UPSAMPLE_KERNEL - 2) // 2)
                x = x[..., :shapes[finer][0], :shapes[finer][1]]
            channels.append(x)
        return torch.cat(channels, dim=1)


class Synthesis(nn.Module):
    def __init__(self, scales: int, out_channels: int, version: str) -> None:
        super().__init__()
        if version not in DECODER_VERSIONS:
            raise ValueError(f"decoder version {version!r} is not one of {', '.join(DECODER_VERSIONS)}")
        d1, d2 = DECODER_VERSIONS[version]
        widths = [scales, d1] + ([d2] if d2 else []) + [out_channels]
        self.pointwise = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in zip(widths[:-1], widths[1:]))
        self.residual = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3) for _ in range(2))
        with torch.no_grad():
            for conv in self.residual:
                conv.weight.mul_(0.1)
                conv.bias.zero_()

    def forward(self, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """(N, L, H, W) → (N, C, H, W). The 1×1 stack runs as matrix products over channels-last
        pixels; with ``rows`` (inference only) ``rows`` pixels at a time through reused buffers,
        which on a CPU keeps the D₁-wide activations in cache and avoids page-faulting a fresh
        multi-megabyte block per step (together ~6× faster synthesis than 1×1 convolutions on
        the 2-core CPU of docs/benchmarks.md)."""
        n, _, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, -1)
        if rows is None or torch.is_grad_enabled():
            y = self._pointwise(pixels)
        else:
            y = self._pointwise_blocked(pixels, rows)
        x = y.view(n, h, w, -1).permute(0, 3, 1, 2)
        x = x + torch.relu(self.residual[0](F.pad(x, (1, 1, 1, 1), mode="replicate")))
        return x + self.residual[1](F.pad(x, (1, 1, 1, 1), mode="replicate"))

    def _pointwise(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.pointwise):
            x = F.linear(x, conv.weight.flatten(1), conv.bias)
            if i < len(self.pointwise) - 1:
                x = torch.relu(x)
        return x

    def _pointwise_blocked(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        *hidden, last = self.pointwise
        out = x.new_empty(len(x), last.out_channels)
        buffers = [x.new_empty(min(rows, len(x)), conv.out_channels) for conv in hidden]
        for start in range(0, len(x), rows):
            a = x[start:start + rows]
            for conv, buffer in zip(hidden, buffers):
                a = torch.addmm(conv.bias, a, conv.weight.flatten(1).T, out=buffer[:len(a)]).relu_()
            torch.addmm(last.bias, a, last.weight.flatten(1).T, out=out[start:start + len(a)])
        return out


class Decoder(nn.Module):
    """Upsampler + synthesis of one slice: the implicit, per-slice part of the samples."""

    def __init__(self, scales: int, out_channels: int, version: str) -> None:
        super().__init__()
        self.upsampler = Upsampler()
        self.synthesis = Synthesis(scales, out_channels, version)

    def forward(self, latents: Sequence[torch.Tensor], size: tuple[int, int], rows: int | None = None) -> torch.Tensor:
        return self.synthesis(self.upsampler(latents, size), rows)
