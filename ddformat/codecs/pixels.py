"""``pixels``: samples stored losslessly as their own bytes, one zstd frame per class.

Distilled images are few but each is paid for in full, so the codec tries a handful of cheap
reversible filters and keeps whichever compresses best:

* ``uint8``: ``none``; ``sub`` (difference to the left neighbour along the last axis, mod 256);
  ``up`` (difference to the neighbour above, along the second-to-last axis); ``grad`` (both,
  i.e. ``x - left - up + up_left``); ``med`` (the median edge detector of LOCO-I/JPEG-LS:
  predict ``min(a, b)`` if ``c >= max(a, b)``, ``max(a, b)`` if ``c <= min(a, b)``, else
  ``a + b - c``, with ``a`` left, ``b`` above, ``c`` above-left and 0 outside the image).
  Residuals are taken mod 256. Smooth images turn into small residuals that zstd codes in
  fewer bits; ``sub``/``up``/``grad`` are undone by cumulative sums, ``med`` along
  anti-diagonals (``H + W - 1`` vectorised steps).
* ``float16``/``float32`` (little-endian): ``none`` or ``shuffle`` (each frame split into byte
  planes, so sign/exponent bytes form long, compressible runs).

Filters act within one sample, so the frame of each class decodes without the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DecodeError
from ..limits import SAMPLE_DTYPES
from .base import AuxReader, EncodedSection, Layout, Section
from .frames import PIECE_BYTES, check_groups, choice_param, pack_rows, unpack_rows

_UINT8_FILTERS = ("none", "sub", "up", "grad", "med")


def _diff(x: np.ndarray, axis: int) -> np.ndarray:
    out = x.copy()
    hi = [slice(None)] * x.ndim
    lo = [slice(None)] * x.ndim
    hi[axis], lo[axis] = slice(1, None), slice(None, -1)
    out[tuple(hi)] = x[tuple(hi)] - x[tuple(lo)]
    return out


def _med(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    hi, lo = np.maximum(a, b), np.minimum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def _med_forward(x: np.ndarray) -> np.ndarray:
    p = np.zeros((*x.shape[:-2], x.shape[-2] + 1, x.shape[-1] + 1), dtype=np.int16)
    p[..., 1:, 1:] = x
    pred = _med(p[..., 1:, :-1], p[..., :-1, 1:], p[..., :-1, :-1])
    return (p[..., 1:, 1:] - pred).astype(np.uint8)


def _med_inverse(r: np.ndarray) -> np.ndarray:
    """Undo ``med`` one anti-diagonal at a time, with all samples and channels on the last
    (contiguous) axis so that each step is a few wide vector operations."""
    h, w = r.shape[-2:]
    planes = np.moveaxis(r.reshape(-1, h, w), 0, -1)
    p = np.zeros((h + 1, w + 1, planes.shape[-1]), dtype=np.int16)
    for d in range(h + w - 1):
        i = np.arange(max(0, d - w + 1), min(h, d + 1))
        j = d - i
        pred = _med(p[i + 1, j], p[i, j + 1], p[i, j])
        p[i + 1, j + 1] = (planes[i, j] + pred) & 0xFF
    return np.ascontiguousarray(np.moveaxis(p[1:, 1:], -1, 0)).astype(np.uint8).reshape(r.shape)


def _forward(name: str, x: np.ndarray) -> np.ndarray:
    if name == "med":
        return _med_forward(x)
    if name in ("sub", "grad"):
        x = _diff(x, -1)
    if name in ("up", "grad"):
        x = _diff(x, -2)
    return x


def _inverse(name: str, x: np.ndarray) -> np.ndarray:
    if name == "med":
        return _med_inverse(x)
    if name in ("up", "grad"):
        x = np.cumsum(x, axis=-2, dtype=np.uint8)
    if name in ("sub", "grad"):
        x = np.cumsum(x, axis=-1, dtype=np.uint8)
    return x


def _uint8_filters(shape: tuple[int, ...]) -> tuple[str, ...]:
    return _UINT8_FILTERS if len(shape) >= 2 else _UINT8_FILTERS[:2]


def _all_finite(x: np.ndarray) -> bool:
    flat = x.reshape(-1)
    step = PIECE_BYTES // x.itemsize
    return all(np.isfinite(flat[a:a + step]).all() for a in range(0, flat.size, step))


@dataclass(frozen=True)
class Reordered:
    """Samples ``base[order]``, not gathered: the encoder reads each frame's rows itself, so
    saving samples that are not already grouped by class needs no sorted copy of them."""

    base: np.ndarray
    order: np.ndarray


class PixelsCodec:
    """Lossless samples codec; see the module docstring for the filters."""

    name = "pixels"
    aux_kinds: tuple[str, ...] = ()

    def accepts(self, samples: Any, groups: list[int] | None) -> bool:
        return isinstance(samples, np.ndarray)

    def describe(self, samples: np.ndarray) -> tuple[int, tuple[int, ...], str]:
        if samples.ndim < 2 or samples.ndim > 5:
            raise ValueError("samples must be (N, ...) with 1 to 4 sample dimensions")
        if samples.dtype.name not in SAMPLE_DTYPES:
            raise ValueError(f"sample dtype {samples.dtype} is not one of {sorted(SAMPLE_DTYPES)}")
        return samples.shape[0], tuple(int(s) for s in samples.shape[1:]), samples.dtype.name

    def take(self, samples: np.ndarray | Reordered, order: np.ndarray) -> np.ndarray | Reordered:
        """The samples in ``order``: as they are when ``order`` keeps them in place, else a
        :class:`Reordered` (no copy)."""
        order = np.asarray(order, dtype=np.int64)
        if np.array_equal(order, np.arange(len(order))):
            return samples
        if isinstance(samples, Reordered):
            return Reordered(samples.base, samples.order[order])
        return Reordered(samples, order)

    def encode(self, samples: np.ndarray | Reordered, layout: Layout, groups: list[int] | None,
               level: int = 10) -> list[EncodedSection]:
        """One ``samples`` section. ``groups`` (per-class counts of the class-sorted samples)
        gives one frame per class and per-class ``class_bytes``. Filtering and compression go
        a piece at a time, so memory beyond the samples is about the size of the section."""
        samples, order = (samples.base, samples.order) if isinstance(samples, Reordered) else (samples, None)
        samples = np.asarray(samples)
        dtype = samples.dtype.name
        if dtype not in SAMPLE_DTYPES or dtype != layout.sample_dtype:
            raise ValueError(f"samples have dtype {dtype}, the layout says {layout.sample_dtype}")
        shape = tuple(layout.sample_shape)
        if samples.shape != (layout.num_samples, *shape) or (order is not None and order.shape != samples.shape[:1]):
            raise ValueError(f"samples have shape {samples.shape}, expected {(layout.num_samples, *shape)}")
        if dtype != "uint8" and not _all_finite(samples):
            raise ValueError("float samples must be finite")
        groups = check_groups(groups, layout.num_samples, layout.num_classes)
        n, size = len(samples), math.prod(shape)
        if dtype == "uint8":
            rows = samples.reshape(n, size)

            def filt(name: str):
                return lambda r: _forward(name, r.reshape(-1, *shape)).reshape(len(r), size)

            filters: dict[str, Any] = {"none": (None, 1)}
            filters.update({f: (filt(f), 1) for f in _uint8_filters(shape)[1:]})
        else:
            rows = samples.astype(samples.dtype.newbyteorder("<"), copy=False).reshape(n, size).view(np.uint8)
            filters = {"none": (None, 1), "shuffle": (None, samples.dtype.itemsize)}
        data, params, class_bytes = pack_rows(rows, groups, level, filters, order)
        return [EncodedSection(kind="samples", codec=self.name, component="samples", data=data,
                               params={"dtype": dtype, **params}, class_bytes=class_bytes)]

    def decode(self, section: Section, layout: Layout, aux: AuxReader) -> np.ndarray:
        """``(N, *sample_shape)`` array of the layout's dtype."""
        dtype = choice_param(section, "dtype", tuple(SAMPLE_DTYPES))
        if dtype != layout.sample_dtype:
            raise DecodeError(f"section stores {dtype}, the dataset declares {layout.sample_dtype}",
                              section=section.kind, field="params.dtype")
        shape = tuple(layout.sample_shape)
        itemsize = SAMPLE_DTYPES[dtype]
        row_bytes = math.prod(shape) * itemsize
        if dtype == "uint8":
            allowed = {f: 1 for f in _uint8_filters(shape)}
        else:
            allowed = {"none": 1, "shuffle": itemsize}
        name, rows = unpack_rows(section, layout.num_samples, row_bytes, layout.num_classes,
                                 layout.max_decoded_bytes, allowed)
        if dtype == "uint8":
            out = _inverse(name, rows.reshape(-1, *shape))
        else:
            out = rows.view(f"<f{itemsize}").reshape(-1, *shape).astype(dtype, copy=False)
            if not np.isfinite(out).all():
                raise DecodeError("decoded samples are not all finite", section=section.kind, field="data")
        return np.ascontiguousarray(out)


PIXELS = PixelsCodec()
