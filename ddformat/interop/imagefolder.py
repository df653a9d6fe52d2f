"""Distilled sets saved as image trees (SRe2L, WMDD, RDED, D4M) to ``.dd`` and back.

Decoupled distillation methods write an ImageFolder tree, one folder per class::

    SRe2L / WMDD   new000/class000_id000.jpg     (+ WMDD's sample_weights.txt at the root)
    RDED           00000/class00000_id00000.jpg
    D4M-like       0/xxx.png, 1/xxx.png, ...

As in torchvision's ``ImageFolder``, the sorted folder names give the class indices; images in a
class are taken in filename order. Optional files at the root carry what folders cannot:
``sample_weights.txt`` (WMDD: one row of weights per class, in image order), ``class_names.txt``
(one name per line) and ``labels.pt`` (float (N, K) soft labels in class-then-filename order).
Folders and files whose names start with a dot are ignored.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..reader import open as open_dd
from ..torch.values import to_pixels
from ..writer import save
from .tensor_files import SoftLabelKind, label_array, load_tensor, merged_save_options

Style = Literal["sre2l", "rded"]
STYLES: dict[str, tuple[str, int]] = {"sre2l": ("new", 3), "rded": ("", 5)}
"""Folder-name prefix and minimum digit count of each naming style."""

WEIGHTS_FILE = "sample_weights.txt"
CLASS_NAMES_FILE = "class_names.txt"
SOFT_LABELS_FILE = "labels.pt"
WMDD_WEIGHTING = {"scheme": "explicit", "normalization": "batch"}
"""WMDD multiplies each sample's loss by its weight and divides by the batch's weight sum."""


@functools.cache
def _image_suffixes() -> frozenset[str]:
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def _visible(entries: Sequence[Path]) -> list[Path]:
    return sorted((p for p in entries if not p.name.startswith(".")), key=lambda p: p.name)


def _class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    dirs = _visible([p for p in root.iterdir() if p.is_dir()])
    if not dirs:
        raise ValueError(f"{root}: no class folders")
    return dirs


def _image_files(class_dir: Path) -> list[Path]:
    return _visible([p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in _image_suffixes()])


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W) uint8: 1 channel for grayscale images, 3 for everything else (alpha dropped)."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I") or im.mode == "F":
                raise ValueError(f"{path}: {im.mode} images have more than 8 bits per channel")
            if im.mode in ("1", "L", "LA", "La"):
                return np.asarray(im.convert("L"))[None]
            return np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def _read_images(files: list[Path]) -> np.ndarray:
    if not files:
        raise ValueError("the class folders hold no images")
    first = _read_image(files[0])
    out = np.empty((len(files), *first.shape), dtype=np.uint8)
    for i, path in enumerate(tqdm(files, desc="reading images", unit="img", disable=None)):
        image = first if i == 0 else _read_image(path)
        if image.shape != first.shape:
            raise ValueError(f"{path}: image is {_describe(image.shape)}, but {files[0]} is "
                             f"{_describe(first.shape)}; all images of a set must share a size")
        out[i] = image
    return out


def _describe(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{w}x{h} with {c} channel{'s' if c > 1 else ''}"


def read_sample_weights(path: Path, class_dirs: list[Path], counts: list[int]) -> np.ndarray:
    """WMDD's weights file as float32 in image order: row ``c`` holds class ``c``'s weights.

    Values may be separated by whitespace or commas; blank lines past the last class are ignored.
    """
    rows = path.read_text().splitlines()
    while len(rows) > len(counts) and not rows[-1].strip():
        rows.pop()
    if len(rows) != len(counts):
        raise ValueError(f"{path}: {len(rows)} rows for {len(counts)} class folders (one row per class)")
    values: list[float] = []
    for line_no, (row, class_dir, count) in enumerate(zip(rows, class_dirs, counts), start=1):
        tokens = row.replace(",", " ").split()
        if len(tokens) != count:
            raise ValueError(f"{path}, line {line_no}: {len(tokens)} weights for the {count} images "
                             f"in {class_dir.name}/")
        for token in tokens:
            try:
                value = float(token)
            except ValueError:
                raise ValueError(f"{path}, line {line_no}: {token!r} is not a number") from None
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{path}, line {line_no}: weight {token} is not finite and non-negative")
            values.append(value)
    return np.asarray(values, dtype=np.float32)


def _read_class_names(path: Path, num_classes: int) -> list[str]:
    names = path.read_text(encoding="utf-8").split("\n")
    if names and names[-1] == "":
        names.pop()
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} names for {num_classes} class folders")
    return names


def import_imagefolder(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    weights_file: str | os.PathLike[str] | None = None,
    soft_labels: str | os.PathLike[str] | None = None,
    soft_label_kind: SoftLabelKind = "auto",
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    **save_kwargs: Any,
) -> Path:
    """Write the image tree at ``root`` (SRe2L / WMDD / RDED / D4M layout) to ``out``.

    Images (files of any format PIL reads, all of one size; other files are skipped) are stored
    as uint8 pixels, grayscale as one channel and colour as three; labels are the class folders.
    Optional inputs, found at the root when not given:

    - ``weights_file`` (``sample_weights.txt``, WMDD): stored as float32 weights with
      ``recipe.weighting = {"scheme": "explicit", "normalization": "batch"}``, as WMDD trains.
    - ``soft_labels`` (``labels.pt``): an (N, K) tensor in class-then-filename order, read as
      ``soft_label_kind`` says (see :func:`~ddformat.interop.tensor_files.label_array`), stored as
      float32 unless ``codec_options`` say otherwise. A sample's class is then the arg-max of
      its soft label, as everywhere in ``.dd``.
    - ``class_names`` (``class_names.txt``); otherwise the folder names.

    Other keywords go to :func:`ddformat.save` and win over what was found. Returns ``out``.
    """
    root = Path(root)
    class_dirs = _class_dirs(root)
    per_class = [_image_files(d) for d in class_dirs]
    counts = [len(files) for files in per_class]
    pixels = _read_images([f for files in per_class for f in files])
    labels: np.ndarray = np.repeat(np.arange(len(class_dirs), dtype=np.int64), counts)
    parameters: dict[str, Any] = {"imported_from": "imagefolder", "labels": "hard"}
    recipe: dict[str, Any] = {}

    if weights_file is None and (root / WEIGHTS_FILE).is_file():
        weights_file = root / WEIGHTS_FILE
    weights = None
    if weights_file is not None:
        weights = read_sample_weights(Path(weights_file), class_dirs, counts)
        recipe["weighting"] = dict(WMDD_WEIGHTING)
        parameters["weights_file"] = Path(weights_file).name

    if soft_labels is None and (root / SOFT_LABELS_FILE).is_file():
        soft_labels = root / SOFT_LABELS_FILE
    if soft_labels is not None:
        labels = _soft_labels(Path(soft_labels), soft_label_kind, len(pixels), len(class_dirs), parameters)

    if class_names is None:
        names_path = root / CLASS_NAMES_FILE
        class_names = _read_class_names(names_path, len(class_dirs)) if names_path.is_file() else \
            [d.name for d in class_dirs]

    options = merged_save_options(save_kwargs, producer="ddformat.import_imagefolder",
                                  parameters=parameters, recipe=recipe, soft_labels=labels.ndim == 2)
    return save(out, pixels, labels, num_classes=len(class_dirs), class_names=class_names, weights=weights,
                name=root.name if name is None else name, **options)


def _soft_labels(path: Path, kind: SoftLabelKind, n: int, num_classes: int,
                 parameters: dict[str, Any]) -> np.ndarray:
    tensor = load_tensor(path)
    if tensor.ndim != 2 or tensor.shape != (n, num_classes):
        raise ValueError(f"{path}: soft labels of shape {tuple(tensor.shape)}; expected ({n}, {num_classes}) "
                         "for the images and class folders found")
    labels, parameters["labels"] = label_array(tensor, kind, str(path))
    parameters["soft_labels_file"] = path.name
    return labels


def _pil_format(format: str) -> str:
    pil = Image.registered_extensions().get("." + format.lower())
    if pil is None or pil not in Image.SAVE:
        raise ValueError(f"PIL cannot write {format!r} images")
    return pil


def _weights_text(rows: list[np.ndarray]) -> str:
    # '%.9g' is enough digits to read every float32 back exactly.
    def number(v: Any) -> str:
        return str(int(v)) if isinstance(v, (int, np.integer)) else "%.9g" % float(v)

    return "".join(" ".join(number(v) for v in row.tolist()) + "\n" for row in rows)


def export_imagefolder(
    dd_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    style: Style = "sre2l",
    format: str = "png",  # noqa: A002
) -> Path:
    """Write a ``.dd`` file as an image tree that SRe2L / WMDD / RDED training code reads.

    ``style="sre2l"`` names folders ``new000`` and files ``class000_id000.png``; ``"rded"``
    ``00000`` and ``class00000_id00000.png`` (more digits when there are more classes or
    images). uint8 samples are written exactly with a lossless ``format`` such as PNG. Float
    samples are lossy: de-normalised when the header says normalisation was applied, mapped from
    ``value_range`` (default [0, 1]) to 0..255 with clipping, and rounded. Samples must be
    (C, H, W) with 1 or 3 channels.

    At the root: ``class_names.txt``; ``sample_weights.txt`` with the stored weights (one row per
    class, in file order) when the file has weights; ``labels.pt`` (float32 (N, K), loadable with
    ``weights_only=True``) when its labels are soft. :func:`import_imagefolder` reads all three
    back. ``out_dir`` must be empty or not exist. Returns ``out_dir``.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {tuple(STYLES)}, got {style!r}")
    pil_format = _pil_format(format)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    with open_dd(dd_path) as dd:
        dataset = dd.dataset
        shape = tuple(dataset["sample_shape"])
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise ValueError(f"{dd_path}: samples of shape {shape} are not 1- or 3-channel (C, H, W) images")
        if any("\n" in n or "\r" in n for n in dd.class_names):
            raise ValueError(f"{dd_path}: a class name contains a line break and cannot go in {CLASS_NAMES_FILE}")
        images = to_pixels(torch.from_numpy(dd.samples()), dataset).numpy()
        classes = dd.classes()
        labels = dd.labels()
        weights = dd.stored_weights()
        names = dd.class_names

    order = np.argsort(classes, kind="stable")
    counts = np.bincount(classes, minlength=len(names))
    prefix, min_digits = STYLES[style]
    class_digits = max(min_digits, len(str(len(names) - 1)))
    id_digits = max(min_digits, len(str(max(int(counts.max()) - 1, 0))))
    folders = [out_dir / f"{prefix}{c:0{class_digits}d}" for c in range(len(names))]
    for folder in folders:
        folder.mkdir(parents=True)
    next_id = [0] * len(names)
    for i in tqdm(order, desc="writing images", unit="img", disable=None):
        c = int(classes[i])
        image = images[i][0] if images.shape[1] == 1 else images[i].transpose(1, 2, 0)
        filename = f"class{c:0{class_digits}d}_id{next_id[c]:0{id_digits}d}.{format.lower()}"
        Image.fromarray(np.ascontiguousarray(image)).save(folders[c] / filename, format=pil_format)
        next_id[c] += 1

    (out_dir / CLASS_NAMES_FILE).write_text("".join(n + "\n" for n in names), encoding="utf-8")
    if weights is not None:
        stored = weights[order]
        rows = np.split(stored, np.cumsum(counts)[:-1])
        (out_dir / WEIGHTS_FILE).write_text(_weights_text(rows))
    if labels.ndim == 2:
        torch.save(torch.from_numpy(np.ascontiguousarray(labels[order])), out_dir / SOFT_LABELS_FILE)
    return out_dir
