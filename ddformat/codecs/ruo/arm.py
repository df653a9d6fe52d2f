"""RUO's entropy network (ARM) in its exact integer form.

Producers train a float MLP from C context latents to (μ, log₂σ) of a Laplace; coding never
uses floats for that: the quantised weights (integers w with step 2^-k) are evaluated in fixed
point (:func:`integer_arm`, :func:`integer_arm_numpy`) and the outputs are mapped to table
entries, so the encoder and every decoder — any machine, any BLAS — derive bit-identical
Laplace parameters (float entropy models desynchronise across machines; Cool-Chic's integer ARM
is the model for this).

Fixed point (``spec/format.md`` § 3.6): activations carry FRAC = 8 fractional bits; input
a₀ = z·2^8; each layer computes acc = a·Wᵀ + b·2^8 (exact integers: |a| ≤ 2^24, |w| ≤ 2^15, at
most 128 inputs, so every sum stays below 2^53 and float64 matrix products are exact too), then
a' = clamp(⌊(acc + 2^(k-1)) / 2^k⌋, ±2^24), ReLU between layers. From the two outputs (m, t):
μ index = clamp(⌊m / 2^(8-4)⌋, ±64·16) → μ = index/16; σ index = clamp(⌊4t / 2^8⌋, −16, 27) →
σ = (1 + (i mod 4)/4)·2^⌊i/4⌋, a quarter-octave grid of exactly representable values.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

FRAC = 8
MU_BITS = 4
ACT_LIMIT = 2**24
WEIGHT_LIMIT = 2**15
LATENT_RANGE = 64
SIGMA_INDEX_MIN, SIGMA_INDEX_MAX = -16, 27
MAX_INPUTS = 128


def sigma_table() -> np.ndarray:
    """σ for every index in [SIGMA_INDEX_MIN, SIGMA_INDEX_MAX]: (1 + (i mod 4)/4)·2^⌊i/4⌋."""
    i = np.arange(SIGMA_INDEX_MIN, SIGMA_INDEX_MAX + 1)
    return (1 + (i % 4) / 4) * np.ldexp(1.0, i // 4)


SIGMAS = sigma_table()


def _to_indices(m: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table indices from the last layer's int64 outputs (floor division as arithmetic shifts)."""
    mu = np.minimum(np.maximum(m >> (FRAC - MU_BITS), -LATENT_RANGE * 2**MU_BITS), LATENT_RANGE * 2**MU_BITS)
    sigma = np.minimum(np.maximum((4 * t) >> FRAC, SIGMA_INDEX_MIN), SIGMA_INDEX_MAX)
    return mu, sigma


def to_device(xp: Any, device: Any = None) -> Any:
    """numpy array → an array of module ``xp`` (numpy, or torch on ``device``), sharing no
    read-only memory with the input."""
    if xp is np:
        return np.asarray
    return lambda a: xp.as_tensor(np.array(a), device=device)


BLAS_BLOCK = 2**18
"""Multiply-adds per matrix product in :class:`IntegerArm` on numpy: at most what OpenBLAS
computes on the calling thread (it threads products with m·n·k > 2^18). The decoder already runs
one group of streams per core, and nested BLAS threads that busy-wait for each other made
entropy decoding 3× slower on the 2-core machine of ``docs/benchmarks.md``."""


class IntegerArm:
    """S integer networks prepared for many evaluations (the lockstep decoder evaluates them once
    per wavefront step): weights (S, out, in) and biases (S, out) per layer, one step exponent
    per network, evaluated with numpy or torch (``xp``) on ``device``.

    Every value stays an integer below 2^53 (module docstring), so float64 products and sums — in
    any order, with or without FMA, on any device — are exact; so are the weights and offsets
    pre-scaled by 2^-k (a power of two), which makes a layer one matrix product, one add, a
    floor and a clip: this is the fixed-point computation, done with BLAS."""

    def __init__(self, layers: Sequence[tuple[np.ndarray, np.ndarray]], step_exp: Sequence[int],
                 xp: Any = np, device: Any = None) -> None:
        k = np.asarray(step_exp, dtype=np.float64).reshape(-1, 1, 1)
        scale, half = np.exp2(-k), np.where(k > 0, np.exp2(k - 1), 0.0)
        put = to_device(xp, device)
        self.xp = xp
        self.weights = [put(np.swapaxes(np.asarray(w, np.float64), 1, 2) * scale) for w, _ in layers]
        self.offsets = [put((np.asarray(b, np.float64)[:, None, :] * 2**FRAC + half) * scale) for _, b in layers]
        self.floors = [0.0] * (len(layers) - 1) + [-float(ACT_LIMIT)]
        biggest = max(w.shape[1] * w.shape[2] for w in self.weights)
        self.block = max(1, BLAS_BLOCK // biggest) if xp is np else max(1, 2**24 // biggest)

    def __call__(self, context: Any) -> tuple[Any, Any]:
        """(μ index, σ index) as int64 for integer-valued float64 contexts (S, …, C)."""
        xp = self.xp
        count, shape = context.shape[0], tuple(context.shape[:-1])
        a = context.reshape(count, -1, context.shape[-1]) * float(2**FRAC)
        out = a.new_empty((count, a.shape[1], 2)) if xp is not np else np.empty((count, a.shape[1], 2))
        for start in range(0, a.shape[1], self.block):
            x = a[:, start:start + self.block]
            for w, offset, floor in zip(self.weights, self.offsets, self.floors):
                x = xp.matmul(x, w)
                x += offset
                xp.floor(x, out=x)
                xp.clip(x, floor, ACT_LIMIT, out=x)
            out[:, start:start + self.block] = x
        mu = xp.floor(out[..., 0] * 2.0 ** (MU_BITS - FRAC))
        sigma = xp.floor(out[..., 1] * 2.0 ** (2 - FRAC))
        mu = mu.clip(-LATENT_RANGE * 2**MU_BITS, LATENT_RANGE * 2**MU_BITS).reshape(shape)
        sigma = sigma.clip(SIGMA_INDEX_MIN, SIGMA_INDEX_MAX).reshape(shape)
        if xp is np:
            return mu.astype(np.int64), sigma.astype(np.int64)
        return mu.long(), sigma.long()


def integer_arm(context: np.ndarray, layers: Sequence[tuple[np.ndarray, np.ndarray]],
                step_exp: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(μ index, σ index) as int64 for integer contexts (…, C) of one network (weight (out, in),
    bias (out,), one ``step_exp``), or of S networks at once (weights (S, out, in), biases
    (S, out), contexts (S, …, C), one step exponent each): :class:`IntegerArm`, used once."""
    if np.ndim(layers[0][0]) == 2:
        mu, sigma = IntegerArm([(w[None], b[None]) for w, b in layers], [step_exp])(context[None])
        return mu[0], sigma[0]
    return IntegerArm(layers, step_exp)(context)


def integer_arm_numpy(context: np.ndarray, layers: Sequence[tuple[np.ndarray, np.ndarray]],
                      step_exp: int) -> tuple[np.ndarray, np.ndarray]:
    """The same computation in int64 arithmetic: the independent reference the tests hold
    :func:`integer_arm` to (exact, but numpy's integer matrix products do not use BLAS)."""
    a = context.astype(np.int64) * 2**FRAC
    half = 2 ** (step_exp - 1) if step_exp > 0 else 0
    for i, (w, b) in enumerate(layers):
        acc = a @ w.T.astype(np.int64) + b.astype(np.int64) * 2**FRAC
        a = np.clip(np.floor_divide(acc + half, 2**step_exp), -ACT_LIMIT, ACT_LIMIT)
        if i < len(layers) - 1:
            a = np.maximum(a, 0)
    return _to_indices(a[..., 0], a[..., 1])
