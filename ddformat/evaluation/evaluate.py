"""What a distilled set is worth: students trained on it, next to the baselines that give the
number a meaning.

:func:`evaluate_file` trains students with several seeds on a ``.dd`` file under its recipe (see
:mod:`ddformat.training`) and, on request, on a class-balanced random real subset of the same
size (``random``) and on the whole real training split (``full``), all with the same protocol and
tested on the same real test split. Baselines are real images with hard labels and uniform
weights, handed to the training loop as tensors; when the file's regime is ``sl`` (stored soft
labels, which real images lack) they are trained with ``hl``, or with ``sl+kd`` when a teacher is
given.

Real images enter the students in the file's sample space: intensities in [0, 1] (the units of
``value_range``), normalised with the file's mean/std if it has them, and ZCA-whitened with the
stored transform — or, for a file that only records that it was distilled in ZCA space, with one
fitted on the real training split (eps 0.1, as MTT does).
"""

from __future__ import annotations

import os
import statistics
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from . import realdata
from .augment import ZCA
from ..reader import DDFile
from ..torch.dataset import DistilledDataset
from ..torch.values import to_model_units
from ..weighting import loss_weights
from .models import build_model
from .teachers import load_teacher
from .training import Protocol, TrainingData, TrainingSet, accuracy, protocol_for, train_student

BASELINES = ("random", "full")


def real_to_sample_space(x: torch.Tensor, dataset: dict[str, Any], zca: ZCA | None) -> torch.Tensor:
    """uint8 real images → float32 in the space of the file's samples (see module docstring)."""
    norm = dataset["normalization"]
    space = {"value_range": [0.0, 1.0], "normalization": None if norm is None else {**norm, "applied": False}}
    x, _ = to_model_units(x, space, normalize=True)
    if zca is not None:
        x = zca(x.flatten(1)).reshape(x.shape)
    return x


def _zca(f: DDFile, x_train: torch.Tensor) -> ZCA | None:
    stored = f.zca()
    if stored is not None:
        return ZCA(*(torch.from_numpy(a) for a in stored))
    if f.provenance.get("parameters", {}).get("zca"):
        return ZCA.fit(real_to_sample_space(x_train, f.dataset, None).flatten(1), eps=0.1)
    return None


def real_data_for(f: DDFile, test: str) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor],
                                                  ZCA | None]:
    """``test``'s real (train, test) splits as uint8 images and labels, checked against the file's
    sample shape and number of classes, and the ZCA transform its samples live in (or None)."""
    x_train, y_train = realdata.load(test, "train")
    x_test, y_test = realdata.load(test, "test")
    shape, num_classes = tuple(f.dataset["sample_shape"]), f.num_classes
    if tuple(x_test.shape[1:]) != shape or len(realdata.class_names(test)) != num_classes:
        raise ValueError(f"{test} has {len(realdata.class_names(test))} classes of {tuple(x_test.shape[1:])} "
                         f"images; the file has {num_classes} classes of {shape} samples")
    return (x_train, y_train), (x_test, y_test), _zca(f, x_train)


def _class_counts(f: DDFile) -> list[int]:
    return np.bincount(f.classes(), minlength=f.num_classes).tolist()


def _random_subset(x: torch.Tensor, y: torch.Tensor, counts: Sequence[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c, n in enumerate(counts):
        pool = torch.nonzero(y == c).flatten()
        if n > len(pool):
            raise ValueError(f"class {c} has {len(pool)} real training images, fewer than the {n} of the set")
        picks.append(pool[torch.randperm(len(pool), generator=g)[:n]])
    idx = torch.cat(picks)
    return x[idx], y[idx]


def _summary(name: str, accuracies: list[float], curves: list[list[tuple[int, float]]], size: int) -> dict[str, Any]:
    return {
        "train": name,
        "samples": size,
        "accuracies": accuracies,
        "mean": statistics.fmean(accuracies),
        "std": statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0,
        "curve": [[epoch, statistics.fmean(c[i][1] for c in curves)] for i, (epoch, _) in enumerate(curves[0])],
    }


def evaluate_file(
    path: str | os.PathLike[str],
    test: str,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    baselines: Sequence[str] = (),
    device: str | torch.device = "cpu",
    teacher: str | os.PathLike[str] | None = None,
    teacher_architecture: str | None = None,
    eval_every: int = 0,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Train ``len(seeds)`` students per training set and report test accuracy.

    ``test`` names a :mod:`ddformat.evaluation.realdata` source whose images match the file's sample shape;
    ``overrides`` are :class:`~ddformat.evaluation.training.Protocol` fields that replace the recipe's;
    a ``weighting`` override re-derives the loss weights from the stored values with its scheme
    (``{"scheme": "uniform", ...}`` trains as if the file had no weights).
    Returns a JSON-ready dict: the protocol, and per training set the accuracies, their mean and
    standard deviation, and the mean learning curve.
    """
    for b in baselines:
        if b not in BASELINES:
            raise ValueError(f"baseline {b!r} is not one of {', '.join(BASELINES)}")
    with DDFile(path) as f:
        (x_train, y_train), (x_test, y_test), zca = real_data_for(f, test)
        shape, num_classes = tuple(f.dataset["sample_shape"]), f.num_classes
        protocol = protocol_for(f.recipe, "soft" if f.container.has("views") else f.label_kind, **overrides)
        dataset_meta, counts, bpc = f.dataset, _class_counts(f), f.bpc
        weights = None
        if "weighting" in overrides:  # the stored values under another scheme, e.g. uniform to ablate them
            weights = loss_weights(f.stored_weights(), f.classes(), num_classes, protocol.weighting["scheme"],
                                   protocol.weighting["normalization"])
    test_x = real_to_sample_space(x_test, dataset_meta, zca)
    teacher_model = None
    if teacher is not None:
        teacher_model = load_teacher(teacher, teacher_architecture or protocol.architecture, shape[0], num_classes,
                                     shape[1:])

    def students(name: str, data: TrainingData, p: Protocol) -> dict[str, Any]:
        dataset = TrainingSet.of(data, num_classes)
        accuracies, curves = [], []
        for seed in seeds:
            torch.manual_seed(seed)
            model = build_model(p.architecture, shape[0], num_classes, shape[1:])
            curve = train_student(dataset, model, p, seed=seed, teacher=teacher_model, eval_every=eval_every,
                                  evaluate=lambda m: accuracy(m, test_x, y_test), progress=progress)
            accuracies.append(curve[-1][1])
            curves.append(curve)
        return _summary(name, accuracies, curves, len(dataset))

    distilled = DistilledDataset(path, device=device)
    if weights is not None:
        distilled.weights = torch.from_numpy(weights).to(distilled.device)
    results = [students("distilled", distilled, protocol)]
    if baselines:
        real_protocol = protocol
        if protocol.regime == "sl":
            real_protocol = replace(protocol, regime="sl+kd" if teacher_model is not None else "hl")
        real_protocol = replace(real_protocol, weighting={"scheme": "uniform", "normalization": "global"})
        for name in baselines:
            x, y = (x_train, y_train) if name == "full" else _random_subset(x_train, y_train, counts, seeds[0])
            real = (real_to_sample_space(x, dataset_meta, zca).to(device), y.to(device))
            results.append(students(name, real, real_protocol))
    return {"file": str(path), "test": test, "bpc": bpc, "seeds": list(seeds), "protocol": protocol.to_dict(),
            "results": results}


def results_table(report: dict[str, Any]) -> str:
    """The report as a small text table: mean ± std over seeds."""
    lines = [f"{report['file']} on {report['test']}: {report['protocol']['architecture']}, regime "
             f"{report['protocol']['regime']}, {report['protocol']['epochs']} epochs, "
             f"{len(report['seeds'])} seed(s); bpc {report['bpc']:.6g}",
             f"  {'train':<10} {'samples':>8}  {'accuracy %':>16}"]
    for r in report["results"]:
        lines.append(f"  {r['train']:<10} {r['samples']:>8}  {100 * r['mean']:>8.2f} ± {100 * r['std']:<5.2f}")
    return "\n".join(lines)

