"""The rANS coder of spec § 3.7: integer frequency tables, one state per stream, many streams
decoded in lockstep.

Defined to the word so that any reader, on any device, decodes the same symbols: a 63-bit
state x in [2^31, 2^63) (it fits a signed int64, the widest integer torch computes with on
every device), 32-bit little-endian words, frequencies at :data:`PRECISION` bits. To decode
one symbol under a table of cumulative frequencies ``cdf`` (``cdf[0] = 0``, last entry
``2^24``): slot = x mod 2^24; the symbol is the column j with cdf[j] ≤ slot < cdf[j + 1];
x ← f·⌊x / 2^24⌋ + slot − cdf[j] with f = cdf[j + 1] − cdf[j]; then, if x < 2^31,
x ← x·2^32 + the stream's next word. A stream is its final encoder state (low word, high word)
followed by the words the decoder reads, in reading order; it ends in state 2^31 with every
word read, which is how truncated, extended and corrupted streams are caught.

Streams are independent, so a decoder advances all of them together: :class:`Lockstep` pops
one symbol from each stream per call with array operations only (a sorted search of the
table, gathers, shifts), written once for numpy and torch (``xp`` is either module). Encoding (:func:`encode`) runs in
numpy, in reverse, all streams at once.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

PRECISION = 24
STATE_LOW = 2**31
WORD_BITS = 32
_SLOT_MASK = (1 << PRECISION) - 1
_WORD_MASK = (1 << WORD_BITS) - 1
_EMIT_SHIFT = 2 * WORD_BITS - 1 - PRECISION
"""An encoder emits a word before coding a symbol of frequency f when x ≥ f·2^39."""


def apportion(masses: np.ndarray) -> np.ndarray:
    """Integer frequencies summing to 2^24 for rows of non-negative integer masses (…, n):
    every symbol gets 1, and the other 2^24 − n are shared in proportion to the masses,
    ⌊m·F / Σm⌋ each, the units left over going one each to the largest remainders (ties to the
    lower symbol). Masses times 2^24 must fit an int64."""
    m = np.asarray(masses, dtype=np.int64)
    rows = m.reshape(-1, m.shape[-1])
    n = rows.shape[1]
    free = (1 << PRECISION) - n
    total = rows.sum(axis=1, keepdims=True)
    scaled = rows * free
    share = scaled // total
    remainder = scaled - share * total
    short = free - share.sum(axis=1)
    rank = np.argsort(-remainder, axis=1, kind="stable")
    extra = np.zeros_like(share)
    np.put_along_axis(extra, rank, (np.arange(n) < short[:, None]).astype(np.int64), axis=1)
    return (share + extra + 1).reshape(m.shape)


def cumulative(freq: np.ndarray) -> np.ndarray:
    """Rows of frequencies (…, n) → rows of cumulative frequencies (…, n + 1), starting at 0."""
    out = np.zeros((*freq.shape[:-1], freq.shape[-1] + 1), dtype=np.int64)
    np.cumsum(freq, axis=-1, out=out[..., 1:])
    return out


def encode(start: np.ndarray, freq: np.ndarray, active: np.ndarray) -> list[bytes]:
    """Streams of symbols given by their cumulative start and frequency, (pops, streams) arrays
    in decoding order (``active`` False where a stream has no symbol at that pop) → each
    stream's bytes."""
    pops, count = start.shape
    x = np.full(count, STATE_LOW, dtype=np.int64)
    emitted = np.zeros((pops, count), dtype=np.int64)
    emits = np.zeros((pops, count), dtype=bool)
    for j in range(pops - 1, -1, -1):
        f, on = freq[j], active[j]
        emits[j] = on & (x >= f << _EMIT_SHIFT)
        emitted[j] = x & _WORD_MASK
        x = np.where(emits[j], x >> WORD_BITS, x)
        x = np.where(on, ((x // np.where(on, f, 1)) << PRECISION) + x % np.where(on, f, 1) + start[j], x)
    out = []
    for s in range(count):
        words = np.concatenate([[x[s] & _WORD_MASK, x[s] >> WORD_BITS], emitted[emits[:, s], s]])
        out.append(words.astype("<u4").tobytes())
    return out


ROW_KEY_SHIFT = PRECISION + 1
"""Row r of a :class:`Tables` holds r·2^25 + its cumulative frequencies (all below 2^25), so one
sorted array holds every row and a search for r·2^25 + slot lands in row r."""
BISECT_STREAMS = 768
"""Streams above which numpy bisects each row instead of ``searchsorted``: numpy's search over
the whole table (one call, no Python loop) wins for few streams, its cache misses over
thousands of random keys lose to nine vectorised halvings of the rows (one pop of the latent
table on the 2-core machine: 96 against 137 µs at 512 streams, 796 against 379 µs at 4,096)."""


class Tables:
    """Cumulative frequency rows (``cdf[0] = 0``, last entry 2^24, every frequency ≥ 1) as the
    sorted keyed array :class:`Lockstep` searches, plus an idle row of one symbol of frequency
    2^24: popping it leaves a state unchanged and reads no word, which is how a stream with no
    symbol at a pop sits it out without a mask."""

    def __init__(self, rows: Sequence[np.ndarray]) -> None:
        rows = [*rows, np.array([0, 1 << PRECISION], np.int64)]
        widths = np.array([len(r) for r in rows], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(widths[:-1])])
        self.keyed = np.concatenate([np.asarray(r, np.int64) + (i << ROW_KEY_SHIFT) for i, r in enumerate(rows)])
        self.idle = int(self.starts[-1])


class Lockstep:
    """Many streams decoded together, one symbol from each per :meth:`pop`.

    ``words`` holds every stream's 32-bit words (int64 on the device decoding them), stream s
    being ``words[starts[s]:ends[s]]`` with at least two words (callers check). Errors are
    recorded per stream rather than raised, so a device never waits for the host mid-stream;
    :meth:`failed` says which streams broke a rule once all their symbols are popped. A stream
    that reads past its end reads its neighbour's words (or the last word) and is refused then:
    its pointer only grows, so it ends past its end."""

    def __init__(self, xp: Any, words: Any, starts: Any, ends: Any) -> None:
        self.xp, self.words, self.ends = xp, words, ends
        low, high = words[starts], words[starts + 1]
        self.state = low | (high << WORD_BITS)
        self.bad = (high >= STATE_LOW) | (self.state < STATE_LOW)
        self.ptr = starts + 2
        self.last = len(words) - 1

    def pop(self, keyed: Any, base: Any, widest: int) -> Any:
        """The column of each stream's next symbol under its row of a :class:`Tables`' keyed
        array starting at ``base`` (the table's ``idle`` row for a stream with no symbol now;
        ``widest`` the most columns of any row used)."""
        xp, x = self.xp, self.state
        slot = x & _SLOT_MASK
        key = keyed[base] + slot
        if xp is not np:
            at = xp.searchsorted(keyed, key, right=True) - 1
        elif len(base) <= BISECT_STREAMS:
            at = np.searchsorted(keyed, key, side="right") - 1
        else:
            at, end = base, base + widest
            for _ in range(max(1, (widest - 1).bit_length())):
                mid = (at + end) >> 1
                below = keyed[np.minimum(mid, len(keyed) - 1)] <= key
                at = np.where(below, mid, at)
                end = np.where(below, end, mid)
        low = keyed[at]
        x = (keyed[at + 1] - low) * (x >> PRECISION) + key - low
        refill = x < STATE_LOW
        word = self.words[xp.clip(self.ptr, None, self.last)]
        self.state = xp.where(refill, (x << WORD_BITS) | word, x)
        self.ptr = self.ptr + refill
        return at - base

    def failed(self) -> Any:
        """Streams that started outside [2^31, 2^63), did not return to the initial state 2^31,
        or did not end exactly at their last word (left words unread or read past it)."""
        return self.bad | (self.state != STATE_LOW) | (self.ptr != self.ends)


def stream_bounds(lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Word offsets (start, end) of consecutive streams of the given word counts."""
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    return ends - np.asarray(lengths, dtype=np.int64), ends
