"""Byte-level building blocks shared by the payload codecs.

Three things every codec needs and none should re-implement:

* **Row frames.** A payload is a matrix of fixed-size rows (one per sample) cut into one zstd
  frame per class, so the bytes of each class are attributable (``class_bytes``) and classes
  decode independently. An empty class gets an empty frame (0 bytes, no zstd frame at all).
  When zstd does not pay for the section as a whole, frames are stored raw.
* **Count tables.** Histograms are stored as unsigned LEB128 varints (canonical: no redundant
  continuation bytes), zstd-compressed only when that is smaller.
* **ANS streams with stored histograms.** Symbols are entropy-coded with ``constriction``'s
  default ANS coder (32-bit words, 64-bit state, 24-bit precision) under a categorical model
  rebuilt from the stored histogram. The model's integer frequencies are computed here (largest
  remainder apportionment, then ``+1`` per present symbol) and handed to ``constriction`` as
  exactly representable weights whose sum is ``2**24 - n``, which makes its fast quantiser
  reproduce them bit for bit. The stream is therefore defined by integers alone and does not
  depend on ``constriction``'s floating-point quantisation heuristics.

Decoders never trust a number from a file: every length and count is checked against the
section length and the layout before anything is allocated, and every failure is a
:class:`DecodeError` or :class:`LimitError` naming the section kind and the field.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import constriction
import numpy as np
import zstandard

from ..errors import DecodeError, LimitError
from .base import Section, param

COMPRESSIONS = ("zstd", "none")
ANS_PRECISION = 24
TRIAL_BYTES = 4 * 2**20
PIECE_BYTES = 2**18
"""Encoders filter, shuffle and compress rows in pieces of about this size: encoding a section
needs memory for its output, not for a filtered or reordered copy of its input."""

RowFilter = Callable[[np.ndarray], np.ndarray]
T = TypeVar("T")
R = TypeVar("R")
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
"""Decoders run independent pieces of work (frames, blocks of samples) on at most this many
threads: one per CPU this process may use."""


def in_threads(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]`` on up to :data:`THREADS` threads. zstd and numpy release
    the GIL while they work, so independent pieces decode in parallel. Exceptions surface as in
    the loop: the first failing item's, in item order."""
    items = list(items)
    workers = min(len(items), THREADS)
    if workers <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


# --------------------------------------------------------------------------- validation helpers


def section_bytes(section: Section) -> memoryview:
    """The payload as a flat byte view, after checking it is as long as the table says."""
    data = memoryview(section.data).cast("B")
    if len(data) != section.length:
        raise DecodeError(f"payload has {len(data)} bytes, the section table says {section.length}",
                          section=section.kind, field="length")
    return data


def int_param(section: Section, name: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """An integer codec parameter within ``[lo, hi]``."""
    value = param(section, name, int)
    if not lo <= value <= hi:
        raise DecodeError(f"{value} is outside [{lo}, {hi}]", section=section.kind, field=f"params.{name}")
    return value


def choice_param(section: Section, name: str, choices: Sequence[str]) -> str:
    """A string codec parameter from a fixed set."""
    value = param(section, name, str)
    if value not in choices:
        raise DecodeError(f"{value!r} is not one of {', '.join(choices)}", section=section.kind,
                          field=f"params.{name}")
    return value


def int_list_param(section: Section, name: str, lengths: Sequence[int]) -> list[int]:
    """A list of non-negative integers whose length is one of ``lengths``."""
    values = param(section, name, list)
    if len(values) not in lengths:
        raise DecodeError(f"has {len(values)} entries, expected {' or '.join(map(str, sorted(set(lengths))))}",
                          section=section.kind, field=f"params.{name}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise DecodeError("expected a non-negative integer", section=section.kind, field=f"params.{name}[{i}]")
    return values


def check_decoded_size(section: Section, nbytes: int, max_bytes: int, what: str) -> None:
    """Refuse to allocate ``nbytes`` of output beyond the reader's cap."""
    if nbytes > max_bytes:
        raise LimitError(f"decoding {what} needs {nbytes} bytes, more than the limit of {max_bytes}",
                         section=section.kind, field="max_decoded_bytes")


def check_class_bytes(section: Section, attributed: Sequence[int] | None) -> None:
    """``class_bytes`` must say exactly what the codec attributes to each class (spec § 3): the
    bit account charges a class for them, so a stale list misreports every class's bits. With
    ``attributed=None`` (nothing belongs to one class alone) they must be absent; with one class
    they may be absent, which gives the same account."""
    got = None if section.class_bytes is None else list(section.class_bytes)
    want = None if attributed is None else [int(b) for b in attributed]
    if got != want and not (got is None and want is not None and len(want) == 1):
        expected = "absent" if want is None else str(want)
        raise DecodeError(f"class_bytes are {got}, the payload makes them {expected}", section=section.kind,
                          field="class_bytes")


def check_groups(groups: Sequence[int] | None, num_rows: int, num_classes: int) -> list[int] | None:
    """Encoder-side check that ``groups`` are per-class counts covering all rows in order."""
    if groups is None:
        return None
    groups = [int(g) for g in groups]
    if len(groups) != num_classes or any(g < 0 for g in groups) or sum(groups) != num_rows:
        raise ValueError(f"groups must be {num_classes} non-negative per-class counts summing to {num_rows}")
    return groups


# --------------------------------------------------------------------------- zstd frames


def _unshuffle(frame: np.ndarray, itemsize: int) -> np.ndarray:
    return np.ascontiguousarray(frame.reshape(itemsize, -1).T).reshape(-1) if itemsize > 1 else frame


def _bounds(counts: Sequence[int]) -> list[tuple[int, int]]:
    ends = np.cumsum([0, *counts]).tolist()
    return list(zip(ends[:-1], ends[1:]))


def _pieces(rows: np.ndarray, order: np.ndarray | None, start: int, end: int, fn: RowFilter | None,
            shuffle: int) -> Iterator[np.ndarray]:
    """The bytes of the frame of stored rows ``start:end`` (stored row i is ``rows[order[i]]``,
    or ``rows[i]`` without ``order``), filtered by ``fn`` and, for ``shuffle > 1``, as byte
    planes of that element size: byte 0 of every element, then byte 1, ... In contiguous
    pieces of about :data:`PIECE_BYTES`; filters act within a row, so pieces filter alike."""
    step = max(1, PIECE_BYTES // max(rows.shape[1], 1))
    for plane in range(shuffle):
        for a in range(start, end, step):
            b = min(a + step, end)
            piece = rows[a:b] if order is None else rows[order[a:b]]
            if fn is not None:
                piece = fn(piece)
            yield np.ascontiguousarray(piece if shuffle == 1 else piece.reshape(-1, shuffle)[:, plane])


def _compress(cctx: zstandard.ZstdCompressor, rows: np.ndarray, order: np.ndarray | None, counts: Sequence[int],
              fn: RowFilter | None, shuffle: int, limit: int | None = None,
              expected: int = 0) -> tuple[bytearray, list[int]] | None:
    """One zstd frame (declaring its content size) per group of ``counts`` consecutive stored
    rows, compressed piece by piece into one buffer; empty groups give empty frames. ``None`` as
    soon as the output reaches ``limit`` bytes (then raw storage is smaller).

    The buffer starts at the ``expected`` size and is overwritten in place, growing past it only
    if needed: one large allocation instead of many reallocations interleaved with zstd's own,
    which would leave tens of MB of freed but resident heap behind."""
    out, pos, lengths = bytearray(expected), 0, []
    for start, end in _bounds(counts):
        before = pos
        if end > start:
            chunker = cctx.chunker(size=(end - start) * rows.shape[1], chunk_size=2**17)
            for piece in _pieces(rows, order, start, end, fn, shuffle):
                for blob in chunker.compress(piece):
                    out[pos:pos + len(blob)] = blob
                    pos += len(blob)
                if limit is not None and pos >= limit:
                    return None
            for blob in chunker.finish():
                out[pos:pos + len(blob)] = blob
                pos += len(blob)
        lengths.append(pos - before)
    if limit is not None and pos >= limit:
        return None
    del out[pos:]
    return out, lengths


def compress_rows(rows: np.ndarray, groups: Sequence[int] | None, level: int,
                  shuffle: int = 1) -> tuple[bytearray, list[int]]:
    """One zstd frame (with content size) per group of consecutive rows; empty groups give
    empty frames. ``shuffle > 1`` splits each frame into byte planes of that element size
    first, which lets zstd see the slowly varying high bytes of floats as long runs."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    packed = _compress(_compressor(level), rows, None, [len(rows)] if groups is None else list(groups), None, shuffle)
    assert packed is not None
    return packed


def _compressor(level: int) -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=level, write_content_size=True)


def _declared_size(section: Section, frame: memoryview | bytes, field: str, *,
                   exact: int | None = None, bound: int | None = None) -> int:
    """The content size a zstd frame header declares, which must be ``exact`` (or at most
    ``bound``). Checked before anything is allocated: zstd trusts the header when it sizes its
    output buffer."""
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"not a zstd frame: {exc}", section=section.kind, field=field) from None
    if size < 0:
        raise DecodeError("zstd frame does not declare its content size", section=section.kind, field=field)
    if (exact is not None and size != exact) or (bound is not None and size > bound):
        want = f"{exact}" if exact is not None else f"at most {bound}"
        raise DecodeError(f"zstd frame declares {size} bytes, expected {want}", section=section.kind, field=field)
    return size


def zstd_frame(section: Section, frame: memoryview | bytes, field: str, *,
               exact: int | None = None, bound: int | None = None) -> bytes:
    """Decompress exactly one zstd frame (no trailing bytes) whose declared content size is
    ``exact`` (or at most ``bound``)."""
    size = _declared_size(section, frame, field, exact=exact, bound=bound)
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = dobj.decompress(frame)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd frame: {exc}", section=section.kind, field=field) from None
    if not dobj.eof:
        raise DecodeError("zstd frame is truncated", section=section.kind, field=field)
    if dobj.unused_data:
        raise DecodeError(f"{len(dobj.unused_data)} bytes follow the zstd frame", section=section.kind, field=field)
    if len(out) != size:
        raise DecodeError(f"zstd frame decoded to {len(out)} bytes, it declares {size}",
                          section=section.kind, field=field)
    return out


def decompress_rows(section: Section, frame_lengths: Sequence[int], rows_per_frame: Sequence[int],
                    row_bytes: int, max_bytes: int, *, compression: str = "zstd", shuffle: int = 1,
                    data: memoryview | None = None) -> np.ndarray:
    """Inverse of :func:`compress_rows` (or of raw frames): a writable ``(rows, row_bytes)``
    uint8 matrix. ``data`` defaults to the whole section payload. Every frame's length and
    declared size is checked before any is decompressed; frames then decompress in parallel
    (:func:`in_threads`), each straight into its place in the output."""
    data = section_bytes(section) if data is None else data
    if len(frame_lengths) != len(rows_per_frame):
        raise DecodeError(f"{len(frame_lengths)} frame lengths for {len(rows_per_frame)} frames",
                          section=section.kind, field="params.frames")
    if sum(frame_lengths) != len(data):
        raise DecodeError(f"frame lengths sum to {sum(frame_lengths)}, the payload has {len(data)} bytes",
                          section=section.kind, field="params.frames")
    total = sum(rows_per_frame) * row_bytes
    check_decoded_size(section, total, max_bytes, "rows")
    frames = []
    for i, ((start, end), n) in enumerate(zip(_bounds(frame_lengths), rows_per_frame)):
        field, expected, frame = f"params.frames[{i}]", n * row_bytes, data[start:end]
        raw = expected == 0 or compression == "none"
        if raw and len(frame) != expected:
            raise DecodeError(f"frame has {len(frame)} bytes, {n} rows need {expected}",
                              section=section.kind, field=field)
        if not raw:
            _declared_size(section, frame, field, exact=expected)
        frames.append((field, expected, frame, raw))
    out = np.empty(total, dtype=np.uint8)
    starts = np.cumsum([0] + [expected for _, expected, _, _ in frames]).tolist()

    def fill(job: tuple[int, tuple[str, int, memoryview, bool]]) -> None:
        pos, (field, expected, frame, raw) = job
        content = frame if raw else zstd_frame(section, frame, field, exact=expected)
        out[pos:pos + expected] = _unshuffle(np.frombuffer(content, dtype=np.uint8), shuffle)

    in_threads(fill, zip(starts, frames))
    return out.reshape(-1, row_bytes) if row_bytes else out.reshape(sum(rows_per_frame), 0)


# --------------------------------------------------------------------------- filtered row sections


def _trial_rows(rows: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Evenly spaced stored rows totalling about ``TRIAL_BYTES``: enough to rank filters, cheap
    to try."""
    n, row_bytes = (rows.shape[0] if order is None else len(order)), rows.shape[1]
    m = min(n, max(1, TRIAL_BYTES // max(row_bytes, 1)))
    picks = np.linspace(0, n - 1, m).astype(np.int64) if m < n else np.arange(n)
    return rows[picks if order is None else order[picks]]


def _raw(rows: np.ndarray, order: np.ndarray | None) -> bytearray:
    """The stored rows' bytes as they are, gathered piece by piece into one buffer."""
    n = rows.shape[0] if order is None else len(order)
    out = bytearray(n * rows.shape[1])
    view = np.frombuffer(out, dtype=np.uint8).reshape(n, rows.shape[1])
    step = max(1, PIECE_BYTES // max(rows.shape[1], 1))
    for a in range(0, n, step):
        view[a:a + step] = rows[a:a + step] if order is None else rows[order[a:a + step]]
    return out


def pack_rows(rows: np.ndarray, groups: Sequence[int] | None, level: int,
              filters: dict[str, tuple[RowFilter | None, int]],
              order: np.ndarray | None = None,
              tolerance: float = 0.0) -> tuple[bytearray, dict[str, Any], list[int] | None]:
    """Compress a row matrix with the first listed of ``filters`` (name → (row transform,
    shuffle element size)) that compresses a sample of the rows to at most ``1 + tolerance``
    times the smallest size any of them gives; with ``tolerance=0`` the best, the first listed
    winning ties. Codecs list their filters fastest-decoding first, so a tolerance buys decode
    speed with bytes.

    The stored rows are ``rows[order]`` (``rows`` without ``order``), gathered a piece at a
    time, so that neither a reordered nor a filtered copy of ``rows`` is ever made. Returns the
    payload, the params that :func:`unpack_rows` needs (``filter``, ``compression``, ``frames``,
    ``frame_rows``) and the class bytes (``None`` without groups). Frames are stored raw
    (``compression="none"``), unfiltered, when zstd would not make the section smaller; the
    first filter listed must therefore be the identity.
    """
    assert next(iter(filters.values())) == (None, 1), "the first filter must be the identity"
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    n, row_bytes = (rows.shape[0] if order is None else len(order)), rows.shape[1]
    counts = [n] if groups is None else list(groups)
    cctx = _compressor(level)
    name, packed = next(iter(filters)), None
    if n * row_bytes:
        trial = _trial_rows(rows, order)
        sizes = {}
        for candidate, (fn, shuffle) in filters.items():
            sizes[candidate] = len(_compress(cctx, trial, None, [len(trial)], fn, shuffle)[0])
        smallest = min(sizes.values())
        name = next(c for c in filters if sizes[c] <= smallest * (1 + tolerance))
        if sizes[name] < trial.nbytes:
            expected = int(0.95 * n * row_bytes * sizes[name] / trial.nbytes)
            del trial
            fn, shuffle = filters[name]
            packed = _compress(cctx, rows, order, counts, fn, shuffle, limit=n * row_bytes, expected=expected)
    if packed is None:
        name, data, compression = next(iter(filters)), _raw(rows, order), "none"
        lengths = [c * row_bytes for c in counts]
    else:
        (data, lengths), compression = packed, "zstd"
    params = {"filter": name, "compression": compression, "frames": lengths, "frame_rows": counts}
    return data, params, (lengths if groups is not None else None)


def unpack_rows(section: Section, num_rows: int, row_bytes: int, num_groups: int, max_bytes: int,
                filters: dict[str, int]) -> tuple[str, np.ndarray]:
    """Validate the params written by :func:`pack_rows` and return (filter name, filtered rows).
    ``filters`` maps each filter name allowed here to its shuffle element size. With one frame
    per group (``num_groups`` of them: the classes), frame g holds the rows of class g and
    ``class_bytes`` must equal ``frames``; a single frame belongs to no class alone."""
    name = choice_param(section, "filter", tuple(filters))
    compression = choice_param(section, "compression", COMPRESSIONS)
    frames = int_list_param(section, "frames", (1, num_groups))
    frame_rows = int_list_param(section, "frame_rows", (len(frames),))
    if sum(frame_rows) != num_rows:
        raise DecodeError(f"frames hold {sum(frame_rows)} rows, the dataset has {num_rows}",
                          section=section.kind, field="params.frame_rows")
    rows = decompress_rows(section, frames, frame_rows, row_bytes, max_bytes,
                           compression=compression, shuffle=filters[name])
    check_class_bytes(section, frames if len(frames) == num_groups else None)
    return name, rows


# --------------------------------------------------------------------------- varints and count tables


def varint_lengths(values: np.ndarray) -> np.ndarray:
    """Bytes each value takes as an unsigned LEB128 varint (values below 2**35)."""
    v = np.asarray(values, dtype=np.uint64)
    return 1 + sum((v >= np.uint64(1 << (7 * b))).astype(np.int64) for b in range(1, 5))


def varint_encode(values: np.ndarray) -> bytes:
    """Canonical unsigned LEB128 of each value (each below 2**32)."""
    v = np.asarray(values, dtype=np.uint64).reshape(-1)
    if v.size and int(v.max()) >= 2**32:
        raise ValueError("varint values must be below 2**32")
    lengths = varint_lengths(v)
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    for b in range(5):
        sel = lengths > b
        byte = (v[sel] >> np.uint64(7 * b)) & np.uint64(0x7F)
        byte |= np.where(lengths[sel] > b + 1, np.uint64(0x80), np.uint64(0))
        out[starts[sel] + b] = byte.astype(np.uint8)
    return out.tobytes()


def varint_decode(section: Section, buf: bytes | memoryview, count: int, field: str) -> np.ndarray:
    """Exactly ``count`` canonical varints below 2**32 filling ``buf``, as int64."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    if count == 0 or arr.size == 0:
        if count or arr.size:
            raise DecodeError(f"{arr.size} bytes for {count} varints", section=section.kind, field=field)
        return np.zeros(0, dtype=np.int64)
    if arr.size > 5 * count:
        raise DecodeError(f"{arr.size} bytes cannot hold {count} varints", section=section.kind, field=field)
    ends = np.flatnonzero(arr < 0x80)
    if ends.size != count or ends[-1] != arr.size - 1:
        raise DecodeError(f"expected {count} varints filling {arr.size} bytes", section=section.kind, field=field)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 5 or np.any((lengths > 1) & (arr[ends] == 0)):
        raise DecodeError("varint is too long or not canonical", section=section.kind, field=field)
    shifts = (np.arange(arr.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    values = np.add.reduceat((arr & 0x7F).astype(np.uint64) << shifts, starts)
    if int(values.max()) >= 2**32:
        raise DecodeError("varint value exceeds 32 bits", section=section.kind, field=field)
    return values.astype(np.int64)


def pack_tables(tables: Sequence[np.ndarray], level: int) -> tuple[bytes, str]:
    """All count tables as one varint run, zstd-compressed when that is smaller."""
    raw = varint_encode(np.concatenate([np.asarray(t, dtype=np.int64).reshape(-1) for t in tables])
                        if tables else np.zeros(0, np.int64))
    packed = zstandard.ZstdCompressor(level=level, write_content_size=True).compress(raw) if raw else b""
    return (packed, "zstd") if len(packed) < len(raw) else (raw, "none")


def unpack_tables(section: Section, blob: memoryview, compression: str, sizes: Sequence[int],
                  field: str) -> list[np.ndarray]:
    """Inverse of :func:`pack_tables`; ``sizes`` are the table lengths the layout implies."""
    total = sum(sizes)
    if compression == "zstd":
        blob = memoryview(zstd_frame(section, blob, field, bound=5 * total))
    values = varint_decode(section, blob, total, field)
    return [values[a:b] for a, b in _bounds(sizes)]


# --------------------------------------------------------------------------- ANS with stored histograms


def model_frequencies(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The symbols present in a histogram and their integer ANS frequencies (summing to
    ``2**24``): each gets 1, and the remaining ``2**24 - n`` are apportioned in proportion to
    the counts by largest remainder, ties to the lower symbol."""
    present = np.flatnonzero(counts)
    n = present.size
    c = counts[present].astype(np.int64)
    free = (1 << ANS_PRECISION) - n
    if n == 0:
        return present, c
    scaled = c * free
    total = int(c.sum())
    weights = scaled // total
    remainder = scaled - weights * total
    short = free - int(weights.sum())
    weights[np.lexsort((np.arange(n), -remainder))[:short]] += 1
    return present, weights + 1


def _model(counts: np.ndarray) -> tuple[np.ndarray, Any]:
    """Present symbols and a constriction model with exactly :func:`model_frequencies`
    (``None`` when fewer than two symbols occur: nothing needs coding then)."""
    present, freq = model_frequencies(counts)
    if present.size < 2:
        return present, None
    return present, constriction.stream.model.Categorical((freq - 1).astype(np.float64), perfect=False)


def ans_encode(streams: Sequence[tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Encode ``(symbols, counts)`` streams, where ``counts`` is the exact histogram of
    ``symbols``, into one word stream (little-endian uint32) that decodes in the given order."""
    coder = constriction.stream.stack.AnsCoder()
    for symbols, counts in reversed(streams):
        counts = np.asarray(counts, dtype=np.int64)
        if np.count_nonzero(counts) >= 1 << ANS_PRECISION:
            raise ValueError("alphabet too large for 24-bit ANS")
        present, model = _model(counts)
        if model is None:
            continue
        lut = np.full(counts.size, -1, dtype=np.int32)
        lut[present] = np.arange(present.size, dtype=np.int32)
        coder.encode_reverse(lut[np.asarray(symbols, dtype=np.int64)], model)
    return coder.get_compressed().astype("<u4").tobytes()


def ans_decode(section: Section, words: memoryview, tables: Sequence[np.ndarray], field: str) -> list[np.ndarray]:
    """Inverse of :func:`ans_encode` given the stored histograms. Garbage words decode to
    *some* symbols, so the result is accepted only if every histogram is reproduced exactly and
    the word stream is consumed to the last word. Callers bound ``sum(counts)`` beforehand."""
    arr = np.frombuffer(words, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(arr)
    except (ValueError, RuntimeError) as exc:
        raise DecodeError(f"invalid ANS word stream: {exc}", section=section.kind, field=field) from None
    out = []
    for i, counts in enumerate(tables):
        present, model = _model(counts)
        n = int(counts.sum())
        if model is None:
            out.append(np.full(n, present[0] if present.size else 0, dtype=np.int64))
            continue
        try:
            decoded = coder.decode(model, n)
        except (ValueError, RuntimeError, OverflowError) as exc:
            raise DecodeError(f"ANS decoding failed: {exc}", section=section.kind, field=field) from None
        symbols = present[np.asarray(decoded, dtype=np.int64)]
        if not np.array_equal(np.bincount(symbols, minlength=counts.size), counts):
            raise DecodeError(f"stream {i} does not reproduce its stored histogram", section=section.kind,
                              field=field)
        out.append(symbols)
    if not coder.is_empty():
        raise DecodeError("ANS words left over after the last symbol", section=section.kind, field=field)
    return out


def pack_coded(tables: Sequence[np.ndarray], streams: Sequence[tuple[np.ndarray, np.ndarray]],
               level: int) -> tuple[bytes, dict[str, Any]]:
    """Payload ``tables ‖ words``: the count tables (see :func:`pack_tables`) then the ANS word
    stream of ``streams``; params ``tables`` (bytes), ``table_compression`` and ``words``."""
    blob, compression = pack_tables(tables, level)
    words = ans_encode(streams)
    return blob + words, {"tables": len(blob), "table_compression": compression, "words": len(words) // 4}


def unpack_coded(section: Section, sizes: Sequence[int]) -> tuple[list[np.ndarray], memoryview]:
    """Split and check a :func:`pack_coded` payload: (count tables of ``sizes``, word bytes)."""
    data = section_bytes(section)
    tables = int_param(section, "tables", 0, len(data))
    compression = choice_param(section, "table_compression", COMPRESSIONS)
    words = int_param(section, "words", 0, len(data) // 4)
    if tables + 4 * words != len(data):
        raise DecodeError(f"{tables} table bytes and {words} words do not fill the {len(data)}-byte payload",
                          section=section.kind, field="params.words")
    return unpack_tables(section, data[:tables], compression, sizes, "data.tables"), data[tables:]
