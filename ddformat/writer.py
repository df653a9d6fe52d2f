"""``save``: arrays and metadata in, one ``.dd`` file out.

The writer stores samples grouped by class (stable sort by hard label, or by the arg-max of a
soft label) unless told not to, because grouping makes hard labels nearly free and lets the bit
account charge sample bits to the class they belong to.

A file ``save`` writes is one ``open`` accepts: the metadata goes through the reader's schema
before anything is encoded, and the planned file (header, layout, bit account, limits) through
the reader's ``open`` before anything is written. A refused save raises the reader's
:class:`~ddformat.errors.HeaderError` (or another :class:`~ddformat.errors.FormatError`) naming
the field, or a :class:`ValueError` naming the array and index, and leaves ``path`` untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from . import __version__, codecs
from .codecs.base import group_counts
from .codecs.views import Views
from .container.header import check_metadata
from .container.sections import EncodedSection, Layout
from .container.writing import Plan, plan, write_atomic
from .errors import FormatError
from .limits import DEFAULT_LIMITS, MAX_NUM_CLASSES
from .reader import DDFile
from .weighting import loss_weights

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


def _first(bad: np.ndarray) -> str:
    return f"at index {int(bad[0])}" + (f" (and {bad.size - 1} more)" if bad.size > 1 else "")


def _check_labels(labels: np.ndarray, n: int, num_classes: int) -> None:
    if labels.ndim not in (1, 2):
        raise ValueError(f"labels must be (N,) class indices or (N, K) probabilities, got shape {labels.shape}")
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} samples")
    if labels.ndim == 1:
        if labels.dtype.kind not in "iu":
            raise ValueError(f"hard labels must be integers, got {labels.dtype}")
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise ValueError(f"label {labels[bad[0]]} {_first(bad)} is outside [0, {num_classes}) "
                             f"(num_classes is {num_classes})")
    else:
        if labels.shape[1] != num_classes:
            raise ValueError(f"soft labels have {labels.shape[1]} columns for {num_classes} classes")
        bad = np.flatnonzero(~np.isfinite(labels).all(axis=1) | (labels < 0).any(axis=1))
        if bad.size:
            raise ValueError(f"soft label row {_first(bad)} has negative or non-finite probabilities")
        bad = np.flatnonzero(~np.isclose(labels.sum(axis=1), 1.0, atol=1e-3))
        if bad.size:
            raise ValueError(f"soft label row {_first(bad)} sums to {labels[bad[0]].sum():.6g}, not 1 "
                             "(pass probabilities, not logits)")


def _check_weights(weights: np.ndarray, classes: np.ndarray, num_classes: int, weighting: dict[str, str]) -> None:
    """Refuse weights a reader would refuse or that could not train anything, with the
    reader's own weighting code (e.g. a class whose weights sum to 0 under ``proportional``)."""
    if weights.shape != classes.shape:
        raise ValueError(f"{weights.shape[0]} weights for {classes.shape[0]} samples")
    if weights.dtype.kind not in "iuf":
        raise ValueError(f"weights must be integers or floats, got {weights.dtype}")
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise ValueError(f"weight {weights[bad[0]]} {_first(bad)} is negative or not finite")
    if weights.size and not weights.any():
        raise ValueError("all weights are 0: no sample would count in training")
    loss_weights(weights, classes, num_classes, weighting["scheme"], weighting["normalization"])


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


def _recipe(recipe: Any) -> Any:
    """The recipe with the defaults a reader assumes written out, so that every file states its
    loss, temperature and weighting; anything but a mapping is left for the schema to name."""
    if recipe is None:
        recipe = {}
    if not isinstance(recipe, Mapping):
        return recipe
    r = dict(recipe)
    r.setdefault("loss", "ce")
    r.setdefault("temperature", 1.0)
    w = r.get("weighting") or {}
    if isinstance(w, Mapping):
        w = dict(w)
        w.setdefault("scheme", "uniform")
        w.setdefault("normalization", "global")
    r["weighting"] = w
    return r


def _num_classes(labels: np.ndarray, class_names: Any, n: int) -> int:
    """K when the caller does not say: the soft labels' width, the number of class names, or
    one more than the largest hard label."""
    if labels.ndim == 2:
        return labels.shape[1]
    if hasattr(class_names, "__len__") and not isinstance(class_names, (str, bytes)):
        return len(class_names)
    if labels.ndim == 1 and labels.size and labels.dtype.kind in "iu" and n:
        return int(labels.max()) + 1
    return 1


def _default_names(num_classes: Any) -> list[str]:
    """``"0"``, ``"1"``, ... for a valid class count (an invalid one is left for the schema)."""
    if isinstance(num_classes, (int, np.integer)) and not isinstance(num_classes, bool) \
            and 1 <= num_classes <= MAX_NUM_CLASSES:
        return [str(c) for c in range(int(num_classes))]
    return []


def _check_opens(planned: Plan) -> None:
    """Open the planned file with the reader (header, layout, bit account, required sections,
    limits) before a byte of it is written."""
    try:
        DDFile(planned).close()
    except FormatError as exc:
        raise type(exc)(f"ddformat.open would refuse this file: {exc.reason}", section=exc.section,
                        field=exc.field, offset=exc.offset) from None


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
    views: Views | None = None,
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
    ``views`` are per-view augmentation records and teacher labels (:class:`~ddformat.codecs.views.Views`,
    in the caller's sample order; ``codec_options["views"]`` go to their codec).
    """
    y = _numpy(labels)
    x = _samples(samples)
    samples_codec = _codec("samples", samples_codec, x, None)
    n, shape, dtype = samples_codec.describe(x)
    if num_classes is None:
        num_classes = _num_classes(y, class_names, n)
    dataset = {
        "name": name,
        "num_classes": num_classes,
        "class_names": _default_names(num_classes) if class_names is None else class_names,
        "num_samples": n,
        "sample_shape": list(shape),
        "sample_dtype": dtype,
    }
    if value_range is None and dtype == "uint8":
        value_range = [0.0, 1.0]
    for key, value in (("value_range", value_range), ("normalization", normalization)):
        if value is not None:  # absent and nil mean the same (spec § 2): a nil would only cost bytes
            dataset[key] = value
    provenance = {
        "producer": producer,
        "producer_version": producer_version,
        "parameters": {} if parameters is None else parameters,
        "source_dataset": source_dataset,
    }
    dataset, provenance, recipe = check_metadata(dataset, provenance, _recipe(recipe))
    num_classes = dataset["num_classes"]
    _check_labels(y, n, num_classes)
    classes = _classes_of(y)
    w = None if weights is None else _numpy(weights).reshape(-1)
    if w is not None:
        _check_weights(w, classes, num_classes, recipe["weighting"])
    elif recipe["weighting"]["scheme"] != "uniform":
        raise ValueError(f"weighting scheme {recipe['weighting']['scheme']!r} needs weights")

    if sort_by_class:
        order = np.argsort(classes, kind="stable")
        x = samples_codec.take(x, order)
        y, classes = y[order], classes[order]
        w = None if w is None else w[order]
        views = None if views is None else views.take(order)
    groups = group_counts(classes, num_classes)

    layout = Layout(n, num_classes, shape, dtype, DEFAULT_LIMITS.max_decoded_bytes)
    options = codec_options or {}
    sections: list[EncodedSection] = list(samples_codec.encode(x, layout, groups, **options.get("samples", {})))
    del x
    sections.append(_codec("labels", labels_codec, y, groups).encode(y, layout, groups, **options.get("labels", {})))
    if w is not None:
        sections.append(_codec("weights", weights_codec, w, groups).encode(
            w, layout, groups, **options.get("weights", {})))
    if zca is not None:
        mean, matrix = _numpy(zca[0]), _numpy(zca[1])
        sections.append(_codec("zca", None, (mean, matrix), groups).encode(mean, matrix, layout))

    if views is not None:
        sections.append(_codec("views", None, views, groups).encode(views, layout, groups, **options.get("views", {})))

    planned = plan(dataset, provenance, recipe, sections)
    _check_opens(planned)
    return write_atomic(path, planned.write_to)


def add_views(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    views: Views,
    *,
    recipe: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    codec_options: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``path``: the file ``source`` with ``views`` (in its stored sample order) added, or
    replacing the views it has. Every other section is copied byte for byte, whatever its codec;
    ``recipe`` keys and provenance ``parameters`` are merged into the source's."""
    with DDFile(source) as f:
        f.verify_content_hash()
        layout = f.layout
        groups = group_counts(f.classes(), f.num_classes)
        sections = [EncodedSection(e.kind, e.codec, e.component, bytes(f.container.section(e.kind).data), e.params,
                                   e.required, e.class_bytes, e.alignment)
                    for e in f.header.sections if e.kind != "views"]
        dataset = dict(f.dataset)
        provenance = {k: v for k, v in f.provenance.items() if k != "content_hash"}
        provenance["parameters"] = {**provenance.get("parameters", {}), **(parameters or {})}
        merged = {**f.recipe, **(recipe or {})}
    dataset, provenance, merged = check_metadata(dataset, provenance, _recipe(merged))
    sections.append(_codec("views", None, views, groups).encode(views, layout, groups, **(codec_options or {})))
    planned = plan(dataset, provenance, merged, sections)
    _check_opens(planned)
    return write_atomic(path, planned.write_to)
