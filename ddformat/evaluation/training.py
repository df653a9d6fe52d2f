"""Train a student on a distilled set the way its recipe says, and measure it on real data.

A :class:`Protocol` holds everything a paper's evaluation fixes (architecture, epochs, optimiser,
schedule, augmentation, label regime, temperature); :func:`protocol_for` fills it from a file's
recipe, with the defaults of paper 002, Table 1 (small-scale column) where the recipe is silent:

| regime | loss | optimiser | lr | augmentation |
|---|---|---|---|---|
| ``hl``: hard labels | cross-entropy | SGD, momentum 0.9, wd 5e-4 | 0.01 | DSA |
| ``sl``: stored soft labels | T²·KL, T = 20 | AdamW, wd 0.01 | 0.001 | DSA |
| ``sl+kd``: teacher relabels each augmented batch | T²·KL | AdamW, wd 0.01 | 0.001 | DSA (+ CutMix) |

Weights enter every loss through :mod:`ddformat.torch.losses` with the file's scheme and
normalisation. The loop is a plain loop over :class:`~ddformat.torch.DeviceLoader` batches with
augmentation applied to whole batches on the device. It trains on a :class:`DistilledDataset` or
on plain tensors alike (:class:`TrainingSet`), so real-data baselines and teachers go through
exactly the same loop as a distilled set, without being written to a file first.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..container.header import REGIMES
from ..torch.dataset import DeviceLoader, DistilledDataset
from ..torch.losses import soft_kl, weighted_cross_entropy
from ..torch.views import ViewReplay
from .augment import build_augmentation, cutmix
from .models import canonical_architecture

OPTIMIZERS = ("sgd", "adamw", "adam")
SCHEDULES = ("cosine", "step", "constant")


@dataclass(frozen=True)
class Protocol:
    """How students are trained and evaluated."""

    architecture: str = "ConvNet-D3"
    epochs: int = 300
    batch_size: int = 256
    regime: str = "hl"
    temperature: float = 1.0
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    augmentation: tuple[str, ...] = ("dsa",)
    weighting: Mapping[str, str] = field(default_factory=lambda: {"scheme": "uniform", "normalization": "global"})

    def __post_init__(self) -> None:
        for name, value, choices in (("regime", self.regime, REGIMES), ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("schedule", self.schedule, SCHEDULES)):
            if value not in choices:
                raise ValueError(f"{name} {value!r} is not one of {', '.join(choices)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError("epochs, batch size, learning rate and temperature must be positive")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["augmentation"], d["weighting"] = list(self.augmentation), dict(self.weighting)
        return d


_REGIME_DEFAULTS = {
    "hl": dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, temperature=1.0),
    "sl": dict(optimizer="adamw", lr=1e-3, momentum=0.9, weight_decay=0.01, temperature=20.0),
}
_REGIME_DEFAULTS["sl+kd"] = _REGIME_DEFAULTS["sl"]


def protocol_for(recipe: Mapping[str, Any], label_kind: str, **overrides: Any) -> Protocol:
    """The protocol a file's recipe asks for; ``overrides`` (e.g. from the command line) win.

    The regime is the recipe's ``regime`` if it has one, else ``sl`` for a KL loss on soft
    labels and ``hl`` otherwise; its column of paper 002's Table 1 fills what the recipe omits.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    regime = given.get("regime") or recipe.get("regime") or (
        "sl" if recipe.get("loss") == "kl" and label_kind == "soft" else "hl")
    values: dict[str, Any] = {"regime": regime, **_REGIME_DEFAULTS.get(regime, {})}
    if recipe.get("loss") == "kl":
        values["temperature"] = float(recipe.get("temperature", 1.0))
    for key in ("architecture", "epochs", "batch_size"):
        if recipe.get(key) is not None:
            values[key] = recipe[key]
    opt = recipe.get("optimizer") or {}
    for key, source in (("optimizer", "name"), ("lr", "lr"), ("momentum", "momentum"),
                        ("weight_decay", "weight_decay"), ("schedule", "schedule"),
                        ("warmup_epochs", "warmup_epochs")):
        if opt.get(source) is not None:
            values[key] = str(opt[source]).lower() if key in ("optimizer", "schedule") else opt[source]
    if recipe.get("augmentation") is not None:
        values["augmentation"] = tuple(recipe["augmentation"])
    values["weighting"] = dict(recipe.get("weighting") or {"scheme": "uniform", "normalization": "global"})
    values.update(given)
    values["architecture"] = canonical_architecture(values.get("architecture", Protocol.architecture))
    if isinstance(values.get("augmentation"), str):
        values["augmentation"] = tuple(a for a in values["augmentation"].split(",") if a)
    return Protocol(**values)


def _optimizer(model: nn.Module, p: Protocol) -> torch.optim.Optimizer:
    if p.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    cls = torch.optim.AdamW if p.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)


def _lr_factor(p: Protocol, step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    if p.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if p.schedule == "step":  # DC/DSA/MTT evaluation: ÷10 halfway
        return 0.1 if progress >= 0.5 else 1.0
    return 1.0


@dataclass(frozen=True, eq=False)
class TrainingSet:
    """What a student trains on, resident on one device: float32 ``samples`` (N, C, H, W),
    ``labels`` (int64 class indices (N,), or float32 probability rows (N, K)), float32 loss
    ``weights`` (N,) used as given, and the number of classes the student predicts.

    It has the attributes :class:`~ddformat.torch.DeviceLoader` batches from, so a set built
    from tensors is shuffled and batched exactly like a :class:`DistilledDataset`.
    """

    samples: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    num_classes: int
    views: ViewReplay | None = None
    """Stored views to replay (a :class:`DistilledDataset` of a file with a ``views`` section)."""

    def __post_init__(self) -> None:
        x, y, w = self.samples, self.labels, self.weights
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"samples must be float (N, C, H, W), got {x.dtype} of shape {tuple(x.shape)}")
        n = x.shape[0]
        if y.shape[:1] != (n,) or w.shape != (n,):
            raise ValueError(f"{n} samples with labels of shape {tuple(y.shape)} and weights of shape "
                             f"{tuple(w.shape)}; both need one entry per sample")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if y.is_floating_point():
            if y.ndim != 2 or y.shape[1] != self.num_classes:
                raise ValueError(f"soft labels of shape {tuple(y.shape)} for {self.num_classes} classes")
        elif y.ndim != 1 or (n and (int(y.min()) < 0 or int(y.max()) >= self.num_classes)):
            raise ValueError(f"hard labels must be class indices (N,) in [0, {self.num_classes})")
        if not (torch.isfinite(w).all() and (w >= 0).all()):
            raise ValueError("loss weights must be finite and non-negative")
        if len({x.device, y.device, w.device}) != 1:
            raise ValueError(f"samples, labels and weights lie on different devices: {x.device}, {y.device}, "
                             f"{w.device}")

    @classmethod
    def of(cls, data: "TrainingData", num_classes: int | None = None) -> "TrainingSet":
        """A :class:`DistilledDataset` (its tensors as they are), a tuple ``(x, y)`` or
        ``(x, y, w)`` of tensors, or any map-style :class:`~torch.utils.data.Dataset` whose
        items are such tuples (stacked once, so it must fit in memory as a distilled set does).

        Without ``w`` every weight is 1. ``num_classes`` defaults to the dataset's, the width of
        soft labels, or the largest hard label + 1 (pass it when the top class may be absent).
        """
        if isinstance(data, TrainingSet):
            return data
        if isinstance(data, DistilledDataset):
            return cls(data.samples, data.labels, data.weights, num_classes or data.num_classes, data.views)
        if isinstance(data, Dataset):
            items = [data[i] for i in range(len(data))]
            if not items or any(not isinstance(item, (tuple, list)) or len(item) not in (2, 3) for item in items):
                raise ValueError("dataset items must be (x, y) or (x, y, w) tuples, and there must be at least one")
            data = tuple(torch.stack([torch.as_tensor(item[k]) for item in items]) for k in range(len(items[0])))
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            raise TypeError(f"cannot train on {type(data).__name__}: pass a DistilledDataset, a Dataset or "
                            "a tuple (x, y[, w]) of tensors")
        x = torch.as_tensor(data[0])
        x = x.to(torch.float32) if not x.is_floating_point() else x
        y = torch.as_tensor(data[1], device=x.device)
        y = y.to(torch.float32) if y.is_floating_point() else y.to(torch.int64)
        w = (torch.as_tensor(data[2], dtype=torch.float32, device=x.device) if len(data) == 3
             else torch.ones(len(x), dtype=torch.float32, device=x.device))
        if num_classes is None and y.is_floating_point() and y.ndim == 2:
            num_classes = y.shape[1]
        elif num_classes is None:
            num_classes = int(y.max()) + 1 if y.numel() else 1
        return cls(x, y, w, num_classes)

    @property
    def device(self) -> torch.device:
        return self.samples.device

    @property
    def label_kind(self) -> str:
        return "soft" if self.labels.is_floating_point() or self.views is not None else "hard"

    def __len__(self) -> int:
        return self.samples.shape[0]


TrainingData = Union[DistilledDataset, TrainingSet, Dataset, tuple]
"""Anything :func:`train_student` trains on; see :meth:`TrainingSet.of`."""


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % 2**63


def train_student(
    data: TrainingData,
    model: nn.Module,
    protocol: Protocol,
    *,
    seed: int = 0,
    teacher: nn.Module | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    eval_every: int = 0,
    progress: bool = True,
    num_classes: int | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> list[tuple[int, float]]:
    """Train ``model`` in place on ``data`` on the device the data lies on; return the learning
    curve ``[(epoch, accuracy)]`` measured by ``evaluate`` every ``eval_every`` epochs and after
    the last one.

    ``data`` is a :class:`DistilledDataset` or plain tensors (see :meth:`TrainingSet.of`, which
    also explains ``num_classes``); its loss weights enter the loss with the protocol's
    normalisation. Under ``sl+kd`` the ``teacher``'s tempered softmax on each augmented (and
    mixed) batch replaces the labels.

    With ``world_size > 1`` this is one of that many processes training ``model`` (wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`) together: each epoch, this process
    takes the samples of ``rank`` (see :class:`~ddformat.torch.DeviceLoader`: padded by wrapping
    around when N does not divide) in batches of ``ceil(batch_size / world_size)``, so the
    protocol's batch size stays the global one; augmentation draws differ by rank.

    A set with stored views trains, under ``sl`` and ``sl+kd``, on the views the loader replays
    (their records are the augmentation: the protocol's augmentation and CutMix are not applied on
    top) with their stored labels.
    """
    dataset = TrainingSet.of(data, num_classes)
    if protocol.regime == "sl" and dataset.label_kind != "soft":
        raise ValueError("regime 'sl' needs soft labels (stored in the file, or given as probability rows); "
                         "use 'hl' or 'sl+kd'")
    if protocol.regime == "sl+kd" and teacher is None:
        raise ValueError("regime 'sl+kd' needs a teacher")
    torch.manual_seed(seed)
    device = dataset.device
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    replay = dataset.views is not None and protocol.regime != "hl"
    augment = None if replay else build_augmentation(protocol.augmentation)
    mix = not replay and "cutmix" in (a.lower() for a in protocol.augmentation)
    normalization = protocol.weighting["normalization"]
    optimizer = _optimizer(model, protocol)
    loader = DeviceLoader(dataset, math.ceil(protocol.batch_size / world_size), shuffle=True, seed=seed, rank=rank,
                          world_size=world_size, replay=replay)
    total, warmup = protocol.epochs * len(loader), protocol.warmup_epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(protocol, s, total, warmup))
    mixer = torch.Generator().manual_seed(seed * world_size + rank)
    curve: list[tuple[int, float]] = []
    step = 0
    for epoch in tqdm(range(1, protocol.epochs + 1), desc="training student", disable=not progress, leave=False):
        model.train()
        for x, y, w in loader:
            if augment is not None:
                x = augment(x, _step_seed(seed, step * world_size + rank))
            if mix:
                x, y, w = cutmix(x, y, w, num_classes=dataset.num_classes, generator=mixer)
            logits = model(x)
            if protocol.regime == "hl":
                loss = weighted_cross_entropy(logits, y, w, normalization)
            else:
                if protocol.regime == "sl+kd":
                    with torch.no_grad():
                        y = torch.softmax(teacher(x) / protocol.temperature, dim=1)
                loss = soft_kl(logits, y, w, protocol.temperature, normalization)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
        if evaluate is not None and (epoch == protocol.epochs or (eval_every and epoch % eval_every == 0)):
            curve.append((epoch, evaluate(model)))
    return curve


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on inputs already in its input space."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[i:i + batch_size].cpu()).sum().item()
    return correct / max(len(x), 1)
