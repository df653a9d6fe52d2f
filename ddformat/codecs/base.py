"""What every codec exchanges with the container, and the protocols per section kind.

A codec turns one kind of array (samples, labels, weights, a ZCA transform) into the bytes and
parameters of one section and back. The container knows nothing of payloads; codecs know
nothing of offsets, alignment or checksums. A samples codec may add auxiliary sections of its own
(kind ``"<codec>.<part>"``, e.g. ``ruo.arm``), which the container stores like any other.
Decoders return numpy arrays: reading a file needs no torch.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Protocol

import numpy as np

from ..container.sections import EncodedSection, Layout, Section
from ..errors import DecodeError

AuxReader = Callable[[str], Section]
"""Returns the verified auxiliary section of a kind (``"ruo.arm"``), for samples codecs."""


class SamplesCodec(Protocol):
    """Samples: an (N, ...) array, or a codec-specific object (e.g. ``RuoSamples``)."""

    name: str
    aux_kinds: tuple[str, ...]

    def accepts(self, samples: Any, groups: list[int] | None) -> bool:
        """Whether this codec can store ``samples`` (the writer picks the first that can)."""

    def describe(self, samples: Any) -> tuple[int, tuple[int, ...], str]:
        """(N, sample_shape, sample_dtype) of what :meth:`encode` would store."""

    def take(self, samples: Any, order: np.ndarray) -> Any:
        """The samples reordered (the writer groups them by class); may be a lazy view that
        :meth:`encode` reads in order, so that saving does not copy the caller's arrays."""

    def encode(self, samples: Any, layout: Layout, groups: list[int] | None,
               **options: Any) -> list[EncodedSection]: ...

    def decode(self, section: Section, layout: Layout, aux: AuxReader) -> np.ndarray:
        """(N, *sample_shape) array of the layout's dtype. A codec that can decode straight
        onto a torch device may also define ``decode_tensor(section, layout, aux, device)``."""


class LabelsCodec(Protocol):
    name: str
    label_kind: Literal["hard", "soft"]

    def accepts(self, labels: np.ndarray, groups: list[int] | None) -> bool:
        """Whether this codec stores ``labels`` as they are (the writer picks the first)."""

    def encode(self, labels: np.ndarray, layout: Layout, groups: list[int] | None,
               **options: Any) -> EncodedSection: ...

    def decode(self, section: Section, layout: Layout) -> np.ndarray:
        """(N,) int64 class indices (hard) or (N, K) float32 probabilities (soft)."""


class WeightsCodec(Protocol):
    name: str

    def accepts(self, weights: np.ndarray, groups: list[int] | None) -> bool:
        """Whether this codec stores ``weights`` exactly (the writer picks the first)."""

    def encode(self, weights: np.ndarray, layout: Layout, groups: list[int] | None,
               **options: Any) -> EncodedSection: ...

    def decode(self, section: Section, layout: Layout) -> np.ndarray:
        """(N,) stored values: int64 counts or float32."""


class ZCACodec(Protocol):
    name: str

    def accepts(self, value: tuple[np.ndarray, np.ndarray], groups: list[int] | None) -> bool: ...

    def encode(self, mean: np.ndarray, matrix: np.ndarray, layout: Layout, **options: Any) -> EncodedSection: ...

    def decode(self, section: Section, layout: Layout) -> tuple[np.ndarray, np.ndarray]: ...


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
