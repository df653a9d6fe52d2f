"""Structure-aware fuzzing of the reader, with every checksum resealed.

    python -m tools.fuzz --mutants 20000 --seed 1              # counts by outcome
    python -m tools.fuzz --mutants 3000 --exclude ruo_two_slices --json out.json
    python -m tools.fuzz --only 1234 --seed 1 --save-dir bad/  # rebuild one mutant as a file
    python -m tools.fuzz --selftest                            # the harness catches what it must

Checksums hide how fragile decoders are: flip a byte and the CRC refuses the file before any
decoder runs. Each mutant here starts from a valid file and changes one thing the way a buggy or
hostile writer could: a header value (edge numbers, NaN, wrong types, huge strings), a key
(missing, duplicated, unknown, not a string), nesting depth, a section's kind, codec or
``required`` flag, the section table (duplicated, removed or reordered sections, lengths,
``class_bytes``), the header's zstd frame (no or a huge declared size, trailing bytes or
frames, another dictionary, plain msgpack, recompressed), or a payload (swapped or truncated
frames, zstd frames declaring huge sizes or none, non-canonical varints, changed count tables
or ANS words). The mutant is then *resealed*: lengths, every CRC-32, ``file_length``,
``header_length`` and ``provenance.content_hash`` are recomputed unless the mutation is to one
of them, and the header compressed again, so only the semantic defect remains (offsets and the
bit account are not stored: the reader derives them).

Every mutation says what the spec makes of it (``EXPECT``): ``refuse`` (the file is invalid),
``identical`` (still the same valid file), ``either`` (refused, or valid with the same tensors)
or ``any`` (may be a valid file with other tensors, e.g. a changed filter). A mutant is then
judged by what a reader does with it: open, ``verify()``, decode samples, labels, stored and
loss weights and ZCA. A *violation* is any other exception than a ``FormatError`` (including
``MemoryError``), an outcome its expectation excludes, more than ``--cpu`` seconds of CPU, more
than ``--memory-mib`` of address space, or a killed process. Mutants run in worker processes
with those limits (``RLIMIT_CPU`` and ``RLIMIT_AS``, Linux) and a wall-clock backstop, so a
reader that hangs, allocates gigabytes or aborts cannot take the run down; the worker is
replaced and the run goes on.

Mutant ``i`` of seed ``s`` depends only on ``(s, i)`` and the base files, so any violation can be
rebuilt with ``--only i`` and ``--save-dir``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import msgpack
import numpy as np
import zstandard

from ddformat.container.header import compress_header, decompress_header, zstd_dictionary
from ddformat.container.sections import align
from ddformat.limits import DEFAULT_LIMITS, MAGIC, MAJOR, PREAMBLE_SIZE

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "spec" / "vectors" / "valid"
EXPECT = ("refuse", "identical", "either", "any")
KNOWN_KINDS = ("samples", "labels", "weights", "zca", "views")
COMPONENTS = ("samples", "decoders", "entropy_networks", "labels", "weights", "other")
CODEC_NAMES = ("pixels", "ruo", "grouped", "indices", "dense", "topk", "counts", "float", "matrix")
MAX_NESTING = 32


# --------------------------------------------------------------------------- header trees


class Map(list):
    """A msgpack map as the list of its ``[key, value]`` pairs, so that duplicate keys (which
    msgpack allows and a Python dict would silently merge) survive a round trip."""


def load_tree(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False,
                           object_pairs_hook=lambda pairs: Map([k, v] for k, v in pairs))


def pack_tree(obj: Any) -> bytes:
    packer = msgpack.Packer(use_bin_type=True)
    out: list[bytes] = []

    def walk(o: Any) -> None:
        if isinstance(o, Map):
            out.append(packer.pack_map_header(len(o)))
            for k, v in o:
                walk(k)
                walk(v)
        elif isinstance(o, list):
            out.append(packer.pack_array_header(len(o)))
            for v in o:
                walk(v)
        else:
            out.append(packer.pack(o))

    walk(obj)
    return b"".join(out)


def tree(obj: Any) -> Any:
    """Plain Python values (dicts) as a tree of :class:`Map`."""
    if isinstance(obj, dict):
        return Map([k, tree(v)] for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return [tree(v) for v in obj]
    return obj


def clone(obj: Any) -> Any:
    if isinstance(obj, Map):
        return Map([clone(k), clone(v)] for k, v in obj)
    if isinstance(obj, list):
        return [clone(v) for v in obj]
    return obj


def get(m: Any, key: str, default: Any = None) -> Any:
    if isinstance(m, Map):
        for k, v in m:
            if k == key and type(k) is str:
                return v
    return default


def put(m: Any, key: str, value: Any) -> None:
    """Set every occurrence of ``key`` (duplicates included); add nothing."""
    if isinstance(m, Map):
        for pair in m:
            if pair[0] == key and type(pair[0]) is str:
                pair[1] = value


def put_or_add(m: Map, key: str, value: Any) -> None:
    """Set ``key``, adding it if absent (a writer leaves out fields at their default)."""
    if any(pair[0] == key and type(pair[0]) is str for pair in m):
        put(m, key, value)
    else:
        m.append([key, value])


def slots(obj: Any, path: str = "") -> Iterator[tuple[list, int, str]]:
    """Every value in a tree as ``(container, index, path)``; for a Map the index is the pair's."""
    if isinstance(obj, Map):
        for i, (k, v) in enumerate(obj):
            p = f"{path}.{k}" if path else str(k)
            yield obj, i, p
            yield from slots(v, p)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            p = f"{path}[{i}]"
            yield obj, i, p
            yield from slots(v, p)


def slot_value(container: list, i: int) -> Any:
    return container[i][1] if isinstance(container, Map) else container[i]


def set_slot(container: list, i: int, value: Any) -> None:
    if isinstance(container, Map):
        container[i][1] = value
    else:
        container[i] = value


def maps(obj: Any, path: str = "", depth: int = 1) -> Iterator[tuple[Map, str, int]]:
    """Every map in a tree with its path and nesting depth (the top-level map is depth 1)."""
    if isinstance(obj, Map):
        yield obj, path, depth
        for k, v in obj:
            yield from maps(v, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from maps(v, f"{path}[{i}]", depth + 1)


def same(a: Any, b: Any) -> bool:
    """Equal in value *and* msgpack type (``1``, ``1.0`` and ``True`` differ in a file)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Map) or isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


# --------------------------------------------------------------------------- drafts and resealing


@dataclass
class Draft:
    """A file taken apart: its header tree and its section bodies in table order."""

    header: Any
    bodies: list[bytes]
    minor: int = 0
    pinned: set[str] = field(default_factory=set)
    padding_byte: int | None = None
    trailing: bytes = b""
    store: Callable[[bytes], bytes] = compress_header
    """How the header's msgpack bytes are stored (a mutation may store them otherwise)."""

    @classmethod
    def parse(cls, data: bytes) -> "Draft":
        (minor, header_length) = struct.unpack_from("<HI", data, 10)
        header = load_tree(decompress_header(data[PREAMBLE_SIZE:PREAMBLE_SIZE + header_length],
                                             DEFAULT_LIMITS.max_header_bytes))
        bodies, pos = [], PREAMBLE_SIZE + header_length
        for e in get(header, "sections"):
            pos = align(pos, get(e, "alignment", 1))
            bodies.append(data[pos:pos + get(e, "length")])
            pos += get(e, "length")
        return cls(header, bodies, minor)

    def copy(self) -> "Draft":
        return Draft(clone(self.header), list(self.bodies), self.minor, set(self.pinned), self.padding_byte,
                     self.trailing, self.store)

    def entries(self) -> list[Any]:
        s = get(self.header, "sections")
        return s if isinstance(s, list) else []

    def entry(self, i: int) -> Any:
        e = self.entries()
        return e[i] if i < len(e) else None

    def is_pinned(self, path: str) -> bool:
        """Whether the mutation set ``path`` (or a map or array holding it, or a value in it)."""
        return any(_within(path, p) or _within(p, path) for p in self.pinned)

    def num_classes(self) -> int | None:
        k = get(get(self.header, "dataset"), "num_classes")
        return k if type(k) is int and 1 <= k <= 4096 else None


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def _align(pos: int, alignment: Any) -> int:
    if not (type(alignment) is int and 1 <= alignment <= 4096 and alignment & (alignment - 1) == 0):
        alignment = 64  # an entry the schema refuses anyway: any placement will do
    return align(pos, alignment)


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def seal(d: Draft) -> bytes | None:
    """Lay the draft out as a file with every checksum, length and the content hash recomputed,
    except the paths the mutation pinned, and the header stored as the draft says. ``None`` if
    the header cannot be encoded (the mutation is then skipped)."""
    try:
        return _seal(d)
    except OverflowError:  # an integer msgpack cannot hold: not a file anyone could write
        return None


def _seal(d: Draft) -> bytes | None:
    import hashlib

    for i, body in enumerate(d.bodies):
        for key, value in (("length", len(body)), ("crc32", _crc(body))):
            if not d.is_pinned(f"sections[{i}].{key}"):
                put(d.entry(i), key, value)
    if not d.is_pinned("provenance.content_hash"):
        put(get(d.header, "provenance"), "content_hash", hashlib.sha256(b"".join(d.bodies)).digest())
    raw = d.store(pack_tree(d.header))
    pos = PREAMBLE_SIZE + len(raw)
    gaps, placed = [], []
    for i, body in enumerate(d.bodies):
        start = _align(pos, get(d.entry(i), "alignment", 1))
        if start > pos:
            gaps.append(pos)
        placed.append(start)
        pos = start + len(body)
    file_length = pos + len(d.trailing)
    out = bytearray(file_length)
    out[PREAMBLE_SIZE:PREAMBLE_SIZE + len(raw)] = raw
    for start, body in zip(placed, d.bodies):
        out[start:start + len(body)] = body
    out[pos:] = d.trailing
    if d.padding_byte is not None:
        if not gaps:
            return None
        out[gaps[0]] = d.padding_byte
    pre = struct.pack("<8sHHIQI", MAGIC, MAJOR, d.minor, len(raw), file_length, _crc(raw))
    out[:PREAMBLE_SIZE] = pre + struct.pack("<I", _crc(pre))
    return bytes(out)


# --------------------------------------------------------------------------- values

_EDGE: list[Any] = [
    0, 1, -1, 2, 3, 255, 256, 4096, 65536, 65537, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1,
    2**63 - 1, 2**63, 2**64 - 1, -2**31, -2**63, 0.0, -0.0, 0.5, 1.5, 1e-300, 5e-324, 1e300, -1e300,
    math.nan, math.inf, -math.inf, "", "x", "\x00", "é", "samples", "labels", "weights", "zca",
    "ruo.arm", "pixels", "zstd", "none", "shuffle", "float16", "float32", "uint8", None, True, False,
    b"", b"\x00\x01", [], [0], [-1], [2**64 - 1], [None], ["x"],
]


def _neighbours(old: Any) -> list[Any]:
    if isinstance(old, bool):
        return [not old, int(old)]
    if isinstance(old, int):
        return [old + 1, old - 1, old * 2, old // 2, -old, float(old), str(old), old + 2**32, [old]]
    if isinstance(old, float):
        return [old * (1 + 1e-9), -old, old * 1e300, old * 1e-300, str(old)] + \
            ([int(old)] if math.isfinite(old) else [])
    if isinstance(old, str):
        return [old + "x", old[:-1], old.upper(), old * 2, old.encode(), [old]]
    if isinstance(old, list):
        out: list[Any] = [old[:-1], old + old[-1:], old[::-1], old * 2, Map()]
        if len(old) >= 2:
            i, j = 0, len(old) - 1
            out.append([old[j], *old[1:j], old[i]])
        return out
    if isinstance(old, Map):
        return [Map(), [], Map(old[:-1])]
    return []


def new_value(rng: random.Random, old: Any) -> Any:
    """A value unlike ``old``: an edge case, a near neighbour of it, or a huge string."""
    for _ in range(20):
        roll = rng.random()
        if roll < 0.45:
            v = rng.choice(_neighbours(old) or _EDGE)
        elif roll < 0.98:
            v = rng.choice(_EDGE)
        else:
            v = "x" * rng.choice([70_000, 1_000_000])
        v = clone(v)
        if not same(v, old):
            return v
    return "mutated"


def deep_value(levels: int) -> Any:
    """A value whose containers nest ``levels`` deep (maps and arrays alternating)."""
    v: Any = 0
    for i in range(levels):
        v = Map([["d", v]]) if i % 2 else [v]
    return v


# --------------------------------------------------------------------------- zstd and varints


def zstd_declaring(size: int, payload: bytes = b"\x00") -> bytes:
    """A single-segment zstd frame whose header declares ``size`` content bytes but whose one raw
    block holds ``payload``: a decoder that trusts the header allocates ``size``."""
    block = (1 | (len(payload) << 3)).to_bytes(3, "little")
    return struct.pack("<IBQ", 0xFD2FB528, 0b11100000, size) + block + payload


def skippable_frame(data: bytes = b"hidden") -> bytes:
    return struct.pack("<II", 0x184D2A50, len(data)) + data


def varint(value: int, extra: int = 0) -> bytes:
    """LEB128 of ``value``, padded with ``extra`` redundant continuation bytes (non-canonical)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value or extra:
            out.append(byte | 0x80)
            if not value:
                break
        else:
            out.append(byte)
            return bytes(out)
    for i in range(extra):
        out.append(0x80 if i < extra - 1 else 0x00)
    return bytes(out)


def read_varints(data: bytes) -> list[tuple[int, int]] | None:
    """``(start, end)`` of each varint filling ``data``, or ``None`` if it does not parse."""
    spans, start = [], 0
    for i, b in enumerate(data):
        if b < 0x80:
            spans.append((start, i + 1))
            start = i + 1
    return spans if start == len(data) else None


# --------------------------------------------------------------------------- mutations


@dataclass
class Mutation:
    description: str
    expect: str


Op = Callable[[random.Random, Draft], "Mutation | None"]


def _kinds(d: Draft) -> list[Any]:
    return [get(e, "kind") for e in d.entries()]


def _codec(d: Draft, i: int) -> Any:
    return get(d.entry(i), "codec")


def _is_ruo(d: Draft, i: int) -> bool:
    return _codec(d, i) == "ruo"


def _optional_kind(kind: Any) -> bool:
    """Kinds whose removal leaves a valid file with other tensors (or fewer sections)."""
    return kind not in ("samples", "labels") and not (isinstance(kind, str) and kind.startswith("ruo."))


def _value_expectation(d: Draft, path: str, old: Any, new: Any) -> str:
    """What the spec makes of replacing the value at ``path`` (a deliberately short list: the
    cases where the answer is certain; everything else must be refused or decode identically)."""
    if path == "provenance.content_hash":
        return "refuse"
    if path.startswith("dataset.sample_shape"):
        return "any"  # a reshape with the same element count is a valid file with other tensors
    if path in ("dataset.num_classes", "dataset.num_samples", "dataset.sample_dtype"):
        return "refuse"
    if path == "dataset.name" or path.startswith("dataset.class_names["):
        return "identical" if isinstance(new, str) else "refuse"
    if not path.startswith("sections["):
        return "either"
    i = int(path[len("sections["):path.index("]")])
    rest = path[path.index("]") + 2:] if "]." in path else ""
    kind = get(d.entry(i), "kind")
    if rest in ("length", "crc32") or rest.startswith("class_bytes"):
        return "refuse"
    if rest == "alignment":
        good = type(new) is int and 1 <= new <= 4096 and new & (new - 1) == 0
        return "identical" if good else "refuse"
    if rest == "component":
        return "identical" if new in COMPONENTS else "refuse"
    if kind not in KNOWN_KINDS and not (isinstance(kind, str) and kind.startswith("ruo.")):
        if rest.startswith("params."):
            return "identical"  # free-form, and nobody reads them
        if rest == "params":
            return "identical" if isinstance(new, Map) else "refuse"
        if rest == "codec":
            return "identical" if isinstance(new, str) else "refuse"
        return "either"
    if rest == "required":
        return "refuse"
    if rest == "kind":
        return "any" if _optional_kind(kind) else "refuse"
    if rest == "codec":
        return "refuse" if new not in CODEC_NAMES else "either"
    if _is_ruo(d, i) or rest == "params.filter" or not rest:
        return "any"  # ruo latents carry no histogram check; filters are reversible transforms
    if rest == "params.kl_to_source":
        return "either"
    return "either"


def op_value(rng: random.Random, d: Draft) -> Mutation | None:
    part = rng.choices(["dataset", "sections", "provenance", "recipe"], [2, 6, 1, 1])[0]
    candidates = [s for s in slots(d.header) if s[2] == part or s[2].startswith(part + ".")
                  or s[2].startswith(part + "[")]
    if not candidates:
        return None
    container, i, path = rng.choice(candidates)
    old = slot_value(container, i)
    new = new_value(rng, old)
    expect = _value_expectation(d, path, old, new)  # judged by what the section was (its kind and codec)
    set_slot(container, i, new)
    d.pinned.add(path)
    return Mutation(f"{path}: {_short(old)} -> {_short(new)}", expect)


def _pick_key(rng: random.Random, d: Draft) -> tuple[list, str, int]:
    """A non-empty map of the header (as its list of [key, value] pairs), its path and an index in it."""
    m, path = rng.choice([(m, p) for m, p, _ in maps(d.header) if m])
    return m, path, rng.randrange(len(m))


def op_delete_key(rng: random.Random, d: Draft) -> Mutation | None:
    m, path, j = _pick_key(rng, d)
    key, old = m[j]
    del m[j]
    full = f"{path}.{key}" if path else str(key)
    d.pinned.add(full)
    if full == "provenance.content_hash":
        expect = "refuse"
    elif full.startswith("sections[") and full.endswith(".alignment"):
        expect = "identical"  # absent means 1: the sections are laid out again
    elif full.startswith("sections[") and full.endswith(".required"):
        expect = "identical" if old is True else "refuse"  # absent means true
    elif full.startswith("sections[") and full.endswith((".length", ".crc32", ".kind", ".codec", ".component")):
        expect = "refuse"
    elif full.startswith("sections[") and ".params" in full and _is_ruo(d, int(full[9:full.index("]")])):
        expect = "any"
    else:
        expect = "either"
    return Mutation(f"delete {full}", expect)


def op_duplicate_key(rng: random.Random, d: Draft) -> Mutation | None:
    m, path, j = _pick_key(rng, d)
    key, value = m[j]
    dup = clone(value) if rng.random() < 0.5 else new_value(rng, value)
    m.insert(rng.randrange(len(m) + 1), [key, dup])
    return Mutation(f"duplicate key {path + '.' if path else ''}{key} ({_short(dup)})", "refuse")


def op_unknown_key(rng: random.Random, d: Draft) -> Mutation | None:
    m, path = rng.choice([(m, p) for m, p, _ in maps(d.header)])
    if rng.random() < 0.7:
        key: Any = f"x_unknown_{rng.randrange(1000)}"
        m.insert(rng.randrange(len(m) + 1), [key, clone(rng.choice(_EDGE))])
        return Mutation(f"unknown key {path}.{key}", "identical")
    key = rng.choice([1, -1, 2**64 - 1, b"bytes", 1.5, None, True, [1]])
    m.insert(rng.randrange(len(m) + 1), [key, 0])
    return Mutation(f"non-string key {_short(key)} in {path or 'header'}", "refuse")


def op_nesting(rng: random.Random, d: Draft) -> Mutation | None:
    """A value nested to around the limit, counted as the spec counts: the top-level map is
    depth 1 and every map or array inside adds one."""
    candidates = [(m, p, depth) for m, p, depth in maps(d.header)
                  if p in ("provenance", "provenance.parameters", "recipe") or p.endswith(".params")]
    if not candidates:
        return None
    m, path, depth = rng.choice(candidates)
    total = rng.randint(MAX_NESTING - 2, MAX_NESTING + 3)
    levels = total - depth
    m.append(["x_deep", deep_value(levels)])
    return Mutation(f"{path}.x_deep nests the header {total} deep", "identical" if total <= MAX_NESTING else "refuse")


def op_section_identity(rng: random.Random, d: Draft) -> Mutation | None:
    """Another kind, codec or ``required`` flag for one section."""
    entries = d.entries()
    if not entries:
        return None
    i = rng.randrange(len(entries))
    e = entries[i]
    kind, codec = get(e, "kind"), get(e, "codec")
    known = kind in KNOWN_KINDS or (isinstance(kind, str) and kind.startswith("ruo."))
    which = rng.choice(["kind", "codec", "required", "unknown-codec-optional"])
    if which == "kind":
        new = rng.choice([k for k in (*KNOWN_KINDS, "ruo.arm", "ruo.decoder", "vendor.x", "", "samples.x")
                          if k != kind])
        put(e, "kind", new)
        if not known:
            expect = "refuse" if new in _kinds(d)[:i] + _kinds(d)[i + 1:] or new in KNOWN_KINDS or new == "" \
                else "either"
        else:
            expect = "any" if _optional_kind(kind) else "refuse"
        return Mutation(f"sections[{i}].kind {kind!r} -> {new!r}", expect)
    if which == "codec":
        new = rng.choice([c for c in (*CODEC_NAMES, "zzz") if c != codec])
        put(e, "codec", new)
        expect = "identical" if not known else "refuse" if new == "zzz" else "any" if _is_ruo(d, i) else "either"
        return Mutation(f"sections[{i}].codec {codec!r} -> {new!r}", expect)
    if which == "required":
        put_or_add(e, "required", not get(e, "required", True))
        # an unknown section that becomes optional is skipped; a known one must stay required
        return Mutation(f"sections[{i}].required flipped",
                        "refuse" if known or get(e, "required") is not False else "identical")
    if not known:
        return None
    put(e, "codec", "zzz")
    put_or_add(e, "required", False)
    return Mutation(f"sections[{i}] ({kind}) gets an unknown codec and is marked optional", "refuse")


def op_duplicate_section(rng: random.Random, d: Draft) -> Mutation | None:
    entries = d.entries()
    if not entries:
        return None
    i = rng.randrange(len(entries))
    j = rng.randrange(len(entries) + 1)
    copy = clone(entries[i])
    renamed = rng.random() < 0.3
    if renamed:
        put(copy, "kind", f"vendor.copy{i}")
        put_or_add(copy, "required", False)
    entries.insert(j, copy)
    d.bodies.insert(j, d.bodies[i])
    if renamed:
        return Mutation(f"sections[{i}] copied to {j} as an unknown optional kind", "identical")
    return Mutation(f"sections[{i}] duplicated at {j}", "refuse")


def op_remove_section(rng: random.Random, d: Draft) -> Mutation | None:
    entries = d.entries()
    if len(entries) < 2:
        return None
    i = rng.randrange(len(entries))
    kind = get(entries[i], "kind")
    del entries[i]
    del d.bodies[i]
    return Mutation(f"section {kind!r} removed", "any" if _optional_kind(kind) else "refuse")


def op_reorder(rng: random.Random, d: Draft) -> Mutation | None:
    entries = d.entries()
    if len(entries) < 2:
        return None
    i, j = rng.sample(range(len(entries)), 2)
    entries[i], entries[j] = entries[j], entries[i]
    d.bodies[i], d.bodies[j] = d.bodies[j], d.bodies[i]
    return Mutation(f"sections {i} and {j} swapped in the table and the file", "identical")


def op_layout(rng: random.Random, d: Draft) -> Mutation | None:
    """A length or CRC-32 that disagrees with the bytes, everything else resealed."""
    entries = d.entries()
    if not entries:
        return None
    i = rng.randrange(len(entries))
    key = rng.choice(["length", "crc32"])
    old = get(entries[i], key)
    if type(old) is not int:
        return None
    new = rng.choice([old + 1, old - 1, old + 64, old - 64, 0, 2**32 - 1, 2**63, 2**64 - 1, old ^ 1])
    if key == "crc32":
        new = old ^ (1 << rng.randrange(32))
    if new == old or new < 0:
        return None
    put(entries[i], key, new)
    d.pinned.add(f"sections[{i}].{key}")
    return Mutation(f"sections[{i}].{key}: {old} -> {new}", "refuse")


def op_preamble_and_padding(rng: random.Random, d: Draft) -> Mutation | None:
    which = rng.choice(["minor", "padding", "trailing"])
    if which == "minor":
        d.minor = rng.choice([1, 7, 65535])
        return Mutation(f"minor version {d.minor}", "identical")
    if which == "padding":
        d.padding_byte = rng.randrange(1, 256)
        i = rng.randrange(len(d.entries()))
        alignment = rng.choice([16, 64, 4096])
        if get(d.entry(i), "alignment", 1) == 1:  # sections are packed unless aligned: make a gap
            put_or_add(d.entry(i), "alignment", alignment)
        return Mutation(f"padding byte {d.padding_byte:#x} (sections[{i}] aligned to {alignment})", "refuse")
    d.trailing = bytes(rng.choice([[0], [0] * 64, [1, 2, 3]]))
    return Mutation(f"{len(d.trailing)} bytes after the last section", "refuse")


def op_class_bytes(rng: random.Random, d: Draft) -> Mutation | None:
    """``class_bytes`` that no longer say which bytes are whose; the bit account is derived from
    them, so only the stale attribution remains."""
    entries = d.entries()
    k = d.num_classes()
    if not entries or k is None:
        return None
    i = rng.randrange(len(entries))
    e = entries[i]
    cb, length = get(e, "class_bytes"), get(e, "length")
    if isinstance(cb, list) and all(type(b) is int for b in cb) and len(cb) == k:
        variants = ["drop"] + (["move"] if k >= 2 and any(cb) else []) + (["less"] if any(cb) else [])
        variants += ["more"] if sum(cb) < length else []
        which = rng.choice(variants)
        if which == "drop":
            if len(get(get(e, "params"), "frames") or []) != k or k == 1 or _is_ruo(d, i):
                return None  # absent class_bytes are right for a one-frame section
            put(e, "class_bytes", None)
            return Mutation(f"sections[{i}].class_bytes removed from a class-grouped section", "refuse")
        new = list(cb)
        if which == "move":
            a = rng.choice([c for c in range(k) if cb[c]])
            b = rng.choice([c for c in range(k) if c != a])
            new[a] -= 1
            new[b] += 1
        elif which == "less":
            a = rng.choice([c for c in range(k) if cb[c]])
            new[a] -= 1
        else:
            new[rng.randrange(k)] += 1
        put(e, "class_bytes", new)
        return Mutation(f"sections[{i}].class_bytes {cb} -> {new} ({which})", "refuse")
    if cb is None and type(length) is int and length > 0:
        new = [length] + [0] * (k - 1)
        if k == 1 and len(get(get(e, "params"), "frames") or []) == 1:
            return None  # with one class and one frame, [length] is what class_bytes would be
        kind = get(e, "kind")
        if kind not in KNOWN_KINDS and not (isinstance(kind, str) and kind.startswith("ruo.")):
            return None  # an unknown section's attribution is its writer's business
        put_or_add(e, "class_bytes", new)
        return Mutation(f"sections[{i}] ({kind}) gets class_bytes {new} it does not define", "refuse")
    return None


# ---- payload mutations. A row section's params say where its frames are.


def _framed(d: Draft) -> list[int]:
    out = []
    for i, e in enumerate(d.entries()):
        frames = get(get(e, "params"), "frames")
        if (isinstance(frames, list) and frames and all(type(f) is int and f >= 0 for f in frames)
                and sum(frames) == len(d.bodies[i])):
            out.append(i)
    return out


def _frames(d: Draft, i: int) -> tuple[list[int], list[bytes]]:
    lengths = get(get(d.entry(i), "params"), "frames")
    ends = np.cumsum([0, *lengths]).tolist()
    return lengths, [d.bodies[i][a:b] for a, b in zip(ends[:-1], ends[1:])]


def _set_frames(d: Draft, i: int, frames: list[bytes], class_bytes: bool = True) -> None:
    """New frame contents with ``params.frames`` (and, if ``class_bytes``, class_bytes) to match."""
    e = d.entry(i)
    put(get(e, "params"), "frames", [len(f) for f in frames])
    cb = get(e, "class_bytes")
    if class_bytes and isinstance(cb, list) and len(cb) == len(frames):
        put(e, "class_bytes", [len(f) for f in frames])
    d.bodies[i] = b"".join(frames)


def _payload_expect(d: Draft, i: int) -> str:
    return "any" if _is_ruo(d, i) else "refuse"


def op_frames(rng: random.Random, d: Draft) -> Mutation | None:
    framed = _framed(d)
    if not framed:
        return None
    i = rng.choice(framed)
    lengths, frames = _frames(d, i)
    zstd = get(get(d.entry(i), "params"), "compression") == "zstd"
    nonempty = [j for j, f in enumerate(frames) if f]
    which = rng.choice(["swap", "truncate", "extend", "huge", "no-size", "skippable", "recompress", "raw<->zstd"])
    where = f"sections[{i}] ({get(d.entry(i), 'kind')})"
    if which == "swap":
        pairs = [(a, b) for a in range(len(frames)) for b in range(a + 1, len(frames)) if lengths[a] != lengths[b]]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        frames[a], frames[b] = frames[b], frames[a]
        _set_frames(d, i, frames, class_bytes=False)
        return Mutation(f"{where} frames {a} and {b} swapped, class_bytes left as they were", _payload_expect(d, i))
    if not nonempty:
        return None
    j = rng.choice(nonempty)
    if which == "truncate":
        cut = rng.randint(1, len(frames[j]))
        frames[j] = frames[j][:-cut]
        _set_frames(d, i, frames)
        return Mutation(f"{where} frame {j} loses its last {cut} bytes", _payload_expect(d, i))
    if which == "extend":
        extra = bytes(rng.choice([[0], [0] * 4, [rng.randrange(256) for _ in range(3)]]))
        frames[j] = frames[j] + extra
        _set_frames(d, i, frames)
        return Mutation(f"{where} frame {j} gains {len(extra)} bytes", _payload_expect(d, i))
    if _is_ruo(d, i):
        return None  # ruo streams are ANS words, not zstd frames
    if which == "huge":
        size = rng.choice([2**31, 2**40, 2**63, 2**64 - 1, len(frames[j]) * 1000 + 7])
        frames[j] = zstd_declaring(size)
        _set_frames(d, i, frames)
        return Mutation(f"{where} frame {j} is a zstd frame declaring {size} bytes", "refuse")
    if not zstd:
        if which != "raw<->zstd":
            return None
        cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
        put(get(d.entry(i), "params"), "compression", "zstd")
        _set_frames(d, i, [cctx.compress(f) if f else b"" for f in frames])
        return Mutation(f"{where} raw frames stored as zstd frames instead", "identical")
    content = zstandard.ZstdDecompressor().decompress(frames[j])
    if which == "no-size":
        frames[j] = zstandard.ZstdCompressor(write_content_size=False).compress(content)
        _set_frames(d, i, frames)
        return Mutation(f"{where} frame {j} does not declare its content size", "refuse")
    if which == "skippable":
        frames[j] = frames[j] + skippable_frame()
        _set_frames(d, i, frames)
        return Mutation(f"{where} frame {j} is followed by a skippable zstd frame", "refuse")
    if which == "recompress":
        level, check = rng.choice([1, 9, 19]), rng.random() < 0.5
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=check, write_content_size=True)
        frames[j] = cctx.compress(content)
        _set_frames(d, i, frames)
        return Mutation(f"{where} frame {j} recompressed at level {level} (checksum {check})", "identical")
    put(get(d.entry(i), "params"), "compression", "none")
    _set_frames(d, i, [zstandard.ZstdDecompressor().decompress(f) if f else b"" for f in frames])
    return Mutation(f"{where} zstd frames stored raw instead", "identical")


def op_varints(rng: random.Random, d: Draft) -> Mutation | None:
    """Grouped labels (a body of K varints) and uncompressed count tables of coded streams."""
    targets = []
    for i, e in enumerate(d.entries()):
        params = get(e, "params")
        if get(e, "codec") == "grouped":
            targets.append((i, 0, len(d.bodies[i])))
        elif get(params, "table_compression") == "none" and type(get(params, "tables")) is int:
            targets.append((i, 0, get(params, "tables")))
    if not targets:
        return None
    i, start, end = rng.choice(targets)
    spans = read_varints(d.bodies[i][start:end])
    if not spans:
        return None
    j = rng.randrange(len(spans))
    a, b = spans[j]
    body = d.bodies[i]
    value = sum((body[start + a + n] & 0x7F) << (7 * n) for n in range(b - a))
    which = rng.choice(["overlong", "too-long", "over-32-bits", "count+1", "count-1"])
    if which == "overlong":
        new = varint(value, extra=rng.randint(1, max(1, 5 - (b - a))))
    elif which == "too-long":
        new = varint(value, extra=6 - (b - a) if b - a < 6 else 1)
    elif which == "over-32-bits":
        new = varint(value + 2**32)
    elif which == "count+1":
        new = varint(value + 1)
    else:
        if value == 0:
            return None
        new = varint(value - 1)
    d.bodies[i] = body[:start + a] + new + body[start + b:]
    e = d.entry(i)
    if get(e, "codec") == "grouped":
        cb = get(e, "class_bytes")
        if isinstance(cb, list) and j < len(cb):
            cb = list(cb)
            cb[j] = len(new)
            put(e, "class_bytes", cb)
    else:
        put(get(e, "params"), "tables", end - start - (b - a) + len(new))
    return Mutation(f"sections[{i}] ({get(e, 'codec')}) varint {j} = {value}: {which}", "refuse")


def op_words(rng: random.Random, d: Draft) -> Mutation | None:
    """The ANS word stream of a coded section (indices, topk) changed."""
    targets = [i for i, e in enumerate(d.entries())
               if type(get(get(e, "params"), "words")) is int and type(get(get(e, "params"), "tables")) is int
               and get(get(e, "params"), "tables") + 4 * get(get(e, "params"), "words") == len(d.bodies[i])]
    if not targets:
        return None
    i = rng.choice(targets)
    params = get(d.entry(i), "params")
    tables, words = get(params, "tables"), get(params, "words")
    head, body = d.bodies[i][:tables], bytearray(d.bodies[i][tables:])
    which = rng.choice(["flip", "drop-last", "append", "zero"])
    if which == "flip" and words:
        bit = rng.randrange(8 * len(body))
        body[bit // 8] ^= 1 << (bit % 8)
    elif which == "drop-last" and words:
        body = body[:-4]
    elif which == "append":
        body += struct.pack("<I", rng.choice([0, 1, 2**32 - 1, rng.randrange(2**32)]))
    elif which == "zero" and words:
        body = bytearray(len(body))
    else:
        return None
    put(params, "words", len(body) // 4)
    d.bodies[i] = head + bytes(body)
    # A changed stream may decode to another sequence with the same histograms: a valid file.
    return Mutation(f"sections[{i}] ({get(d.entry(i), 'codec')}) words: {which}", "any")


def op_tables_zstd(rng: random.Random, d: Draft) -> Mutation | None:
    """zstd-compressed count tables declaring another size than their content, or none."""
    targets = [i for i, e in enumerate(d.entries()) if get(get(e, "params"), "table_compression") == "zstd"
               and type(get(get(e, "params"), "tables")) is int]
    if not targets:
        return None
    i = rng.choice(targets)
    params = get(d.entry(i), "params")
    tables = get(params, "tables")
    blob, rest = d.bodies[i][:tables], d.bodies[i][tables:]
    which = rng.choice(["huge", "no-size", "recompress"])
    if which == "huge":
        new = zstd_declaring(rng.choice([2**32, 2**62, 10**7]))
    else:
        content = zstandard.ZstdDecompressor().decompress(blob)
        new = zstandard.ZstdCompressor(level=19, write_content_size=which == "recompress").compress(content)
    put(params, "tables", len(new))
    d.bodies[i] = new + rest
    return Mutation(f"sections[{i}] count tables: {which}", "identical" if which == "recompress" else "refuse")


def op_content_hash(rng: random.Random, d: Draft) -> Mutation | None:
    prov = get(d.header, "provenance")
    old = get(prov, "content_hash")
    if not isinstance(old, bytes):
        return None
    which = rng.choice(["bit", "short", "long", "hex"])
    if which == "bit":
        bit = rng.randrange(8 * len(old))
        new: Any = bytes(b ^ (1 << bit % 8 if n == bit // 8 else 0) for n, b in enumerate(old))
    elif which == "short":
        new = old[:-1]
    elif which == "long":
        new = old + b"\0"
    else:
        new = "sha256:" + old.hex()
    put(prov, "content_hash", new)
    d.pinned.add("provenance.content_hash")
    return Mutation(f"content_hash: {which}", "refuse")


def op_header_frame(rng: random.Random, d: Draft) -> Mutation | None:
    """The header's msgpack bytes stored in another zstd frame than the writer's, or in none."""
    which = rng.choice(["recompress", "no-dictionary", "no-size", "huge", "other-size", "trailing", "skippable",
                        "two-frames", "dictionary-id", "plain", "truncated"])
    if which == "recompress":
        level, check = rng.choice([1, 3, 9, 22]), rng.random() < 0.5
        d.store = lambda text: zstandard.ZstdCompressor(
            level=level, write_checksum=check, dict_data=zstd_dictionary()).compress(text)
        return Mutation(f"header recompressed at level {level} (checksum {check})", "identical")
    if which == "no-dictionary":  # a frame that never refers to the dictionary decodes alike with it
        d.store = zstandard.ZstdCompressor(level=19).compress
        return Mutation("header compressed without the dictionary", "identical")
    if which == "no-size":
        d.store = lambda text: zstandard.ZstdCompressor(write_content_size=False,
                                                        dict_data=zstd_dictionary()).compress(text)
        return Mutation("header frame does not declare its content size", "refuse")
    if which == "huge":
        size = rng.choice([2**24 + 1, 2**31, 2**64 - 2])
        d.store = lambda text: zstd_declaring(size)
        return Mutation(f"header frame declares {size} bytes", "refuse")
    if which == "other-size":
        delta = rng.choice([-1, 1, 100])
        d.store = lambda text: _with_content_size(compress_header(text), len(text) + delta)
        return Mutation(f"header frame declares {delta:+d} bytes", "refuse")
    if which in ("trailing", "skippable", "two-frames"):
        extra = {"trailing": b"\0", "skippable": skippable_frame(),
                 "two-frames": zstandard.ZstdCompressor().compress(b"\x80")}[which]
        d.store = lambda text: compress_header(text) + extra
        return Mutation(f"header frame followed by {which}", "refuse")
    if which == "dictionary-id":
        dict_id = rng.choice([1, 7, 255])
        d.store = lambda text: _with_dictionary_id(compress_header(text), dict_id)
        return Mutation(f"header frame names dictionary {dict_id}", "refuse")
    if which == "plain":
        d.store = lambda text: text
        return Mutation("header stored as plain msgpack", "refuse")
    cut = rng.randint(1, 8)
    d.store = lambda text: compress_header(text)[:-cut]
    return Mutation(f"header frame loses its last {cut} bytes", "refuse")


def _with_content_size(frame: bytes, size: int) -> bytes:
    """A single-segment frame (as the writer makes them) with its content size field rewritten
    as 8 bytes."""
    fhd = frame[4]
    width = (1, 2, 4, 8)[fhd >> 6] if fhd & 0x20 else (0, 2, 4, 8)[fhd >> 6]
    start = 5 + (0 if fhd & 0x20 else 1) + (0, 1, 2, 4)[fhd & 3]
    return frame[:4] + bytes([fhd | 0xC0]) + frame[5:start] + struct.pack("<Q", size) + frame[start + width:]


def _with_dictionary_id(frame: bytes, dict_id: int) -> bytes:
    """A frame without a dictionary ID (as the writer makes them) naming dictionary ``dict_id``."""
    fhd = frame[4]
    at = 5 + (0 if fhd & 0x20 else 1)
    return frame[:4] + bytes([fhd | 1]) + frame[5:at] + bytes([dict_id]) + frame[at:]


def op_inflate(rng: random.Random, d: Draft) -> Mutation | None:
    """Far more samples, or far bigger ones, than the payload holds, with the samples' first
    frame (or slice) claiming the difference as a zstd frame that declares it: a reader must
    refuse by its limits, before it allocates or computes anything of that size."""
    ds = get(d.header, "dataset")
    n, shape, dtype = get(ds, "num_samples"), get(ds, "sample_shape"), get(ds, "sample_dtype")
    kinds = _kinds(d)
    if "samples" not in kinds or not isinstance(shape, list) or type(n) is not int:
        return None
    i = kinds.index("samples")
    params = get(d.entry(i), "params")
    if rng.random() < 0.5:
        new_n, new_shape = rng.choice([2**20, 2**24, 2**31 - 1]), list(shape)
    else:
        new_n, new_shape = n, list(shape)
        new_shape[rng.randrange(len(shape))] = rng.choice([2048, 4096, 65536])
    put(ds, "num_samples", new_n)
    put(ds, "sample_shape", new_shape)
    extra = new_n - n
    rows, slices = get(params, "frame_rows"), get(params, "slices")
    if isinstance(rows, list) and rows and i in _framed(d):
        row_bytes = math.prod(new_shape) * {"uint8": 1, "float16": 2, "float32": 4}.get(dtype, 1)
        _, frames = _frames(d, i)
        put(params, "frame_rows", [rows[0] + extra, *rows[1:]])
        put(params, "compression", "zstd")
        frames[0] = zstd_declaring((rows[0] + extra) * row_bytes)
        _set_frames(d, i, frames)
    elif isinstance(slices, list) and slices:
        put(params, "slices", [slices[0] + extra, *slices[1:]])
    return Mutation(f"dataset claims {new_n} samples of shape {new_shape}", "refuse")


def op_payload_byte(rng: random.Random, d: Draft) -> Mutation | None:
    """Any byte of any payload: the resealed file may well be valid with other tensors."""
    candidates = [i for i, b in enumerate(d.bodies) if b]
    if not candidates:
        return None
    i = rng.choice(candidates)
    body = bytearray(d.bodies[i])
    pos = rng.randrange(len(body))
    body[pos] ^= 1 << rng.randrange(8)
    d.bodies[i] = bytes(body)
    return Mutation(f"sections[{i}] byte {pos} flipped", "any")


OPS: dict[str, tuple[float, Op]] = {
    "value": (8, op_value),
    "delete_key": (2, op_delete_key),
    "duplicate_key": (2, op_duplicate_key),
    "unknown_key": (1.5, op_unknown_key),
    "nesting": (1, op_nesting),
    "section_identity": (2, op_section_identity),
    "duplicate_section": (1, op_duplicate_section),
    "remove_section": (1, op_remove_section),
    "reorder": (1, op_reorder),
    "layout": (1, op_layout),
    "preamble_padding": (1, op_preamble_and_padding),
    "class_bytes": (2, op_class_bytes),
    "frames": (4, op_frames),
    "varints": (2, op_varints),
    "words": (1.5, op_words),
    "tables_zstd": (1, op_tables_zstd),
    "content_hash": (1, op_content_hash),
    "header_frame": (1.5, op_header_frame),
    "inflate": (1, op_inflate),
    "payload_byte": (1.5, op_payload_byte),
}


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- base files


def base_files() -> dict[str, bytes]:
    """The valid test vectors plus files from :func:`ddformat.save` that exercise what the
    vectors do not: zstd frames, wide counts, float16 weights, dense float32, top-k over an
    unsorted set, ZCA, and hard labels in any order."""
    import ddformat

    out = {p.stem: p.read_bytes() for p in sorted(VECTORS.glob("*.dd"))}
    rng = np.random.default_rng(7)
    ramp = np.linspace(0, 255, 64).reshape(1, 8, 8)
    smooth = np.clip(ramp + rng.integers(0, 6, size=(12, 1, 8, 8)), 0, 255).astype(np.uint8)
    soft = rng.dirichlet(np.full(4, 0.5), size=10).astype(np.float32)
    soft /= soft.sum(axis=1, keepdims=True)
    specs: dict[str, tuple[tuple, dict]] = {
        "zstd_pixels_counts": ((smooth, np.arange(12) % 3), dict(
            weights=rng.integers(1, 3000, size=12), recipe={"weighting": {"scheme": "proportional"}})),
        "dense32_float16_weights": ((rng.normal(size=(10, 2, 3, 3)).astype(np.float32), soft), dict(
            weights=rng.uniform(0.5, 2, size=10).astype(np.float32),
            codec_options={"labels": {"dtype": "float32"}, "weights": {"dtype": "float16"}},
            recipe={"loss": "kl", "weighting": {"scheme": "explicit", "normalization": "batch"}},
            parameters={"seed": 1, "nested": {"a": [1, 2.5, {"b": None}]}})),
        "topk_unsorted": ((smooth[:10], soft), dict(labels_codec="topk", sort_by_class=False,
                                                    codec_options={"labels": {"k": 3, "bits": 5}})),
        "zca_indices": ((rng.normal(size=(9, 1, 2, 2)).astype(np.float16), rng.integers(0, 5, size=9)), dict(
            sort_by_class=False, num_classes=5,
            zca=(rng.normal(size=4).astype(np.float32), rng.normal(size=(4, 4)).astype(np.float32)))),
    }
    with tempfile.TemporaryDirectory(prefix="ddfuzz-bases-") as tmp:
        for name, (args, kwargs) in specs.items():
            out[name] = ddformat.save(Path(tmp) / f"{name}.dd", *args, name=name, **kwargs).read_bytes()
    return out


# --------------------------------------------------------------------------- generating mutants


@dataclass
class Mutant:
    index: int
    base: str
    op: str
    description: str
    expect: str
    data: bytes


def mutant(index: int, seed: int, bases: dict[str, bytes], drafts: dict[str, Draft]) -> Mutant:
    """Mutant ``index`` of ``seed``: a function of those two and the bases alone."""
    rng = random.Random(f"{seed}:{index}")
    names = sorted(bases)
    base = names[index % len(names)]
    ops, weights = zip(*((name, w) for name, (w, _) in OPS.items()))
    while True:
        op = rng.choices(ops, weights)[0]
        d = drafts[base].copy()
        m = OPS[op][1](rng, d)
        if m is None:
            continue
        data = seal(d)
        if data is not None:
            return Mutant(index, base, op, m.description, m.expect, data)


# --------------------------------------------------------------------------- worker processes


def _send(stream: Any, msg: dict[str, Any]) -> None:
    blob = msgpack.packb(msg, use_bin_type=True)
    stream.write(struct.pack("<I", len(blob)) + blob)
    stream.flush()


def _recv(stream: Any) -> dict[str, Any] | None:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack("<I", head)
    blob = stream.read(n)
    return msgpack.unpackb(blob, raw=False) if len(blob) == n else None


def _digest(a: np.ndarray | None) -> str | None:
    import hashlib

    if a is None:
        return None
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


def read_everything(path: Path) -> dict[str, str | None]:
    """What a reader makes of a file: open, verify, then every tensor (digests)."""
    import ddformat

    with ddformat.open(path) as f:
        f.verify()
        f.loss_weights()
        zca = f.zca()
        views = f.views()
        return {
            "samples": _digest(f.samples()),
            "labels": _digest(f.labels()),
            "weights": _digest(f.stored_weights()),
            "zca": None if zca is None else _digest(np.concatenate([zca[0][None], zca[1]])),
            "views": None if views is None else _digest(np.concatenate(
                [views.crops, views.flips[..., None], views.partners[..., None], views.mix_boxes, views.indices,
                 views.levels], axis=-1).astype(np.int64)),
        }


_FAULTS: dict[str, Callable[[], Any]] = {
    "alloc": lambda: np.ones(2**31, dtype=np.uint8),
    "spin": lambda: any(iter(int, 1)),
    "abort": os.abort,
    "keyerror": lambda: {}["section"],
    "sleep": lambda: time.sleep(3600),
}
"""Deliberately broken "readers" for ``--selftest``: each must be reported, none may stop the run."""


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _limit(cpu: float, memory: int) -> None:
    """At most ``memory`` more bytes of address space and about ``cpu`` more CPU seconds (the
    kernel enforces CPU limits in whole seconds: SIGXCPU ends the worker between ``cpu`` and
    ``cpu + 1`` seconds; the measured time is then compared with ``cpu`` exactly)."""
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + memory, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(_cpu_seconds() + cpu) + 1, resource.RLIM_INFINITY))


def worker(cpu: float, memory: int) -> None:
    """Serve check requests on stdin/stdout until stdin closes."""
    from ddformat import FormatError

    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the protocol
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    expected: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ddfuzz-") as tmp:
        path = Path(tmp) / "mutant.dd"
        while (msg := _recv(sys.stdin.buffer)) is not None:
            path.write_bytes(msg["data"])
            if msg["op"] == "base":
                expected[msg["name"]] = read_everything(path)
                _send(proto, {"ok": True})
                continue
            _limit(cpu, memory)
            start = _cpu_seconds()
            reply: dict[str, Any] = {}
            try:
                if msg.get("fault"):
                    _FAULTS[msg["fault"]]()
                got = read_everything(path)
                reply["outcome"] = "identical" if got == expected[msg["base"]] else "different"
                if reply["outcome"] == "different":
                    reply["message"] = ", ".join(k for k in got if got[k] != expected[msg["base"]][k])
            except FormatError as exc:
                reply.update(outcome="error", error=type(exc).__name__, message=str(exc))
            except BaseException as exc:  # noqa: BLE001 -- every other exception is the finding
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                reply.update(outcome="exception", error=type(exc).__name__,
                             message=f"{str(exc)[:300]} at {Path(tb.filename).name}:{tb.lineno}")
            reply["cpu"] = _cpu_seconds() - start
            _send(proto, reply)


class Worker:
    """One worker process with the bases' expected tensors loaded."""

    def __init__(self, bases: dict[str, bytes], cpu: float, memory: int) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.fuzz", "--worker", "--cpu", str(cpu), "--memory", str(memory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT, env=env)
        for name, data in bases.items():
            self.send({"op": "base", "name": name, "data": data})
            if self.receive() is None:
                raise RuntimeError(f"worker failed on base file {name}: {self.stderr_tail()}")

    def send(self, msg: dict[str, Any]) -> None:
        _send(self.proc.stdin, msg)

    def receive(self) -> dict[str, Any] | None:
        return _recv(self.proc.stdout)

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace").strip()[-400:]

    def death(self) -> str:
        """Why the process ended: the signal or exit status, and its last words."""
        code = self.proc.wait()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        tail = self.stderr_tail()
        return f"{how}: {tail}" if tail else how

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


# --------------------------------------------------------------------------- running and judging


@dataclass
class Result:
    mutant: Mutant
    outcome: str  # identical, different, error, exception, died, hung
    error: str = ""
    message: str = ""
    cpu: float = 0.0

    def violation(self, cpu_limit: float) -> str | None:
        """Why this result breaks the rule, or ``None``."""
        expect = self.mutant.expect
        if self.outcome == "exception":
            return f"{self.error} (not a FormatError): {self.message}"
        if self.outcome in ("died", "hung"):
            return f"reader {self.outcome}: {self.message}"
        if self.cpu > cpu_limit:
            return f"took {self.cpu:.1f} s of CPU"
        if self.outcome == "error" and expect == "identical":
            return f"refused a valid file: {self.error}: {self.message}"
        if self.outcome in ("identical", "different") and expect == "refuse":
            return f"accepted an invalid file ({self.outcome} tensors)"
        if self.outcome == "different" and expect in ("identical", "either"):
            return f"decoded other tensors ({self.message})"
        return None


def run(mutants: Iterable[Mutant], bases: dict[str, bytes], jobs: int, cpu: float, memory: int,
        wall: float, faults: dict[int, str] | None = None) -> Iterator[Result]:
    """Check mutants on ``jobs`` workers; a worker that dies or hangs is replaced."""
    todo = iter(mutants)
    workers: list[Worker | None] = [None] * jobs
    busy: dict[int, tuple[Mutant, float]] = {}

    def start(slot: int) -> None:
        m = next(todo, None)
        if m is None:
            return
        if workers[slot] is None:
            workers[slot] = Worker(bases, cpu, memory)
        msg = {"op": "check", "base": m.base, "data": m.data}
        if faults and m.index in faults:
            msg["fault"] = faults[m.index]
        workers[slot].send(msg)
        busy[slot] = (m, time.monotonic() + wall)

    try:
        for slot in range(jobs):
            start(slot)
        while busy:
            fds = {workers[s].proc.stdout.fileno(): s for s in busy}
            timeout = max(0.0, min(deadline for _, deadline in busy.values()) - time.monotonic())
            ready, _, _ = select.select(list(fds), [], [], timeout)
            for fd in ready:
                slot = fds[fd]
                m, _ = busy.pop(slot)
                reply = workers[slot].receive()
                if reply is None:
                    yield Result(m, "died", message=workers[slot].death())
                    workers[slot].kill()
                    workers[slot] = None
                else:
                    yield Result(m, reply["outcome"], reply.get("error", ""), reply.get("message", ""), reply["cpu"])
                start(slot)
            now = time.monotonic()
            for slot, (m, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[slot]
                    workers[slot].kill()
                    workers[slot] = None
                    yield Result(m, "hung", message=f"no answer after {wall:.0f} s of wall time")
                    start(slot)
    finally:
        for w in workers:
            if w is not None:
                w.proc.stdin.close()
                w.kill()


def summarise(results: list[Result], cpu_limit: float) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    by_op: dict[str, Counter[str]] = {}
    violations = []
    for r in results:
        label = f"{r.outcome}:{r.error}" if r.outcome in ("error", "exception") else r.outcome
        if r.outcome == "different" and r.mutant.expect == "any":
            label = "different (allowed)"
        outcomes[label] += 1
        by_op.setdefault(r.mutant.op, Counter())[label] += 1
        why = r.violation(cpu_limit)
        if why is not None:
            violations.append({"index": r.mutant.index, "base": r.mutant.base, "op": r.mutant.op,
                               "mutation": r.mutant.description, "expect": r.mutant.expect, "violation": why})
    return {
        "mutants": len(results),
        "outcomes": dict(sorted(outcomes.items())),
        "by_op": {op: dict(sorted(c.items())) for op, c in sorted(by_op.items())},
        "max_cpu_seconds": round(max((r.cpu for r in results), default=0.0), 3),
        "violations": violations,
    }


def _print(summary: dict[str, Any], seconds: float) -> None:
    print(f"{summary['mutants']} mutants in {seconds:.0f} s; max CPU per mutant {summary['max_cpu_seconds']} s")
    for label, n in summary["outcomes"].items():
        print(f"  {n:7d}  {label}")
    print(f"  {len(summary['violations']):7d}  violations")
    for v in summary["violations"][:40]:
        print(f"    #{v['index']} {v['base']}: {v['mutation']} [expect {v['expect']}] -> {v['violation']}")


def selftest(bases: dict[str, bytes], cpu: float, memory: int) -> dict[str, str | None]:
    """Feed one deliberately broken "reader" per fault, plus a clean mutant after each, and
    return what the harness made of every one (``None``: no violation)."""
    drafts = {name: Draft.parse(data) for name, data in bases.items()}
    faults = {2 * i: name for i, name in enumerate(_FAULTS)}
    mutants = [mutant(i, 0, bases, drafts) for i in range(2 * len(_FAULTS))]
    for m in mutants:
        m.expect = "any"
    results = list(run(mutants, bases, 1, cpu, memory, wall=max(5.0, 3 * cpu), faults=faults))
    return {faults.get(r.mutant.index, f"clean-{r.mutant.index}"): r.violation(cpu) for r in results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__.split("\n\n")[1])
    parser.add_argument("--mutants", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--exclude", default="", help="comma-separated base files to leave out")
    parser.add_argument("--cpu", type=float, default=2.0, help="CPU seconds allowed per mutant")
    parser.add_argument("--memory-mib", type=int, default=1024, help="address space allowed per mutant")
    parser.add_argument("--wall", type=float, default=60.0, help="wall-clock backstop per mutant")
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument("--only", help="comma-separated mutant indices to rebuild and check")
    parser.add_argument("--save-dir", type=Path, help="write violating (or --only) mutants here as .dd files")
    parser.add_argument("--selftest", action="store_true", help="check that the harness reports broken readers")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    memory = args.memory if args.memory is not None else args.memory_mib * 2**20
    if args.worker:
        worker(args.cpu, memory)
        return 0
    bases = base_files()
    for name in filter(None, args.exclude.split(",")):
        if name not in bases:
            parser.error(f"no base file {name!r} (have: {', '.join(sorted(bases))})")
        del bases[name]
    if args.selftest:
        report = selftest(bases, min(args.cpu, 1.0), memory)
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return 0
    drafts = {name: Draft.parse(data) for name, data in bases.items()}
    indices = [int(i) for i in args.only.split(",")] if args.only else range(args.mutants)
    started = time.monotonic()
    mutants = (mutant(i, args.seed, bases, drafts) for i in indices)
    results = sorted(run(mutants, bases, args.jobs, args.cpu, memory, args.wall), key=lambda r: r.mutant.index)
    summary = summarise(results, args.cpu)
    summary.update(seed=args.seed, bases=sorted(bases))
    _print(summary, time.monotonic() - started)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.save_dir:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        bad = {v["index"] for v in summary["violations"]}
        for r in results:
            if r.mutant.index in bad or args.only:
                stem = args.save_dir / f"{args.seed}-{r.mutant.index}"
                stem.with_suffix(".dd").write_bytes(r.mutant.data)
                stem.with_suffix(".txt").write_text(
                    f"{r.mutant.base}: {r.mutant.description} [expect {r.mutant.expect}] -> {r.outcome} "
                    f"{r.error} {r.message}\n")
    return 1 if summary["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
