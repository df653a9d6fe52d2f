"""RUO's trainable parameterisation: continuous latents, an entropy network and a decoder per slice.

A *slice* is a group of synthetic samples that share one entropy network (ARM) and one decoder
(paper 000, "slice size"; by default one class). Each sample owns ``M`` continuous latents: the
``L`` scales of :func:`ddformat.codecs.ruo.scale_shapes` concatenated, finest first. The file
stores them rounded to integers, so training sees them through a differentiable stand-in for rounding
(:func:`relax`), and the same relaxed latents feed both the decoder (the images a utility loss
judges) and the rate term of Eq. 13, which is the code length of the latents under the Laplace
the ARM predicts from each latent's causal neighbours — the quantity the codec will actually
spend, up to the ARM's fixed-point quantisation of μ and σ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddformat.codecs.ruo import (
    CONFIG_LIMITS,
    DECODER_VERSIONS,
    LATENT_RANGE,
    MAX_CHANNELS,
    SIGMAS,
    decoder_shapes,
    schedule,
    split_scales,
    synthesize_torch,
)

RELAXATIONS = ("noise", "ste", "softround", "mixed")
"""Differentiable rounding: additive uniform noise (Ballé et al.), straight-through rounding,
C3's soft-round of (soft-round + noise) (Agustsson & Theis), or ``mixed``: noise for the rate and
straight-through rounding for the decoder (Minnen & Singh), so the decoder trains on the very
integers the file holds while the rate keeps a useful gradient."""

LOG2_SIGMA_RANGE = (math.log2(SIGMAS[0]), math.log2(SIGMAS[-1]))
"""σ the codec can represent (its table spans 2^-4 … 112); training clamps to the same range."""


@dataclass(frozen=True)
class Architecture:
    """What every slice of one file shares (paper 000, Table A2: entropy and decoder network)."""

    sample_shape: tuple[int, int, int]
    scales: int = 6
    context: int = 8
    arm_width: int = 16
    arm_depth: int = 2
    decoder_version: str = "v4-40"

    def __post_init__(self) -> None:
        if len(self.sample_shape) != 3 or min(self.sample_shape) < 1:
            raise ValueError(f"sample_shape must be (C, H, W), got {self.sample_shape}")
        lo, hi = CONFIG_LIMITS["scales"]
        if not lo <= self.scales <= hi:
            raise ValueError(f"the ruo codec needs scales within [{lo}, {hi}], got {self.scales}")
        if self.sample_shape[0] > MAX_CHANNELS:
            raise ValueError(f"the ruo codec stores at most {MAX_CHANNELS} channels, got {self.sample_shape[0]}")
        if self.decoder_version not in DECODER_VERSIONS:
            raise ValueError(f"decoder version {self.decoder_version!r} is not one of {', '.join(DECODER_VERSIONS)}")


class ArmMLP(nn.Module):
    """The float entropy network: context (…, C) → (μ, log₂σ) (…, 2). The file stores it
    quantised, evaluated in the codec's fixed point (``quantize.quantize_arm``)."""

    def __init__(self, context: int, width: int, depth: int) -> None:
        super().__init__()
        for name, value in (("context", context), ("arm_width", width), ("arm_depth", depth)):
            lo, hi = CONFIG_LIMITS[name]
            if not lo <= value <= hi:
                raise ValueError(f"the ruo codec needs {name} within [{lo}, {hi}], got {value}")
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


BILINEAR_TAPS = (-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125, -0.0234375)
"""C3's initial 8-tap upsampling filter (separable; training makes the 8×8 kernel free)."""


class Decoder(nn.Module):
    """Upsampler + synthesis of one slice, as trainable tensors named as the codec stores them
    (:func:`ddformat.codecs.ruo.decoder_shapes`); the forward pass is the codec's own torch
    synthesis, so training sees exactly the function the file decodes with."""

    def __init__(self, scales: int, out_channels: int, version: str) -> None:
        super().__init__()
        shapes = decoder_shapes(scales, out_channels, version)
        self.upsampler = nn.Module()
        self.upsampler.kernel = nn.Parameter(torch.outer(*[torch.tensor(BILINEAR_TAPS)] * 2)[None, None])
        self.synthesis = nn.Module()
        pointwise = [v for k, v in shapes.items() if k.startswith("synthesis.pointwise.") and k.endswith(".weight")]
        self.synthesis.pointwise = nn.ModuleList(nn.Conv2d(i, o, 1) for o, i, _, _ in pointwise)
        self.synthesis.residual = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3) for _ in range(2))
        with torch.no_grad():
            for conv in self.synthesis.residual:
                conv.weight.mul_(0.1)
                conv.bias.zero_()

    def forward(self, latents: Sequence[torch.Tensor], size: tuple[int, int], rows: int | None = None) -> torch.Tensor:
        """Per-scale latents (N, h_l, w_l) → images (N, C, H, W)."""
        return synthesize_torch(dict(self.named_parameters()), latents, size, rows)


def neighbour_table(height: int, width: int, scales: int, context: int) -> torch.Tensor:
    """(M, C) flat indices of every latent's causal neighbours, in the codec's order; a neighbour
    outside the grid points at index M, which :class:`RuoModel` fills with a zero."""
    m, steps = schedule(height, width, scales, context)
    table = np.full((m, context), -1, dtype=np.int64)
    for step in steps:
        table[step.positions] = step.neighbours
    table[table < 0] = m
    return torch.from_numpy(table)


def soft_round(y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Agustsson & Theis' soft rounding: identity as temperature → ∞, rounding as it → 0."""
    centre = torch.floor(y) + 0.5
    return centre + 0.5 * torch.tanh((y - centre) / temperature) / math.tanh(0.5 / temperature)


def relax(z: torch.Tensor, mode: str, temperature: float = 0.3) -> torch.Tensor:
    """Latents as training sees them: clamped to the codec's range, then rounded in a
    differentiable way (``mode`` in :data:`RELAXATIONS`), or exactly with ``mode="round"``."""
    z = z.clamp(-LATENT_RANGE, LATENT_RANGE)
    if mode == "round":
        return torch.round(z)
    if mode == "ste":
        return z + (torch.round(z) - z).detach()
    if mode == "noise":
        return z + (torch.rand_like(z) - 0.5)
    if mode == "softround":
        return soft_round(soft_round(z, temperature) + (torch.rand_like(z) - 0.5), temperature)
    raise ValueError(f"relaxation {mode!r} is not one of {', '.join(RELAXATIONS)} (or 'round')")


def laplace_bits(z: torch.Tensor, mu: torch.Tensor, log2_sigma: torch.Tensor) -> torch.Tensor:
    """-log₂ of the Laplace(μ, σ) mass on [z - ½, z + ½] (Eqs. 11–12), elementwise, in bits.

    Computed in log space on the side of μ that ``z`` lies on, so far tails neither underflow
    nor lose their gradient: with d = |z - μ|, the mass is ½·e^(-(d-½)/σ)·(1 - e^(-1/σ)) when
    the interval misses μ, and 1 - ½(e^((d-½)/σ) + e^(-(d+½)/σ)) when it contains μ.
    """
    sigma = torch.exp2(log2_sigma.clamp(*LOG2_SIGMA_RANGE))
    d = (z - mu).abs()
    low, high = d - 0.5, d + 0.5
    tail = math.log(0.5) - low.clamp_min(0) / sigma + torch.log(-torch.expm1(-1 / sigma))
    centre = torch.log1p(-0.5 * (torch.exp(low.clamp_max(0) / sigma) + torch.exp(-high / sigma)))
    return torch.where(low >= 0, tail, centre) / -math.log(2)


class RuoModel(nn.Module):
    """Latents, ARMs and decoders of several slices; ``slice_labels[s]`` are the classes of slice
    ``s``'s samples (one class by default, several when a slice spans classes), and samples are
    numbered slice after slice."""

    def __init__(self, architecture: Architecture, slice_labels: Sequence[Sequence[int]],
                 init_std: float = 0.01) -> None:
        super().__init__()
        if not slice_labels or min(len(labels) for labels in slice_labels) < 1:
            raise ValueError("need at least one slice, and at least one sample in every slice")
        self.architecture = architecture
        self.slice_labels = [[int(c) for c in labels] for labels in slice_labels]
        a = architecture
        channels, height, width = a.sample_shape
        self.register_buffer("neighbours", neighbour_table(height, width, a.scales, a.context), persistent=False)
        m = self.neighbours.shape[0]
        self.latents = nn.ParameterList(nn.Parameter(torch.randn(n, m) * init_std) for n in self.slice_sizes)
        self.arms = nn.ModuleList(ArmMLP(a.context, a.arm_width, a.arm_depth) for _ in self.slice_sizes)
        self.decoders = nn.ModuleList(Decoder(a.scales, channels, a.decoder_version) for _ in self.slice_sizes)

    @property
    def slice_sizes(self) -> list[int]:
        return [len(labels) for labels in self.slice_labels]

    @property
    def num_slices(self) -> int:
        return len(self.slice_sizes)

    @property
    def latents_per_sample(self) -> int:
        return int(self.neighbours.shape[0])

    def labels(self) -> torch.Tensor:
        """(N,) class of every sample, in sample order."""
        return torch.tensor([c for labels in self.slice_labels for c in labels], dtype=torch.int64)

    def decode(self, s: int, z: torch.Tensor) -> torch.Tensor:
        """Images (n, C, H, W) that slice ``s``'s decoder makes of latents ``z`` (n, M)."""
        _, height, width = self.architecture.sample_shape
        return self.decoders[s](split_scales(z, height, width, self.architecture.scales), (height, width))

    def latent_bits(self, s: int, z: torch.Tensor, arm: ArmMLP | None = None) -> torch.Tensor:
        """(n,) code length in bits of each sample's latents ``z`` under slice ``s``'s ARM (or ``arm``)."""
        context = F.pad(z, (0, 1))[:, self.neighbours]
        out = (self.arms[s] if arm is None else arm)(context)
        mu = out[..., 0].clamp(-LATENT_RANGE, LATENT_RANGE)
        return laplace_bits(z, mu, out[..., 1]).sum(dim=1)

    def slice_forward(self, s: int, mode: str = "ste", temperature: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (n, C, H, W) and latent bits (n,) of slice ``s`` from one draw of relaxed latents."""
        if mode == "mixed":
            z = self.latents[s]
            return self.decode(s, relax(z, "ste")), self.latent_bits(s, relax(z, "noise"))
        z = relax(self.latents[s], mode, temperature)
        return self.decode(s, z), self.latent_bits(s, z)

    def forward(self, mode: str = "ste", temperature: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) and latent bits (N,) of all samples, slice after slice."""
        images, bits = zip(*(self.slice_forward(s, mode, temperature) for s in range(self.num_slices)))
        return torch.cat(images), torch.cat(bits)

    def integer_latents(self, s: int) -> np.ndarray:
        """Slice ``s``'s latents as the file stores them: int64 (n, M), rounded and clamped."""
        return relax(self.latents[s].detach(), "round").to(torch.int64).cpu().numpy()
