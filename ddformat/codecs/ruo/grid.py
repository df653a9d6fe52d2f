"""Where RUO's latents live and in which order they are coded.

A sample of spatial size H×W has L latent scales; scale l is a ceil(H/2^l) × ceil(W/2^l) grid
of integers. Each latent is coded under a Laplace whose parameters the entropy network computes
from C causal neighbours in the same scale (a fixed pattern, zero outside the grid).

Coding order is a *wavefront*: within a scale, position (y, x) belongs to step x + a·y with
a the smallest integer with dx + a·dy < 0 for every offset (dy < 0) of the pattern, so every
neighbour of a position lies in an earlier step. All positions of a step (and all samples of a slice) are decoded together,
which turns H·W sequential decodes into about (a + 1)·H + W batched ones. Scales go from the
coarsest to the finest; within a step positions go by increasing y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


def scale_shapes(height: int, width: int, scales: int) -> tuple[tuple[int, int], ...]:
    return tuple((math.ceil(height / 2**l), math.ceil(width / 2**l)) for l in range(scales))


@lru_cache(maxsize=None)
def context_pattern(size: int) -> tuple[tuple[int, int], ...]:
    """The ``size`` nearest causal offsets (dy, dx): dy < 0, or dy == 0 and dx < 0, ordered by
    squared distance, then dy, then dx."""
    radius = math.isqrt(size) + 2
    candidates = [(dy, dx) for dy in range(-radius, 1) for dx in range(-radius, radius + 1)
                  if dy < 0 or (dy == 0 and dx < 0)]
    candidates.sort(key=lambda o: (o[0] ** 2 + o[1] ** 2, o[0], o[1]))
    return tuple(candidates[:size])


@dataclass(frozen=True)
class Step:
    """One batched decode: flat indices (into the sample's concatenated latents) of the
    positions decoded together, and for each of them the flat indices of its C neighbours
    (-1 where the neighbour falls outside the grid)."""

    positions: np.ndarray
    neighbours: np.ndarray


@lru_cache(maxsize=64)
def schedule(height: int, width: int, scales: int, context: int) -> tuple[int, tuple[Step, ...]]:
    """The number of latents per sample and the wavefront steps covering all of them."""
    pattern = context_pattern(context)
    ahead = 1 + max([0] + [dx // -dy for dy, dx in pattern if dy < 0])  # dx + ahead·dy < 0
    shapes = scale_shapes(height, width, scales)
    offsets = np.cumsum([0] + [h * w for h, w in shapes])
    steps = []
    for level in reversed(range(scales)):
        h, w = shapes[level]
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        ys, xs = ys.reshape(-1), xs.reshape(-1)
        front = xs + ahead * ys
        base = offsets[level]
        for t in range(int(front.max()) + 1):
            sel = np.flatnonzero(front == t)
            y, x = ys[sel], xs[sel]
            neighbours = np.full((len(sel), len(pattern)), -1, dtype=np.int64)
            for k, (dy, dx) in enumerate(pattern):
                ny, nx = y + dy, x + dx
                inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
                neighbours[inside, k] = base + ny[inside] * w + nx[inside]
            steps.append(Step(base + y * w + x, neighbours))
    return int(offsets[-1]), tuple(steps)


def split_scales(flat: "np.ndarray | object", height: int, width: int, scales: int) -> list:
    """Concatenated latents (..., M) → one (..., h_l, w_l) grid per scale (numpy or torch)."""
    out, start = [], 0
    for h, w in scale_shapes(height, width, scales):
        out.append(flat[..., start:start + h * w].reshape(*flat.shape[:-1], h, w))
        start += h * w
    return out
