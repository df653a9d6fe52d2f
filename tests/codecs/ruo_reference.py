"""A ``ruo`` entropy decoder written from spec § 3.6–3.7 alone, for the tests to hold the
library's lockstep decoders to: plain Python integers, one stream and one symbol at a time, its
own Laplace tables (binary exponentiation in Python ints), its own ARM (int64 numpy) and varint
parsing. Slow, obviously sequential, and independent of ``ddformat.codecs``."""

from __future__ import annotations

import decimal
import math
import struct
from bisect import bisect_right
from functools import lru_cache

import numpy as np

L_STATE, PRECISION = 2**31, 24


def sigma(i: int) -> decimal.Decimal:
    return (1 + decimal.Decimal(i % 4) / 4) * decimal.Decimal(2) ** (i // 4)


@lru_cache(maxsize=None)
def ratio(i: int) -> int:
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        value = (decimal.Decimal(-1) / (16 * sigma(i))).exp() * 2**32
        return int(value.to_integral_value(decimal.ROUND_HALF_EVEN))


def power(g: int, n: int) -> int:
    r, b = 2**32, g
    while n:
        if n & 1:
            r = (r * b + 2**31) >> 32
        b = (b * b + 2**31) >> 32
        n >>= 1
    return r


def cdf_at(g: int, k: int) -> int:
    return power(g, -k) if k <= 0 else 2**33 - power(g, k)


def frequencies(masses: list[int]) -> list[int]:
    n, total = len(masses), sum(masses)
    free = 2**PRECISION - n
    share = [m * free // total for m in masses]
    remainder = [m * free - s * total for m, s in zip(masses, share)]
    for j in sorted(range(n), key=lambda j: (-remainder[j], j))[:free - sum(share)]:
        share[j] += 1
    return [s + 1 for s in share]


@lru_cache(maxsize=None)
def table(sigma_index: int, fraction: int, symbols: tuple[int, ...]) -> tuple[int, ...]:
    """Cumulative frequencies over ``symbols`` (distances to ⌊μ⌋) for μ = ⌊μ⌋ + fraction/16."""
    g = ratio(sigma_index)
    masses = [cdf_at(g, 16 * d - fraction + 8) - cdf_at(g, 16 * d - fraction - 8) for d in symbols]
    return tuple(np.concatenate([[0], np.cumsum(frequencies(masses))]).tolist())


class Stream:
    def __init__(self, words: list[int]) -> None:
        assert len(words) >= 2
        self.words, self.state, self.next = words, words[0] | words[1] << 32, 2
        assert L_STATE <= self.state < 2**63

    def pop(self, cdf: tuple[int, ...]) -> int:
        slot = self.state & (2**PRECISION - 1)
        j = bisect_right(cdf, slot) - 1
        self.state = (cdf[j + 1] - cdf[j]) * (self.state >> PRECISION) + slot - cdf[j]
        if self.state < L_STATE:
            self.state = self.state << 32 | self.words[self.next]
            self.next += 1
        return j

    def done(self) -> None:
        assert self.state == L_STATE and self.next == len(self.words), "stream did not end in its initial state"


def varints(payload: bytes, count: int, pos: int = 0) -> tuple[list[int], int]:
    out = []
    for _ in range(count):
        value, shift = 0, 0
        while True:
            byte = payload[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        out.append(value)
    return out, pos


def streams(payload: bytes, count: int, pos: int = 0) -> list[Stream]:
    lengths, pos = varints(payload, count, pos)
    out = []
    for n in lengths:
        out.append(Stream(list(struct.unpack_from(f"<{n}I", payload, pos))))
        pos += 4 * n
    assert pos == len(payload)
    return out


def weights(payload: bytes, total: int, per_stream: int, slices: int) -> tuple[list[list[int]], list[int]]:
    """Each network's integer weights, and each network's step exponent."""
    fields, pos = varints(payload, 3 * slices)
    per_net = math.ceil(total / per_stream)
    coded = streams(payload, per_net * slices, pos)
    out = []
    for net in range(slices):
        s, r = fields[3 * net + 1] - 4, fields[3 * net + 2]
        cdf = table(s, 0, tuple(range(-r, r + 1)))
        values = []
        for k in range(per_net):
            stream = coded[net * per_net + k]
            values += [stream.pop(cdf) - r for _ in range(min(per_stream, total - k * per_stream))]
            stream.done()
        out.append(values)
    return out, fields[0::3]


def arm(context: list[int], layers: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[int, int]:
    a = np.array(context, dtype=np.int64) * 256
    for i, (w, b) in enumerate(layers):
        acc = w.astype(np.int64) @ a + b.astype(np.int64) * 256
        a = np.clip((acc + (2 ** (k - 1) if k else 0)) // 2**k, -2**24, 2**24)
        if i < len(layers) - 1:
            a = np.maximum(a, 0)
    mu = min(max(int(a[0]) // 16, -1024), 1024)
    sigma_index = min(max(4 * int(a[1]) // 256, -16), 27)
    return mu, sigma_index


def causal_offsets(count: int) -> list[tuple[int, int]]:
    r = math.isqrt(count) + 2
    cands = [(dy, dx) for dy in range(-r, 1) for dx in range(-r, r + 1) if dy < 0 or (dy == 0 and dx < 0)]
    return sorted(cands, key=lambda o: (o[0] ** 2 + o[1] ** 2, o[0], o[1]))[:count]


def latents(payload: bytes, sizes: list[int], group: int, shape: tuple[int, int], scales: int, context: int,
            arms: list[list[tuple[np.ndarray, np.ndarray]]], steps: list[int]) -> list[np.ndarray]:
    """Each slice's latents (n, M), scales finest first, raster order."""
    h, w = shape
    grids = [(math.ceil(h / 2**l), math.ceil(w / 2**l)) for l in range(scales)]
    starts = np.cumsum([0] + [gh * gw for gh, gw in grids])
    offsets = causal_offsets(context)
    a = 1 + max([0] + [dx // -dy for dy, dx in offsets if dy < 0])
    coded = streams(payload, sum(math.ceil(n / group) for n in sizes))
    out, index = [], 0
    for s, n in enumerate(sizes):
        z = np.zeros((n, int(starts[-1])), dtype=np.int64)
        for first in range(0, n, group):
            stream = coded[index]
            index += 1
            members = range(first, min(n, first + group))
            for level in reversed(range(scales)):
                gh, gw = grids[level]
                by_step: dict[int, list[tuple[int, int]]] = {}
                for y in range(gh):
                    for x in range(gw):
                        by_step.setdefault(x + a * y, []).append((y, x))
                for t in sorted(by_step):
                    for i in members:
                        for y, x in by_step[t]:
                            ctx = [int(z[i, starts[level] + (y + dy) * gw + x + dx])
                                   if 0 <= y + dy and 0 <= x + dx < gw else 0 for dy, dx in offsets]
                            mu, sigma_index = arm(ctx, arms[s], steps[s])
                            cdf = table(sigma_index, mu % 16, tuple(range(-128, 129)))
                            value = stream.pop(cdf) - 128 + mu // 16
                            assert -64 <= value <= 64
                            z[i, starts[level] + y * gw + x] = value
            stream.done()
        out.append(z)
    return out
