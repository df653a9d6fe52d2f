"""What several producers share: the real data they distil from (:class:`RealData`), teachers
and their per-class BN statistics (:mod:`.teachers`), the DM/GM/TM distillation losses
(:mod:`.losses`), MTT's expert trajectories (:mod:`.experts`), diffusion priors
(:mod:`.diffusion`) and the torchrun split of units over ranks (:mod:`.ranks`). Built on
ddformat's public API only (``ddformat``, ``ddformat.torch``, ``ddformat.evaluation``)."""

from .data import RealData
from .experts import flat_parameters, load_experts, train_experts, unflatten_parameters
from .losses import DistributionMatching, GradientMatching, TrajectoryMatching, UtilityLoss, gradient_distance
from .networks import DEFAULT_DSA, draw_seed, fresh_network
from .teachers import load_teacher, save_teacher, train_teacher

__all__ = [
    "DEFAULT_DSA", "DistributionMatching", "GradientMatching", "RealData", "TrajectoryMatching", "UtilityLoss",
    "draw_seed", "flat_parameters", "fresh_network", "gradient_distance", "load_experts", "load_teacher",
    "save_teacher", "train_experts", "train_teacher", "unflatten_parameters",
]
