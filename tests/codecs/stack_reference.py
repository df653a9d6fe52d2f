"""Coded streams of spec § 3.1 (``indices``, ``topk``) decoded from the spec's text alone, in
plain Python integers: the independent check that the text, not a library, defines the words."""

from __future__ import annotations

PRECISION = 24
WORD = 2**32


def frequencies(histogram: list[int]) -> tuple[list[int], list[int]]:
    """The present symbols and their model frequencies: 1 each, and 2^24 − n shared by largest
    remainders (ties to the lower symbol)."""
    present = [s for s, c in enumerate(histogram) if c > 0]
    counts = [histogram[s] for s in present]
    free, total = 2**PRECISION - len(present), sum(counts)
    shares = [c * free // total for c in counts]
    by_remainder = sorted(range(len(present)), key=lambda i: (-(counts[i] * free - shares[i] * total), present[i]))
    for i in by_remainder[:free - sum(shares)]:
        shares[i] += 1
    return present, [s + 1 for s in shares]


def decode(words: list[int], histograms: list[list[int]]) -> list[list[int]]:
    """Each histogram's stream of symbols, first stream first; ``ValueError`` where the spec
    makes a reader refuse."""
    left = list(words)
    x = 0
    if left:
        if left[-1] == 0:
            raise ValueError("last word is zero")
        x = left.pop()
        while x < WORD and left:
            x = x * WORD + left.pop()
    out = []
    for histogram in histograms:
        present, freq = frequencies(histogram)
        n = sum(histogram)
        if len(present) < 2:
            out.append([present[0] if present else 0] * n)
            continue
        starts = [sum(freq[:i]) for i in range(len(freq))]
        symbols = []
        for _ in range(n):
            slot = x % 2**PRECISION
            i = max(j for j, c in enumerate(starts) if c <= slot)
            x = freq[i] * (x >> PRECISION) + slot - starts[i]
            if x < WORD and left:
                x = x * WORD + left.pop()
            symbols.append(present[i])
        if [symbols.count(s) for s in range(len(histogram))] != list(histogram):
            raise ValueError("stream does not reproduce its histogram")
        out.append(symbols)
    if x != 0 or left:
        raise ValueError("words left after the last symbol")
    return out
