"""Expert trajectories for trajectory matching (MTT): networks trained on real data, their
parameters recorded after every epoch, stored as safetensors so loading one runs no code."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ddformat.evaluation.augment import DSA

from .data import RealData
from .networks import DEFAULT_DSA, draw_seed, fresh_network

EXPERT_PATTERN = "expert_{:03d}.safetensors"
EXPERT_GLOB = "expert_*.safetensors"


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All of ``model``'s parameters as one detached CPU vector, in ``named_parameters`` order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


def unflatten_parameters(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inverse of :func:`flat_parameters`, as views of ``flat`` (so gradients flow back to
    it), keyed for :func:`torch.func.functional_call`."""
    out, start = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[start:start + p.numel()].view_as(p)
        start += p.numel()
    return out


def train_experts(real: RealData, directory: str | Path, *, architecture: str = "ConvNet-D3",
                  num_experts: int = 5, epochs: int = 20, lr: float = 0.01, batch_size: int = 256,
                  dsa: str = DEFAULT_DSA, seed: int = 0, progress: bool = True) -> list[Path]:
    """MTT's buffer: train ``num_experts`` students on the real data (SGD without momentum or
    weight decay, DSA) and save each one's flattened parameters after every epoch as a
    ``(epochs + 1, P)`` float32 tensor ``trajectory`` in ``expert_NNN.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    augment = DSA(dsa)
    generator = torch.Generator().manual_seed(seed)
    metadata = {"architecture": architecture, "sample_shape": json.dumps(real.sample_shape),
                "num_classes": str(real.num_classes), "source": real.source, "lr": str(lr)}
    paths = []
    n = len(real.images)
    for e in tqdm(range(num_experts), desc="training experts", disable=not progress):
        net = fresh_network(architecture, real, generator)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        trajectory = [flat_parameters(net)]
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(real.images.device)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                loss = F.cross_entropy(net(augment(real.images[idx], draw_seed(generator))), real.labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            trajectory.append(flat_parameters(net))
        path = directory / EXPERT_PATTERN.format(e)
        save_file({"trajectory": torch.stack(trajectory).contiguous()}, str(path), metadata=metadata)
        paths.append(path)
    return paths


def load_experts(directory: str | Path) -> list[torch.Tensor]:
    """Every ``expert_NNN.safetensors`` trajectory in ``directory`` (safetensors: no code runs)."""
    paths = sorted(Path(directory).glob(EXPERT_GLOB))
    if not paths:
        raise ValueError(f"{directory}: no expert_*.safetensors files; train them with train_experts")
    trajectories = []
    for path in paths:
        tensors = load_file(str(path))
        if set(tensors) != {"trajectory"} or tensors["trajectory"].ndim != 2:
            raise ValueError(f"{path}: expected one (epochs + 1, P) tensor named 'trajectory'")
        trajectories.append(tensors["trajectory"])
    return trajectories
