"""What stored sample values mean: the mapping to model inputs and back to 8-bit pixels.

Both directions follow the header's ``dataset.value_range`` (uint8 code 0 is its low end, 255
its high end) and ``dataset.normalization`` (``applied`` says whether stored values are already
``(x - mean) / std``), so training, previews and exports agree on one definition.
"""

from __future__ import annotations

from typing import Any, Literal

import torch


def _per_channel(values: list[float], x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=x.dtype, device=x.device).view((1, -1) + (1,) * (x.ndim - 2))


def to_model_units(x: torch.Tensor, dataset: dict[str, Any], normalize: bool = True) -> tuple[torch.Tensor, bool]:
    """Float32 samples as a model consumes them, and whether they are normalised.

    uint8 codes map linearly onto ``value_range``; the normalisation is applied unless the file
    says it already was, or ``normalize`` is false.
    """
    if x.dtype == torch.uint8:
        lo, hi = dataset["value_range"] or (0.0, 1.0)
        x = x.to(torch.float32).mul_((hi - lo) / 255.0).add_(lo)
    else:
        x = x.to(torch.float32)
    norm = dataset["normalization"]
    if norm is None:
        return x, False
    if norm["applied"] or not normalize:
        return x, norm["applied"]
    return x.sub_(_per_channel(norm["mean"], x)).div_(_per_channel(norm["std"], x)), True


def to_pixels(x: torch.Tensor, dataset: dict[str, Any],
              unknown_range: Literal["unit", "minmax"] = "unit") -> torch.Tensor:
    """Stored samples as uint8 pixels: uint8 as stored; floats de-normalised, mapped from
    ``value_range`` (or, without one, from [0, 1] or the samples' own min-max) and rounded."""
    if x.dtype == torch.uint8:
        return x
    x = x.to(torch.float64)
    norm = dataset["normalization"]
    if norm is not None and norm["applied"]:
        x = x * _per_channel(norm["std"], x) + _per_channel(norm["mean"], x)
    if dataset["value_range"] is not None:
        lo, hi = dataset["value_range"]
    elif unknown_range == "minmax" and x.numel():
        lo, hi = x.min().item(), x.max().item()
    else:
        lo, hi = 0.0, 1.0
    return ((x - lo) / max(hi - lo, 1e-12)).clamp(0, 1).mul(255).round().to(torch.uint8)
