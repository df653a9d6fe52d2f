"""Per-sample loss weights from a file's stored values and its recipe's weighting scheme.

Distillation methods weight their synthetic samples differently: DDOQ weights each sample by
the share of real data it quantises (optionally square-rooted, its Eq. 34), WMDD by the
Wasserstein-barycentre masses, others not at all. A file stores the raw values once and names
the scheme, so every consumer derives the same weights here instead of re-implementing them.

Schemes, for stored values ``v_i`` of a sample of class ``c`` with ``K_c`` samples:

- ``uniform``: ``w_i = 1`` (stored values, if any, are ignored);
- ``proportional``: ``w_i = v_i / sum_c v``;
- ``sqrt``: ``w_i = sqrt(K_c) * sqrt(v_i / sum_c v)``;
- ``explicit``: ``w_i = v_i``.

Normalisation ``global`` rescales the weights once, over the whole dataset, to mean 1 so that a
plain ``mean(w * loss)`` keeps the loss scale of unweighted training. ``none`` and ``batch``
return the scheme's weights unchanged; ``batch`` divides by the batch's weight sum inside the
loss (:mod:`ddformat.torch.losses`). Plain numpy, so that reading a file needs no torch.
"""

from __future__ import annotations

import numpy as np

WEIGHT_SCHEMES = ("uniform", "proportional", "sqrt", "explicit")
WEIGHT_NORMALIZATIONS = ("none", "global", "batch")


def _check_values(values: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    if values.ndim != 1 or values.shape[0] != classes.shape[0]:
        raise ValueError(f"weight values of shape {tuple(values.shape)} do not match {classes.shape[0]} samples")
    v = values.astype(np.float64)
    if not np.isfinite(v).all() or (v < 0).any():
        raise ValueError("weight values must be finite and non-negative")
    if classes.size and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(f"sample classes must lie in [0, {num_classes})")
    return v


def _per_class_share(v: np.ndarray, classes: np.ndarray, num_classes: int, scheme: str) -> np.ndarray:
    """``v_i / sum_c v``, refusing classes whose values sum to zero (their share is undefined)."""
    sums = np.bincount(classes, weights=v, minlength=num_classes)
    present = np.bincount(classes, minlength=num_classes) > 0
    empty = np.flatnonzero(present & (sums == 0)).tolist()
    if empty:
        raise ValueError(f"weighting scheme {scheme!r}: the weight values of class(es) {empty[:10]} sum to 0, "
                         "so their per-class shares are undefined")
    return v / sums[classes]


def loss_weights(
    values: np.ndarray | None,
    classes: np.ndarray,
    num_classes: int,
    scheme: str,
    normalization: str,
) -> np.ndarray:
    """Float32 (N,) loss weights for samples of the given ``classes`` (int (N,)).

    ``values`` are the stored per-sample values (counts or floats); ``None`` only with the
    ``uniform`` scheme. Raises :class:`ValueError` for an unknown scheme or normalisation, values
    that are negative, non-finite or misshapen, or a class whose values sum to 0 under
    ``proportional`` or ``sqrt``.
    """
    if scheme not in WEIGHT_SCHEMES:
        raise ValueError(f"weighting scheme {scheme!r} is not one of {', '.join(WEIGHT_SCHEMES)}")
    if normalization not in WEIGHT_NORMALIZATIONS:
        raise ValueError(f"weight normalization {normalization!r} is not one of {', '.join(WEIGHT_NORMALIZATIONS)}")
    classes = np.asarray(classes).astype(np.int64)
    if scheme == "uniform":
        return np.ones(classes.shape[0], dtype=np.float32)
    if values is None:
        raise ValueError(f"weighting scheme {scheme!r} needs per-sample weight values, and there are none")
    v = _check_values(np.asarray(values), classes, num_classes)
    if scheme == "proportional":
        w = _per_class_share(v, classes, num_classes, scheme)
    elif scheme == "sqrt":
        counts = np.bincount(classes, minlength=num_classes).astype(np.float64)
        w = np.sqrt(counts[classes] * _per_class_share(v, classes, num_classes, scheme))
    else:
        w = v
    if normalization == "global" and w.size:
        mean = w.mean()
        if mean == 0:
            raise ValueError("global weight normalization: every weight is 0, so the mean cannot be made 1")
        w = w / mean
    return w.astype(np.float32)
