"""The integer Laplace tables ``ruo`` codes latents and network weights with (spec § 3.6).

Every frequency is computed with integers only, so every reader derives the same tables. A
discretised Laplace of scale σ puts on an integer symbol x the mass between the boundaries
x − μ ± ½; in units of 1/16 every boundary is an integer k, and the Laplace CDF there is
½·g^−k below the mean and 1 − ½·g^k above it, with g = e^(−1/(16σ)). The ratio g is fixed once
per σ index i as the 32-bit fixed-point integer G_i = round(2^32·g) (:data:`RATIOS`; σ_i of
:func:`sigma`), and g^|k| is evaluated by :func:`fixed_power` — binary exponentiation with
round-half-up to 32 fractional bits after every product. Masses are differences of the integer
CDF C(k) = T(−k) for k ≤ 0 and 2^33 − T(k) for k > 0 (T = fixed_power, C = 2^33·CDF), and
:func:`~ddformat.codecs.rans.apportion` turns each row of masses into frequencies.

Latent tables (:func:`latent_cdf`): one row per (σ index, μ index mod 16), over the 257
offsets d = x − ⌊μ⌋ ∈ [−128, 128] — every latent in [−64, 64] is codable whatever μ. Weight
tables (:func:`weight_cdf`): μ = 0, symbols [−range, range].
"""

from __future__ import annotations

import decimal
import hashlib
from functools import lru_cache

import numpy as np

from ..rans import apportion, cumulative
from .arm import MU_BITS, SIGMA_INDEX_MAX, SIGMA_INDEX_MIN

RATIO_INDEX_MIN, RATIO_INDEX_MAX = -16, 63
"""σ indices of :data:`RATIOS`: σ from 1/16 (latents) to 1.75·2^15 (network weights)."""
OFFSET_RANGE = 128
"""Latent tables cover offsets x − ⌊μ⌋ in ±128: latents and ⌊μ⌋ both lie in ±64."""
_FRACTION = 32
LATENT_TABLE_SHA256 = "3edd9ea5dce60fcbf421d04db777236536f7ff53401af0f6178883080afd630d"
"""SHA-256 of :func:`latent_cdf` as little-endian uint32, row-major (spec § 3.6)."""


def sigma(index: int) -> decimal.Decimal:
    """σ_i = (1 + (i mod 4)/4)·2^⌊i/4⌋ (mod and ⌊⌋ rounding towards −∞)."""
    return (1 + decimal.Decimal(index % 4) / 4) * decimal.Decimal(2) ** (index // 4)


def _ratios() -> np.ndarray:
    """G_i = round(2^32·exp(−1/(16·σ_i))), computed with 50 significant digits (Python's
    ``decimal``; its ``exp`` is correctly rounded), rounded half to even."""
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        values = [(decimal.Decimal(-1) / (16 * sigma(i))).exp() * 2**_FRACTION
                  for i in range(RATIO_INDEX_MIN, RATIO_INDEX_MAX + 1)]
        return np.array([int(v.to_integral_value(decimal.ROUND_HALF_EVEN)) for v in values], dtype=np.uint64)


RATIOS = _ratios()
"""G_i for σ index i = :data:`RATIO_INDEX_MIN` + position."""


def fixed_power(ratio: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """g^n in 32-bit fixed point, for ratios G < 2^32 and exponents n ≥ 0 (broadcast):
    r = 2^32, b = G; for each bit of n from the lowest: if set, r ← ⌊(r·b + 2^31) / 2^32⌋;
    then b ← ⌊(b·b + 2^31) / 2^32⌋. Every product stays below 2^64."""
    n = np.asarray(exponent, dtype=np.uint64)
    b = np.broadcast_to(np.asarray(ratio, dtype=np.uint64), n.shape).copy()
    r = np.full(n.shape, 1 << _FRACTION, dtype=np.uint64)
    half, shift = np.uint64(1 << (_FRACTION - 1)), np.uint64(_FRACTION)
    while n.any():
        odd = (n & np.uint64(1)).astype(bool)
        r = np.where(odd, (r * b + half) >> shift, r)
        b = (b * b + half) >> shift
        n = n >> np.uint64(1)
    return r


def _cdf_at(ratio: np.ndarray, k: np.ndarray) -> np.ndarray:
    """C(k) = 2^33·CDF at boundary k (units of 1/16), as int64."""
    tail = fixed_power(ratio, np.abs(k)).astype(np.int64)
    return np.where(k <= 0, tail, (1 << (_FRACTION + 1)) - tail)


def _masses(ratio: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Masses of symbols whose distance to μ is ``centres`` (units of 1/16): C(c + 8) − C(c − 8)."""
    return _cdf_at(ratio, centres + 8) - _cdf_at(ratio, centres - 8)


@lru_cache(maxsize=1)
def latent_cdf() -> np.ndarray:
    """Cumulative frequencies, (44·16, 258) int64: row (σ index + 16)·16 + (μ index mod 16) for
    σ indices −16 … 27, column d + 128 for offsets d = x − ⌊μ index / 16⌋ in [−128, 128]."""
    indices = np.arange(SIGMA_INDEX_MIN, SIGMA_INDEX_MAX + 1)
    fraction = np.arange(2**MU_BITS)
    offsets = np.arange(-OFFSET_RANGE, OFFSET_RANGE + 1)
    ratio = RATIOS[indices - RATIO_INDEX_MIN][:, None, None]
    centres = 16 * offsets[None, None, :] - fraction[None, :, None]
    masses = _masses(ratio, np.broadcast_to(centres, (len(indices), *centres.shape[1:])))
    cdf = cumulative(apportion(masses)).reshape(-1, len(offsets) + 1)
    cdf.setflags(write=False)
    return cdf


@lru_cache(maxsize=256)
def weight_cdf(sigma_index: int, limit: int) -> np.ndarray:
    """Cumulative frequencies (2·limit + 2,) over weights −limit … limit under a zero-mean
    discretised Laplace of σ index ``sigma_index``."""
    values = np.arange(-limit, limit + 1)
    masses = _masses(RATIOS[sigma_index - RATIO_INDEX_MIN], 16 * values)
    cdf = cumulative(apportion(masses))
    cdf.setflags(write=False)
    return cdf


def table_digest(cdf: np.ndarray) -> str:
    return hashlib.sha256(cdf.astype("<u4").tobytes()).hexdigest()
