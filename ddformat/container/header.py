"""The header: its msgpack encoding and the one place where its schema is enforced.

Everything a reader learns from the header passes through :func:`parse_header`, which returns
only values of the documented types and ranges (``spec/format.md`` § Header). Unknown keys are
ignored so that minor versions can add fields; anything that must not be ignored is a required
section instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import HeaderError, LimitError
from ..limits import (
    MAX_ALIGNMENT,
    MAX_DIM,
    MAX_NUM_CLASSES,
    MAX_NUM_SAMPLES,
    MAX_SAMPLE_RANK,
    SAMPLE_DTYPES,
    Limits,
)
from ..weighting import WEIGHT_NORMALIZATIONS, WEIGHT_SCHEMES
from .sections import COMPONENTS

LOSSES = ("ce", "kl")
MAX_NESTING = 32


@dataclass(frozen=True)
class SectionEntry:
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
        return {
            "kind": self.kind,
            "codec": self.codec,
            "component": self.component,
            "offset": self.offset,
            "length": self.length,
            "alignment": self.alignment,
            "crc32": self.crc32,
            "required": self.required,
            "params": self.params,
            "class_bytes": self.class_bytes,
        }


@dataclass(frozen=True)
class Header:
    dataset: dict[str, Any]
    sections: list[SectionEntry]
    provenance: dict[str, Any]
    recipe: dict[str, Any]
    bits: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return self.dataset["num_classes"]

    def to_msgpack(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "sections": [s.to_msgpack() for s in self.sections],
            "provenance": self.provenance,
            "recipe": self.recipe,
            "bits": self.bits,
        }


def encode_header(header: Header) -> bytes:
    return msgpack.packb(header.to_msgpack(), use_bin_type=True)


def _reject_ext(code: int, data: bytes) -> Any:
    raise HeaderError(f"msgpack extension type {code} is not allowed", section="header")


def decode_header(data: bytes) -> Any:
    """Decode header bytes whose length the caller has already checked against the limit."""
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            ext_hook=_reject_ext,
        )
    except HeaderError:
        raise
    except (ValueError, TypeError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException,
            RecursionError) as exc:
        raise HeaderError(f"header is not a single valid msgpack value: {exc}", section="header") from None


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

    def float(self, obj: Any, path: str) -> float:
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
            raise self.fail(path, "expected a finite number")
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
        if any(s <= 0 for s in stats["std"]):
            raise c.fail("dataset.normalization.std", "must be positive")
        stats["applied"] = c.bool(c.get(norm, "applied", "dataset.normalization"), "dataset.normalization.applied")
        out["normalization"] = stats
    return out


def _sections(c: _Checker, obj: Any, num_classes: int, limits: Limits) -> list[SectionEntry]:
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
        alignment = c.int(c.get(s, "alignment", p), f"{p}.alignment", 1, MAX_ALIGNMENT)
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
            offset=c.int(c.get(s, "offset", p), f"{p}.offset"),
            length=length,
            alignment=alignment,
            crc32=c.int(c.get(s, "crc32", p), f"{p}.crc32", 0, 2**32 - 1),
            required=c.bool(c.get(s, "required", p), f"{p}.required"),
            params=c.map(c.plain(s.get("params", {}), f"{p}.params"), f"{p}.params"),
            class_bytes=class_bytes,
        ))
    return entries


def _recipe(c: _Checker, obj: Any) -> dict[str, Any]:
    r = c.map(c.plain(obj, "recipe"), "recipe")
    out = dict(r)
    out["loss"] = c.str(r.get("loss", "ce"), "recipe.loss", LOSSES)
    out["temperature"] = c.float(r.get("temperature", 1.0), "recipe.temperature")
    if out["temperature"] <= 0:
        raise c.fail("recipe.temperature", "must be positive")
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
        out["optimizer"] = c.map(r["optimizer"], "recipe.optimizer")
    return out


def _provenance(c: _Checker, obj: Any) -> dict[str, Any]:
    p = c.map(c.plain(obj, "provenance"), "provenance")
    out = dict(p)
    for key in ("producer", "producer_version", "source_dataset", "content_hash"):
        out[key] = c.str(c.get(p, key, "provenance"), f"provenance.{key}")
    out["parameters"] = c.map(p.get("parameters", {}), "provenance.parameters")
    return out


def _bits(c: _Checker, obj: Any, num_classes: int) -> dict[str, Any]:
    b = c.map(obj, "bits")
    comps = c.map(c.get(b, "components", "bits"), "bits.components")
    per_class = c.list(c.get(b, "per_class", "bits"), "bits.per_class", num_classes)
    return {
        "total": c.int(c.get(b, "total", "bits"), "bits.total"),
        "components": {c.str(k, "bits.components"): c.int(v, f"bits.components.{k}") for k, v in comps.items()},
        "per_class": [c.int(v, f"bits.per_class[{i}]") for i, v in enumerate(per_class)],
    }


def parse_header(obj: Any, limits: Limits) -> Header:
    """Validate a decoded header against the schema and return it in canonical form."""
    c = _Checker()
    top = c.map(obj, "")
    dataset = _dataset(c, c.get(top, "dataset", ""))
    return Header(
        dataset=dataset,
        sections=_sections(c, c.get(top, "sections", ""), dataset["num_classes"], limits),
        provenance=_provenance(c, c.get(top, "provenance", "")),
        recipe=_recipe(c, top.get("recipe", {})),
        bits=_bits(c, c.get(top, "bits", ""), dataset["num_classes"]),
    )
