"""Hard labels: one class index per sample.

* ``grouped`` — for class-sorted samples the labels *are* the per-class counts, so the payload
  is just those counts as canonical LEB128 varints (1 byte per class for fewer than 128
  samples per class), each class paying for its own count.
* ``indices`` — any order: the labels are ANS-coded under their own empirical class histogram,
  which is stored in front of the word stream, i.e. about ``N·H(labels)`` bits plus the table.
"""

from __future__ import annotations

import numpy as np

from ..errors import DecodeError
from .base import EncodedSection, Layout, Section, group_counts
from .frames import (
    ans_decode,
    check_class_bytes,
    check_decoded_size,
    pack_coded,
    section_bytes,
    unpack_coded,
    varint_decode,
    varint_encode,
    varint_lengths,
)


def check_labels(labels: np.ndarray, layout: Layout) -> np.ndarray:
    """Encoder-side validation: ``(N,)`` integers in ``[0, K)``, as int64."""
    labels = np.asarray(labels)
    if labels.shape != (layout.num_samples,):
        raise ValueError(f"labels have shape {labels.shape}, expected ({layout.num_samples},)")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"hard labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise ValueError(f"labels must lie in [0, {layout.num_classes})")
    return labels.astype(np.int64)


def _check_total(section: Section, counts: np.ndarray, expected: int, field: str) -> None:
    if int(counts.sum()) != expected:
        raise DecodeError(f"counts sum to {int(counts.sum())}, expected {expected}", section=section.kind, field=field)


class GroupedLabels:
    """Labels of class-sorted samples, stored as per-class counts."""

    name = "grouped"
    label_kind = "hard"

    def accepts(self, labels: np.ndarray, groups: list[int] | None) -> bool:
        return labels.ndim == 1 and groups is not None

    def encode(self, labels: np.ndarray, layout: Layout, groups: list[int] | None,
               level: int = 10) -> EncodedSection:
        """``level`` is accepted for a uniform interface; varints are not compressed further."""
        labels = check_labels(labels, layout)
        counts = group_counts(labels, layout.num_classes)
        if counts is None:
            raise ValueError("grouped labels need class-sorted samples")
        if groups is not None and list(groups) != counts:
            raise ValueError("groups disagree with the labels' per-class counts")
        return EncodedSection(kind="labels", codec=self.name, component="labels", data=varint_encode(counts),
                              params={}, class_bytes=varint_lengths(np.array(counts)).tolist())

    def decode(self, section: Section, layout: Layout) -> np.ndarray:
        check_decoded_size(section, 8 * layout.num_samples, layout.max_decoded_bytes, "labels")
        counts = varint_decode(section, section_bytes(section), layout.num_classes, "data")
        _check_total(section, counts, layout.num_samples, "data")
        check_class_bytes(section, varint_lengths(counts).tolist())
        return np.repeat(np.arange(layout.num_classes, dtype=np.int64), counts)


class IndexLabels:
    """Labels in any order, ANS-coded under their stored class histogram."""

    name = "indices"
    label_kind = "hard"

    def accepts(self, labels: np.ndarray, groups: list[int] | None) -> bool:
        return labels.ndim == 1

    def encode(self, labels: np.ndarray, layout: Layout, groups: list[int] | None,
               level: int = 10) -> EncodedSection:
        labels = check_labels(labels, layout)
        counts = np.bincount(labels, minlength=layout.num_classes)
        data, params = pack_coded([counts], [(labels, counts)], level)
        return EncodedSection(kind="labels", codec=self.name, component="labels", data=data, params=params)

    def decode(self, section: Section, layout: Layout) -> np.ndarray:
        check_decoded_size(section, 8 * layout.num_samples, layout.max_decoded_bytes, "labels")
        check_class_bytes(section, None)
        (counts,), words = unpack_coded(section, [layout.num_classes])
        _check_total(section, counts, layout.num_samples, "data.tables")
        (labels,) = ans_decode(section, words, [counts], "data.words")
        return labels


GROUPED = GroupedLabels()
INDICES = IndexLabels()
