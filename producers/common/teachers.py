"""Teachers: networks trained on the real data, whose outputs become soft labels (SRe2L, RDED,
WMDD, paper 002's ``sl+kd``) or guide synthesis.

A teacher is trained by the same loop and protocol machinery as any student
(:func:`ddformat.evaluation.training.train_student` on the real tensors) and stored as a
safetensors state dict with :func:`save_teacher`; :func:`load_teacher` reads it back (or a
``.pt`` state dict, only through ``torch.load(weights_only=True)``), which is exactly what
``ddformat eval --teacher`` reads, so a producer's teacher can evaluate its own files.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ddformat.evaluation.models import canonical_architecture
from ddformat.evaluation.teachers import load_teacher, save_teacher
from ddformat.evaluation.training import Protocol, train_student

from .data import RealData
from .networks import fresh_network

__all__ = ["load_teacher", "save_teacher", "train_teacher"]


def train_teacher(real: RealData, *, architecture: str = "ConvNet-D3", epochs: int = 50, batch_size: int = 256,
                  lr: float = 0.01, augmentation: Sequence[str] = ("dsa",), seed: int = 0,
                  progress: bool = True) -> nn.Module:
    """A teacher trained on all of ``real`` with hard labels (paper 002's ``hl`` protocol: SGD
    with momentum 0.9, weight decay 5e-4, cosine schedule, DSA by default), on ``real``'s
    device, returned in eval mode. Its initialisation and batches are fixed by ``seed``."""
    protocol = Protocol(architecture=canonical_architecture(architecture), epochs=epochs, batch_size=batch_size,
                        regime="hl", lr=lr, augmentation=tuple(augmentation))
    model = fresh_network(protocol.architecture, real, torch.Generator().manual_seed(seed))
    train_student((real.images, real.labels), model, protocol, seed=seed, num_classes=real.num_classes,
                  progress=progress)
    return model.eval()
