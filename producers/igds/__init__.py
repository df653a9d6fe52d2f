"""IGDS (paper 003) as a ``.dd`` producer: a variational estimator trained MoCo-style, then
information-guided DDPM sampling of each class from a pixel-space diffusers prior. See README.md."""

from .distill import (ClassResult, IgdsConfig, cached_estimator, default_beta, default_epochs, distill, distill_class,
                      recipe, save_result)
from .estimator import EstimatorConfig, VariationalEstimator, train_estimator
from .sample import information_objective, merge_four, sample_class

__all__ = [
    "ClassResult", "EstimatorConfig", "IgdsConfig", "VariationalEstimator", "cached_estimator", "default_beta",
    "default_epochs", "distill", "distill_class", "information_objective", "merge_four", "recipe", "sample_class",
    "save_result", "train_estimator",
]
