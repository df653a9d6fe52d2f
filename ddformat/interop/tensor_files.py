"""Distilled sets saved as loose ``.pt`` tensors (MTT, DATM, DD-Ranking) to ``.dd`` and back.

Trajectory-matching code (MTT, DATM and their descendants) and the DD-Ranking benchmark keep a
distilled set as a directory of ``torch.save``'d tensors::

    images.pt | images_best.pt   float32 (N, C, H, W), usually already normalised (or uint8)
    labels.pt | labels_best.pt   int64 (N,) class indices, or float (N, K) probabilities / logits
    lr.pt     | lr_best.pt       the learned student learning rate (0-d tensor or a float)
    weights.pt| weights_best.pt  optional (N,) per-sample weights: integer cluster counts (DDOQ)
                                 or floats; not written by those tools, read so weighted sets fit

Every file is read with ``torch.load(..., weights_only=True)``, which builds tensors and plain
containers but never runs code from the file, and anything other than a tensor is refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch

from .. import __version__
from ..reader import open as open_dd
from ..torch.values import to_model_units
from ..writer import save

SoftLabelKind = Literal["auto", "probs", "logits"]
SOFT_LABEL_KINDS = ("auto", "probs", "logits")
PROBABILITY_TOLERANCE = 1e-3
"""Rows of a non-negative float label tensor summing to 1 within this are probabilities."""


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure means the file is not a safely loadable tensor file
        raise ValueError(f"{path}: cannot be read with torch.load(weights_only=True): {exc}") from None


def load_tensor(path: str | os.PathLike[str]) -> torch.Tensor:
    """The tensor saved in ``path``; a ValueError naming the file if it holds anything else."""
    path = Path(path)
    obj = _load(path)
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a tensor")
    return obj.detach()


def load_learning_rate(path: str | os.PathLike[str]) -> float:
    """A learned learning rate: a one-element tensor, or the Python float MTT saves (``syn_lr.item()``)."""
    path = Path(path)
    obj = _load(path)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1 and obj.is_floating_point():
        lr = float(obj.detach().reshape(()))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        lr = float(obj)
    else:
        raise ValueError(f"{path}: holds {type(obj).__name__}, not a one-element float tensor or number")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"{path}: learning rate {lr} is not a positive finite number")
    return lr


def label_array(labels: torch.Tensor, kind: SoftLabelKind, where: str) -> tuple[np.ndarray, str]:
    """Labels as the writer takes them, and what they were: ``"hard"``, ``"probs"`` or ``"logits"``.

    (N,) integers are class indices. (N, K) values are probabilities if ``kind`` says so, or with
    ``"auto"`` if they are non-negative with rows summing to 1; otherwise logits, turned into
    probabilities by a softmax at temperature 1 (as DATM's soft cross-entropy does).
    """
    if kind not in SOFT_LABEL_KINDS:
        raise ValueError(f"soft label kind must be one of {SOFT_LABEL_KINDS}, got {kind!r}")
    if labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{where}: labels of dtype {labels.dtype} are neither class indices nor scores")
    if labels.ndim == 1:
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            raise ValueError(f"{where}: one-dimensional labels must be class indices, found fractions")
        return labels.to(torch.int64).numpy(), "hard"
    if labels.ndim != 2:
        raise ValueError(f"{where}: labels have shape {tuple(labels.shape)}, expected (N,) or (N, K)")
    values = labels.to(torch.float64)
    if not torch.isfinite(values).all():
        raise ValueError(f"{where}: labels contain NaN or infinity")
    are_probs = bool((values >= 0).all()) and bool(
        torch.allclose(values.sum(dim=1), torch.ones(len(values), dtype=torch.float64), atol=PROBABILITY_TOLERANCE))
    if kind == "auto":
        kind = "probs" if are_probs else "logits"
    if kind == "probs":
        if not are_probs:
            raise ValueError(f"{where}: rows are not probabilities (negative, or not summing to 1); "
                             "if they are logits, say soft_labels='logits'")
        return labels.to(torch.float32).numpy(), "probs"
    return torch.softmax(values, dim=1).to(torch.float32).numpy(), "logits"


def merged_save_options(
    save_kwargs: Mapping[str, Any],
    *,
    producer: str,
    parameters: Mapping[str, Any],
    recipe: Mapping[str, Any] | None = None,
    soft_labels: bool = False,
) -> dict[str, Any]:
    """``save`` keywords: what an importer found, overridden by whatever the caller passed.

    Imports are lossless unless the caller asks otherwise, so soft labels are stored as float32
    (the ``dense`` codec's default, float16, would round them).
    """
    options = dict(save_kwargs)
    if soft_labels and options.get("labels_codec") in (None, "dense"):
        options["codec_options"] = {"labels": {"dtype": "float32"}, **(options.get("codec_options") or {})}
    options.setdefault("producer", producer)
    options.setdefault("producer_version", __version__)
    options["parameters"] = {**parameters, **(save_kwargs.get("parameters") or {})}
    merged = dict(save_kwargs.get("recipe") or {})
    for key, found in (recipe or {}).items():
        given = merged.get(key)
        if given is None:
            merged[key] = found
        elif isinstance(found, dict) and isinstance(given, dict):
            merged[key] = {**found, **given}
    if merged:
        options["recipe"] = merged
    return options


def _normalization(mean: float | Sequence[float] | None, std: float | Sequence[float] | None,
                   channels: int, applied: bool) -> dict[str, Any] | None:
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is None:
        return None
    stats: dict[str, Any] = {}
    for key, value in (("mean", mean), ("std", std)):
        try:
            stats[key] = [float(v) for v in np.broadcast_to(np.asarray(value, dtype=np.float64), (channels,))]
        except ValueError:
            raise ValueError(f"{key} has {np.size(value)} values for {channels} channels") from None
    stats["applied"] = applied
    return stats


IMAGE_CHANNELS = (1, 3)
"""Grayscale or RGB: what these tools save, and what ``preview`` and ``export`` can show."""


def _image_shape_error(shape: tuple[int, ...], where: str) -> ValueError | None:
    """Why ``shape`` is not (N, C, H, W) images, with the likely fix; ``None`` if it is."""
    if len(shape) == 4 and shape[1] in IMAGE_CHANNELS:
        return None
    if len(shape) == 4 and shape[3] in IMAGE_CHANNELS:
        fix = "it looks channels-last (N, H, W, C): save images.permute(0, 3, 1, 2)"
    elif len(shape) == 4:
        fix = f"dimension 1 (channels) is {shape[1]}"
    elif len(shape) == 3:
        fix = "a channel dimension is missing: save images.unsqueeze(1) for grayscale"
    else:
        fix = f"{len(shape)} dimensions: reshape flattened images to (N, C, H, W)"
    return ValueError(f"{where}: images have shape {shape}, expected (N, C, H, W) with C = 1 or 3; {fix}")


def _pixels(images: torch.Tensor, sample_dtype: str, where: str) -> np.ndarray:
    error = _image_shape_error(tuple(images.shape), where)
    if error is not None:
        raise error
    if images.dtype == torch.uint8:
        return images.numpy()
    if not images.is_floating_point():
        raise ValueError(f"{where}: images of dtype {images.dtype}; expected a float or uint8 tensor")
    if sample_dtype not in ("float32", "float16"):
        raise ValueError(f"sample_dtype must be 'float32' or 'float16', got {sample_dtype!r}")
    x = images.to(getattr(torch, sample_dtype))
    if not torch.isfinite(x).all():
        raise ValueError(f"{where}: images contain NaN or infinity (as {sample_dtype})")
    return x.numpy()


def _check_value_range(pixels: np.ndarray, value_range: Sequence[float] | None, where: str) -> None:
    """Unnormalised float images must lie in the range that says what they mean.

    ``export`` and ``preview`` map ``value_range`` (default [0, 1]) to 0..255 and clip the rest,
    so values outside it, normalised images recorded without their mean and std above all,
    would be clipped silently.
    """
    lo, hi = (0.0, 1.0) if value_range is None else value_range
    if pixels.dtype == np.uint8 or not pixels.size:
        return
    low, high = float(pixels.min()), float(pixels.max())
    if low >= lo and high <= hi:
        return
    raise ValueError(
        f"{where}: float images span [{low:.6g}, {high:.6g}], outside [{lo:g}, {hi:g}] "
        + ("(value_range)" if value_range is not None else "and no normalisation was given")
        + "; give the mean and std of the normalisation they went through (mean=/std=, --mean/--std), "
          "or the range of values they live in (value_range=, --value-range=LO,HI)")


def _check_labels(labels: np.ndarray, n: int, num_classes: int | None, where: str, images: str) -> None:
    """Labels match the images and the declared classes, or an error names the offending index."""
    if len(labels) != n:
        raise ValueError(f"{where}: {len(labels)} labels for the {n} images in {images}")
    if labels.ndim == 2:
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(f"{where}: soft labels have {labels.shape[1]} columns for {num_classes} classes")
        return
    outside = labels < 0 if num_classes is None else (labels < 0) | (labels >= num_classes)
    bad = np.flatnonzero(outside)
    if bad.size:
        classes = "class indices are never negative" if num_classes is None else \
            f"{num_classes} classes are 0 .. {num_classes - 1}"
        raise ValueError(f"{where}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside the classes "
                         f"({classes}; {bad.size} label{'s are' if bad.size > 1 else ' is'} outside)")


def import_tensor_files(
    directory: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    name: str | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    value_range: tuple[float, float] | None = None,
    soft_labels: SoftLabelKind = "auto",
    suffix: str | None = None,
    sample_dtype: str = "float32",
    zca: bool = False,
    **save_kwargs: Any,
) -> Path:
    """Write the tensor-file set in ``directory`` (MTT / DATM / DD-Ranking layout) to ``out``.

    Reads ``images{suffix}.pt``, ``labels{suffix}.pt`` and ``lr{suffix}.pt``, where ``suffix``
    defaults to ``"_best"`` when ``images_best.pt`` exists and to ``""`` otherwise (pass e.g.
    ``"_5000"`` for ``images_5000.pt``).

    - Images must be (N, C, H, W) with 1 or 3 channels; other shapes (flattened, no channel
      dimension, channels-last) are refused with the fix.
    - Float images are stored as ``sample_dtype`` (float32 or float16) values as they are; with
      ``mean`` and ``std`` (per channel, or one value for all) the header records
      ``normalization = {mean, std, applied: True}``, since these tools save normalised images.
      Without them the values must lie in ``value_range`` (default [0, 1]; recorded when given),
      so that nothing is clipped when the set is exported or shown: normalised images without
      their statistics are refused rather than stored as if they were [0, 1] pixels.
      uint8 images are stored as pixels, and ``mean``/``std`` are recorded with ``applied: False``.
    - Labels: see :func:`label_array`; ``soft_labels`` is ``"auto"``, ``"probs"`` or ``"logits"``,
      and what was found is recorded as ``provenance.parameters.labels``; soft labels are
      stored as float32 unless ``codec_options`` say otherwise. Without a labels file the
      images must be class-ordered with the same count per class (DD-Ranking allows this) and
      ``num_classes`` must be given. A class index outside ``num_classes`` (or the class names)
      is refused with its index.
    - A learned learning rate becomes ``recipe.optimizer = {"name": "sgd", "lr": lr}``.
    - ``weights.pt`` becomes the weights section: integer counts weighted by DDOQ's ``sqrt``
      scheme (Eq. 34), floats ``explicit``; a ``recipe`` keyword overrides the scheme.
    - ``zca=True`` records ``provenance.parameters.zca = True``: the images live in the ZCA-whitened
      space of the normalised real data (MTT's ``--zca``), so real data must be whitened alike.

    Other keywords go to :func:`ddformat.save` and win over what was found. Returns ``out``.
    """
    directory = Path(directory)
    if suffix is None:
        suffix = "_best" if (directory / "images_best.pt").is_file() else ""
    images_path, labels_path, lr_path, weights_path = (
        directory / f"{stem}{suffix}.pt" for stem in ("images", "labels", "lr", "weights"))
    if not images_path.is_file():
        raise ValueError(f"{directory}: no {images_path.name} (expected images.pt or images_best.pt)")
    if (mean is not None or std is not None) and save_kwargs.get("normalization") is not None:
        raise ValueError("give mean/std or normalization, not both")
    if value_range is not None and not (len(value_range) == 2 and value_range[0] < value_range[1]):
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range!r}")

    images = load_tensor(images_path)
    pixels = _pixels(images, sample_dtype, str(images_path))
    parameters: dict[str, Any] = {"imported_from": "tensor_files", "images_file": images_path.name}
    if labels_path.is_file():
        labels, parameters["labels"] = label_array(load_tensor(labels_path), soft_labels, str(labels_path))
        parameters["labels_file"] = labels_path.name
        _check_labels(labels, len(pixels), num_classes if num_classes is not None else
                      None if class_names is None else len(class_names), str(labels_path), images_path.name)
    else:
        labels = _class_ordered_labels(len(pixels), num_classes, directory / labels_path.name)
        parameters["labels"] = "class_order"
    recipe: dict[str, Any] = {}
    if lr_path.is_file():
        recipe["optimizer"] = {"name": "sgd", "lr": load_learning_rate(lr_path)}
        parameters["lr_file"] = lr_path.name
    if zca:
        parameters["zca"] = True
    if weights_path.is_file():
        weights = load_tensor(weights_path).reshape(-1).numpy()
        save_kwargs.setdefault("weights", weights)
        recipe["weighting"] = {"scheme": "sqrt" if weights.dtype.kind in "iu" else "explicit",
                               "normalization": "global"}
        parameters["weights_file"] = weights_path.name
    normalization = _normalization(mean, std, pixels.shape[1], applied=pixels.dtype != np.uint8)
    if normalization is not None:
        save_kwargs["normalization"] = normalization
    if not (save_kwargs.get("normalization") or {}).get("applied"):
        _check_value_range(pixels, value_range, str(images_path))

    options = merged_save_options(save_kwargs, producer="ddformat.import_tensor_files",
                                  parameters=parameters, recipe=recipe, soft_labels=labels.ndim == 2)
    return save(out, pixels, labels, num_classes=num_classes, class_names=class_names, value_range=value_range,
                name=directory.name if name is None else name, **options)


def _class_ordered_labels(n: int, num_classes: int | None, missing: Path) -> np.ndarray:
    if num_classes is None:
        raise ValueError(f"{missing} is missing; give num_classes to label class-ordered images")
    if num_classes < 1 or n % num_classes:
        raise ValueError(f"{missing} is missing and {n} images are not the same number for each of "
                         f"{num_classes} classes, so labels cannot be inferred from class order")
    return np.repeat(np.arange(num_classes, dtype=np.int64), n // num_classes)


TensorLayout = Literal["mtt", "ddranking"]


def export_tensor_files(dd_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                        layout: TensorLayout = "mtt") -> Path:
    """Write a ``.dd`` file as ``images.pt``, ``labels.pt`` and (if the recipe has one) ``lr.pt``.

    ``layout="mtt"``: ``images.pt`` holds the samples in stored order and dtype (normalised
    floats stay normalised; uint8 stays uint8), as MTT / DATM save them.

    ``layout="ddranking"``: what DD-Ranking's ``compute_metrics(image_tensor=..., soft_labels=...,
    syn_lr=...)`` takes: images in class order with the same number per class (it infers hard
    labels from that order and would mislabel an unequal set, so one is refused here), as float32
    model inputs: uint8 mapped from ``value_range`` and normalised when the file has a
    normalisation, as its real data are (:func:`~ddformat.torch.values.to_model_units`).

    Both: ``labels.pt`` int64 class indices or float32 (N, K) probabilities, ``lr.pt`` a 0-d
    float64 tensor of ``recipe.optimizer.lr``, ``weights.pt`` the stored weights when the file
    has them (neither tool reads them; :func:`import_tensor_files` does); the rest of the recipe
    has no place in these layouts. Everything loads with ``torch.load(..., weights_only=True)``.
    Refuses to overwrite existing files.
    """
    if layout not in ("mtt", "ddranking"):
        raise ValueError(f"layout must be 'mtt' or 'ddranking', got {layout!r}")
    out_dir = Path(out_dir)
    with open_dd(dd_path) as dd:
        images = torch.from_numpy(dd.samples())
        labels = dd.labels()
        weights = dd.stored_weights()
        order = np.arange(len(labels))
        if layout == "ddranking":
            classes = dd.classes()
            counts = np.bincount(classes, minlength=dd.num_classes)
            if counts.min() != counts.max():
                raise ValueError(f"{dd_path}: DD-Ranking infers labels from class order and needs the same number "
                                 f"of images per class; this set has {counts.min()} to {counts.max()}")
            order = np.argsort(classes, kind="stable")
            images = to_model_units(images[torch.from_numpy(order)], dd.dataset)[0]
        tensors = {"images.pt": images, "labels.pt": torch.from_numpy(np.ascontiguousarray(labels[order]))}
        lr = (dd.recipe.get("optimizer") or {}).get("lr")
        if isinstance(lr, (int, float)) and not isinstance(lr, bool):
            tensors["lr.pt"] = torch.tensor(float(lr), dtype=torch.float64)
        if weights is not None:
            tensors["weights.pt"] = torch.from_numpy(np.ascontiguousarray(weights[order]))
    out_dir.mkdir(parents=True, exist_ok=True)
    for filename in tensors:
        if (out_dir / filename).exists():
            raise FileExistsError(f"{out_dir / filename} already exists")
    for filename, tensor in tensors.items():
        torch.save(tensor, out_dir / filename)
    return out_dir
