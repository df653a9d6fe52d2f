"""Soft labels: one probability vector per sample.

* ``dense`` — every probability as float16 (default) or float32, little-endian, in per-class
  zstd frames (byte-shuffled when that pays). float32 is bit-exact. float16 is not: a positive
  probability below float16's smallest subnormal is stored as that subnormal rather than 0 (so
  KL stays finite), and the decoder renormalises float16 rows in float64 before casting to
  float32, so every decoded row sums to 1 within float32 rounding.
* ``topk`` — each row's ``k`` largest probabilities quantised to integer levels out of
  ``M = 2**bits`` (rounded, with ``sum ≤ M``). The leftover mass ``1 - sum/M`` is spread evenly
  over the classes whose level is 0 (those not kept, or kept but rounded to 0); a row whose
  every class has a positive level is renormalised instead. The encoder keeps at least one
  level of leftover whenever a zero-level class had positive probability, so KL(source ‖
  stored) is always finite. Class indices and, per rank, levels are ANS-coded under stored
  histograms.

Both record ``kl_to_source``, the mean KL(source ‖ decoded) in nats, computed at encode time.
"""

from __future__ import annotations

import numpy as np

from ..errors import DecodeError
from .base import EncodedSection, Layout, Section
from .frames import (
    ans_decode,
    check_class_bytes,
    check_decoded_size,
    check_groups,
    choice_param,
    int_param,
    pack_coded,
    pack_rows,
    unpack_coded,
    unpack_rows,
)

SUM_TOLERANCE = 1e-3
MAX_BITS = 16
MAX_LEVEL_TABLE = 2**20
_ITEMSIZE = {"float16": 2, "float32": 4}
_FLOAT16_TINY = np.float16(2.0**-24)


def check_probabilities(probs: np.ndarray, layout: Layout) -> np.ndarray:
    """Encoder-side validation: ``(N, K)`` finite, non-negative rows summing to 1 (±1e-3)."""
    probs = np.asarray(probs)
    if probs.shape != (layout.num_samples, layout.num_classes):
        raise ValueError(f"soft labels have shape {probs.shape}, expected {(layout.num_samples, layout.num_classes)}")
    if probs.dtype.kind != "f":
        raise ValueError(f"soft labels must be floating point, got {probs.dtype}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("soft labels must be finite and non-negative")
    if probs.size and np.abs(probs.sum(axis=1, dtype=np.float64) - 1).max() > SUM_TOLERANCE:
        raise ValueError(f"soft label rows must sum to 1 within {SUM_TOLERANCE}")
    return probs


def mean_kl(source: np.ndarray, stored: np.ndarray) -> float:
    """Mean over rows of KL(source ‖ stored) in nats, with 0·log 0 = 0."""
    if not source.size:
        return 0.0
    p = source.astype(np.float64)
    q = stored.astype(np.float64)
    pos = p > 0
    with np.errstate(divide="ignore"):
        terms = np.where(pos, p * (np.log(np.where(pos, p, 1.0)) - np.log(np.where(pos, q, 1.0))), 0.0)
    return float(max(terms.sum() / len(p), 0.0))


def _check_distribution(section: Section, probs: np.ndarray) -> None:
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise DecodeError("decoded probabilities are negative or not finite", section=section.kind, field="data")


class DenseSoftLabels:
    """Every probability stored, as float16 or float32."""

    name = "dense"
    label_kind = "soft"

    def accepts(self, labels: np.ndarray, groups: list[int] | None) -> bool:
        return labels.ndim == 2

    def encode(self, probs: np.ndarray, layout: Layout, groups: list[int] | None,
               dtype: str = "float16", level: int = 10) -> EncodedSection:
        probs = check_probabilities(probs, layout)
        if dtype not in _ITEMSIZE:
            raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
        groups = check_groups(groups, layout.num_samples, layout.num_classes)
        stored = probs.astype(dtype)
        if dtype == "float16":
            stored[(probs > 0) & (stored == 0)] = _FLOAT16_TINY
        decoded = _renormalise(stored) if dtype == "float16" else stored
        itemsize = _ITEMSIZE[dtype]
        rows = stored.astype(f"<f{itemsize}").view(np.uint8).reshape(len(stored), -1)
        data, params, class_bytes = pack_rows(rows, groups, level, {"none": (None, 1), "shuffle": (None, itemsize)})
        params = {"dtype": dtype, **params, "kl_to_source": mean_kl(probs, decoded)}
        return EncodedSection(kind="labels", codec=self.name, component="labels", data=data,
                              params=params, class_bytes=class_bytes)

    def decode(self, section: Section, layout: Layout) -> np.ndarray:
        """float32 ``(N, K)``; float16 rows renormalised, float32 rows as stored."""
        dtype = choice_param(section, "dtype", tuple(_ITEMSIZE))
        n, k = layout.num_samples, layout.num_classes
        itemsize = _ITEMSIZE[dtype]
        check_decoded_size(section, 8 * n * k, layout.max_decoded_bytes, "soft labels")
        _, rows = unpack_rows(section, n, k * itemsize, k, layout.max_decoded_bytes,
                              {"none": 1, "shuffle": itemsize})
        probs = rows.view(f"<f{itemsize}").reshape(n, k)
        _check_distribution(section, probs)
        if dtype == "float16":
            if n and (probs.sum(axis=1, dtype=np.float64) <= 0).any():
                raise DecodeError("a float16 row is all zeros", section=section.kind, field="data")
            return _renormalise(probs)
        if n and np.abs(probs.sum(axis=1, dtype=np.float64) - 1).max() > SUM_TOLERANCE:
            raise DecodeError(f"a row does not sum to 1 within {SUM_TOLERANCE}", section=section.kind, field="data")
        return probs.astype(np.float32)


def _renormalise(probs: np.ndarray) -> np.ndarray:
    p = probs.astype(np.float64)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32) if len(p) else p.astype(np.float32)


# --------------------------------------------------------------------------- top-k


def _top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's ``k`` largest probabilities, largest first, ties to the lower index."""
    n, num_classes = probs.shape
    if k < num_classes:
        cand = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    else:
        cand = np.broadcast_to(np.arange(num_classes), (n, num_classes))
    vals = np.take_along_axis(probs, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=1) if n else np.zeros((0, k), dtype=np.int64)
    return np.take_along_axis(cand, order, axis=1).astype(np.int64)


def _quantise(probs: np.ndarray, idx: np.ndarray, scale: int) -> np.ndarray:
    """Levels ``round(p·M)`` trimmed to ``sum ≤ M`` (largest rounding-up errors first), then to
    ``sum ≤ M - 1`` where a zero-level class carries probability, so it keeps some mass."""
    pk = np.take_along_axis(probs, idx, axis=1) * scale
    q = np.floor(pk + 0.5).astype(np.int64)
    excess = q.sum(axis=1) - scale
    if (excess > 0).any():
        order = np.argsort(-(q - pk), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(q.shape[1]), axis=1)
        q -= rank < excess[:, None]
    tail = (q.sum(axis=1) == scale) & ((probs > 0).sum(axis=1) > (q > 0).sum(axis=1))
    rows = np.flatnonzero(tail)
    q[rows, q[rows].argmax(axis=1)] -= 1
    return q


def _expand(idx: np.ndarray, q: np.ndarray, num_classes: int, scale: int) -> np.ndarray:
    """The float32 distributions that levels ``q`` at ``idx`` stand for (see module docstring).
    Computed so each row sums to 1 within float32 rounding of its entries."""
    n = len(q)
    positive = q > 0
    zero_classes = num_classes - positive.sum(axis=1)
    total = q.sum(axis=1)
    leftover = (scale - total) / (scale * np.maximum(zero_classes, 1))
    denom = np.where(zero_classes == 0, total, scale).astype(np.float64)
    out = np.empty((n, num_classes), dtype=np.float32)
    out[:] = np.where(zero_classes > 0, leftover, 0.0).astype(np.float32)[:, None]
    values = np.where(positive, q / np.maximum(denom, 1)[:, None], leftover[:, None]).astype(np.float32)
    np.put_along_axis(out, idx, values, axis=1)
    return out


def quantise_top_k(probs: np.ndarray, k: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of probabilities (n, K), each summing to 1, as the ``topk`` rule stores them: the
    indices of the ``k`` largest, largest first (int64), and their levels out of ``2**bits``."""
    idx = _top_k(probs, k)
    return idx, _quantise(probs, idx, 2**bits)


def expand_top_k(idx: np.ndarray, levels: np.ndarray, num_classes: int, bits: int) -> np.ndarray:
    """The float32 distributions (n, K) that stored top-k indices and levels stand for."""
    return _expand(idx, levels, num_classes, 2**bits)


def _level_tables(k: int, bits: int) -> int:
    """Per-rank level histograms (levels of rank 0 are large, later ranks small) unless the
    tables would be unreasonably many entries; then one shared histogram."""
    return k if k * (2**bits + 1) <= MAX_LEVEL_TABLE else 1


class TopKSoftLabels:
    """Each row's ``k`` largest probabilities, quantised to ``bits`` and ANS-coded."""

    name = "topk"
    label_kind = "soft"

    def accepts(self, labels: np.ndarray, groups: list[int] | None) -> bool:
        return False  # lossy: only when asked for by name, with its k and bits

    def encode(self, probs: np.ndarray, layout: Layout, groups: list[int] | None,
               k: int = 8, bits: int = 8, level: int = 10) -> EncodedSection:
        probs = check_probabilities(probs, layout)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
            raise ValueError(f"bits must be an integer in [1, {MAX_BITS}], got {bits!r}")
        k, bits = min(int(k), layout.num_classes), int(bits)
        scale = 2**bits
        p = probs.astype(np.float64)
        if len(p):
            p /= p.sum(axis=1, keepdims=True)
        idx, q = quantise_top_k(p, k, bits)
        kl = mean_kl(p, expand_top_k(idx, q, layout.num_classes, bits))
        index_counts = np.bincount(idx.reshape(-1), minlength=layout.num_classes)
        if _level_tables(k, bits) == k:
            levels = [q[:, j] for j in range(k)]
        else:
            levels = [q.reshape(-1)]
        tables = [index_counts] + [np.bincount(s, minlength=scale + 1) for s in levels]
        streams = [(idx.reshape(-1), index_counts)] + [(s, t) for s, t in zip(levels, tables[1:])]
        data, params = pack_coded(tables, streams, level)
        params = {"k": k, "bits": bits, "level_tables": len(levels), **params, "kl_to_source": kl}
        return EncodedSection(kind="labels", codec=self.name, component="labels", data=data, params=params)

    def decode(self, section: Section, layout: Layout) -> np.ndarray:
        n, num_classes = layout.num_samples, layout.num_classes
        k = int_param(section, "k", 1, num_classes)
        bits = int_param(section, "bits", 1, MAX_BITS)
        scale = 2**bits
        tables_n = int_param(section, "level_tables", 1, k)
        if tables_n != _level_tables(k, bits):
            raise DecodeError(f"expected {_level_tables(k, bits)} level tables for k={k}, bits={bits}",
                              section=section.kind, field="params.level_tables")
        check_decoded_size(section, 4 * n * num_classes + 24 * n * k, layout.max_decoded_bytes, "soft labels")
        check_class_bytes(section, None)
        tables, words = unpack_coded(section, [num_classes] + [scale + 1] * tables_n)
        per_table = n * k // tables_n
        for t, (counts, want) in enumerate(zip(tables, [n * k] + [per_table] * tables_n)):
            if int(counts.sum()) != want:
                raise DecodeError(f"table {t} counts {int(counts.sum())} symbols, expected {want}",
                                  section=section.kind, field="data.tables")
        streams = ans_decode(section, words, tables, "data.words")
        idx = streams[0].reshape(n, k)
        q = (np.stack(streams[1:], axis=1) if tables_n > 1 else streams[1]).reshape(n, k)
        if n and k > 1 and (np.diff(np.sort(idx, axis=1), axis=1) == 0).any():
            raise DecodeError("a row repeats a class index", section=section.kind, field="data.words")
        if n and (q.sum(axis=1) > scale).any():
            raise DecodeError(f"a row's levels exceed {scale}", section=section.kind, field="data.words")
        return _expand(idx, q, num_classes, scale)


DENSE = DenseSoftLabels()
TOPK = TopKSoftLabels()
