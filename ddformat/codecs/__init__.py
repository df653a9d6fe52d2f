"""The codec registry: which codec handles each (section kind, codec name) pair.

Adding a codec is one module and one :func:`register` call here; the reader and writer look
codecs up by the names a file or a caller gives and contain none themselves. A samples codec
may own auxiliary sections named ``"<codec>.<part>"`` (its ``aux_kinds``); a reader that knows
the codec knows those too.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedError
from . import hard_labels, pixels, ruo, soft_labels, views, weights, zca
from .base import AuxReader, LabelsCodec, SamplesCodec, WeightsCodec, ZCACodec

KINDS = ("samples", "labels", "weights", "zca", "views")
_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def register(kind: str, codec: Any) -> None:
    """Make ``codec`` (an object with a ``name``) the handler of sections of ``kind``."""
    if kind not in _REGISTRY:
        raise ValueError(f"section kind {kind!r} is not one of {', '.join(KINDS)}")
    _REGISTRY[kind][codec.name] = codec


def names(kind: str) -> list[str]:
    """Codec names registered for ``kind``, sorted."""
    return sorted(_REGISTRY[kind])


def candidates(kind: str) -> list[Any]:
    """Codecs registered for ``kind``, in registration order: the writer's order of preference."""
    return list(_REGISTRY[kind].values())


def lookup(kind: str, name: str) -> Any:
    """The codec for a section of ``kind`` written by codec ``name``; an
    :class:`UnsupportedError` naming both if there is none."""
    codec = _REGISTRY.get(kind, {}).get(name)
    if codec is None:
        raise UnsupportedError(f"no {kind} codec named {name!r} (known: {', '.join(names(kind)) or 'none'})",
                               section=kind, field="codec")
    return codec


def is_known(kind: str, codec: str) -> bool:
    """Whether this implementation can interpret a section of ``kind`` written by ``codec``."""
    if kind in _REGISTRY:
        return codec in _REGISTRY[kind]
    owner = _REGISTRY["samples"].get(kind.split(".", 1)[0])
    return owner is not None and kind in owner.aux_kinds and codec == owner.name


for _codec in (pixels.PIXELS, ruo.RUO):
    register("samples", _codec)
for _codec in (hard_labels.GROUPED, hard_labels.INDICES, soft_labels.DENSE, soft_labels.TOPK):
    register("labels", _codec)
for _codec in (weights.COUNTS, weights.FLOAT):
    register("weights", _codec)
register("zca", zca.ZCA_MATRIX)
register("views", views.VIEWS)

__all__ = ["AuxReader", "KINDS", "LabelsCodec", "SamplesCodec", "WeightsCodec", "ZCACodec",
           "candidates", "is_known", "lookup", "names", "register"]
