"""``save``: arrays and metadata in, one ``.dd`` file out.

The writer stores samples grouped by class (stable sort by hard label, or by the arg-max of a
soft label) unless told not to, because grouping makes hard labels nearly free and lets the bit
account charge sample bits to the class they belong to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import __version__, codecs
from .codecs.base import group_counts
from .container.header import LOSSES
from .container.sections import EncodedSection, Layout
from .container.writing import build, write_atomic
from .limits import DEFAULT_LIMITS
from .weighting import WEIGHT_NORMALIZATIONS, WEIGHT_SCHEMES

ArrayLike = Any
"""A numpy array, or anything with ``.detach().cpu().numpy()`` (a torch tensor), or a sequence."""


def _numpy(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _samples(x: Any) -> Any:
    """Arrays (and tensors) as contiguous numpy; codec-specific objects as they are."""
    if isinstance(x, np.ndarray) or hasattr(x, "detach") or isinstance(x, (list, tuple)):
        return np.ascontiguousarray(_numpy(x))
    return x


def _classes_of(labels: np.ndarray) -> np.ndarray:
    return labels.astype(np.int64) if labels.ndim == 1 else labels.argmax(axis=1).astype(np.int64)


def _check_labels(labels: np.ndarray, n: int, num_classes: int) -> None:
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} samples")
    if labels.ndim == 1:
        if labels.dtype.kind not in "iu":
            raise ValueError("hard labels must be integers")
        if n and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"hard labels must lie in [0, {num_classes})")
    elif labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(f"soft labels have {labels.shape[1]} columns for {num_classes} classes")
        if not np.all(np.isfinite(labels)) or np.any(labels < 0):
            raise ValueError("soft labels must be finite and non-negative")
        if n and not np.allclose(labels.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("soft label rows must sum to 1 (pass probabilities, not logits)")
    else:
        raise ValueError("labels must be (N,) class indices or (N, K) probabilities")


def _codec(kind: str, name: str | None, value: Any, groups: list[int] | None) -> Any:
    """The codec the caller named, or the first registered one that stores ``value`` as is."""
    if name is not None:
        if name not in codecs.names(kind):
            raise ValueError(f"unknown {kind} codec {name!r}; known: {', '.join(codecs.names(kind))}")
        return codecs.lookup(kind, name)
    for codec in codecs.candidates(kind):
        if codec.accepts(value, groups):
            return codec
    raise ValueError(f"no {kind} codec can store a {type(value).__name__}")


def _recipe(recipe: Mapping[str, Any] | None) -> dict[str, Any]:
    r = dict(recipe or {})
    r.setdefault("loss", "ce")
    r.setdefault("temperature", 1.0)
    w = dict(r.get("weighting") or {})
    w.setdefault("scheme", "uniform")
    w.setdefault("normalization", "global")
    r["weighting"] = w
    if r["loss"] not in LOSSES:
        raise ValueError(f"recipe loss must be one of {LOSSES}")
    if w["scheme"] not in WEIGHT_SCHEMES or w["normalization"] not in WEIGHT_NORMALIZATIONS:
        raise ValueError(f"weighting scheme must be one of {WEIGHT_SCHEMES}, normalization one of {WEIGHT_NORMALIZATIONS}")
    return r


def save(
    path: str | os.PathLike[str],
    samples: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    weights: ArrayLike | None = None,
    name: str = "",
    value_range: tuple[float, float] | None = None,
    normalization: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | None = None,
    producer: str = "ddformat",
    producer_version: str = __version__,
    parameters: Mapping[str, Any] | None = None,
    source_dataset: str = "",
    sort_by_class: bool = True,
    samples_codec: str | None = None,
    labels_codec: str | None = None,
    weights_codec: str | None = None,
    codec_options: Mapping[str, Mapping[str, Any]] | None = None,
    zca: tuple[ArrayLike, ArrayLike] | None = None,
) -> Path:
    """Write a distilled set to ``path`` atomically and return the path.

    ``samples`` is (N, C, H, W) (any C×H×W, or other ranks up to 4) of uint8, float16 or float32
    (stored by the lossless ``pixels`` codec), or an object a samples codec takes, e.g.
    :class:`~ddformat.codecs.ruo.RuoSamples` (latents and networks for the ``ruo`` codec; its
    labels must be class-grouped). Codecs are chosen by name, or else the first that can store
    the value as it is;
    ``labels`` is (N,) class indices or (N, K) probabilities; ``weights`` is (N,) per-sample
    values (integer counts or floats) interpreted by ``recipe["weighting"]["scheme"]``.
    ``codec_options`` maps ``"samples" | "labels" | "weights"`` to keyword options of the codec.
    ``zca`` is the ``(mean, matrix)`` of the ZCA whitening the samples were distilled in
    (D and D×D for D features); consumers apply it to real data before comparing.
    """
    y = _numpy(labels)
    x = _samples(samples)
    samples_codec = _codec("samples", samples_codec, x, None)
    n, shape, dtype = samples_codec.describe(x)
    if num_classes is None:
        if y.ndim == 2:
            num_classes = y.shape[1]
        elif class_names is not None:
            num_classes = len(class_names)
        else:
            num_classes = int(y.max()) + 1 if n else 1
    class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    _check_labels(y, n, num_classes)
    w = None if weights is None else _numpy(weights).reshape(-1)
    if w is not None and w.shape[0] != n:
        raise ValueError(f"{w.shape[0]} weights for {n} samples")
    recipe = _recipe(recipe)
    if w is None and recipe["weighting"]["scheme"] != "uniform":
        raise ValueError(f"weighting scheme {recipe['weighting']['scheme']!r} needs weights")

    classes = _classes_of(y)
    if sort_by_class:
        order = np.argsort(classes, kind="stable")
        x = samples_codec.take(x, order)
        y, classes = y[order], classes[order]
        w = None if w is None else w[order]
    groups = group_counts(classes, num_classes)

    layout = Layout(n, num_classes, shape, dtype, DEFAULT_LIMITS.max_decoded_bytes)
    options = codec_options or {}
    sections: list[EncodedSection] = list(samples_codec.encode(x, layout, groups, **options.get("samples", {})))
    sections.append(_codec("labels", labels_codec, y, groups).encode(y, layout, groups, **options.get("labels", {})))
    if w is not None:
        sections.append(_codec("weights", weights_codec, w, groups).encode(
            w, layout, groups, **options.get("weights", {})))
    if zca is not None:
        mean, matrix = _numpy(zca[0]), _numpy(zca[1])
        sections.append(_codec("zca", None, (mean, matrix), groups).encode(mean, matrix, layout))

    dataset = {
        "name": name,
        "num_classes": num_classes,
        "class_names": class_names,
        "num_samples": n,
        "sample_shape": list(layout.sample_shape),
        "sample_dtype": layout.sample_dtype,
        "value_range": list(value_range) if value_range is not None else
        ([0.0, 1.0] if dtype == "uint8" else None),
        "normalization": dict(normalization) if normalization is not None else None,
    }
    provenance = {
        "producer": producer,
        "producer_version": producer_version,
        "parameters": dict(parameters or {}),
        "source_dataset": source_dataset,
    }
    return write_atomic(path, build(dataset, provenance, recipe, sections))
