"""The recover stage: synthetic images optimised against a frozen teacher.

Two objectives, one loop (paper 004, Eq. 15 and Table 6b–d; SRe2L's recover for the baseline):

- ``wmdd``: the teacher's penultimate features of the class's m images, image j against
  barycenter point b_j, ``‖F − B‖`` (Frobenius, as WMDD's code), plus λ times the distance of
  each BN layer's batch statistics to the class's own (Appendix E's per-class statistics);
- ``sre2l``: cross-entropy of the teacher's outputs against the images' classes, plus λ times
  the distance of the batch statistics to the teacher's running (all-class) statistics.

The BN distance of a layer is ``‖μ − μ*‖₂ + ‖σ² − σ²*‖₂`` over the batch's images and positions,
the first layer's weighted by ``first_bn_multiplier`` (SRe2L). Each step sees the images through
a fresh RandomResizedCrop + flip per image and a random roll by up to ``jitter`` pixels (the
recover stage's multi-crop augmentation); Adam with β = (0.5, 0.9), cosine decay to 0, no weight
decay; pixels are clipped to the valid range after every step. Images start from Gaussian
noise, as SRe2L and WMDD start.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ddformat.evaluation.augment import RandomResizedCropFlip
from producers.common.teachers import ClassBNStatistics, batch_norm_layers, embed

OBJECTIVES = ("wmdd", "sre2l")


@dataclass(frozen=True)
class RecoverConfig:
    """The recover stage's settings; defaults are Table 6b (ImageNette: λ 10, Adam lr 0.25)
    with fewer iterations (2,000 there) and crops and jitter scaled to 32×32 images."""

    iterations: int = 500
    lr: float = 0.25
    bn_weight: float = 10.0
    first_bn_multiplier: float = 10.0
    ce_weight: float = 0.0
    min_crop: float = 0.08
    jitter: int = 4

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.lr <= 0 or not 0 < self.min_crop <= 1 or self.jitter < 0:
            raise ValueError("iterations and lr must be positive, min_crop in (0, 1], jitter non-negative")


class BatchStatistics:
    """Hooks that keep the mean and biased variance of each BN layer's input for the last forward."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = batch_norm_layers(model)
        self.mean: list[torch.Tensor | None] = [None] * len(self.layers)
        self.var: list[torch.Tensor | None] = [None] * len(self.layers)
        self.handles = [m.register_forward_pre_hook(self._record(i)) for i, (_, m) in enumerate(self.layers)]

    def _record(self, i: int):
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            self.var[i], self.mean[i] = torch.var_mean(args[0], dim=(0, 2, 3), correction=0)
        return record

    def distance(self, means: list[torch.Tensor], variances: list[torch.Tensor], first_multiplier: float) -> torch.Tensor:
        terms = [torch.linalg.vector_norm(m - tm) + torch.linalg.vector_norm(v - tv)
                 for m, v, tm, tv in zip(self.mean, self.var, means, variances)]
        return sum(terms[1:], first_multiplier * terms[0])

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _cosine(lr: float, step: int, total: int) -> float:
    return 0.5 * lr * (1 + math.cos(math.pi * step / total))


def recover(teacher: nn.Module, labels: torch.Tensor, objective: str, config: RecoverConfig, *, bounds: tuple[torch.Tensor, torch.Tensor],
            targets: torch.Tensor | None = None, class_stats: ClassBNStatistics | None = None,
            generator: torch.Generator | None = None, image_shape: tuple[int, int, int]) -> tuple[torch.Tensor, float]:
    """Images ``(len(labels), *image_shape)`` recovered from ``teacher`` (frozen, eval mode) for
    ``labels`` under ``objective`` (one of :data:`OBJECTIVES`). ``wmdd`` needs ``targets`` (one barycenter point per image) and ``class_stats``
    and expects the images of one class (their statistics are matched to that class's); ``bounds``
    are the lowest and highest valid values per channel. Returns the images and the mean
    seconds per iteration."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    device = labels.device
    teacher = teacher.eval().requires_grad_(False)
    if objective == "wmdd":
        if targets is None or class_stats is None:
            raise ValueError("the wmdd objective needs barycenter targets and per-class BN statistics")
        if len(labels.unique()) != 1:
            raise ValueError("the wmdd objective recovers one class at a time")
        c = int(labels[0])
        means, variances = [m[c] for m in class_stats.mean], [v[c] for v in class_stats.var]
    else:
        layers = batch_norm_layers(teacher)
        means, variances = [m.running_mean for _, m in layers], [m.running_var for _, m in layers]
    low, high = (b.view(1, -1, 1, 1).to(device) for b in bounds)
    images = torch.randn(len(labels), *image_shape, generator=generator).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=config.lr, betas=(0.5, 0.9), eps=1e-8)
    crop = RandomResizedCropFlip(scale=(config.min_crop, 1.0), flip=0.5)
    stats = BatchStatistics(teacher)
    start = time.perf_counter()
    try:
        for step in range(config.iterations):
            for group in optimizer.param_groups:
                group["lr"] = _cosine(config.lr, step, config.iterations)
            view = crop(images, generator)
            if config.jitter:
                dy, dx = (int(s) for s in torch.randint(config.jitter + 1, (2,), generator=generator))
                view = torch.roll(view, shifts=(dy, dx), dims=(2, 3))
            optimizer.zero_grad()
            features = embed(teacher, view)
            ce = F.cross_entropy(teacher.classifier(features), labels)
            if objective == "wmdd":
                loss = torch.linalg.matrix_norm(features - targets) + config.ce_weight * ce
            else:
                loss = ce
            loss = loss + config.bn_weight * stats.distance(means, variances, config.first_bn_multiplier)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                images.copy_(torch.maximum(torch.minimum(images, high), low))
    finally:
        stats.close()
    return images.detach(), (time.perf_counter() - start) / config.iterations
