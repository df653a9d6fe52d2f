"""Freshly initialised networks and the seeds that fix them, for losses and trainers that draw
their randomness from one seeded generator (so a run is reproducible from its seed alone)."""

from __future__ import annotations

import torch
from torch import nn

from ddformat.evaluation.models import build_model

from .data import RealData

DEFAULT_DSA = "color_crop_cutout_flip_scale_rotate"
"""The DSA strategy of DC/DSA, DM and MTT's code."""


def draw_seed(generator: torch.Generator) -> int:
    """A seed for one random operation (an initialisation, one augmentation), drawn from ``generator``."""
    return int(torch.randint(2**31 - 1, (1,), generator=generator))


def fresh_network(architecture: str, real: RealData, generator: torch.Generator) -> nn.Module:
    """A freshly initialised network for ``real``'s samples and classes, on their device, its
    initialisation fixed by ``generator`` (the global torch RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw_seed(generator))
        model = build_model(architecture, real.sample_shape[0], real.num_classes, real.sample_shape[1:])
    return model.to(real.images.device)
