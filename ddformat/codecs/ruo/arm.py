"""RUO's entropy network (ARM) and its exact integer form.

Training uses :class:`ArmMLP`, a float MLP from C context latents to (μ, log₂σ) of a Laplace.
Coding never uses floats for that: the quantised weights (integers w with step 2^-k) are
evaluated in fixed point (:func:`integer_arm`, :func:`integer_arm_numpy`) and the outputs are
mapped to table entries, so the encoder and every decoder — CPU, GPU, another machine, plain
numpy — derive bit-identical Laplace parameters (float entropy models desynchronise across
machines; Cool-Chic's integer ARM is the model for this).

Fixed point (``spec/format.md`` § 3.6): activations carry FRAC = 8 fractional bits; input
a₀ = z·2^8; each layer computes acc = a·Wᵀ + b·2^8 (exact integers: |a| ≤ 2^24, |w| ≤ 2^15, at
most 128 inputs, so every sum stays below 2^53 and float64 matrix products are exact too), then
a' = clamp(⌊(acc + 2^(k-1)) / 2^k⌋, ±2^24), ReLU between layers. From the two outputs (m, t):
μ index = clamp(⌊m / 2^(8-4)⌋, ±64·16) → μ = index/16; σ index = clamp(⌊4t / 2^8⌋, −16, 27) →
σ = (1 + (i mod 4)/4)·2^⌊i/4⌋, a quarter-octave grid of exactly representable values.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

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


class ArmMLP(nn.Module):
    """The float entropy network trained by producers: context (…, C) → (μ, log₂σ) (…, 2)."""

    def __init__(self, context: int, width: int, depth: int) -> None:
        super().__init__()
        if not 1 <= context <= MAX_INPUTS or not 1 <= width <= MAX_INPUTS or depth < 0:
            raise ValueError(f"ARM needs 1 ≤ context, width ≤ {MAX_INPUTS} and depth ≥ 0")
        sizes = [context] + [width] * depth + [2]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        with torch.no_grad():
            self.layers[-1].weight.mul_(0.01)
            self.layers[-1].bias.copy_(torch.tensor([0.0, 1.0]))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        h = context
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h

    def shapes(self) -> list[tuple[int, int]]:
        return [(layer.out_features, layer.in_features) for layer in self.layers]


def quantize_arm(arm: ArmMLP, step_exp: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Integer (weight, bias) per layer at step 2^-``step_exp``."""
    out = []
    for layer in arm.layers:
        if not (torch.isfinite(layer.weight).all() and torch.isfinite(layer.bias).all()):
            raise ValueError("ARM weights are not all finite")
        w = torch.round(layer.weight.detach().double() * 2**step_exp).long().numpy()
        b = torch.round(layer.bias.detach().double() * 2**step_exp).long().numpy()
        if np.abs(w).max(initial=0) > WEIGHT_LIMIT or np.abs(b).max(initial=0) > WEIGHT_LIMIT:
            raise ValueError(f"ARM weights exceed ±2^15 at step 2^-{step_exp}; use a coarser step")
        out.append((w, b))
    return out


def load_integer_weights(arm: ArmMLP, layers: Sequence[tuple[np.ndarray, np.ndarray]], step_exp: int) -> None:
    """Put the dequantised integer weights back into a float ARM (what the decoder uses)."""
    with torch.no_grad():
        for layer, (w, b) in zip(arm.layers, layers):
            layer.weight.copy_(torch.from_numpy(w.astype(np.float64) / 2**step_exp))
            layer.bias.copy_(torch.from_numpy(b.astype(np.float64) / 2**step_exp))


def _to_indices(m: np.ndarray | torch.Tensor, t: np.ndarray | torch.Tensor, floor_div):
    mu = floor_div(m, 2 ** (FRAC - MU_BITS)).clip(-LATENT_RANGE * 2**MU_BITS, LATENT_RANGE * 2**MU_BITS)
    sigma = floor_div(4 * t, 2**FRAC).clip(SIGMA_INDEX_MIN, SIGMA_INDEX_MAX)
    return mu, sigma


def integer_arm(context: torch.Tensor, layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
                step_exp: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ index, σ index) as int64 for integer contexts (…, C), on any device.

    ``layers`` hold integer-valued float64 tensors, weight (out, in) and bias (out,); or, to
    evaluate S networks at once (the slices of a file in lockstep), weight (S, out, in), bias
    (S, out), contexts (S, …, C) and one ``step_exp`` per network. Every value stays an integer
    below 2^53 (module docstring), so float64 products, sums and the scaling by 2^-k before
    ``floor`` are exact: this is the fixed-point computation, done with batched matrix kernels.
    """
    single = layers[0][0].dim() == 2
    if single:
        context, layers, step_exp = context[None], [(w[None], b[None]) for w, b in layers], [step_exp]
    count, shape = context.shape[0], context.shape[:-1]
    a = context.reshape(count, -1, context.shape[-1]).to(torch.float64) * 2**FRAC
    k = torch.tensor(step_exp, dtype=torch.float64, device=a.device).view(count, 1, 1)
    scale = torch.exp2(-k)
    half = torch.where(k > 0, torch.exp2(k - 1), torch.zeros_like(k))
    for i, (w, b) in enumerate(layers):
        a = torch.baddbmm(b[:, None, :] * 2**FRAC + half, a, w.transpose(1, 2)).mul_(scale).floor_()
        a.clamp_(0 if i < len(layers) - 1 else -ACT_LIMIT, ACT_LIMIT)
    a = a.to(torch.int64).reshape(*shape, 2)
    mu, sigma = _to_indices(a[..., 0], a[..., 1], lambda x, d: torch.div(x, d, rounding_mode="floor"))
    return (mu[0], sigma[0]) if single else (mu, sigma)


def integer_arm_numpy(context: np.ndarray, layers: Sequence[tuple[np.ndarray, np.ndarray]],
                      step_exp: int) -> tuple[np.ndarray, np.ndarray]:
    """The same computation in plain int64 numpy: an independent reference for the torch path."""
    a = context.astype(np.int64) * 2**FRAC
    half = 2 ** (step_exp - 1) if step_exp > 0 else 0
    for i, (w, b) in enumerate(layers):
        acc = a @ w.T.astype(np.int64) + b.astype(np.int64) * 2**FRAC
        a = np.clip(np.floor_divide(acc + half, 2**step_exp), -ACT_LIMIT, ACT_LIMIT)
        if i < len(layers) - 1:
            a = np.maximum(a, 0)
    return _to_indices(a[..., 0], a[..., 1], np.floor_divide)


def laplace_parameters(mu_index: np.ndarray, sigma_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table values handed to the coder: exact float64 μ and σ."""
    return mu_index.astype(np.float64) / 2**MU_BITS, SIGMAS[sigma_index - SIGMA_INDEX_MIN]
