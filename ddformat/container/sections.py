"""What codecs and the container exchange: a section before placement, and one read back.

The container places and checks bytes; codecs produce and interpret payloads. These types are
the whole interface between the two, so neither needs to know the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPONENTS = ("samples", "decoders", "entropy_networks", "labels", "weights", "other")
"""Bit-account buckets a section's bytes can be charged to (``spec/format.md`` § 5)."""


def align(offset: int, alignment: int) -> int:
    """The first multiple of ``alignment`` at or after ``offset``."""
    return -(-offset // alignment) * alignment


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
    alignment: int = 1
    """Sections are packed (1: no padding) unless a codec needs its payload aligned in the file."""


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
    """What a codec may rely on from the header's ``dataset`` map, and the reader's limits."""

    num_samples: int
    num_classes: int
    sample_shape: tuple[int, ...]
    sample_dtype: str
    max_decoded_bytes: int
