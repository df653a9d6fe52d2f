"""Entropy coding of ``ruo`` latents and network weights: many rANS streams, decoded in lockstep.

A slice's latents are cut into streams of ``samples_per_stream`` consecutive samples, a
network's weights into streams of ``weights_per_stream``; all streams of a section are
independent, so a decoder advances every one of them together (:class:`~..rans.Lockstep`).
Within a stream, latents go wavefront step by step (:mod:`.grid`), and within a step sample by
sample, each sample's positions in step order. Each latent is coded under the row of
:func:`.laplace.latent_cdf` that the integer ARM (:mod:`.arm`) picks from its context; each
weight under its network's :func:`.laplace.weight_cdf`.

The decoders are written once against an array module ``xp`` — numpy (what reading a file runs,
no torch) or torch on any device — and give the same integers on both: every step is integer
arithmetic, gathers and the exact float64 ARM.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple, Sequence

import numpy as np

from .. import rans
from .arm import LATENT_RANGE, MU_BITS, SIGMA_INDEX_MIN, IntegerArm, integer_arm, to_device
from .grid import Step, schedule
from .laplace import OFFSET_RANGE, latent_cdf, weight_cdf

LATENT_COLUMNS = 2 * OFFSET_RANGE + 1
_ENCODE_STREAMS = 1024
"""Streams encoded together: bounds the encoder's (symbols × streams) arrays."""


@lru_cache(maxsize=1)
def latent_tables() -> rans.Tables:
    """The latent table as :class:`~..rans.Tables`, built once per process (1.4 MB)."""
    return rans.Tables(latent_cdf())


def latent_rows(mu: np.ndarray, sigma: np.ndarray, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Table row and column of each latent given its μ and σ indices (spec § 3.6): row
    (σ index + 16)·16 + (μ index mod 16), column x − ⌊μ index / 16⌋ + 128."""
    row = (sigma - SIGMA_INDEX_MIN) * 2**MU_BITS + (mu & (2**MU_BITS - 1))
    return row, latents - (mu >> MU_BITS) + OFFSET_RANGE


def _contexts(latents: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    padded = np.concatenate([latents, np.zeros((len(latents), 1), latents.dtype)], axis=1)
    return padded[:, neighbours]  # index -1 picks the zero column


def latent_parameters(latents: np.ndarray, arm: Sequence[tuple[np.ndarray, np.ndarray]], step_exp: int,
                      shape: tuple[int, int], scales: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Table rows and columns of a slice's latents (n, M), in the latents' own order: all
    contexts are known when encoding, so the ARM runs once over everything."""
    m, steps = schedule(*shape, scales, context)
    order = np.concatenate([st.positions for st in steps])
    neighbours = np.concatenate([st.neighbours for st in steps])
    mu, sigma = integer_arm(_contexts(latents, neighbours), arm, step_exp)
    rows, columns = np.empty(latents.shape, np.int64), np.empty(latents.shape, np.int64)
    rows[:, order], columns[:, order] = latent_rows(mu, sigma, latents[:, order])
    return rows, columns


def symbol_bits(rows: np.ndarray, columns: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Ideal code length of each symbol, −log₂(f / 2^24), under rows of a cumulative table."""
    width = cdf.shape[-1]
    flat = cdf.reshape(-1)
    index = rows * width + columns
    return rans.PRECISION - np.log2(flat[index + 1] - flat[index])


def latent_pops(steps: Sequence[Step], group: int) -> tuple[np.ndarray, np.ndarray]:
    """For each pop of a stream of up to ``group`` samples: the sample within the group and the
    latent position it decodes — step by step, sample-major within a step."""
    samples, positions = [], []
    for st in steps:
        samples.append(np.repeat(np.arange(group), len(st.positions)))
        positions.append(np.tile(st.positions, group))
    return np.concatenate(samples), np.concatenate(positions)


def encode_latents(rows: np.ndarray, columns: np.ndarray, group: int, steps: Sequence[Step]) -> list[bytes]:
    """One slice's streams: its latents' table rows and columns (n, M) → the bytes of each
    stream of ``group`` samples (the last may hold fewer)."""
    cdf = latent_cdf().reshape(-1)
    sample, position = latent_pops(steps, group)
    n = len(rows)
    first = np.arange(0, n, group)
    out: list[bytes] = []
    for lo in range(0, len(first), _ENCODE_STREAMS):
        a = first[lo:lo + _ENCODE_STREAMS]
        index = a[None, :] + sample[:, None]
        active = index < n
        index = np.where(active, index, 0)
        flat = rows[index, position[:, None]] * (LATENT_COLUMNS + 1) + columns[index, position[:, None]]
        start = cdf[flat]
        out += rans.encode(start, cdf[flat + 1] - start, active)
    return out


def weight_chunks(total: int, per_stream: int) -> list[tuple[int, int]]:
    return [(a, min(total, a + per_stream)) for a in range(0, total, per_stream)]


def encode_weights(values: np.ndarray, sigma_index: int, limit: int, per_stream: int) -> list[bytes]:
    """A network's integer weights (flat) → the bytes of each stream of ``per_stream`` weights."""
    cdf = weight_cdf(sigma_index, limit)
    chunks = weight_chunks(len(values), per_stream)
    pops = max(b - a for a, b in chunks)
    index = np.arange(pops)[:, None] + np.array([a for a, _ in chunks])[None, :]
    active = index < np.array([b for _, b in chunks])[None, :]
    column = values[np.where(active, index, 0)] + limit
    start = cdf[column]
    return rans.encode(start, cdf[column + 1] - start, active)


class NetworkStreams(NamedTuple):
    """The streams of networks decoded together: per stream its network, first weight, weight
    count and the (σ index, range) of its table."""

    network: np.ndarray
    first: np.ndarray
    count: np.ndarray
    sigma: np.ndarray
    limit: np.ndarray


def decode_weights(xp: Any, words: Any, starts: Any, ends: Any, streams: NetworkStreams,
                   networks: int) -> tuple[list[Any], Any]:
    """Lockstep decode of network streams → each network's flat integer weights (xp int64) and
    which streams failed (:meth:`~..rans.Lockstep.failed`)."""
    keys = sorted({(int(s), int(r)) for s, r in zip(streams.sigma, streams.limit)})
    tables = rans.Tables([weight_cdf(s, r) for s, r in keys])
    row = {key: i for i, key in enumerate(keys)}
    base = tables.starts[[row[int(s), int(r)] for s, r in zip(streams.sigma, streams.limit)]]
    put = to_device(xp, None if xp is np else words.device)
    coder = rans.Lockstep(xp, words, starts, ends)
    pops, widest = int(streams.count.max(initial=0)), 2 * int(streams.limit.max(initial=0)) + 1
    # a stream past its last weight pops the idle row from then on
    bases = put(np.where(np.arange(pops)[:, None] < streams.count[None, :], base[None, :], tables.idle))
    keyed = put(tables.keyed)
    columns = xp.zeros((pops, len(base)), dtype=xp.int64) if xp is np else words.new_zeros((pops, len(base)))
    for j in range(pops):
        columns[j] = coder.pop(keyed, bases[j], widest)
    values = columns - put(streams.limit)
    out = []
    for network in range(networks):
        parts = [values[:int(streams.count[i]), i] for i in np.flatnonzero(streams.network == network)]
        out.append(xp.concatenate(parts) if xp is np else xp.cat(parts))
    return out, coder.failed()


class LatentStreams(NamedTuple):
    """The latent streams of a group of slices decoded together: per stream its slice (index in
    the group), first sample and sample count."""

    slice: np.ndarray
    first: np.ndarray
    count: np.ndarray


def latent_streams_of(sizes: Sequence[int], group: int) -> LatentStreams:
    """The latent streams of slices of ``sizes`` samples cut ``group`` samples at a time."""
    first = [np.arange(0, n, group) for n in sizes]
    return LatentStreams(np.repeat(np.arange(len(sizes)), [len(f) for f in first]),
                         np.concatenate([*first, np.zeros(0, np.int64)]),
                         np.concatenate([np.minimum(group, n - f) for n, f in zip(sizes, first)] + [np.zeros(0, np.int64)]))


def decode_latents(xp: Any, words: Any, starts: Any, ends: Any, streams: LatentStreams, arm: IntegerArm,
                   sizes: Sequence[int], group: int, shape: tuple[int, int], scales: int, context: int
                   ) -> tuple[Any, Any]:
    """Lockstep decode of the latent streams of a group of slices (``sizes`` samples each) →
    latents (S, max size + 1, M + 1) as float64 (row ``max size`` and column M are scratch: the
    zero context outside the grid, and the target of pops a short stream does not make) and
    which streams failed: read past their end, did not end at 2^31 with every word read, or
    decoded a latent outside ±64."""
    m, steps = schedule(*shape, scales, context)
    n = max(sizes)
    group = min(group, n)
    put = to_device(xp, None if xp is np else words.device)
    if xp is np:
        z = np.zeros((len(sizes), n + 1, m + 1))
    else:
        z = xp.zeros((len(sizes), n + 1, m + 1), dtype=xp.float64, device=words.device)
    tables = latent_tables()
    keyed = put(tables.keyed)
    k = np.arange(group)
    valid = k[None, :] < streams.count[:, None]
    slot = put(np.where(valid, streams.first[:, None] + k[None, :], n))  # (streams, group)
    slices, valid = put(streams.slice)[:, None], put(valid)
    coder = rans.Lockstep(xp, words, starts, ends)
    bad = valid[:, 0] != valid[:, 0]
    for st in steps:
        mu, sigma = arm(z[:, :, put(st.neighbours)])
        rows = ((sigma - SIGMA_INDEX_MIN) * 2**MU_BITS + (mu & (2**MU_BITS - 1))) * (LATENT_COLUMNS + 1)
        rows, shift = rows[slices, slot], (mu >> MU_BITS)[slices, slot] - OFFSET_RANGE  # (streams, group, p)
        rows = xp.where(valid[..., None], rows, tables.idle)
        x = shift.clone() if xp is not np else shift.copy()
        for i in range(group):
            for q in range(len(st.positions)):
                x[:, i, q] += coder.pop(keyed, rows[:, i, q], LATENT_COLUMNS)
        outside = valid[..., None] & ((x < -LATENT_RANGE) | (x > LATENT_RANGE))
        bad = bad | outside.reshape(len(streams.slice), -1).any(1)
        z[slices[..., None], slot[..., None], put(st.positions)] = x if xp is np else x.to(z.dtype)
    return z, bad | coder.failed()


def stream_counts(sizes: Sequence[int], per_stream: int) -> list[int]:
    """Streams of each slice (or network) of ``sizes`` items cut ``per_stream`` at a time."""
    return [math.ceil(n / per_stream) for n in sizes]
