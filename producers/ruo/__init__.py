"""RUO (paper 000): dataset distillation as joint rate-utility optimisation, written as ``ruo`` files.

Synthetic samples are integer multiscale latents decoded by a tiny decoder per slice, their code
length measured under a per-slice autoregressive Laplace model (the ARM); Algorithm 1 initialises
them by overfitted compression of real images, optimises rate + λ·utility (DM, GM or TM) and
post-quantises the networks. Entry points: :func:`distill`, :func:`distill_to_budget` (which
always lands under its target, or raises :class:`BudgetError` up front), :func:`save_result`, and
``python -m producers.ruo``. See ``README.md`` for the scale it runs at.
"""

from producers.common import RealData, load_experts, train_experts

from .distill import BudgetError, RuoConfig, RuoResult, distill, distill_to_budget, floor_result, save_result
from .model import Architecture, RuoModel, laplace_bits

__all__ = [
    "Architecture", "BudgetError", "RealData", "RuoConfig", "RuoModel", "RuoResult", "distill", "distill_to_budget",
    "floor_result", "laplace_bits", "load_experts", "save_result", "train_experts",
]
