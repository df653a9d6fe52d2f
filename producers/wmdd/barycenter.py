"""Paper 004's Algorithm 2: a weighted Wasserstein barycenter of one class's features.

The class's n feature vectors carry mass 1/n each; the barycenter is m support points B with
masses w on the simplex, minimising W₂²(Σ w_j δ_{b_j}, (1/n) Σ δ_{z_i}). Each iteration solves
the exact transport problem (POT's network simplex, ``ot.emd``) and then

- moves the weights by a projected subgradient step along the optimal dual variables β
  (Appendix C.1), ``w ← Π_simplex(w − η β)``; β is defined up to a constant, which the
  projection ignores. The step is scaled so that no weight moves by more than η and is halved
  until the objective does not grow (the "appropriate step sizes" C.1 asks for), so every
  iteration keeps or lowers the objective;
- moves each point by the Newton step of Eq. 38, ``b_j ← Σ_i t_ij z_i / Σ_i t_ij``: for a fixed
  plan the cost is quadratic in b_j with Hessian 2·Σ_i t_ij·I, so the step lands on its minimum.

For fixed points the best weights are the points' Voronoi cell masses, and for fixed weights
the Newton step is a centroid update; the alternation is a transport-constrained k-means.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import ot


@dataclass
class Barycenter:
    """m support points ``(m, d)``, their masses ``(m,)`` (non-negative, summing to 1), the
    objective W₂² at initialisation and after each iteration, and which of the class's
    features the points started from."""

    points: np.ndarray
    weights: np.ndarray
    objective: list[float] = field(default_factory=list)
    start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _transport(z: np.ndarray, points: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The optimal plan (n, m), the dual variables β of the points and the cost W₂²."""
    cost = ot.dist(z, points)  # squared Euclidean
    plan, log = ot.emd(np.full(len(z), 1.0 / len(z)), weights, cost, log=True)
    return plan, log["v"], float(log["cost"])


def wasserstein_barycenter(features: np.ndarray, m: int, *, iterations: int = 30, step: float = 0.1,
                           learn_weights: bool = True, rng: np.random.Generator | None = None) -> Barycenter:
    """Algorithm 2 on ``features`` (n, d): m points started at m distinct features drawn by
    ``rng``, uniform weights, ``iterations`` rounds of the weight step (when ``learn_weights``;
    η = ``step``) and the Newton step on the points."""
    z = np.asarray(features, dtype=np.float64)
    if z.ndim != 2 or not 1 <= m <= len(z):
        raise ValueError(f"a barycenter of {m} points needs at least as many features; got shape {z.shape}")
    if iterations < 0 or step <= 0:
        raise ValueError("iterations must be non-negative and the step positive")
    rng = rng or np.random.default_rng(0)
    start = rng.choice(len(z), size=m, replace=False)
    points, weights = z[start].copy(), np.full(m, 1.0 / m)
    plan, beta, cost = _transport(z, points, weights)
    objective = [cost]
    for _ in range(iterations):
        if learn_weights:
            plan, beta, cost, weights = _weight_step(z, points, weights, plan, beta, cost, step)
        mass = plan.sum(0)
        moved = mass > 0
        points[moved] = (plan.T @ z)[moved] / mass[moved, None]
        plan, beta, cost = _transport(z, points, weights)
        objective.append(cost)
    return Barycenter(points, weights, objective, start)


def _weight_step(z: np.ndarray, points: np.ndarray, weights: np.ndarray, plan: np.ndarray, beta: np.ndarray,
                 cost: float, step: float, halvings: int = 12):
    direction = beta - beta.mean()
    scale = np.abs(direction).max()
    if scale == 0:
        return plan, beta, cost, weights
    for _ in range(halvings):
        trial = ot.utils.proj_simplex(weights - step * direction / scale)
        trial_plan, trial_beta, trial_cost = _transport(z, points, trial)
        if trial_cost <= cost:
            return trial_plan, trial_beta, trial_cost, trial
        step /= 2
    return plan, beta, cost, weights
