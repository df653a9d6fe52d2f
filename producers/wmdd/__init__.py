"""WMDD (paper 004) as a ``.dd`` producer: per-class Wasserstein barycenters of a teacher's
features, images recovered to match them under per-class BN statistics, the barycenter masses
as weights and per-view teacher labels, in one file. See README.md."""

from .barycenter import Barycenter, wasserstein_barycenter
from .distill import METHODS, UnitResult, WmddConfig, distill, distill_unit, recipe, save_result, units
from .recover import OBJECTIVES, RecoverConfig, recover

__all__ = [
    "Barycenter", "METHODS", "OBJECTIVES", "RecoverConfig", "UnitResult", "WmddConfig", "distill", "distill_unit",
    "recipe", "recover", "save_result", "units", "wasserstein_barycenter",
]
