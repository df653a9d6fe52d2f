"""``open``: a ``.dd`` file as metadata plus lazily decoded samples, labels and weights.

Opening reads only the preamble and header (and the zero padding between sections); each
section is read, checksum-verified and decoded when first asked for. Everything decodes to
numpy: reading needs no torch (:mod:`ddformat.torch` turns files into tensors on a device).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable, TypeVar

import numpy as np

from . import codecs
from .container.bits import bpc
from .container.header import VIEW_SCHEDULES
from .container.layout import Container
from .container.sections import Layout, Section
from .codecs.views import Views, check_expansion
from .container.sources import ByteSource
from .errors import DecodeError, FormatError, HeaderError, LimitError
from .limits import DEFAULT_LIMITS, SAMPLE_DTYPES, Limits
from .weighting import loss_weights

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _names_file(method: _Method) -> _Method:
    """Errors from ``method`` name the file as the user gave it (codecs do not know it)."""

    @functools.wraps(method)
    def wrapper(self: "DDFile", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except FormatError as exc:
            if self.location is not None:
                exc.in_file(self.location)
            raise

    return wrapper  # type: ignore[return-value]


class DDFile:
    """An open ``.dd`` file. Use as a context manager, or call :meth:`close`."""

    @_names_file
    def __init__(self, location: str | os.PathLike[str] | ByteSource, limits: Limits = DEFAULT_LIMITS) -> None:
        self.location: str | None = (os.fspath(location) if isinstance(location, (str, os.PathLike))
                                     else getattr(location, "name", None))
        self.container = Container(location, codecs.is_known, limits)
        try:
            self._check_semantics()
        except BaseException:
            self.close()
            raise
        self._labels: np.ndarray | None = None

    # ------------------------------------------------------------------ metadata
    @property
    def header(self):
        return self.container.header

    @property
    def dataset(self) -> dict[str, Any]:
        return self.header.dataset

    @property
    def recipe(self) -> dict[str, Any]:
        return self.header.recipe

    @property
    def provenance(self) -> dict[str, Any]:
        return self.header.provenance

    @property
    def bits(self) -> dict[str, Any]:
        return self.header.bits

    @property
    def bpc(self) -> float:
        return bpc(self.bits)

    @property
    def num_classes(self) -> int:
        return self.dataset["num_classes"]

    @property
    def num_samples(self) -> int:
        return self.dataset["num_samples"]

    @property
    def class_names(self) -> list[str]:
        return self.dataset["class_names"]

    @property
    def size(self) -> int:
        return self.container.size

    @property
    @_names_file
    def label_kind(self) -> str:
        """``"hard"`` (class indices) or ``"soft"`` (probability vectors)."""
        return self._codec("labels").label_kind

    @property
    def layout(self) -> Layout:
        d = self.dataset
        return Layout(d["num_samples"], d["num_classes"], tuple(d["sample_shape"]), d["sample_dtype"],
                      self.container.limits.max_decoded_bytes)

    def _codec(self, kind: str) -> Any:
        return codecs.lookup(kind, self.container.entries[kind].codec)

    def _check_semantics(self) -> None:
        """Cross-field rules the schema alone cannot state; checked before any decoding."""
        entries = self.container.entries
        for kind in ("samples", "labels"):
            if kind not in entries:
                raise HeaderError("file has no such section, which every file needs", section=kind)
        for kind in codecs.KINDS:
            if kind in entries and not entries[kind].required:
                raise HeaderError("a section of this kind must be marked required", section=kind,
                                  field="required")
        samples_codec = self._codec("samples")
        for kind in samples_codec.aux_kinds:
            if kind not in entries:
                raise HeaderError(f"the {samples_codec.name!r} samples codec needs this section", section=kind)
            if not entries[kind].required:
                raise HeaderError("a section of this kind must be marked required", section=kind,
                                  field="required")
        d = self.dataset
        decoded = d["num_samples"] * math.prod(d["sample_shape"]) * SAMPLE_DTYPES[d["sample_dtype"]]
        if decoded > self.container.limits.max_decoded_bytes:
            raise LimitError(f"samples decode to {decoded} bytes, over the limit of "
                             f"{self.container.limits.max_decoded_bytes}", section="samples")
        payload = sum(e.length for kind, e in entries.items()
                      if kind == "samples" or kind.startswith(entries["samples"].codec + "."))
        if not self.container.limits.check_expansion(decoded, payload):
            raise LimitError(f"samples would decode to {decoded} bytes from {payload} bytes of payload, more "
                             f"than the expansion limit of {self.container.limits.max_expansion}× allows "
                             "(raise Limits.max_expansion for a file you trust)", section="samples")
        if "zca" in entries:
            features = math.prod(d["sample_shape"])
            if not self.container.limits.check_expansion(4 * features * (features + 1), entries["zca"].length):
                raise LimitError(f"a {features}×{features} ZCA matrix is implausible for {entries['zca'].length} "
                                 "bytes of payload (Limits.max_expansion)", section="zca")
        if self.label_kind == "soft" and d["num_samples"] * d["num_classes"] * 4 > self.container.limits.max_decoded_bytes:
            raise LimitError("soft labels decode past the decoded-size limit", section="labels")
        if self.recipe["weighting"]["scheme"] != "uniform" and "weights" not in entries:
            raise HeaderError("weighting scheme needs a weights section", section="header",
                              field="recipe.weighting.scheme")

    def _section(self, kind: str) -> tuple[Any, Section]:
        section = self.container.section(kind)
        return codecs.lookup(kind, section.codec), section

    # ------------------------------------------------------------------ payloads
    @_names_file
    def samples(self) -> np.ndarray:
        """All samples in stored order and dtype, shape (N, *sample_shape)."""
        codec, section = self._section("samples")
        return self._checked_samples(codec.decode(section, self.layout, self.container.section))

    @_names_file
    def decode_samples(self, decode: Callable[[Any, Section, Layout, Callable[[str], Section]], Any]) -> Any:
        """Samples through ``decode(codec, section, layout, aux)`` instead of the codec's own
        numpy path: how the torch layer has a codec decode straight onto a device."""
        codec, section = self._section("samples")
        return self._checked_samples(decode(codec, section, self.layout, self.container.section))

    def _checked_samples(self, x: Any) -> Any:
        """Whatever the codec, samples are what the header declares (numpy or torch arrays)."""
        if tuple(x.shape) != (self.num_samples, *self.dataset["sample_shape"]):
            raise DecodeError(f"decoded samples have shape {tuple(x.shape)}", section="samples",
                              field="dataset.sample_shape")
        dtype = str(x.dtype).rsplit(".", 1)[-1]
        if dtype != self.dataset["sample_dtype"]:
            raise DecodeError(f"samples decode to {dtype}, the header declares {self.dataset['sample_dtype']}",
                              section="samples", field="dataset.sample_dtype")
        return x

    @_names_file
    def labels(self) -> np.ndarray:
        """(N,) int64 class indices, or (N, K) float32 probabilities."""
        if self._labels is None:
            codec, section = self._section("labels")
            self._labels = codec.decode(section, self.layout)
        return self._labels

    @_names_file
    def classes(self) -> np.ndarray:
        """Class of each sample: the hard label, or the arg-max of the soft label."""
        y = self.labels()
        return y if y.ndim == 1 else y.argmax(axis=1)

    @_names_file
    def stored_weights(self) -> np.ndarray | None:
        """Per-sample values as stored (counts or floats), before the weighting scheme."""
        if not self.container.has("weights"):
            return None
        codec, section = self._section("weights")
        return np.asarray(codec.decode(section, self.layout))

    @_names_file
    def zca(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The stored ZCA whitening ``(mean (D,), matrix (D, D))`` of the samples' space, if any."""
        if not self.container.has("zca"):
            return None
        codec, section = self._section("zca")
        return codec.decode(section, self.layout)

    @_names_file
    def views(self) -> "Views | None":
        """The stored per-view augmentation records and soft labels (spec § 3.8), if any."""
        if not self.container.has("views"):
            return None
        codec, section = self._section("views")
        check_expansion(section, self.layout, self.container.limits)
        return codec.decode(section, self.layout)

    @property
    def view_schedule(self) -> str:
        """Which stored round of views each epoch replays: the recipe's ``view_schedule``."""
        return self.recipe.get("view_schedule") or VIEW_SCHEDULES[0]

    @_names_file
    def loss_weights(self) -> np.ndarray:
        """Per-sample loss weights: the recipe's scheme applied, globally normalised if it says so."""
        w = self.recipe["weighting"]
        try:
            return loss_weights(self.stored_weights(), self.classes(), self.num_classes, w["scheme"],
                                w["normalization"])
        except ValueError as exc:
            raise FormatError(f"stored weights cannot be turned into loss weights: {exc}", section="weights",
                              field="recipe.weighting") from None

    @_names_file
    def verify_content_hash(self) -> None:
        """Check ``provenance.content_hash`` against the sections (spec § 6); a
        :class:`~ddformat.errors.ChecksumError` if it differs. Sections already read were
        hashed as they were read, so after decoding everything this reads only what was not
        needed (unknown optional sections, say)."""
        self.container.verify_content_hash()

    @_names_file
    def verify(self) -> None:
        """Check a whole file in the order of spec § 6: every section's CRC-32 and the content
        hash, then decode every section this reader knows, in table order."""
        self.verify_content_hash()
        decoders = {"samples": self.samples, "labels": self.labels, "weights": self.loss_weights, "zca": self.zca,
                    "views": self.views}
        for entry in self.header.sections:
            if entry.kind in decoders:
                decoders[entry.kind]()

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "DDFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(location: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> DDFile:  # noqa: A001
    """Open a ``.dd`` file (path or URL) for reading; nothing but the header is read yet."""
    return DDFile(location, limits)
