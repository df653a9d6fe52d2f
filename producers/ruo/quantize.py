"""Phase 3 of Algorithm 1: post-quantisation of a trained :class:`RuoModel` into :class:`RuoSamples`.

Latents are rounded to integers and clamped to ±``LATENT_RANGE``. Networks are quantised
uniformly with power-of-two steps 2^-k (Eq. 14), chosen per slice by grid search:

* decoder: the coarsest step whose samples stay within ``mse_threshold`` (mean squared error,
  in sample space) of those the float decoder makes of the same integer latents — paper 000's
  criterion (thresholds 5e-5 … 5e-8);
* ARM: the ARM never changes a sample (decoding the latents is lossless whatever it predicts),
  only their code length, so its step is the one that minimises the code length of latents plus
  ARM weights, as the codec will spend them (:func:`estimated_bits`).

Both searches evaluate candidates with the codec's own functions (``synthesize_tensor``,
``estimated_bits``), so the chosen steps are judged on exactly what the file will hold.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ddformat.codecs.ruo import WEIGHT_LIMIT, RuoSamples, RuoSlice, estimated_bits, synthesize_tensor

from .model import ArmMLP, Decoder, RuoModel

STEP_EXPONENTS = range(0, 17)
"""Candidate steps 2^-0 … 2^-16, coarsest first."""
MSE_THRESHOLDS = (5e-5, 5e-6, 5e-7, 5e-8)
"""Paper 000, Appendix A2: the decoder-quantisation thresholds it selects among."""


def _integers(name: str, value: torch.Tensor, step_exp: int) -> np.ndarray:
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} is not all finite")
    q = torch.round(value.detach().double() * 2**step_exp).long().cpu().numpy()
    if np.abs(q).max(initial=0) > WEIGHT_LIMIT:
        raise ValueError(f"{name} exceeds ±2^15 at step 2^-{step_exp}; use a coarser step")
    return q


def quantize_arm(arm: ArmMLP, step_exp: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Integer (weight, bias) per layer at step 2^-``step_exp``."""
    return [(_integers(f"ARM layer {i} weight", layer.weight, step_exp),
             _integers(f"ARM layer {i} bias", layer.bias, step_exp)) for i, layer in enumerate(arm.layers)]


def quantize_decoder(decoder: Decoder, step_exp: int) -> dict[str, np.ndarray]:
    """Integer tensors of ``decoder``'s parameters at step 2^-``step_exp``, named as the file stores them."""
    return {name: _integers(f"decoder parameter {name}", value, step_exp)
            for name, value in decoder.state_dict().items()}


def samples_of(model: RuoModel, slices: list[RuoSlice]) -> RuoSamples:
    a = model.architecture
    return RuoSamples(tuple(a.sample_shape), a.scales, a.context, a.arm_width, a.arm_depth, a.decoder_version, slices)


def _decoder_step(model: RuoModel, s: int, draft: RuoSlice, threshold: float) -> RuoSlice:
    """``draft`` with the coarsest decoder step within ``threshold``; the finest step that
    quantises at all if none is (reported as the result's MSE)."""
    device = model.neighbours.device
    with torch.no_grad():
        reference = model.decode(s, torch.from_numpy(draft.latents).to(device, torch.float32))
    best = None
    for k in STEP_EXPONENTS:
        try:
            candidate = RuoSlice(draft.latents, draft.arm, draft.arm_step, quantize_decoder(model.decoders[s], k), k)
        except ValueError:  # weights beyond the codec's integer range at this step
            continue
        mse = float(((synthesize_tensor(samples_of(model, [candidate]), device) - reference) ** 2).mean())
        best = candidate
        if mse <= threshold:
            break
    if best is None:
        raise ValueError(f"slice {s}: no decoder step in 2^-{STEP_EXPONENTS[0]}…2^-{STEP_EXPONENTS[-1]} "
                         "keeps the weights within the codec's range")
    return best


def _arm_step(model: RuoModel, s: int, draft: RuoSlice) -> RuoSlice:
    """``draft`` with the ARM step that minimises latent + ARM bits."""
    best, best_bits = None, float("inf")
    for k in STEP_EXPONENTS:
        try:
            candidate = RuoSlice(draft.latents, quantize_arm(model.arms[s], k), k, draft.decoder, draft.decoder_step)
        except ValueError:
            continue
        bits = estimated_bits(samples_of(model, [candidate]))
        total = bits["samples"] + bits["entropy_networks"]
        if total < best_bits:
            best, best_bits = candidate, total
    if best is None:
        raise ValueError(f"slice {s}: no ARM step keeps the weights within the codec's range")
    return best


def post_quantize(model: RuoModel, mse_threshold: float = 5e-6, progress: bool = True) -> RuoSamples:
    """Integer latents and quantised networks of every slice of ``model``."""
    if mse_threshold < 0:
        raise ValueError(f"mse_threshold must be non-negative, got {mse_threshold}")
    broken = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if broken:
        raise ValueError(f"cannot quantise non-finite parameters ({', '.join(broken[:3])}…): training diverged")
    slices = []
    for s in tqdm(range(model.num_slices), desc="phase 3: post-quantisation", disable=not progress, leave=False):
        draft = RuoSlice(model.integer_latents(s), quantize_arm(model.arms[s], 0), 0, {}, 0)
        draft = _decoder_step(model, s, draft, mse_threshold)
        slices.append(_arm_step(model, s, draft))
    return samples_of(model, slices)
