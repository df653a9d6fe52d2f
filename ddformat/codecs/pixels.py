"""``pixels``: samples stored losslessly as their own bytes, one zstd frame per class.

Distilled images are few but each is paid for in full, so the codec tries a handful of cheap
reversible filters and keeps whichever compresses best:

* ``uint8``: ``none``; ``sub`` (difference to the left neighbour along the last axis, mod 256);
  ``up`` (difference to the neighbour above, along the second-to-last axis); ``grad`` (both,
  i.e. ``x - left - up + up_left``); ``med`` (the median edge detector of LOCO-I/JPEG-LS:
  predict ``min(a, b)`` if ``c >= max(a, b)``, ``max(a, b)`` if ``c <= min(a, b)``, else
  ``a + b - c``, with ``a`` left, ``b`` above, ``c`` above-left and 0 outside the image).
  Residuals are taken mod 256. Smooth images turn into small residuals that zstd codes in
  fewer bits.
* ``float16``/``float32`` (little-endian): ``none`` or ``shuffle`` (each frame split into byte
  planes, so sign/exponent bytes form long, compressible runs).

Filters act within one sample, so the frame of each class decodes without the others, and
the inverse filters run on blocks of samples in parallel threads.

Decode speed. Filters are listed fastest-decoding first. Undoing them on 10,000 3×32×32 samples
on 2 threads took (``docs/benchmarks.md``): ``none`` nothing; ``sub`` and ``up`` 11–19 ms, one
running sum each (a vectorised add per column or row); ``grad`` 23–38 ms, both; ``med``
82–118 ms, a wavefront along anti-diagonals (each pixel needs its left and upper neighbours)
vectorised across the samples of a block, which must first be transposed so that they lie side
by side. By default
the writer keeps the filter that gives the fewest bytes; the option ``size_tolerance`` (say
``0.05``) makes it keep the fastest-decoding filter within that fraction of the fewest bytes
instead, e.g. ``grad`` when ``med`` saves only a few percent. The choice is recorded in
``params.filter`` as always, so readers need nothing new.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..errors import DecodeError
from ..limits import SAMPLE_DTYPES
from .base import AuxReader, EncodedSection, Layout, Section
from .frames import PIECE_BYTES, check_groups, choice_param, in_threads, pack_rows, unpack_rows

_UINT8_FILTERS = ("none", "sub", "up", "grad", "med")
"""Fastest-decoding first, as :func:`~.frames.pack_rows` expects."""
BLOCK_BYTES = 2**20
"""Inverse filters work on blocks of about this many bytes of samples (at least
:data:`BLOCK_PLANES` planes): large enough that numpy's cost per call is small next to the work,
small enough to stay in cache; blocks are what the threads share out."""
BLOCK_PLANES = 64


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


def _undo_up(planes: np.ndarray) -> None:
    """Running sum down each column, in place on ``(n, H, W)``: one add of a whole row of every
    plane per step."""
    for i in range(1, planes.shape[1]):
        np.add(planes[:, i], planes[:, i - 1], out=planes[:, i])


def _undo_sub(planes: np.ndarray) -> None:
    """Running sum along each row, in place: one add of a whole column of every row per step."""
    rows = planes.reshape(-1, planes.shape[-1])
    for j in range(1, rows.shape[1]):
        np.add(rows[:, j], rows[:, j - 1], out=rows[:, j])


def _undo_med(planes: np.ndarray) -> None:
    """Undo ``med`` in place on ``(n, H, W)``, one anti-diagonal at a time across all n planes.

    The planes are transposed into a zero-bordered ``(H + 1, W + 1, n)`` buffer, so that a pixel's
    n values are contiguous. Pixel ``(i, j)`` of that buffer lies ``i * W * n + (i + j) * n``
    bytes in, so one strided view indexed ``[i + j, i]`` makes every anti-diagonal and its
    left, upper and upper-left neighbours plain slices. The prediction is computed in uint8:
    with ``a`` left, ``b`` above, ``c`` above-left, ``med = a + b - median(a, b, c)``, which
    is exact mod 256 (the true value lies in [0, 255])."""
    n, h, w = planes.shape
    p = np.zeros((h + 1, w + 1, n), dtype=np.uint8)
    p[1:, 1:] = planes.transpose(1, 2, 0)
    diagonal = np.lib.stride_tricks.as_strided(p, shape=(h + w + 1, h + 1, n), strides=(n, w * n, 1))
    lo, hi = np.empty(h * n, dtype=np.uint8), np.empty(h * n, dtype=np.uint8)
    for d in range(h + w - 1):
        i, m = max(0, d - w + 1), min(h, d + 1) - max(0, d - w + 1)
        x, a = diagonal[d + 2, i + 1:i + 1 + m], diagonal[d + 1, i + 1:i + 1 + m]
        b, c = diagonal[d + 1, i:i + m], diagonal[d, i:i + m]
        median, top = lo[:m * n].reshape(m, n), hi[:m * n].reshape(m, n)
        np.minimum(a, b, out=median)
        np.maximum(a, b, out=top)
        np.maximum(c, median, out=median)
        np.minimum(median, top, out=median)
        np.add(x, a, out=x)
        np.add(x, b, out=x)
        np.subtract(x, median, out=x)
    planes[:] = p[1:, 1:].transpose(2, 0, 1)


_UNDO = {"none": (), "sub": (_undo_sub,), "up": (_undo_up,), "grad": (_undo_up, _undo_sub), "med": (_undo_med,)}


def _forward(name: str, x: np.ndarray) -> np.ndarray:
    if name == "med":
        return _med_forward(x)
    if name in ("sub", "grad"):
        x = _diff(x, -1)
    if name in ("up", "grad"):
        x = _diff(x, -2)
    return x


def _undo_block(steps: tuple, planes: np.ndarray) -> None:
    for step in steps:
        step(planes)


def _inverse(name: str, x: np.ndarray) -> np.ndarray:
    """Undo filter ``name`` in place on writable uint8 samples ``x`` (``(N, *sample_shape)``),
    in blocks of samples on parallel threads; returns ``x``."""
    h, w = x.shape[-2:] if x.ndim >= 3 else (1, x.shape[-1])
    if not _UNDO[name] or x.size == 0:
        return x
    planes = x.reshape(-1, h, w)
    step = max(BLOCK_PLANES, BLOCK_BYTES // (h * w))
    in_threads(partial(_undo_block, _UNDO[name]), (planes[a:a + step] for a in range(0, len(planes), step)))
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
               level: int = 10, size_tolerance: float = 0.0) -> list[EncodedSection]:
        """One ``samples`` section. ``groups`` (per-class counts of the class-sorted samples)
        gives one frame per class and per-class ``class_bytes``. Filtering and compression go
        a piece at a time, so memory beyond the samples is about the size of the section.
        ``size_tolerance`` trades bytes for decode speed: the fastest-decoding filter whose
        trial compresses within that fraction of the smallest is kept (module docstring)."""
        if not 0 <= size_tolerance <= 1:
            raise ValueError(f"size_tolerance must be a fraction in [0, 1], got {size_tolerance}")
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
        data, params, class_bytes = pack_rows(rows, groups, level, filters, order, size_tolerance)
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
