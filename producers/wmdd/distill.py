"""WMDD (paper 004): squeeze → barycenter → recover → relabel, written as one ``.dd``.

A *unit* is the piece of work one rank does alone, seeded by itself so any split writes the
same file. ``wmdd`` and ``nearest`` work class by class: the teacher's features of the class's
real images, their weighted Wasserstein barycenter with m = IPC points (:mod:`.barycenter`),
then either images recovered to match the points and the class's BN statistics (``wmdd``) or,
as a selection baseline, the real image nearest each point (``nearest``); the barycenter masses
become the samples' weights. ``sre2l`` is SRe2L's recover (cross-entropy + the teacher's
running BN statistics) as the baseline without barycenters; like SRe2L it optimises batches
holding one image of every class, so its units are the image slots 0 … IPC − 1.

Images are stored as uint8 pixels (normalisation not applied, the real data's statistics in
the file); labels are hard, or per-view teacher labels when ``views`` > 0
(:func:`ddformat.evaluation.relabel.relabel`, spec § 3.8). The weights use WMDD's training
scheme, ``explicit`` values normalised per batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

import ddformat
from ddformat.evaluation.relabel import relabel
from producers.common import RealData
from producers.common.ranks import unit_seed
from producers.common.teachers import ClassBNStatistics, embed

from .barycenter import wasserstein_barycenter
from .recover import RecoverConfig, recover

METHODS = {"wmdd": "barycenter points matched with per-class BN statistics (paper 004)",
           "sre2l": "cross-entropy + running BN statistics, no barycenter (SRe2L)",
           "nearest": "the real image nearest each barycenter point, no recover"}


@dataclass(frozen=True)
class WmddConfig:
    """Everything that decides a file besides the teacher and the data."""

    ipc: int = 10
    method: str = "wmdd"
    barycenter_iterations: int = 30
    barycenter_step: float = 0.1
    learn_weights: bool = True
    views: int = 10
    topk: int = 10
    label_bits: int = 4
    temperature: float = 20.0
    label_batch: int = 50
    seed: int = 0
    eval_epochs: int = 300
    recover: RecoverConfig = RecoverConfig()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.ipc < 1 or self.barycenter_iterations < 0 or self.views < 0 or self.topk < 1:
            raise ValueError("ipc and topk must be positive, barycenter iterations and views non-negative")

    @property
    def weighted(self) -> bool:
        return self.method != "sre2l"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class UnitResult:
    """What one unit made: uint8 images with their classes and slots (index within the class),
    barycenter masses (``wmdd``/``nearest``), and what provenance records."""

    unit: int
    labels: np.ndarray
    slots: np.ndarray
    images: torch.Tensor
    weights: np.ndarray | None
    seconds: dict[str, float]
    seconds_per_iteration: float | None = None
    objective: list[float] | None = None


def units(config: WmddConfig, num_classes: int) -> range:
    return range(config.ipc if config.method == "sre2l" else num_classes)


def pixel_bounds(real: RealData) -> tuple[torch.Tensor, torch.Tensor]:
    """Where 0 and 255 land in ``real``'s normalised space, per channel."""
    mean, std = torch.tensor(real.mean), torch.tensor(real.std)
    return -mean / std, (1 - mean) / std


def distill_unit(teacher: nn.Module, stats: ClassBNStatistics, real: RealData, config: WmddConfig,
                 unit: int) -> UnitResult:
    seed = unit_seed(config.seed, sum(config.method.encode()), unit)
    generator = torch.Generator().manual_seed(seed)
    kwargs = dict(bounds=pixel_bounds(real), generator=generator, image_shape=real.sample_shape)
    if config.method == "sre2l":
        labels = torch.arange(real.num_classes, device=real.images.device)
        start = time.perf_counter()
        images, per_iteration = recover(teacher, labels, "sre2l", config.recover, **kwargs)
        return UnitResult(unit, labels.cpu().numpy(), np.full(real.num_classes, unit), real.to_pixels(images).cpu(), None,
                          {"recover": time.perf_counter() - start}, per_iteration)
    start = time.perf_counter()
    members = real.indices(unit)
    with torch.no_grad():
        z = embed(teacher, real.images[members])
    bary = wasserstein_barycenter(z.double().cpu().numpy(), config.ipc, iterations=config.barycenter_iterations,
                                  step=config.barycenter_step, learn_weights=config.learn_weights,
                                  rng=np.random.default_rng(seed))
    found = time.perf_counter()
    labels = torch.full((config.ipc,), unit, device=real.images.device)
    targets = torch.from_numpy(bary.points).to(z)
    per_iteration = None
    if config.method == "wmdd":
        images, per_iteration = recover(teacher, labels, "wmdd", config.recover, targets=targets,
                                        class_stats=stats.to(z.device), **kwargs)
    else:
        images = real.images[members[torch.cdist(targets, z).argmin(1)]]
    seconds = {"barycenter": found - start, "recover": time.perf_counter() - found}
    return UnitResult(unit, labels.cpu().numpy(), np.arange(config.ipc), real.to_pixels(images).cpu(), bary.weights,
                      seconds, per_iteration, bary.objective)


def distill(teacher: nn.Module, stats: ClassBNStatistics, real: RealData, config: WmddConfig,
            mine: Sequence[int] | None = None, *, progress: bool = True) -> list[UnitResult]:
    """The units in ``mine`` (default: all of them), in order; the progress bar shows each
    class's barycenter W₂² at its start and end, and the seconds per recover iteration."""
    todo = units(config, real.num_classes) if mine is None else mine
    results = []
    bar = tqdm(todo, desc=f"{config.method} ({'slots' if config.method == 'sre2l' else 'classes'})", unit="unit",
               disable=not progress)
    for u in bar:
        r = distill_unit(teacher, stats, real, config, u)
        shown = {"W2": f"{r.objective[0]:.4g}→{r.objective[-1]:.4g}"} if r.objective else {}
        if r.seconds_per_iteration is not None:
            shown["s/it"] = f"{r.seconds_per_iteration:.3f}"
        bar.set_postfix(shown)
        results.append(r)
    return results


def recipe(config: WmddConfig) -> dict[str, Any]:
    """Students as SRe2L/WMDD evaluate them, scaled: ConvNet-D3; with views, KL on the replayed
    views at the labels' temperature with AdamW (paper 002 Table 1); hard labels otherwise.
    Weights: ``explicit`` masses normalised per batch (WMDD's training)."""
    weighting = {"scheme": "explicit", "normalization": "batch"} if config.weighted else \
        {"scheme": "uniform", "normalization": "global"}
    if config.views:
        return {"loss": "kl", "regime": "sl", "temperature": config.temperature, "architecture": "ConvNet-D3",
                "epochs": config.eval_epochs, "batch_size": config.label_batch, "augmentation": [],
                "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01, "schedule": "cosine"},
                "weighting": weighting}
    return {"loss": "ce", "architecture": "ConvNet-D3", "epochs": config.eval_epochs, "batch_size": 256,
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
            "augmentation": ["dsa"], "weighting": weighting}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_result(path: str | Path, results: Sequence[UnitResult], real: RealData, config: WmddConfig,
                teacher: nn.Module, teacher_info: dict[str, Any], *, progress: bool = True) -> Path:
    """One ``.dd`` from every unit's result: images in class order, hard labels, the barycenter
    masses as weights; then, with ``config.views``, the teacher's per-view labels. Provenance
    records the teacher (path, SHA-256, how it was trained), the configuration, the time of
    each stage and, per class, the barycenter objective at its start and end."""
    labels = np.concatenate([r.labels for r in results])
    slots = np.concatenate([r.slots for r in results])
    order = np.lexsort((slots, labels))
    images = torch.cat([r.images for r in results]).numpy()[order]
    weights = np.concatenate([r.weights for r in results])[order].astype(np.float32) if config.weighted else None
    seconds: dict[str, float] = {}
    for r in results:
        for stage, s in r.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + s
    per_iteration = [r.seconds_per_iteration for r in results if r.seconds_per_iteration is not None]
    parameters: dict[str, Any] = {
        **config.to_dict(), "teacher": teacher_info, "seconds": seconds,
        "seconds_per_iteration": float(np.mean(per_iteration)) if per_iteration else None,
        "method_meaning": METHODS[config.method]}
    if config.method != "sre2l":
        by_class = sorted(results, key=lambda r: r.unit)
        parameters["barycenter_w2"] = {"start": [r.objective[0] for r in by_class],
                                       "end": [r.objective[-1] for r in by_class]}
    options = dict(num_classes=real.num_classes, class_names=real.class_names, weights=weights,
                   name=f"{real.source}-{config.method}-ipc{config.ipc}",
                   normalization={**real.normalization, "applied": False}, recipe=recipe(config),
                   producer="producers.wmdd", source_dataset=real.source)
    if not config.views:
        return ddformat.save(path, images, labels[order], parameters=parameters, **options)
    with tempfile.TemporaryDirectory(prefix="wmdd-") as tmp:
        hard = ddformat.save(Path(tmp) / "hard.dd", images, labels[order], parameters=parameters, **options)
        relabel(hard, path, teacher, rounds=config.views, k=config.topk, bits=config.label_bits,
                batch_size=config.label_batch, temperature=config.temperature, seed=config.seed,
                device=next(teacher.parameters()).device, progress=progress)
    return Path(path)
