"""Per-sample weights: how much each distilled sample counts in the training loss.

* ``counts`` — non-negative integers (e.g. how many real images a k-means centre stands for),
  exact: little-endian unsigned integers of the narrowest width (1, 2 or 4 bytes) that holds
  the largest count, byte-shuffled when that pays, one zstd frame per class.
* ``float`` — non-negative finite reals as little-endian float16 or float32 (default), same
  framing. float32 is exact for float32 input.
"""

from __future__ import annotations

import numpy as np

from ..errors import DecodeError
from .base import EncodedSection, Layout, Section
from .frames import check_decoded_size, check_groups, choice_param, int_param, pack_rows, unpack_rows

_WIDTHS = (1, 2, 4)
_FLOAT_SIZES = {"float16": 2, "float32": 4}


def _check_shape(values: np.ndarray, layout: Layout) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (layout.num_samples,):
        raise ValueError(f"weights have shape {values.shape}, expected ({layout.num_samples},)")
    return values


def _section(codec: str, rows: np.ndarray, groups: list[int] | None, level: int, itemsize: int,
             extra: dict) -> EncodedSection:
    data, params, class_bytes = pack_rows(rows, groups, level, {"none": (None, 1), "shuffle": (None, itemsize)})
    return EncodedSection(kind="weights", codec=codec, component="weights", data=data,
                          params={**extra, **params}, class_bytes=class_bytes)


def _rows(section: Section, layout: Layout, itemsize: int) -> np.ndarray:
    check_decoded_size(section, 8 * layout.num_samples, layout.max_decoded_bytes, "weights")
    _, rows = unpack_rows(section, layout.num_samples, itemsize, layout.num_classes, layout.max_decoded_bytes,
                          {"none": 1, "shuffle": itemsize})
    return rows


class CountWeights:
    """Exact non-negative integer weights."""

    name = "counts"

    def accepts(self, weights: np.ndarray, groups: list[int] | None) -> bool:
        return weights.dtype.kind in "iu"

    def encode(self, weights: np.ndarray, layout: Layout, groups: list[int] | None,
               level: int = 10) -> EncodedSection:
        weights = _check_shape(weights, layout)
        if weights.dtype.kind not in "iu":
            raise ValueError(f"count weights must be integers, got {weights.dtype}")
        if weights.size and (weights.min() < 0 or int(weights.max()) >= 2**32):
            raise ValueError("count weights must lie in [0, 2**32)")
        groups = check_groups(groups, layout.num_samples, layout.num_classes)
        top = int(weights.max()) if weights.size else 0
        width = next(w for w in _WIDTHS if top < 2 ** (8 * w))
        rows = weights.astype(f"<u{width}").view(np.uint8).reshape(-1, width)
        return _section(self.name, rows, groups, level, width, {"width": width})

    def decode(self, section: Section, layout: Layout) -> np.ndarray:
        width = int_param(section, "width", 1, 4)
        if width not in _WIDTHS:
            raise DecodeError("must be 1, 2 or 4", section=section.kind, field="params.width")
        return _rows(section, layout, width).view(f"<u{width}").reshape(-1).astype(np.int64)


class FloatWeights:
    """Non-negative real weights as float16 or float32."""

    name = "float"

    def accepts(self, weights: np.ndarray, groups: list[int] | None) -> bool:
        return weights.dtype.kind in "iuf"

    def encode(self, weights: np.ndarray, layout: Layout, groups: list[int] | None,
               dtype: str = "float32", level: int = 10) -> EncodedSection:
        weights = _check_shape(weights, layout)
        if dtype not in _FLOAT_SIZES:
            raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
        if weights.dtype.kind not in "iuf":
            raise ValueError(f"weights must be numbers, got {weights.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):
            stored = weights.astype(dtype)
        if not np.isfinite(stored).all() or (stored < 0).any():
            raise ValueError(f"weights must be non-negative and finite as {dtype}")
        if weights.any() and not stored.any():
            raise ValueError(f"every weight rounds to 0 as {dtype}; store them as float32")
        groups = check_groups(groups, layout.num_samples, layout.num_classes)
        itemsize = _FLOAT_SIZES[dtype]
        rows = stored.astype(f"<f{itemsize}").view(np.uint8).reshape(-1, itemsize)
        return _section(self.name, rows, groups, level, itemsize, {"dtype": dtype})

    def decode(self, section: Section, layout: Layout) -> np.ndarray:
        dtype = choice_param(section, "dtype", tuple(_FLOAT_SIZES))
        itemsize = _FLOAT_SIZES[dtype]
        values = _rows(section, layout, itemsize).view(f"<f{itemsize}").reshape(-1).astype(np.float32)
        if not np.isfinite(values).all() or (values < 0).any():
            raise DecodeError("decoded weights are negative or not finite", section=section.kind, field="data")
        return values


COUNTS = CountWeights()
FLOAT = FloatWeights()
