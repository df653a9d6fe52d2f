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


def latents_per_sample(height: int, width: int, scales: int) -> int:
    """M, from the grid sizes alone: what a reader checks against its limits before building
    anything proportional to it."""
    return sum(h * w for h, w in scale_shapes(height, width, scales))


def wavefront_slope(context: int) -> int:
    """The a of the module docstring: the smallest integer with dx + a·dy < 0 for every offset."""
    return 1 + max([0] + [dx // -dy for dy, dx in context_pattern(context) if dy < 0])


def wavefront_steps(height: int, width: int, scales: int, context: int) -> int:
    """How many steps :func:`schedule` has, from the grid sizes alone: per scale, the distinct
    values of x + a·y (a·(h − 1) + w of them when w ≥ a, else all h·w)."""
    a = wavefront_slope(context)
    return sum(a * (h - 1) + w if w >= a else h * w for h, w in scale_shapes(height, width, scales))


@lru_cache(maxsize=16)
def schedule(height: int, width: int, scales: int, context: int) -> tuple[int, tuple[Step, ...]]:
    """The number of latents per sample and the wavefront steps covering all of them.

    O(M·C) time and memory: per scale, positions are sorted by wavefront step once (a stable
    sort of raster order, so positions within a step go by increasing y) and cut into steps;
    each step holds views into the scale's arrays."""
    pattern = context_pattern(context)
    ahead = wavefront_slope(context)
    shapes = scale_shapes(height, width, scales)
    offsets = np.cumsum([0] + [h * w for h, w in shapes])
    steps = []
    for level in reversed(range(scales)):
        h, w = shapes[level]
        raster = np.arange(h * w, dtype=np.int64)
        order = np.argsort(raster % w + ahead * (raster // w), kind="stable")
        y, x = order // w, order % w
        positions = offsets[level] + order
        neighbours = np.empty((h * w, len(pattern)), dtype=np.int64)
        for k, (dy, dx) in enumerate(pattern):  # dy ≤ 0: only the top, left and right edges
            inside = (y >= -dy) & (x >= -dx) & (x < w - dx)
            np.copyto(neighbours[:, k], np.where(inside, positions + (dy * w + dx), -1))
        counts = np.bincount(x + ahead * y)
        bounds = np.cumsum(counts)[:-1]
        steps += [Step(p, n) for p, n, c in zip(np.split(positions, bounds), np.split(neighbours, bounds), counts) if c]
    return int(offsets[-1]), tuple(steps)


def split_scales(flat: "np.ndarray | object", height: int, width: int, scales: int) -> list:
    """Concatenated latents (..., M) → one (..., h_l, w_l) grid per scale (numpy or torch)."""
    out, start = [], 0
    for h, w in scale_shapes(height, width, scales):
        out.append(flat[..., start:start + h * w].reshape(*flat.shape[:-1], h, w))
        start += h * w
    return out
