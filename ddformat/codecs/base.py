"""What every codec exchanges with the container.

A codec turns one kind of array (samples, labels, weights) into the bytes and parameters of one
section and back. The container knows nothing of payloads; codecs know nothing of offsets,
alignment or checksums. A samples codec may add auxiliary sections of its own (kind
``"<codec>.<name>"``, e.g. ``ruo.networks``) — the container stores them like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import DecodeError

COMPONENTS = ("samples", "decoders", "entropy_networks", "labels", "weights", "other")


@dataclass
class EncodedSection:
    """A section as a codec produced it, before the container places it in a file.

    ``class_bytes[c]`` is how many bytes of ``data`` belong to class ``c`` alone; the bit
    account charges the rest of the section to all classes evenly. ``None`` means the whole
    section is shared.
    """

    kind: str
    codec: str
    component: str
    data: bytes
    params: dict[str, Any] = field(default_factory=dict)
    required: bool = True
    class_bytes: list[int] | None = None
    alignment: int = 64


@dataclass(frozen=True)
class Section:
    """A section as a reader hands it to a codec: checksum already verified."""

    kind: str
    codec: str
    component: str
    offset: int
    length: int
    params: dict[str, Any]
    data: bytes | memoryview
    class_bytes: list[int] | None = None


@dataclass(frozen=True)
class Layout:
    """What a codec may rely on from the header's ``dataset`` map."""

    num_samples: int
    num_classes: int
    sample_shape: tuple[int, ...]
    sample_dtype: str
    max_decoded_bytes: int


AuxReader = Callable[[str], Section]
"""Returns the verified auxiliary section of a kind (``"ruo.networks"``), for samples codecs."""


def param(section: Section, name: str, kind: type | tuple[type, ...]) -> Any:
    """Fetch a codec parameter, raising a :class:`DecodeError` that names it when it is wrong."""
    if name not in section.params:
        raise DecodeError("missing codec parameter", section=section.kind, field=f"params.{name}")
    value = section.params[name]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise DecodeError("codec parameter has the wrong type", section=section.kind, field=f"params.{name}")
    if not isinstance(value, kind):
        raise DecodeError("codec parameter has the wrong type", section=section.kind, field=f"params.{name}")
    return value


def group_counts(classes: np.ndarray, num_classes: int) -> list[int] | None:
    """Per-class counts if ``classes`` is sorted (class-grouped storage), else ``None``."""
    if classes.size and np.any(np.diff(classes) < 0):
        return None
    return np.bincount(classes, minlength=num_classes).astype(int).tolist()
