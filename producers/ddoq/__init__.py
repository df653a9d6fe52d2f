"""DDOQ (paper 001) and its base D4M as a ``.dd`` producer: latent quantisation with cluster
counts kept as per-sample weights, decoded through a latent diffusion prior
(:mod:`producers.common.diffusion`). See README.md."""

from .cluster import CLUSTERINGS, Quantization, clvq, online_kmeans, quantize, voronoi_counts, w2
from .distill import SCHEMES, ClassResult, DdoqConfig, check_prior, distill, distill_class, recipe, save_result

__all__ = [
    "CLUSTERINGS", "ClassResult", "DdoqConfig", "Quantization", "SCHEMES", "check_prior", "clvq", "distill",
    "distill_class", "online_kmeans", "quantize", "recipe", "save_result", "voronoi_counts", "w2",
]
