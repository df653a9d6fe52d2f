"""The distillation losses DM, GM and TM: RUO's utility term ℓ(D; S) (paper 000, Eqs. 6–8), and
what other producers optimising synthetic images plug in.

Each is a callable ``loss(images, labels) -> scalar`` on the whole synthetic set, differentiable
with respect to the images (and so to latents and networks), that draws its own randomness from
a seeded generator:

* :class:`DistributionMatching` (DM, Zhao & Bilen 2023): per class, the squared distance between
  mean embeddings of real and synthetic images under a freshly initialised, frozen ConvNet.
* :class:`GradientMatching` (GM, DC/DSA): per class, DC's layer-wise cosine distance between the
  gradients a real and a synthetic batch give a network that is itself trained on the synthetic
  set between matching steps and re-initialised every ``outer_loop`` calls.
* :class:`TrajectoryMatching` (TM, MTT): ``syn_steps`` differentiable SGD steps on synthetic
  batches from an expert's parameters at a random epoch, compared with the expert
  ``expert_epochs`` later (Eq. 7); experts come from :func:`~producers.common.experts.train_experts`.

Real and synthetic batches of DM and GM go through DSA with one shared seed and batch-wide
parameters (the siamese augmentation of the DSA code, whose batches differ in size).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddformat.evaluation.augment import DSA

from .data import RealData
from .experts import unflatten_parameters
from .networks import DEFAULT_DSA, draw_seed, fresh_network


class UtilityLoss(Protocol):
    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    def extra_parameters(self) -> list[nn.Parameter]:
        """Learnable parameters of the loss itself (TM's step size), optimised alongside."""
        ...


class DistributionMatching:
    """DM: ``Σ_c ‖mean φ(real_c) − mean φ(syn_c)‖²`` with φ a random ConvNet's features."""

    def __init__(self, real: RealData, *, architecture: str = "ConvNet-D3", batch_real: int = 256,
                 dsa: str = DEFAULT_DSA, seed: int = 0) -> None:
        self.real, self.architecture, self.batch_real = real, architecture, batch_real
        self.dsa = DSA(dsa)
        self.generator = torch.Generator().manual_seed(seed)

    def extra_parameters(self) -> list[nn.Parameter]:
        return []

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        net = fresh_network(self.architecture, self.real, self.generator)
        net.classifier = nn.Identity()
        net.requires_grad_(False)
        loss = images.new_zeros(())
        for c in labels.unique().tolist():
            real = self.real.batch(c, self.batch_real, self.generator)
            seed = draw_seed(self.generator)
            real_mean = net(self.dsa(real, seed, batchwise=True)).mean(0)
            syn_mean = net(self.dsa(images[labels == c], seed, batchwise=True)).mean(0)
            loss = loss + ((real_mean - syn_mean) ** 2).sum()
        return loss


def gradient_distance(synthetic: Sequence[torch.Tensor], real: Sequence[torch.Tensor]) -> torch.Tensor:
    """DC's matching distance: per weight tensor, Σ over output units of 1 − cos between the
    flattened gradients; biases and norm parameters (1-D) are left out, as in DC."""
    total = synthetic[0].new_zeros(())
    for gs, gr in zip(synthetic, real):
        if gs.ndim == 1:
            continue
        gs, gr = gs.flatten(1), gr.flatten(1)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


class GradientMatching:
    """GM: each call is one DC outer step. The network is re-initialised every ``outer_loop``
    calls; in between, each call first trains it ``inner_loop`` SGD steps on the (detached,
    augmented) synthetic set, as DC does after every synthetic update."""

    def __init__(self, real: RealData, *, architecture: str = "ConvNet-D3", batch_real: int = 256,
                 outer_loop: int = 10, inner_loop: int = 50, net_lr: float = 0.01, dsa: str = DEFAULT_DSA,
                 seed: int = 0) -> None:
        if outer_loop < 1 or inner_loop < 0:
            raise ValueError("GM needs outer_loop ≥ 1 and inner_loop ≥ 0")
        self.real, self.architecture, self.batch_real = real, architecture, batch_real
        self.outer_loop, self.inner_loop, self.net_lr = outer_loop, inner_loop, net_lr
        self.dsa = DSA(dsa)
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0
        self.net: nn.Module | None = None

    def extra_parameters(self) -> list[nn.Parameter]:
        return []

    def _train_network(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer = torch.optim.SGD(self.net.parameters(), lr=self.net_lr)
        for _ in range(self.inner_loop):
            loss = F.cross_entropy(self.net(self.dsa(images, draw_seed(self.generator))), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.calls % self.outer_loop == 0 or self.net is None:
            self.net = fresh_network(self.architecture, self.real, self.generator)
        else:
            self._train_network(images.detach(), labels)
        self.calls += 1
        params = list(self.net.parameters())
        loss = images.new_zeros(())
        for c in labels.unique().tolist():
            seed = draw_seed(self.generator)
            real = self.dsa(self.real.batch(c, self.batch_real, self.generator), seed, batchwise=True)
            syn = self.dsa(images[labels == c], seed, batchwise=True)
            target = torch.full((len(real),), c, dtype=torch.int64, device=real.device)
            g_real = torch.autograd.grad(F.cross_entropy(self.net(real), target), params)
            target = torch.full((len(syn),), c, dtype=torch.int64, device=syn.device)
            g_syn = torch.autograd.grad(F.cross_entropy(self.net(syn), target), params, create_graph=True)
            loss = loss + gradient_distance(g_syn, [g.detach() for g in g_real])
        return loss


class TrajectoryMatching:
    """TM (Eq. 7): from a random expert at a random epoch t < ``max_start_epoch``, take
    ``syn_steps`` SGD steps on synthetic minibatches of ``batch_syn`` with a learnable step size,
    and return ‖θ_student − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖² with M = ``expert_epochs``."""

    def __init__(self, experts: Sequence[torch.Tensor], real: RealData, *, architecture: str = "ConvNet-D3",
                 syn_steps: int = 20, expert_epochs: int = 2, max_start_epoch: int = 10, batch_syn: int = 256,
                 syn_lr: float = 0.01, dsa: str = DEFAULT_DSA, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.net = fresh_network(architecture, real, self.generator)
        size = sum(p.numel() for p in self.net.parameters())
        epochs = min(len(t) for t in experts) - 1
        if any(t.shape[1] != size for t in experts):
            raise ValueError(f"expert trajectories do not hold the {size} parameters of {architecture}")
        if not 1 <= max_start_epoch or max_start_epoch + expert_epochs > epochs:
            raise ValueError(f"experts have {epochs} epochs: need max_start_epoch ≥ 1 and "
                             f"max_start_epoch + expert_epochs ≤ {epochs}")
        self.experts = [t.to(real.images.device) for t in experts]
        self.syn_steps, self.expert_epochs, self.max_start_epoch = syn_steps, expert_epochs, max_start_epoch
        self.batch_syn = batch_syn
        self.syn_lr = nn.Parameter(torch.tensor(float(syn_lr), device=real.images.device))
        self.dsa = DSA(dsa)

    def extra_parameters(self) -> list[nn.Parameter]:
        return [self.syn_lr]

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        g = self.generator
        trajectory = self.experts[int(torch.randint(len(self.experts), (1,), generator=g))]
        start = int(torch.randint(self.max_start_epoch, (1,), generator=g))
        origin, target = trajectory[start], trajectory[start + self.expert_epochs]
        w = origin.clone().requires_grad_(True)
        for _ in range(self.syn_steps):
            idx = torch.randperm(len(images), generator=g)[:self.batch_syn].to(images.device)
            x = self.dsa(images[idx], draw_seed(g))
            logits = functional_call(self.net, unflatten_parameters(self.net, w), (x,))
            grad = torch.autograd.grad(F.cross_entropy(logits, labels[idx]), w, create_graph=True)[0]
            w = w - self.syn_lr * grad
        return ((w - target) ** 2).sum() / ((origin - target) ** 2).sum()
