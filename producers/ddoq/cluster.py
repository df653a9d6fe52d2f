"""Step 2 of DDOQ (paper 001): quantise one class's latents into K points and keep how much of
the class each point stands for.

Two online algorithms, each one sequential pass of single-sample updates (numpy, float64):

- :func:`clvq` — competitive learning vector quantization, Algorithm 2: the winner moves by a
  global step γ_i toward the sample and the companion weights by the same step toward the
  winner's indicator, so that they converge to the masses of the Voronoi cells (Proposition 3).
  Steps γ_i = a / (a + i) with a = K: Σγ = ∞ and Σγ² < ∞, as Proposition 3 asks.
- :func:`online_kmeans` — D4M's prototype k-means, Algorithm 4: per-cluster update counts start
  at 1 and each winner moves by 1 / (its count). scikit-learn's ``MiniBatchKMeans`` is not the
  same algorithm (it assigns a whole batch to frozen centres, then moves them, and its counts
  start at 0), so it is not used.

Both start from K distinct samples of the class drawn with the caller's generator (points in the
hull of the support, as Eq. 21 requires), and both end with one assignment pass that gives the
cluster counts v_k: the number of the class's samples in each final Voronoi cell, integers that
sum to the class size — the values DDOQ turns into weights and the file stores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ot

CLUSTERINGS = ("clvq", "d4m")


@dataclass
class Quantization:
    """K centroids ``(K, D)``, their cluster counts ``(K,)`` and, for CLVQ, its companion weights."""

    centroids: np.ndarray
    counts: np.ndarray
    companion: np.ndarray | None = None


def voronoi_counts(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """How many of ``points`` (N, D) fall in each centroid's Voronoi cell (ties to the lower index)."""
    nearest = _squared_distances(points, centroids).argmin(axis=1)
    return np.bincount(nearest, minlength=len(centroids)).astype(np.int64)


def w2(points: np.ndarray, support: np.ndarray, mass: np.ndarray) -> float:
    """Wasserstein-2 distance between the uniform empirical measure of ``points`` (N, D) and the
    measure with ``mass`` (K,) on ``support`` (K, D): exact optimal transport (POT's network
    simplex, ``ot.emd2``) on squared Euclidean costs. Paper 001's Table 1 measures the quantised
    latents of a class against its encoded training latents this way."""
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    support = np.asarray(support, dtype=np.float64).reshape(len(support), -1)
    cost = ot.dist(points, support, metric="sqeuclidean")
    mass = np.asarray(mass, dtype=np.float64)
    return float(np.sqrt(ot.emd2(np.full(len(points), 1.0 / len(points)), mass / mass.sum(), cost)))


def _squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (points * points).sum(1)[:, None] - 2.0 * points @ centroids.T + (centroids * centroids).sum(1)[None, :]


def _start(points: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    if not 1 <= k <= len(points):
        raise ValueError(f"cannot place {k} centroids among {len(points)} samples")
    return points, points[rng.choice(len(points), size=k, replace=False)].copy()


def clvq(points: np.ndarray, k: int, *, epochs: int, rng: np.random.Generator) -> Quantization:
    """Algorithm 2 over ``epochs`` shuffled passes through the empirical measure of ``points``."""
    x, centroids = _start(points, k, rng)
    weights = np.full(k, 1.0 / k)
    norms = (centroids * centroids).sum(1)
    i = 0
    for _ in range(epochs):
        for n in rng.permutation(len(x)):
            sample = x[n]
            win = int(np.argmin(norms - 2.0 * centroids @ sample))
            gamma = k / (k + i)
            centroids[win] += gamma * (sample - centroids[win])
            norms[win] = centroids[win] @ centroids[win]
            weights *= 1.0 - gamma
            weights[win] += gamma
            i += 1
    return Quantization(centroids, voronoi_counts(x, centroids), weights)


def online_kmeans(points: np.ndarray, k: int, *, rng: np.random.Generator, epochs: int = 1) -> Quantization:
    """Algorithm 4 (D4M): one pass (or ``epochs``) in shuffled order, winner step 1 / count."""
    x, centroids = _start(points, k, rng)
    updates = np.ones(k)
    norms = (centroids * centroids).sum(1)
    for _ in range(epochs):
        for n in rng.permutation(len(x)):
            sample = x[n]
            win = int(np.argmin(norms - 2.0 * centroids @ sample))
            updates[win] += 1.0
            centroids[win] += (sample - centroids[win]) / updates[win]
            norms[win] = centroids[win] @ centroids[win]
    return Quantization(centroids, voronoi_counts(x, centroids))


def quantize(points: np.ndarray, k: int, clustering: str, *, rng: np.random.Generator, epochs: int) -> Quantization:
    """``clustering`` is ``"clvq"`` (Algorithm 2) or ``"d4m"`` (Algorithm 4)."""
    if clustering == "clvq":
        return clvq(points, k, epochs=epochs, rng=rng)
    if clustering == "d4m":
        return online_kmeans(points, k, rng=rng, epochs=epochs)
    raise ValueError(f"clustering {clustering!r} is not one of {', '.join(CLUSTERINGS)}")
