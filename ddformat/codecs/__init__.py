"""Codec registry: which (section kind, codec name) pairs this implementation can read and write.

A samples codec may own auxiliary sections named ``"<codec>.<part>"`` (listed in its
``aux_kinds``); a reader that knows the codec knows those too.
"""

from __future__ import annotations

from . import hard_labels, pixels, ruo, soft_labels, weights, zca
from .base import AuxReader, EncodedSection, Layout, Section

SAMPLES_CODECS = {c.name: c for c in (pixels.PIXELS, ruo.RUO)}
LABELS_CODECS = {c.name: c for c in (hard_labels.GROUPED, hard_labels.INDICES, soft_labels.DENSE, soft_labels.TOPK)}
WEIGHTS_CODECS = {c.name: c for c in (weights.COUNTS, weights.FLOAT)}
ZCA_CODECS = {c.name: c for c in (zca.ZCA_MATRIX,)}

_BY_KIND = {"samples": SAMPLES_CODECS, "labels": LABELS_CODECS, "weights": WEIGHTS_CODECS, "zca": ZCA_CODECS}


def is_known(kind: str, codec: str) -> bool:
    """Whether this implementation can interpret a section of ``kind`` written by ``codec``."""
    if kind in _BY_KIND:
        return codec in _BY_KIND[kind]
    owner = SAMPLES_CODECS.get(kind.split(".", 1)[0])
    return owner is not None and kind in getattr(owner, "aux_kinds", ()) and codec == owner.name


__all__ = [
    "AuxReader", "EncodedSection", "Layout", "Section",
    "SAMPLES_CODECS", "LABELS_CODECS", "WEIGHTS_CODECS", "ZCA_CODECS", "is_known",
]
