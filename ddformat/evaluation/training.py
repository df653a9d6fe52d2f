"""Train a student on a distilled set the way its recipe says, and measure it on real data.

A :class:`Protocol` holds everything a paper's evaluation fixes (architecture, epochs, optimiser,
schedule, augmentation, label regime, temperature); :func:`protocol_for` fills it from a file's
recipe, with the defaults of paper 002, Table 1 (small-scale column) where the recipe is silent:

| regime | loss | optimiser | lr | augmentation |
|---|---|---|---|---|
| ``hl``: hard labels | cross-entropy | SGD, momentum 0.9, wd 5e-4 | 0.01 | DSA |
| ``sl``: stored soft labels | T²·KL, T = 20 | AdamW, wd 0.01 | 0.001 | DSA |
| ``sl+kd``: teacher relabels each augmented batch | T²·KL | AdamW, wd 0.01 | 0.001 | DSA (+ CutMix) |

Weights enter every loss through :mod:`ddformat.losses` with the file's scheme and normalisation.
The loop is a plain loop over :meth:`DistilledDataset.loader` batches with augmentation applied
to whole batches on the device.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from .augment import build_augmentation, cutmix
from ..torch.dataset import DistilledDataset
from ..torch.losses import soft_kl, weighted_cross_entropy
from .models import build_model, canonical_architecture

REGIMES = ("hl", "sl", "sl+kd")
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


def load_teacher(path: str | os.PathLike[str], architecture: str, in_channels: int, num_classes: int,
                 image_size: tuple[int, int]) -> nn.Module:
    """A teacher network from a state dict in safetensors or in a ``.pt`` file read with
    ``torch.load(weights_only=True)``: nothing in the checkpoint can run code."""
    model = build_model(architecture, in_channels, num_classes, image_size)
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    model.load_state_dict(state)
    return model.eval()


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % 2**63


def train_student(
    dataset: DistilledDataset,
    model: nn.Module,
    protocol: Protocol,
    *,
    seed: int = 0,
    teacher: nn.Module | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    eval_every: int = 0,
    progress: bool = True,
) -> list[tuple[int, float]]:
    """Train ``model`` in place on ``dataset``; return the learning curve ``[(epoch, accuracy)]``
    measured by ``evaluate`` every ``eval_every`` epochs and after the last one."""
    if protocol.regime == "sl" and dataset.label_kind != "soft":
        raise ValueError("regime 'sl' needs soft labels stored in the file; use 'hl' or 'sl+kd'")
    if protocol.regime == "sl+kd" and teacher is None:
        raise ValueError("regime 'sl+kd' needs a teacher")
    torch.manual_seed(seed)
    device = dataset.samples.device
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    augment = build_augmentation(protocol.augmentation)
    mix = "cutmix" in (a.lower() for a in protocol.augmentation)
    normalization = protocol.weighting["normalization"]
    optimizer = _optimizer(model, protocol)
    loader = dataset.loader(protocol.batch_size, shuffle=True, seed=seed)
    total, warmup = protocol.epochs * len(loader), protocol.warmup_epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(protocol, s, total, warmup))
    mixer = torch.Generator().manual_seed(seed)
    curve: list[tuple[int, float]] = []
    step = 0
    for epoch in tqdm(range(1, protocol.epochs + 1), desc="training student", disable=not progress, leave=False):
        model.train()
        for x, y, w in loader:
            if augment is not None:
                x = augment(x, _step_seed(seed, step))
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
