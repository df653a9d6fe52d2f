"""Losses that train on a distilled set the way its producer meant: weighted, hard or soft.

Two ways to honour per-sample weights:

- **Loss weights** (:func:`weighted_cross_entropy`, :func:`soft_kl`, :func:`recipe_loss` with the
  weights from :attr:`DistilledDataset.weights`). The right default: every step is an unbiased
  estimate of the weighted objective, every sample is seen every epoch (a distilled set is tiny;
  skipping samples wastes most of it), and it is how DDOQ and WMDD train.
- **Weighted sampling** (:func:`weighted_sampler`), then an unweighted loss. Use it when the loss
  cannot take per-sample weights, or when weights are so skewed that a few samples would
  dominate the gradient scale and you prefer that variance to show up in which samples are
  drawn instead.

Never combine the two: sampling by ``w`` and also multiplying the loss by ``w`` weights each
sample by ``w²``.

Reductions, given per-sample losses ``l`` and weights ``w`` of a batch (``normalization``):
``"none"`` and ``"global"``: ``mean(w * l)`` (with ``global`` the weights were already rescaled
to mean 1 over the dataset by :func:`ddformat.weighting.loss_weights`); ``"batch"``:
``sum(w * l) / sum(w)``, as WMDD trains.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import WeightedRandomSampler

from ..weighting import WEIGHT_NORMALIZATIONS

Loss = Callable[..., torch.Tensor]


def _reduce(per_sample: torch.Tensor, weight: torch.Tensor | None, normalization: str) -> torch.Tensor:
    if normalization not in WEIGHT_NORMALIZATIONS:
        raise ValueError(f"normalization {normalization!r} is not one of {', '.join(WEIGHT_NORMALIZATIONS)}")
    if weight is None:
        return per_sample.mean()
    if weight.shape != per_sample.shape:
        raise ValueError(f"weights of shape {tuple(weight.shape)} for per-sample losses of shape "
                         f"{tuple(per_sample.shape)}")
    weighted = weight.to(per_sample.dtype) * per_sample
    if normalization == "batch":
        return weighted.sum() / weight.sum().to(per_sample.dtype)
    return weighted.mean()


def _probabilities(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Soft targets as given; class indices as one-hot rows."""
    if target.is_floating_point():
        return target
    return F.one_hot(target.long(), num_classes).to(torch.float32)


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    normalization: str = "global",
) -> torch.Tensor:
    """Cross-entropy of (B, K) ``logits`` against class indices (B,) or probabilities (B, K)."""
    target = target.to(logits.dtype) if target.is_floating_point() else target.long()
    per_sample = F.cross_entropy(logits, target, reduction="none")
    return _reduce(per_sample, weight, normalization)


def soft_kl(
    logits: torch.Tensor,
    target_probs: torch.Tensor,
    weight: torch.Tensor | None = None,
    temperature: float = 1.0,
    normalization: str = "global",
) -> torch.Tensor:
    """Per sample ``T² · KL(p ‖ softmax(logits / T))``, reduced like the other losses.

    ``target_probs`` (B, K) are used exactly as stored: they are the teacher's probabilities
    at the temperature the producer chose, so they are not re-tempered here; only the student's
    logits are divided by ``T``. The ``T²`` factor keeps gradient magnitudes comparable across
    temperatures (Hinton et al.). Class indices (B,) are accepted as one-hot targets.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    p = _probabilities(target_probs, logits.shape[-1]).to(logits.dtype)
    log_q = F.log_softmax(logits / temperature, dim=-1)
    per_sample = (torch.xlogy(p, p) - p * log_q).sum(dim=-1) * temperature**2
    return _reduce(per_sample, weight, normalization)


def recipe_loss(recipe: Mapping[str, Any]) -> Loss:
    """``loss(logits, target, weight=None)`` as a file's recipe specifies it.

    Picks cross-entropy or soft KL (``recipe["loss"]``), the temperature, and the weight
    normalisation (``recipe["weighting"]["normalization"]``). Pass the weights of
    :attr:`DistilledDataset.weights`, which already carry the scheme and global rescaling.
    """
    kind = recipe.get("loss", "ce")
    temperature = float(recipe.get("temperature", 1.0))
    normalization = (recipe.get("weighting") or {}).get("normalization", "global")
    if normalization not in WEIGHT_NORMALIZATIONS:
        raise ValueError(f"recipe weighting normalization {normalization!r} is not one of "
                         f"{', '.join(WEIGHT_NORMALIZATIONS)}")
    if kind == "ce":
        def loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
            return weighted_cross_entropy(logits, target, weight, normalization)
    elif kind == "kl":
        def loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
            return soft_kl(logits, target, weight, temperature, normalization)
    else:
        raise ValueError(f"recipe loss {kind!r} is not one of 'ce', 'kl'")
    return loss


def weighted_sampler(
    dataset_or_weights: Any,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """A sampler drawing indices with probability proportional to the loss weights, with replacement.

    Accepts a (N,) weight tensor or anything with a ``weights`` tensor attribute, such as a
    :class:`~ddformat.DistilledDataset`. Train with an unweighted loss when you use it.
    ``num_samples`` defaults to N draws per epoch.
    """
    weights = getattr(dataset_or_weights, "weights", dataset_or_weights)
    if not isinstance(weights, torch.Tensor):
        weights = torch.as_tensor(weights)
    weights = weights.detach().to("cpu", torch.float64).reshape(-1)
    if weights.numel() == 0 or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) \
            or float(weights.sum()) == 0:
        raise ValueError("sampling weights must be finite, non-negative, and not all 0")
    return WeightedRandomSampler(weights, num_samples if num_samples is not None else weights.numel(),
                                 replacement=True, generator=generator)
