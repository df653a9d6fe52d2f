"""Algorithm 1 of paper 003: DDPM sampling of one class's n images together, each step followed
by a gradient step on the information objective.

Per step t: the denoiser's noise estimate gives the DDPM posterior sample x'_{t-1} (diffusers'
``DDPMScheduler.step``: posterior mean from x̃_0, plus σ̃_t z); then

    L = mean_i log P(y | ŷ_i) + H(mean_i P(· | ŷ_i)) + β · mean_i KL(σ(x̂_i) ‖ Q),   Q = mean_i σ(x̂_i)

with x̂ = f(x'_{t-1}), ŷ = g(x̂) and σ the estimator's code at τ (Algorithm 1, lines 8–12; H(ŷ) is
the entropy of the batch's label marginal, the other half of the I(X; Y) bound), and
x_{t-1} = x'_{t-1} + η ∇_{x_t} L: the gradient flows through the denoiser, as line 13 states.
The first two terms keep the class recognisable (prototype information), the third spreads
the n images apart (contextual information, weighted by β). With η = 0 this is plain DDPM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from producers.common.diffusion import LatentPrior

from .estimator import VariationalEstimator


def to_estimator_space(prior: LatentPrior, estimator: VariationalEstimator, x: torch.Tensor) -> torch.Tensor:
    """Model-input images ([-1, 1], padded) → the estimator's normalised space, differentiably."""
    return ((prior.crop(x).clamp(-1, 1) + 1) / 2 - estimator.mean) / estimator.std


def information_objective(estimator: VariationalEstimator, x: torch.Tensor, label: int, beta: float) -> torch.Tensor:
    """L_IGDS of one class's images ``x`` in the estimator's space (to be maximised)."""
    x_hat = estimator.embed(x)
    log_p = torch.log_softmax(estimator.classifier(x_hat), dim=1)
    marginal = log_p.exp().mean(0)
    entropy = -(marginal * marginal.clamp_min(1e-12).log()).sum()
    codes = torch.softmax(x_hat / estimator.config.tau, dim=1)
    q = codes.mean(0, keepdim=True)
    spread = (codes * (codes.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(1).mean()
    return log_p[:, label].mean() + entropy + beta * spread


def sample_class(prior: LatentPrior, label: int, n: int, *, steps: int, generator: torch.Generator,
                 estimator: VariationalEstimator | None = None, beta: float = 0.0, eta: float = 0.0) -> torch.Tensor:
    """n model-input images of class ``label`` by ``steps`` DDPM steps, guided when an
    ``estimator`` is given (even at η = 0, so the guided path is what runs)."""
    scheduler = DDPMScheduler.from_config(prior.scheduler.config)
    scheduler.set_timesteps(steps)
    size = prior.image_size
    x = torch.randn((n, prior.unet.config.in_channels, size, size), generator=generator).to(prior.device)
    classes = torch.full((n,), label, device=prior.device)
    for t in scheduler.timesteps:
        if estimator is None:
            with torch.no_grad():
                eps = prior.unet(x, t, class_labels=classes).sample
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
            continue
        x_t = x.detach().requires_grad_(True)
        eps = prior.unet(x_t, t, class_labels=classes).sample
        proposal = scheduler.step(eps, t, x_t, generator=generator).prev_sample
        objective = information_objective(estimator, to_estimator_space(prior, estimator, proposal), label, beta)
        (grad,) = torch.autograd.grad(objective, x_t)
        x = proposal.detach() + eta * grad
    return x.detach()


def merge_four(x: torch.Tensor) -> torch.Tensor:
    """RDED's merge: each group of four images, halved (antialiased), tiled 2 × 2 into one of
    the same size."""
    h, w = x.shape[-2:]
    if len(x) % 4 or h % 2 or w % 2:
        raise ValueError(f"merging needs a multiple of four images of even size, got {tuple(x.shape)}")
    small = F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", antialias=True, align_corners=False)
    small = small.reshape(len(x) // 4, 2, 2, x.shape[1], h // 2, w // 2)
    return small.permute(0, 3, 1, 4, 2, 5).reshape(len(x) // 4, x.shape[1], h, w)
