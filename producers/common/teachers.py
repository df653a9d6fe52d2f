"""Teachers: networks trained on the real data, whose outputs become soft labels (SRe2L, RDED,
WMDD, paper 002's ``sl+kd``) or guide synthesis.

A teacher is trained by the same loop and protocol machinery as any student
(:func:`ddformat.evaluation.training.train_student` on the real tensors) and stored as a
safetensors state dict with :func:`save_teacher`; :func:`load_teacher` reads it back (or a
``.pt`` state dict, only through ``torch.load(weights_only=True)``), which is exactly what
``ddformat eval --teacher`` reads, so a producer's teacher can evaluate its own files.

SRe2L-family recovery matches a teacher's batch-norm statistics; WMDD matches them per class
(paper 004, Appendix E), so :func:`class_bn_statistics` measures, for every class, the mean and
variance of each BN layer's input over the class's real images, and :func:`cached_teacher`
keeps a trained teacher and those statistics on disk (both safetensors) for the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ddformat.evaluation.models import canonical_architecture
from ddformat.evaluation.teachers import load_teacher, save_teacher
from ddformat.evaluation.training import Protocol, train_student

from .data import RealData
from .networks import fresh_network

__all__ = ["ClassBNStatistics", "TeacherConfig", "batch_norm_layers", "cached_teacher", "class_bn_statistics",
           "embed", "load_teacher", "save_teacher", "teacher_cache_dir", "train_teacher"]


def train_teacher(real: RealData, *, architecture: str = "ConvNet-D3", epochs: int = 50, batch_size: int = 256,
                  lr: float = 0.01, weight_decay: float = 5e-4, augmentation: Sequence[str] = ("dsa",),
                  seed: int = 0, progress: bool = True) -> nn.Module:
    """A teacher trained on all of ``real`` with hard labels (paper 002's ``hl`` protocol: SGD
    with momentum 0.9, cosine schedule, DSA by default), on ``real``'s device, returned in eval
    mode. Its initialisation and batches are fixed by ``seed``."""
    protocol = Protocol(architecture=canonical_architecture(architecture), epochs=epochs, batch_size=batch_size,
                        regime="hl", lr=lr, weight_decay=weight_decay, augmentation=tuple(augmentation))
    model = fresh_network(protocol.architecture, real, torch.Generator().manual_seed(seed))
    train_student((real.images, real.labels), model, protocol, seed=seed, num_classes=real.num_classes,
                  progress=progress)
    return model.eval()


def batch_norm_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """``model``'s 2-D batch-norm layers with their names, in forward order of definition."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``model`` feeds its ``classifier``: the penultimate features WMDD's barycenters live
    in, for the networks of :mod:`ddformat.evaluation.models`, which all end in one.
    Differentiable; wrap in ``torch.no_grad()`` to only measure."""
    captured: list[torch.Tensor] = []
    handle = model.classifier.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0]


@dataclass
class ClassBNStatistics:
    """Per class, the mean and (biased) variance of every BN layer's input, each ``(K, C)``:
    what each class's real images feed the layer, measured with the teacher in eval mode."""

    layers: list[str]
    mean: list[torch.Tensor]
    var: list[torch.Tensor]

    def to(self, device: str | torch.device) -> "ClassBNStatistics":
        return ClassBNStatistics(self.layers, [m.to(device) for m in self.mean], [v.to(device) for v in self.var])

    def save(self, path: str | os.PathLike[str]) -> Path:
        tensors = {f"{kind}.{layer}": t.contiguous() for layer, m, v in zip(self.layers, self.mean, self.var)
                   for kind, t in (("mean", m), ("var", v))}
        save_file(tensors, str(path), metadata={"layers": json.dumps(self.layers)})
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ClassBNStatistics":
        with safe_open(str(path), "pt") as handle:
            layers = json.loads((handle.metadata() or {}).get("layers", "[]"))
        tensors = load_file(str(path))
        missing = [f"{k}.{layer}" for layer in layers for k in ("mean", "var") if f"{k}.{layer}" not in tensors]
        if not layers or missing:
            raise ValueError(f"{path}: not a file of per-class BN statistics (missing {missing[:3] or 'layers'})")
        return cls(layers, [tensors[f"mean.{layer}"] for layer in layers], [tensors[f"var.{layer}"] for layer in layers])


@torch.no_grad()
def class_bn_statistics(model: nn.Module, real: RealData, batch_size: int = 500) -> ClassBNStatistics:
    """Per-class statistics of every BN layer's input over all of ``real`` (Appendix E's
    per-class BatchNorm statistics), accumulated in float64 over images and positions."""
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError("the teacher has no BatchNorm2d layer, so it has no BN statistics to match")
    k = real.num_classes
    sums = [torch.zeros(k, m.num_features, dtype=torch.float64) for _, m in layers]
    squares = [torch.zeros_like(s) for s in sums]
    counts = [torch.zeros(k, dtype=torch.float64) for _ in layers]
    current: dict[str, torch.Tensor] = {}

    def hook(i: int):
        def record(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            a = args[0].double()
            onehot = torch.nn.functional.one_hot(current["labels"], k).double().to(a.device)
            positions = a.shape[2] * a.shape[3]
            sums[i] += (onehot.T @ a.sum((2, 3))).cpu()
            squares[i] += (onehot.T @ (a * a).sum((2, 3))).cpu()
            counts[i] += onehot.sum(0).cpu() * positions
        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, (_, m) in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for batch in torch.arange(len(real.labels)).split(batch_size):
            current["labels"] = real.labels[batch]
            model(real.images[batch])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if (counts[0] == 0).any():
        raise ValueError(f"class(es) {torch.nonzero(counts[0] == 0).flatten().tolist()} have no real image")
    means = [s / n[:, None] for s, n in zip(sums, counts)]
    variances = [(q / n[:, None] - m * m).clamp_min(0) for q, n, m in zip(squares, counts, means)]
    return ClassBNStatistics([name for name, _ in layers], [m.float() for m in means], [v.float() for v in variances])


@dataclass(frozen=True)
class TeacherConfig:
    """How a cached teacher is trained. The defaults are paper 004's squeeze (Table 6a: SGD,
    lr 0.025, momentum 0.9, weight decay 1e-4, batch 32, cosine) with fewer epochs (100 there)
    and RandomResizedCrop + flip, as SRe2L's squeeze augments."""

    architecture: str = "ConvNet-D3-BN"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.025
    weight_decay: float = 1e-4
    augmentation: tuple[str, ...] = ("rrc+flip",)
    seed: int = 0

    def key(self, real: RealData) -> str:
        """The cache entry's name: the data, its classes and a hash of this configuration."""
        digest = hashlib.sha256(json.dumps([self.__dict__[f] for f in sorted(self.__dict__)],
                                           default=list).encode()).hexdigest()[:12]
        return f"{real.source}-{real.num_classes}c-{canonical_architecture(self.architecture)}-{digest}"


def teacher_cache_dir() -> Path:
    """``$DDFORMAT_TEACHER_CACHE``, by default ``~/.cache/ddformat/teachers``."""
    return Path(os.environ.get("DDFORMAT_TEACHER_CACHE") or "~/.cache/ddformat/teachers").expanduser()


def cached_teacher(real: RealData, config: TeacherConfig = TeacherConfig(), *, directory: Path | None = None,
                   progress: bool = True) -> tuple[nn.Module, ClassBNStatistics, Path]:
    """The teacher ``config`` trains on ``real`` with its per-class BN statistics, read from
    ``directory`` (default: an entry of :func:`teacher_cache_dir`) when they are there, else
    trained, measured and written there. Returns the teacher (eval mode, on ``real``'s device),
    the statistics and the path of the teacher's safetensors file."""
    entry = directory or teacher_cache_dir() / config.key(real)
    weights, stats_path = entry / "teacher.safetensors", entry / "class_bn.safetensors"
    c, h, w = real.sample_shape
    if weights.is_file() and stats_path.is_file():
        model = load_teacher(weights, config.architecture, c, real.num_classes, (h, w)).to(real.images.device)
        return model, ClassBNStatistics.load(stats_path), weights
    model = train_teacher(real, architecture=config.architecture, epochs=config.epochs, batch_size=config.batch_size,
                          lr=config.lr, weight_decay=config.weight_decay, augmentation=config.augmentation,
                          seed=config.seed, progress=progress)
    stats = class_bn_statistics(model, real)
    metadata = {"architecture": config.architecture, "source": real.source, "classes": str(real.num_classes),
                "config": json.dumps(config.__dict__, default=list)}
    staging = entry.with_name(f"{entry.name}.partial-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    save_teacher(model, staging / weights.name, metadata)
    stats.save(staging / stats_path.name)
    if entry.exists():  # a half-written entry of an interrupted run, or another process's: replace it
        shutil.rmtree(entry)
    os.replace(staging, entry)
    return model, stats, weights
