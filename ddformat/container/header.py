"""The header: its encoding (msgpack in one zstd frame) and the one place where its schema is
enforced.

Everything a reader learns from the header passes through :func:`parse_header`, which returns
only values of the documented types and ranges (``spec/format.md`` § Header). Unknown keys are
ignored so that minor versions can add fields; anything that must not be ignored is a required
section instead. What follows from other fields is not stored: sections' offsets (from lengths
and alignments) and the bit account (from the layout) are derived here, the same way for the
writer that plans a file and the reader that checks it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import numpy as np
import zstandard

from ..errors import HeaderError, LimitError
from ..limits import (
    MAX_ALIGNMENT,
    MAX_DIM,
    MAX_NUM_CLASSES,
    MAX_NUM_SAMPLES,
    MAX_SAMPLE_RANK,
    PREAMBLE_SIZE,
    SAMPLE_DTYPES,
    Limits,
)
from ..weighting import WEIGHT_NORMALIZATIONS, WEIGHT_SCHEMES
from .bits import bit_account
from .dictionary import DICTIONARY
from .sections import COMPONENTS, align

LOSSES = ("ce", "kl")
REGIMES = ("hl", "sl", "sl+kd")
VIEW_SCHEDULES = ("cycle", "shuffle")
"""How epochs map to stored rounds of views (spec § 3.8): ``cycle`` (the default) or ``shuffle``."""
"""Label regimes of paper 002: hard labels, stored soft labels, soft labels from a teacher."""
MAX_NESTING = 32
FLOAT32_SAFE_MAX = 2.0**126
"""Bound on header numbers that consumers compute with in float32 (spec § 2): sums and
differences of two such numbers stay below float32's maximum (~2**128) even after rounding."""
FLOAT32_MIN_NORMAL = 2.0**-126
CONTENT_HASH_PREFIX = "sha256:"
"""How a reader shows the stored 32-byte ``content_hash``: ``sha256:`` and 64 hex digits."""
HEADER_LEVEL = 19
"""zstd level of the header: a few hundred bytes, compressed once per file."""


def zstd_dictionary() -> zstandard.ZstdCompressionDict:
    """A fresh zstd view of the dictionary (~0.1 ms): one per use, so threads share no zstd state."""
    return zstandard.ZstdCompressionDict(DICTIONARY, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


@dataclass(frozen=True)
class SectionEntry:
    """A section table entry; ``offset`` is derived (:func:`place`), never stored."""

    kind: str
    codec: str
    component: str
    offset: int
    length: int
    alignment: int
    crc32: int
    required: bool
    params: dict[str, Any]
    class_bytes: list[int] | None

    def to_msgpack(self) -> dict[str, Any]:
        """The stored entry: defaults (alignment 1, required, no params, no class_bytes) left out."""
        entry: dict[str, Any] = {"kind": self.kind, "codec": self.codec, "component": self.component,
                                 "length": self.length, "crc32": self.crc32}
        if self.params:
            entry["params"] = self.params
        if self.class_bytes is not None:
            entry["class_bytes"] = self.class_bytes
        if self.alignment != 1:
            entry["alignment"] = self.alignment
        if not self.required:
            entry["required"] = False
        return entry


def place(entries: list[SectionEntry], start: int) -> list[SectionEntry]:
    """The entries with their offsets: each section at the first multiple of its alignment at or
    after the end of the one before, the first at or after ``start`` (the header's end)."""
    placed = []
    for e in entries:
        start = align(start, e.alignment)
        placed.append(replace(e, offset=start))
        start += e.length
    return placed


@dataclass(frozen=True)
class Header:
    """A validated header, with what its place in the file determines: the sections' offsets and
    the bit account."""

    dataset: dict[str, Any]
    sections: list[SectionEntry]
    provenance: dict[str, Any]
    recipe: dict[str, Any]
    header_length: int
    file_length: int

    @property
    def num_classes(self) -> int:
        return self.dataset["num_classes"]

    @functools.cached_property
    def bits(self) -> dict[str, Any]:
        """The bit account (spec § 5), derived from the layout."""
        return bit_account(self.header_length, self.file_length, self.sections, self.num_classes)


def encode_header(dataset: dict[str, Any], sections: list[SectionEntry], provenance: dict[str, Any],
                  recipe: dict[str, Any]) -> bytes:
    """The header as stored: one msgpack map, compressed as one zstd frame that declares its size,
    against :data:`~ddformat.container.dictionary.DICTIONARY`. ``provenance["content_hash"]`` is
    the 32-byte digest."""
    table = {"dataset": dataset, "sections": [s.to_msgpack() for s in sections], "provenance": provenance,
             "recipe": recipe}
    return compress_header(msgpack.packb(table, use_bin_type=True))


def compress_header(text: bytes) -> bytes:
    """msgpack header bytes as they are stored: one zstd frame with its content size, no checksum
    (the preamble's CRC-32 covers it), against the dictionary."""
    cctx = zstandard.ZstdCompressor(level=HEADER_LEVEL, dict_data=zstd_dictionary(), write_content_size=True,
                                    write_checksum=False, write_dict_id=False)
    return cctx.compress(text)


def decompress_header(data: bytes | memoryview, max_bytes: int) -> bytes:
    """The msgpack bytes of a stored header: exactly one zstd frame, which declares a content
    size of at most ``max_bytes`` (checked before anything is allocated), names no dictionary but
    the spec's (ID 0), and is followed by nothing."""
    try:
        frame = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as exc:
        raise HeaderError(f"header is not a zstd frame: {exc}", section="header", offset=PREAMBLE_SIZE) from None
    if frame.content_size == zstandard.CONTENTSIZE_UNKNOWN:
        raise HeaderError("header zstd frame does not declare its content size", section="header",
                          offset=PREAMBLE_SIZE)
    if frame.content_size > max_bytes or frame.window_size > max_bytes:
        raise LimitError(f"header zstd frame declares {frame.content_size} bytes (window {frame.window_size}), "
                         f"over the header limit of {max_bytes}", section="header", offset=PREAMBLE_SIZE)
    if frame.dict_id:
        raise HeaderError(f"header zstd frame names dictionary {frame.dict_id}; headers use the spec's "
                          "dictionary (ID 0)", section="header", offset=PREAMBLE_SIZE)
    dobj = zstandard.ZstdDecompressor(dict_data=zstd_dictionary()).decompressobj()
    try:
        out = dobj.decompress(data)
    except zstandard.ZstdError as exc:
        raise HeaderError(f"corrupt header zstd frame: {exc}", section="header", offset=PREAMBLE_SIZE) from None
    if not dobj.eof:
        raise HeaderError("header zstd frame is truncated", section="header", offset=PREAMBLE_SIZE)
    if dobj.unused_data:
        raise HeaderError(f"{len(dobj.unused_data)} bytes follow the header zstd frame", section="header",
                          offset=PREAMBLE_SIZE + len(data) - len(dobj.unused_data))
    if len(out) != frame.content_size:
        raise HeaderError(f"header zstd frame decoded to {len(out)} bytes, it declares {frame.content_size}",
                          section="header", offset=PREAMBLE_SIZE)
    return out


def _reject_ext(code: int, data: bytes) -> Any:
    raise HeaderError(f"msgpack extension type {code} is not allowed", section="header")


class _Pairs(list):
    """A decoded msgpack map as its key-value pairs, before duplicates are ruled out."""


def decode_header(data: bytes | memoryview, max_bytes: int) -> Any:
    """Decompress (:func:`decompress_header`) and decode a stored header.

    msgpack allows a map to repeat a key, and a dict would keep the last value silently, so two
    readers could disagree on what a file says: maps are decoded as pairs and refused if a key
    repeats or is not a string. Maps and arrays nest at most :data:`MAX_NESTING` deep, the
    top-level map counting as depth 1 (``spec/format.md`` § 6)."""
    text = decompress_header(data, max_bytes)
    try:
        obj = msgpack.unpackb(
            text,
            raw=False,
            strict_map_key=False,
            use_list=True,
            ext_hook=_reject_ext,
            object_pairs_hook=_Pairs,
        )
    except HeaderError:
        raise
    except (ValueError, TypeError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException,
            RecursionError) as exc:
        raise HeaderError(f"header is not a single valid msgpack value: {exc}", section="header") from None
    return _as_dicts(obj, "", 1)


def _as_dicts(obj: Any, path: str, depth: int) -> Any:
    if isinstance(obj, _Pairs):
        if depth > MAX_NESTING:
            raise HeaderError(f"maps and arrays nest deeper than {MAX_NESTING}", section="header", field=path)
        out: dict[str, Any] = {}
        for key, value in obj:
            if not isinstance(key, str):
                raise HeaderError(f"map key {key!r} is not a string", section="header", field=path or None)
            where = f"{path}.{key}" if path else key
            if key in out:
                raise HeaderError("map key appears twice", section="header", field=where)
            out[key] = _as_dicts(value, where, depth + 1)
        return out
    if isinstance(obj, list):
        if depth > MAX_NESTING:
            raise HeaderError(f"maps and arrays nest deeper than {MAX_NESTING}", section="header", field=path)
        return [_as_dicts(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    return obj


MSGPACK_INT_RANGE = (-(2**63), 2**64 - 1)


def to_plain(obj: Any, path: str, depth: int = 2) -> Any:
    """``obj`` as the plain msgpack values a writer stores: numpy scalars and arrays become Python
    numbers, booleans, strings and lists, tuples become lists and mappings dicts. Anything else
    (sets, arbitrary objects, non-string map keys, integers beyond 64 bits, strings that are not
    UTF-8, nesting deeper than the reader allows) raises a :class:`HeaderError` naming the field
    ``path``, so that a refused value never surfaces as msgpack's own ``TypeError``. ``depth`` is
    the nesting depth of ``obj`` as :func:`decode_header` counts it (a value of the top-level
    map, such as ``recipe``, is at depth 2)."""
    if isinstance(obj, (np.generic, np.ndarray)):
        if obj.dtype.kind not in "biufUSO":
            raise HeaderError(f"numpy {obj.dtype} values cannot be stored", section="header", field=path)
        obj = obj.tolist()
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, int):
        if not MSGPACK_INT_RANGE[0] <= obj <= MSGPACK_INT_RANGE[1]:
            raise HeaderError(f"integer {obj} does not fit in 64 bits", section="header", field=path)
        return int(obj)
    if isinstance(obj, str):
        _check_utf8(obj, path)
        return str(obj)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, (Mapping, list, tuple)) and depth > MAX_NESTING:
        raise HeaderError(f"maps and arrays nest deeper than {MAX_NESTING}", section="header", field=path)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise HeaderError(f"map key {key!r} is not a string", section="header", field=path)
            _check_utf8(key, path)
            out[str(key)] = to_plain(value, f"{path}.{key}", depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    raise HeaderError(f"a {type(obj).__name__} is not a msgpack value (use numbers, strings, booleans, None, "
                      "lists and string-keyed maps)", section="header", field=path)


def _check_utf8(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HeaderError(f"string is not valid UTF-8: {exc.reason}", section="header", field=path) from None


def check_metadata(dataset: Any, provenance: Any, recipe: Any) -> tuple[Any, Any, Any]:
    """The ``dataset``, ``provenance`` (its content hash is the writer's) and ``recipe`` a writer
    is about to store, converted by :func:`to_plain` and checked by the reader's own schema
    functions: a writer refuses, before writing anything, exactly what a reader would refuse."""
    dataset, provenance, recipe = (to_plain(v, name) for v, name in
                                   ((dataset, "dataset"), (provenance, "provenance"), (recipe, "recipe")))
    c = _Checker()
    _dataset(c, dataset)
    _provenance(c, {**c.map(provenance, "provenance"), "content_hash": bytes(32)})
    _recipe(c, recipe)
    return dataset, provenance, recipe


class _Checker:
    """Typed accessors that raise :class:`HeaderError` naming the field path."""

    def fail(self, path: str, message: str) -> HeaderError:
        return HeaderError(message, section="header", field=path)

    def map(self, obj: Any, path: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(path, f"expected a map, got {type(obj).__name__}")
        return obj

    def get(self, obj: dict[str, Any], key: str, path: str) -> Any:
        if key not in obj:
            raise self.fail(f"{path}.{key}" if path else key, "missing required field")
        return obj[key]

    def int(self, obj: Any, path: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
        if isinstance(obj, bool) or not isinstance(obj, int):
            raise self.fail(path, f"expected an integer, got {type(obj).__name__}")
        if not lo <= obj <= hi:
            raise self.fail(path, f"{obj} is outside [{lo}, {hi}]")
        return obj

    def float(self, obj: Any, path: str, minimum: float | None = None, inclusive: bool = True) -> float:
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
            raise self.fail(path, "expected a finite number")
        if minimum is not None and (obj < minimum or (obj == minimum and not inclusive)):
            raise self.fail(path, f"{obj} must be {'at least' if inclusive else 'above'} {minimum}")
        return float(obj)

    def str(self, obj: Any, path: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(obj, str):
            raise self.fail(path, f"expected a string, got {type(obj).__name__}")
        if choices is not None and obj not in choices:
            raise self.fail(path, f"{obj!r} is not one of {', '.join(choices)}")
        return obj

    def bool(self, obj: Any, path: str) -> bool:
        if not isinstance(obj, bool):
            raise self.fail(path, "expected a boolean")
        return obj

    def list(self, obj: Any, path: str, max_len: int) -> list[Any]:
        if not isinstance(obj, list):
            raise self.fail(path, f"expected an array, got {type(obj).__name__}")
        if len(obj) > max_len:
            raise self.fail(path, f"array of {len(obj)} items exceeds {max_len}")
        return obj

    def plain(self, obj: Any, path: str, depth: int = 0) -> Any:
        """Free-form values (codec params, producer parameters): msgpack scalars, arrays, maps."""
        if depth > MAX_NESTING:
            raise self.fail(path, f"nesting deeper than {MAX_NESTING}")
        if isinstance(obj, dict):
            return {k: self.plain(v, f"{path}.{k}", depth + 1) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.plain(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
            return obj
        raise self.fail(path, f"unsupported value type {type(obj).__name__}")


def _dataset(c: _Checker, obj: Any) -> dict[str, Any]:
    d = c.map(obj, "dataset")
    k = c.int(c.get(d, "num_classes", "dataset"), "dataset.num_classes", 1, MAX_NUM_CLASSES)
    names = c.list(c.get(d, "class_names", "dataset"), "dataset.class_names", MAX_NUM_CLASSES)
    if len(names) != k:
        raise c.fail("dataset.class_names", f"{len(names)} names for {k} classes")
    shape = c.list(c.get(d, "sample_shape", "dataset"), "dataset.sample_shape", MAX_SAMPLE_RANK)
    if not shape:
        raise c.fail("dataset.sample_shape", "must have at least one dimension")
    out = {
        "name": c.str(c.get(d, "name", "dataset"), "dataset.name"),
        "num_classes": k,
        "class_names": [c.str(n, f"dataset.class_names[{i}]") for i, n in enumerate(names)],
        "num_samples": c.int(c.get(d, "num_samples", "dataset"), "dataset.num_samples", 0, MAX_NUM_SAMPLES),
        "sample_shape": [c.int(s, f"dataset.sample_shape[{i}]", 1, MAX_DIM) for i, s in enumerate(shape)],
        "sample_dtype": c.str(c.get(d, "sample_dtype", "dataset"), "dataset.sample_dtype", tuple(SAMPLE_DTYPES)),
        "value_range": None,
        "normalization": None,
    }
    vr = d.get("value_range")
    if vr is not None:
        vr = c.list(vr, "dataset.value_range", 2)
        if len(vr) != 2:
            raise c.fail("dataset.value_range", "expected [low, high]")
        lo, hi = (c.float(v, f"dataset.value_range[{i}]") for i, v in enumerate(vr))
        if not lo < hi:
            raise c.fail("dataset.value_range", "low must be below high")
        if max(abs(lo), abs(hi), hi - lo) > FLOAT32_SAFE_MAX or (hi - lo) / 255 < FLOAT32_MIN_NORMAL:
            raise c.fail("dataset.value_range", f"[{lo}, {hi}] maps uint8 codes to non-finite or degenerate float32 "
                         "values: |low|, |high| and high - low must be at most 2**126 and (high - low)/255 at "
                         "least 2**-126")
        out["value_range"] = [lo, hi]
    norm = d.get("normalization")
    if norm is not None:
        norm = c.map(norm, "dataset.normalization")
        channels = out["sample_shape"][0]
        stats = {}
        for key in ("mean", "std"):
            vals = c.list(c.get(norm, key, "dataset.normalization"), f"dataset.normalization.{key}", MAX_DIM)
            if len(vals) != channels:
                raise c.fail(f"dataset.normalization.{key}", f"{len(vals)} values for {channels} channels")
            stats[key] = [c.float(v, f"dataset.normalization.{key}[{i}]") for i, v in enumerate(vals)]
        _check_normalization(c, stats, max(abs(v) for v in out["value_range"] or (0.0, 1.0)))
        stats["applied"] = c.bool(c.get(norm, "applied", "dataset.normalization"), "dataset.normalization.applied")
        out["normalization"] = stats
    return out


def _check_normalization(c: _Checker, stats: dict[str, list[float]], magnitude: float) -> None:
    """``(x - mean) / std`` must be finite in float32 for every value ``|x| <= magnitude`` (the
    value range's), so that normalising never turns samples into inf or NaN."""
    for i, (mean, std) in enumerate(zip(stats["mean"], stats["std"])):
        if abs(mean) > FLOAT32_SAFE_MAX:
            raise c.fail(f"dataset.normalization.mean[{i}]", f"{mean} exceeds 2**126 in magnitude")
        if not FLOAT32_MIN_NORMAL <= std <= FLOAT32_SAFE_MAX:
            raise c.fail(f"dataset.normalization.std[{i}]", f"{std} must be positive, in [2**-126, 2**126]")
        if (magnitude + abs(mean)) / std > FLOAT32_SAFE_MAX:
            raise c.fail(f"dataset.normalization.std[{i}]", f"(x - {mean}) / {std} exceeds 2**126 for values x "
                         f"up to {magnitude} in magnitude (the value range)")


def _sections(c: _Checker, obj: Any, num_classes: int, limits: Limits, start: int) -> list[SectionEntry]:
    if isinstance(obj, list) and len(obj) > limits.max_sections:
        raise LimitError(f"{len(obj)} sections exceed the limit of {limits.max_sections}",
                         section="header", field="sections")
    items = c.list(obj, "sections", limits.max_sections)
    entries, seen = [], set()
    for i, raw in enumerate(items):
        p = f"sections[{i}]"
        s = c.map(raw, p)
        kind = c.str(c.get(s, "kind", p), f"{p}.kind")
        if not kind or kind in seen:
            raise c.fail(f"{p}.kind", f"section kind {kind!r} is empty or repeated")
        seen.add(kind)
        alignment = c.int(s.get("alignment", 1), f"{p}.alignment", 1, MAX_ALIGNMENT)
        if alignment & (alignment - 1):
            raise c.fail(f"{p}.alignment", f"{alignment} is not a power of two")
        length = c.int(c.get(s, "length", p), f"{p}.length")
        class_bytes = s.get("class_bytes")
        if class_bytes is not None:
            class_bytes = [c.int(b, f"{p}.class_bytes[{j}]")
                           for j, b in enumerate(c.list(class_bytes, f"{p}.class_bytes", num_classes))]
            if len(class_bytes) != num_classes or sum(class_bytes) > length:
                raise c.fail(f"{p}.class_bytes", "needs one count per class, summing to at most the length")
        entries.append(SectionEntry(
            kind=kind,
            codec=c.str(c.get(s, "codec", p), f"{p}.codec"),
            component=c.str(c.get(s, "component", p), f"{p}.component", COMPONENTS),
            offset=0,
            length=length,
            alignment=alignment,
            crc32=c.int(c.get(s, "crc32", p), f"{p}.crc32", 0, 2**32 - 1),
            required=c.bool(s.get("required", True), f"{p}.required"),
            params=c.map(c.plain(s.get("params", {}), f"{p}.params"), f"{p}.params"),
            class_bytes=class_bytes,
        ))
    return place(entries, start)


def _recipe(c: _Checker, obj: Any) -> dict[str, Any]:
    r = c.map(c.plain(obj, "recipe"), "recipe")
    out = dict(r)
    out["loss"] = c.str(r.get("loss", "ce"), "recipe.loss", LOSSES)
    out["temperature"] = c.float(r.get("temperature", 1.0), "recipe.temperature", 0.0, inclusive=False)
    if r.get("regime") is not None:
        out["regime"] = c.str(r["regime"], "recipe.regime", REGIMES)
    if r.get("view_schedule") is not None:
        out["view_schedule"] = c.str(r["view_schedule"], "recipe.view_schedule", VIEW_SCHEDULES)
    w = c.map(r.get("weighting", {}), "recipe.weighting")
    out["weighting"] = {
        "scheme": c.str(w.get("scheme", "uniform"), "recipe.weighting.scheme", WEIGHT_SCHEMES),
        "normalization": c.str(w.get("normalization", "global"), "recipe.weighting.normalization",
                               WEIGHT_NORMALIZATIONS),
    }
    for key in ("epochs", "batch_size"):
        if key in r and r[key] is not None:
            out[key] = c.int(r[key], f"recipe.{key}", 1, 2**31)
    for key in ("architecture",):
        if key in r and r[key] is not None:
            out[key] = c.str(r[key], f"recipe.{key}")
    if "augmentation" in r and r["augmentation"] is not None:
        out["augmentation"] = [c.str(a, f"recipe.augmentation[{i}]")
                               for i, a in enumerate(c.list(r["augmentation"], "recipe.augmentation", 64))]
    if "optimizer" in r and r["optimizer"] is not None:
        out["optimizer"] = _optimizer(c, r["optimizer"])
    return out


def _optimizer(c: _Checker, obj: Any) -> dict[str, Any]:
    o = c.map(obj, "recipe.optimizer")
    out = dict(o)
    for key in ("name", "schedule"):
        if o.get(key) is not None:
            out[key] = c.str(o[key], f"recipe.optimizer.{key}")
    if o.get("lr") is not None:
        out["lr"] = c.float(o["lr"], "recipe.optimizer.lr", 0.0, inclusive=False)
    for key in ("momentum", "weight_decay"):
        if o.get(key) is not None:
            out[key] = c.float(o[key], f"recipe.optimizer.{key}", 0.0)
    if o.get("warmup_epochs") is not None:
        out["warmup_epochs"] = c.int(o["warmup_epochs"], "recipe.optimizer.warmup_epochs", 0, 2**31)
    return out


def _provenance(c: _Checker, obj: Any) -> dict[str, Any]:
    p = c.map(c.plain(obj, "provenance"), "provenance")
    out = dict(p)
    for key in ("producer", "producer_version", "source_dataset"):
        out[key] = c.str(c.get(p, key, "provenance"), f"provenance.{key}")
    digest = c.get(p, "content_hash", "provenance")
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise c.fail("provenance.content_hash", "expected the 32-byte SHA-256 of the section payloads (msgpack bin)")
    out["content_hash"] = CONTENT_HASH_PREFIX + digest.hex()
    out["parameters"] = c.map(p.get("parameters", {}), "provenance.parameters")
    if out["parameters"].get("zca") is not None:
        c.bool(out["parameters"]["zca"], "provenance.parameters.zca")
    return out


def parse_header(obj: Any, limits: Limits, header_length: int, file_length: int) -> Header:
    """Validate a decoded header against the schema and return it in canonical form, with the
    offsets and bit account that a header of ``header_length`` stored bytes in a file of
    ``file_length`` bytes gives (whether the sections fit the file is the layout's check)."""
    c = _Checker()
    top = c.map(obj, "")
    dataset = _dataset(c, c.get(top, "dataset", ""))
    return Header(
        dataset=dataset,
        sections=_sections(c, c.get(top, "sections", ""), dataset["num_classes"], limits,
                           PREAMBLE_SIZE + header_length),
        provenance=_provenance(c, c.get(top, "provenance", "")),
        recipe=_recipe(c, top.get("recipe", {})),
        header_length=header_length,
        file_length=file_length,
    )
