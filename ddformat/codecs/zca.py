"""``zca``/``matrix``: the ZCA whitening a set's samples live in, stored with the set.

Trajectory-matching sets (MTT, DATM, RUO on CIFAR-10) are distilled in the ZCA-whitened space
of the real training data, so real test images must be whitened with the same transform before
a student sees them. Storing the transform makes such a file usable without the real training
set. It costs (D + 1)·D float32 values for D = C·H·W features, charged to component ``other``.
Body: rows of D little-endian float32 — the mean first, then the D rows of the matrix.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DecodeError
from .base import EncodedSection, Layout, Section
from .frames import check_decoded_size, pack_rows, unpack_rows

_FILTERS = {"none": (None, 1), "shuffle": (None, 4)}


class ZCAMatrix:
    name = "matrix"

    def accepts(self, value: tuple[np.ndarray, np.ndarray], groups: list[int] | None) -> bool:
        return True

    def encode(self, mean: np.ndarray, matrix: np.ndarray, layout: Layout, level: int = 10) -> EncodedSection:
        d = math.prod(layout.sample_shape)
        mean, matrix = np.asarray(mean, np.float32), np.asarray(matrix, np.float32)
        if mean.shape != (d,) or matrix.shape != (d, d):
            raise ValueError(f"ZCA needs a ({d},) mean and a ({d}, {d}) matrix for samples of {layout.sample_shape}")
        if not (np.isfinite(mean).all() and np.isfinite(matrix).all()):
            raise ValueError("ZCA mean and matrix must be finite")
        rows = np.concatenate([mean[None], matrix]).astype("<f4").view(np.uint8)
        data, params, _ = pack_rows(rows, None, level, _FILTERS)
        return EncodedSection(kind="zca", codec=self.name, component="other", data=data, params=params)

    def decode(self, section: Section, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
        d = math.prod(layout.sample_shape)
        check_decoded_size(section, 4 * d * (d + 1), layout.max_decoded_bytes, "the ZCA matrix")
        _, rows = unpack_rows(section, d + 1, 4 * d, 1, layout.max_decoded_bytes,
                              {name: size for name, (_, size) in _FILTERS.items()})
        values = rows.view("<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise DecodeError("ZCA values are not all finite", section=section.kind, field="data")
        return values[0].copy(), values[1:].copy()


ZCA_MATRIX = ZCAMatrix()
