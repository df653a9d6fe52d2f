"""RUO's upsampler and synthesis decoder: integer latents → image, in float32.

The upsampler is one learned 8×8 transposed-convolution kernel (stride 2, C3's kernel size 8)
shared by all scales: scale l is upsampled l times, each time cropped to the next finer grid,
so the L scales arrive at full resolution as L channels. The synthesis network is paper 000's
Table A1 decoder: 1×1 convolutions L→D₁ (ReLU) [→D₂ (ReLU) when D₂ > 0] →D₃, then two 3×3
residual convolutions (the first followed by ReLU), D₃ = image channels; 3×3 layers pad by
replicating edges.

Two implementations of that one function, which agree to float tolerance (spec § 3.6):
:func:`synthesize_numpy` (what reading a file runs; no torch) and :func:`synthesize_torch`
(on any torch device, differentiable in the decoder's tensors: producers train through it, and
the torch layer decodes straight onto a GPU with it). torch is imported when the latter runs.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .arm import BLAS_BLOCK
from .grid import scale_shapes

DECODER_VERSIONS = {
    "v4-40": (40, 0), "v4-160": (160, 0), "v4-240": (240, 0), "v4-480": (480, 0),
    "v4-960": (960, 0), "v4-1200": (1200, 0), "v5-240": (240, 40), "v5-320": (320, 40),
}
"""Table A1 of paper 000: version → (D₁, D₂); D₃ is the number of image channels."""

UPSAMPLE_KERNEL = 8
UPSAMPLE_PADDING = (UPSAMPLE_KERNEL - 2) // 2
CPU_ROWS = 2048
"""Pixels per block of torch's 1×1 stack on a CPU: keeps D₁-wide activations in cache."""


def decoder_shapes(scales: int, channels: int, version: str) -> dict[str, tuple[int, ...]]:
    """Name → shape of every decoder tensor, in the order the file stores them (spec § 3.6)."""
    if version not in DECODER_VERSIONS:
        raise ValueError(f"decoder version {version!r} is not one of {', '.join(DECODER_VERSIONS)}")
    d1, d2 = DECODER_VERSIONS[version]
    widths = [scales, d1] + ([d2] if d2 else []) + [channels]
    shapes: dict[str, tuple[int, ...]] = {"upsampler.kernel": (1, 1, UPSAMPLE_KERNEL, UPSAMPLE_KERNEL)}
    for j, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        shapes[f"synthesis.pointwise.{j}.weight"] = (b, a, 1, 1)
        shapes[f"synthesis.pointwise.{j}.bias"] = (b,)
    for j in range(2):
        shapes[f"synthesis.residual.{j}.weight"] = (channels, channels, 3, 3)
        shapes[f"synthesis.residual.{j}.bias"] = (channels,)
    return shapes


def _layers(params: Mapping[str, Any], prefix: str) -> list[tuple[Any, Any]]:
    count = sum(1 for name in params if name.startswith(prefix) and name.endswith(".weight"))
    return [(params[f"{prefix}{j}.weight"], params[f"{prefix}{j}.bias"]) for j in range(count)]


# --------------------------------------------------------------------------- numpy


def _upsample_numpy(x: np.ndarray, kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One transposed convolution (stride 2, padding 3) of (n, h, w), cropped to ``shape``:
    output row 2i + k − 3 receives input row i times tap k, so each of the 64 taps is one
    strided add of the whole input."""
    n, h, w = x.shape
    full = np.zeros((n, 2 * h + 2 * UPSAMPLE_PADDING, 2 * w + 2 * UPSAMPLE_PADDING), np.float32)
    tap = np.empty_like(x)
    for ky in range(UPSAMPLE_KERNEL):
        for kx in range(UPSAMPLE_KERNEL):
            np.multiply(x, kernel[ky, kx], out=tap)
            full[:, ky:ky + 2 * h:2, kx:kx + 2 * w:2] += tap
    p = UPSAMPLE_PADDING
    return full[:, p:p + shape[0], p:p + shape[1]]


def _residual_numpy(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3×3 convolution (cross-correlation) of channels-last (n, H, W, C) over edge-replicated
    padding."""
    _, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    out = np.empty_like(x)
    out[...] = bias
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy:dy + h, dx:dx + w, :] @ weight[:, :, dy, dx].T
    return out


def synthesize_numpy(params: Mapping[str, np.ndarray], latents: np.ndarray, size: tuple[int, int],
                     scales: int) -> np.ndarray:
    """(n, C, H, W) float32 samples of integer latents (n, M) through one decoder's float32
    tensors (names of :func:`decoder_shapes`). The 1×1 stack runs as matrix products over
    channels-last pixels through reused buffers, in blocks of pixels small enough that BLAS
    computes each product on the calling thread (:data:`~.arm.BLAS_BLOCK`): callers run chunks
    of samples on all cores, and threaded BLAS under them was 4× slower on 2 busy cores."""
    h, w = size
    shapes = scale_shapes(h, w, scales)
    z = np.asarray(latents, np.float32)
    n, start = len(z), 0
    kernel = params["upsampler.kernel"][0, 0]
    planes = np.empty((n, h, w, scales), np.float32)
    for level, (lh, lw) in enumerate(shapes):
        x = z[:, start:start + lh * lw].reshape(n, lh, lw)
        start += lh * lw
        for finer in reversed(range(level)):
            x = _upsample_numpy(x, kernel, shapes[finer])
        planes[..., level] = x
    pixels = planes.reshape(n * h * w, scales)
    *hidden, last = [(wt.reshape(len(wt), -1).T, b) for wt, b in _layers(params, "synthesis.pointwise.")]
    rows = max(1, BLAS_BLOCK // max(wt.shape[0] * wt.shape[1] for wt, _ in (*hidden, last)))
    y = np.empty((len(pixels), last[0].shape[1]), np.float32)
    buffers = [np.empty((min(rows, len(pixels)), wt.shape[1]), np.float32) for wt, _ in hidden]
    for i in range(0, len(pixels), rows):
        a = pixels[i:i + rows]
        for (wt, b), buffer in zip(hidden, buffers):
            a = np.matmul(a, wt, out=buffer[:len(a)])
            a += b
            np.maximum(a, 0, out=a)
        block = np.matmul(a, last[0], out=y[i:i + len(a)])
        block += last[1]
    x = y.reshape(n, h, w, -1)
    (w0, b0), (w1, b1) = _layers(params, "synthesis.residual.")
    x = x + np.maximum(_residual_numpy(x, w0, b0), 0)
    x = x + _residual_numpy(x, w1, b1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- torch


def synthesize_torch(params: Mapping[str, Any], latents: Sequence[Any], size: tuple[int, int],
                     rows: int | None = None) -> Any:
    """(N, C, H, W) from per-scale latents (N, h_l, w_l) through decoder tensors (torch, any
    device, differentiable). With ``rows`` and gradients off, the 1×1 stack takes ``rows``
    pixels at a time through reused buffers (on a CPU ~6× faster than 1×1 convolutions)."""
    import torch
    import torch.nn.functional as F

    shapes = scale_shapes(size[0], size[1], len(latents))
    channels = []
    for level, z in enumerate(latents):
        x = z[:, None]
        for finer in reversed(range(level)):
            x = F.conv_transpose2d(x, params["upsampler.kernel"], stride=2, padding=UPSAMPLE_PADDING)
            x = x[..., :shapes[finer][0], :shapes[finer][1]]
        channels.append(x)
    x = torch.cat(channels, dim=1)
    n, _, h, w = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, -1)
    *hidden, last = [(wt.flatten(1), b) for wt, b in _layers(params, "synthesis.pointwise.")]
    if rows is None or torch.is_grad_enabled():
        for wt, b in hidden:
            pixels = torch.relu(F.linear(pixels, wt, b))
        y = F.linear(pixels, *last)
    else:
        y = pixels.new_empty(len(pixels), last[0].shape[0])
        buffers = [pixels.new_empty(min(rows, len(pixels)), wt.shape[0]) for wt, _ in hidden]
        for start in range(0, len(pixels), rows):
            a = pixels[start:start + rows]
            for (wt, b), buffer in zip(hidden, buffers):
                a = torch.addmm(b, a, wt.T, out=buffer[:len(a)]).relu_()
            torch.addmm(last[1], a, last[0].T, out=y[start:start + len(a)])
    x = y.view(n, h, w, -1).permute(0, 3, 1, 2)
    (w0, b0), (w1, b1) = _layers(params, "synthesis.residual.")
    x = x + torch.relu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w0, b0))
    return x + F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w1, b1)
