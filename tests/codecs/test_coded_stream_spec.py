"""Spec § 3.1's coded streams are defined by its text: a decoder written from the text alone
(:mod:`tests.codecs.stack_reference`) reads what the writer writes, decodes every vector's
streams like the codecs do, and refuses exactly the word streams they refuse."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import ddformat
from ddformat.codecs import frames
from ddformat.errors import DecodeError
from tests.codecs import stack_reference

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "valid"
SECTION = SimpleNamespace(kind="labels")


def _project(words: bytes, tables: list[np.ndarray]) -> list[list[int]] | None:
    try:
        return [s.tolist() for s in frames.ans_decode(SECTION, memoryview(words), tables, "data.words")]
    except DecodeError:
        return None


def _reference(words: bytes, tables: list[np.ndarray]) -> list[list[int]] | None:
    try:
        return stack_reference.decode(np.frombuffer(words, "<u4").tolist(), [t.tolist() for t in tables])
    except ValueError:
        return None


@st.composite
def coded_streams(draw) -> list[tuple[np.ndarray, np.ndarray]]:
    streams = []
    for _ in range(draw(st.integers(1, 3))):
        alphabet = draw(st.integers(1, 300))
        skew = draw(st.sampled_from([0.0, 1.0, 4.0]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        weights = np.exp(-skew * np.arange(alphabet) / max(1, alphabet // 8))
        symbols = rng.choice(alphabet, size=draw(st.integers(0, 300)), p=weights / weights.sum())
        streams.append((symbols, np.bincount(symbols, minlength=alphabet)))
    return streams


@settings(max_examples=60, deadline=None)
@given(streams=coded_streams(), edit=st.sampled_from(["none", "flip", "drop-last", "drop-first", "extra-first",
                                                      "extra-last"]), where=st.integers(0, 2**16))
def test_the_spec_text_decodes_what_the_writer_writes_and_refuses_what_the_reader_refuses(streams, edit, where):
    words = bytearray(frames.ans_encode(streams))
    tables = [counts for _, counts in streams]
    if edit == "none":
        assert _reference(bytes(words), tables) == [s.tolist() for s, _ in streams]
    elif words:
        if edit == "flip":
            words[where % len(words)] ^= 1 << (where % 8)
        elif edit == "drop-last":
            del words[-4:]
        elif edit == "drop-first":
            del words[:4]
        elif edit == "extra-first":
            words[:0] = (where % 3).to_bytes(4, "little")
        else:
            words += (where % 3).to_bytes(4, "little")
    assert _reference(bytes(words), tables) == _project(bytes(words), tables)


def test_every_vectors_coded_streams_decode_alike_by_the_spec_text():
    checked = 0
    for path in sorted(VECTORS.glob("*.dd")):
        with ddformat.open(path) as f:
            for entry in f.header.sections:
                section = f.container.section(entry.kind)
                if entry.kind != "labels" or section.codec not in ("indices", "topk") or not section.params["words"]:
                    continue
                sizes = _table_sizes(section, f)
                tables, words = frames.unpack_coded(section, sizes)
                assert _reference(bytes(words), tables) == _project(bytes(words), tables) is not None
                checked += 1
    assert checked >= 2


def _table_sizes(section, f) -> list[int]:
    """The histogram sizes each coded codec stores (spec § 3.3)."""
    k = f.num_classes
    if section.codec == "indices":
        return [k]
    scale, tables = 2 ** section.params["bits"], section.params["level_tables"]
    return [k] + [scale + 1] * tables
