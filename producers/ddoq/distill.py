"""DDOQ (paper 001, Algorithm 1) and its base D4M (Appendix E, Algorithm 4) on a latent diffusion
prior: encode each class, quantise its latents keeping the cluster counts, decode the centroids
through the diffusion model and the VAE, and write one ``.dd`` whose weights are the counts.

Step 1 encodes a class's real training images with the prior's VAE (posterior means, scaled).
Step 2 quantises them (:mod:`.cluster`). Step 3 decodes as D4M does: each centroid is the
starting latent of an image-to-image DDIM run at ``strength`` (noised that far toward pure noise,
then denoised with the class as condition), and the VAE decodes the result. The file stores the
counts with the ``counts`` weights codec and names the weighting in its recipe: ``uniform`` (D4M),
``sqrt`` (Eq. 34, √K·√(v/Σv)) or ``proportional`` (direct, v/Σv); consumers derive the weights
from the same counts with :func:`ddformat.weighting.loss_weights`, so one file serves all three.
Provenance records the prior (path and hash), the time of each step and, per class, the W2
distance from its centroids to its latents under uniform and under count masses (Table 1).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

import ddformat
from producers.common import RealData
from producers.common.diffusion import LatentPrior
from producers.common.ranks import unit_seed

from .cluster import CLUSTERINGS, Quantization, quantize, w2

SCHEMES = {"uniform": "D4M: every sample weighs 1", "sqrt": "DDOQ Eq. 34: sqrt(K * v / sum v)",
           "proportional": "direct: v / sum v"}


@dataclass(frozen=True)
class DdoqConfig:
    """Everything that decides a DDOQ / D4M file."""

    ipc: int = 10
    clustering: str = "clvq"
    cluster_epochs: int = 20
    weighting: str = "sqrt"
    strength: float = 0.7
    steps: int = 50
    guidance: float = 1.0
    seed: int = 0
    eval_epochs: int = 300

    def __post_init__(self) -> None:
        if self.clustering not in CLUSTERINGS:
            raise ValueError(f"clustering {self.clustering!r} is not one of {', '.join(CLUSTERINGS)}")
        if self.weighting not in SCHEMES:
            raise ValueError(f"weighting {self.weighting!r} is not one of {', '.join(SCHEMES)}")
        if self.ipc < 1 or self.cluster_epochs < 1:
            raise ValueError("ipc and cluster_epochs must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ClassResult:
    """One class distilled: its latents after Step 3, images, counts, step times and the W2
    distances of its centroids to the class's latents under uniform and count masses."""

    label: int
    quantization: Quantization
    latents: np.ndarray
    images: torch.Tensor
    seconds: dict[str, float]
    w2: dict[str, float]


def check_prior(prior: LatentPrior, data: RealData) -> None:
    """Refuse a prior that does not fit the data: another image shape or fewer classes."""
    shape = data.sample_shape
    if tuple(prior.image_shape) != shape:
        raise ValueError(f"the prior makes {tuple(prior.image_shape)} images; {data.source} has {shape}")
    if prior.num_classes < data.num_classes:
        raise ValueError(f"the prior knows {prior.num_classes} classes; {data.source} has {data.num_classes}")


def distill_class(prior: LatentPrior, images: torch.Tensor, label: int, config: DdoqConfig) -> ClassResult:
    """Steps 1-3 for the uint8 ``images`` of class ``label``."""
    seed = unit_seed(config.seed, label)
    start = time.perf_counter()
    latents = prior.encode(images)
    encoded = time.perf_counter()
    flat = latents.flatten(1).double().cpu().numpy()
    q = quantize(flat, config.ipc, config.clustering, rng=np.random.default_rng(seed), epochs=config.cluster_epochs)
    clustered = time.perf_counter()
    centroids = torch.from_numpy(q.centroids).to(torch.float32).reshape(config.ipc, *latents.shape[1:])
    generator = torch.Generator(device=prior.device).manual_seed(seed)
    denoised = prior.denoise(centroids, torch.full((config.ipc,), label), strength=config.strength,
                             steps=config.steps, guidance=config.guidance, generator=generator)
    synthesized = prior.decode(denoised)
    decoded = time.perf_counter()
    distances = {"uniform": w2(flat, q.centroids, np.ones(config.ipc)), "counts": w2(flat, q.centroids, q.counts)}
    return ClassResult(label, q, denoised.cpu().numpy(), synthesized,
                       {"encode": encoded - start, "cluster": clustered - encoded, "decode": decoded - clustered},
                       distances)


def distill(prior: LatentPrior, data: RealData, config: DdoqConfig, labels: Sequence[int] | None = None, *,
            progress: bool = True) -> list[ClassResult]:
    """Steps 1-3 for each class in ``labels`` (default: all), in order."""
    check_prior(prior, data)
    labels = range(data.num_classes) if labels is None else labels
    images = data.to_pixels(data.images)
    return [distill_class(prior, images[data.indices(c)], c, config)
            for c in tqdm(labels, desc=f"DDOQ ({config.clustering})", unit="class", disable=not progress)]


def recipe(config: DdoqConfig) -> dict[str, Any]:
    """Hard-label students as the project trains them (ConvNet-D3, SGD 0.01, DSA), with the loss
    weighted by ``config.weighting`` over the stored counts (paper 001, Step 4)."""
    return {"loss": "ce", "architecture": "ConvNet-D3", "epochs": config.eval_epochs, "batch_size": 256,
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step"},
            "augmentation": ["dsa"], "weighting": {"scheme": config.weighting, "normalization": "global"}}


def save_result(path: str | Path, results: Sequence[ClassResult], data: RealData, config: DdoqConfig,
                prior: dict[str, Any]) -> Path:
    """One ``.dd``: uint8 images, hard labels, counts as weights; ``prior`` (its path and
    :func:`~producers.common.diffusion.directory_hash`) and per-step times in provenance."""
    results = sorted(results, key=lambda r: r.label)
    images = torch.cat([r.images for r in results]).numpy()
    labels = np.concatenate([np.full(len(r.images), r.label, dtype=np.int64) for r in results])
    counts = np.concatenate([r.quantization.counts for r in results])
    seconds = {step: sum(r.seconds[step] for r in results) for step in ("encode", "cluster", "decode")}
    parameters = {**config.to_dict(), "prior": prior, "seconds": seconds,
                  "latent_w2": {scheme: [r.w2[scheme] for r in results] for scheme in ("uniform", "counts")},
                  "steps_meaning": "clvq: paper 001 Algorithm 2; d4m: Appendix E Algorithm 4; weights: "
                                   + SCHEMES[config.weighting]}
    method = "ddoq" if config.clustering == "clvq" else "d4m"
    return ddformat.save(path, images, labels, num_classes=data.num_classes, class_names=data.class_names,
                         weights=counts, weights_codec="counts", name=f"{data.source}-{method}-ipc{config.ipc}",
                         normalization={**data.normalization, "applied": False}, recipe=recipe(config), producer="producers.ddoq",
                         parameters=parameters, source_dataset=data.source)
