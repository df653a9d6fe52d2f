"""IGDS's variational estimator (paper 003, § 3.1.3, Eq. 16, Algorithm 2): an encoder f trained by
MoCo-style instance discrimination plus a term that spreads each class's codes, then a linear
classifier g on the frozen f.

The code of an image is ``σ(x̂) = softmax(normalize(f(x)) / τ)``; ``Q^y`` is the mean code of class
y over its real images, recomputed before every epoch ("iteratively … updating Q^y", § 3.1.3).
Each step (Algorithm 2) takes two augmentations of a batch, the query through f and the key
through the momentum encoder, and minimises ``CE([q·k, q·queue] / τ, 0) − λ·KL(σ(q) ‖ Q^y)``;
then the momentum encoder moves toward f and the keys enter the queue. With λ = 0 this is MoCo.
f is a small ConvNet with SoftPlus (β = 3) in place of ReLU, so guidance gradients are smooth
(§ 4, after Ma et al.); the paper starts from a pretrained MoCo ResNet-50 instead.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ddformat.evaluation.augment import RandomResizedCropFlip
from producers.common import RealData


@dataclass(frozen=True)
class EstimatorConfig:
    """The estimator's architecture and both training stages (MoCo's defaults where they apply)."""

    width: int = 64
    dim: int = 128
    queue: int = 1024
    momentum: float = 0.99
    tau: float = 0.07
    kl_weight: float = 0.1
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.03
    classifier_epochs: int = 30
    classifier_lr: float = 0.05
    seed: int = 0


class Encoder(nn.Module):
    """ConvNet blocks (3×3 convolution, instance norm, SoftPlus β = 3, 2×2 average pooling) and a
    linear projection to ``dim``; as many blocks (up to 3) as the image size allows."""

    def __init__(self, channels: int, size: int, width: int, dim: int) -> None:
        super().__init__()
        depth = max(1, min(3, size.bit_length() - 2))
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1), nn.GroupNorm(width, width),
                       nn.Softplus(beta=3), nn.AvgPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(width * (size >> depth) ** 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x).flatten(1))


class VariationalEstimator(nn.Module):
    """f (``encoder``), g (``classifier``) and the class means ``marginals`` (Q^y, ``(K, dim)``),
    for images in ``real``'s normalised space (its ``mean`` and ``std`` kept here)."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, config: EstimatorConfig,
                 mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(shape[0], shape[1], config.width, config.dim)
        self.classifier = nn.Linear(config.dim, num_classes)
        self.register_buffer("marginals", torch.full((num_classes, config.dim), 1.0 / config.dim))
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.shape = shape

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x̂ = normalize(f(x)), on the unit sphere as MoCo's codes."""
        return F.normalize(self.encoder(x), dim=1)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """σ(x̂) = softmax(x̂ / τ)."""
        return torch.softmax(self.embed(x) / self.config.tau, dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """g(x̂): class logits."""
        return self.classifier(self.embed(x))

    @torch.no_grad()
    def class_marginals(self, real: RealData, batch_size: int = 512) -> torch.Tensor:
        """Q^y for every class y: the mean code of its real images."""
        sums = torch.zeros_like(self.marginals)
        for batch in torch.arange(len(real.labels)).split(batch_size):
            sums.index_add_(0, real.labels[batch], self.codes(real.images[batch]))
        return sums / torch.bincount(real.labels, minlength=len(sums)).clamp_min(1)[:, None]

    def save(self, path: str | os.PathLike[str], metadata: dict[str, object]) -> Path:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(root / "estimator.safetensors"))
        meta = {"config": asdict(self.config), "shape": list(self.shape), "num_classes": self.classifier.out_features,
                **metadata}
        (root / "estimator.json").write_text(json.dumps(meta, indent=1) + "\n")
        return root

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> "VariationalEstimator":
        root = Path(path)
        meta = json.loads((root / "estimator.json").read_text())
        state = load_file(str(root / "estimator.safetensors"))
        shape = tuple(meta["shape"])
        model = cls(shape, meta["num_classes"], EstimatorConfig(**meta["config"]),
                    [0.0] * shape[0], [1.0] * shape[0])
        model.load_state_dict(state)
        return model.to(device).eval()


def train_estimator(real: RealData, config: EstimatorConfig = EstimatorConfig(), *,
                    progress: bool = True) -> VariationalEstimator:
    """Algorithm 2 for f, then g by cross-entropy on the frozen codes' directions x̂."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VariationalEstimator(real.sample_shape, real.num_classes, config, real.mean, real.std)
    model.to(real.images.device)
    key_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
    queue = F.normalize(torch.randn(config.queue, config.dim, generator=generator), dim=1).to(real.images.device)
    augment = RandomResizedCropFlip(scale=(0.2, 1.0))
    optimizer = torch.optim.SGD(model.encoder.parameters(), lr=config.lr, momentum=0.9, weight_decay=1e-4)
    steps = config.epochs * math.ceil(len(real.labels) / config.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    pointer = 0
    for _ in tqdm(range(config.epochs), desc="variational estimator f", disable=not progress):
        model.eval()
        model.marginals.copy_(model.class_marginals(real))
        model.train()
        for batch in torch.randperm(len(real.labels), generator=generator).split(config.batch_size):
            x, y = real.images[batch], real.labels[batch]
            q = model.embed(augment(x, generator))
            with torch.no_grad():
                k = F.normalize(key_encoder(augment(x, generator)), dim=1)
            logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / config.tau
            contrastive = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
            codes = torch.softmax(q / config.tau, dim=1)
            spread = (codes * (codes.clamp_min(1e-12).log() - model.marginals[y].clamp_min(1e-12).log())).sum(1).mean()
            loss = contrastive - config.kl_weight * spread
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                for pk, pq in zip(key_encoder.parameters(), model.encoder.parameters()):
                    pk.mul_(config.momentum).add_(pq, alpha=1 - config.momentum)
                rows = torch.arange(pointer, pointer + len(k)) % config.queue
                queue[rows.to(queue.device)] = k
                pointer = (pointer + len(k)) % config.queue
    model.eval()
    model.marginals.copy_(model.class_marginals(real))
    model.encoder.requires_grad_(False)
    with torch.no_grad():
        codes = torch.cat([model.embed(real.images[b]) for b in torch.arange(len(real.labels)).split(512)])
    head = torch.optim.Adam(model.classifier.parameters(), lr=config.classifier_lr)
    for _ in tqdm(range(config.classifier_epochs), desc="classifier g", disable=not progress):
        for batch in torch.randperm(len(real.labels), generator=generator).split(config.batch_size):
            loss = F.cross_entropy(model.classifier(codes[batch]), real.labels[batch])
            head.zero_grad(set_to_none=True)
            loss.backward()
            head.step()
    return model.requires_grad_(False)
