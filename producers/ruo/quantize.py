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

The budget search's fallback (``distill.distill_to_budget``) re-runs the ARM half of Phase 3 on
latents it zeroes (:func:`zeroed_latents`, :func:`requantize`), and writes the configuration's
smallest file (:func:`floor_samples`) when nothing else fits.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ddformat.codecs.ruo import (
    SIGMAS,
    WEIGHT_LIMIT,
    RuoSamples,
    RuoSlice,
    decoder_shapes,
    estimated_bits,
    scale_shapes,
    synthesize_tensor,
)

from .model import Architecture, ArmMLP, Decoder, RuoModel

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


def _arm_bits(model: RuoModel, candidate: RuoSlice) -> float:
    bits = estimated_bits(samples_of(model, [candidate]))
    return bits["samples"] + bits["entropy_networks"]


def _arm_step(model: RuoModel, s: int, draft: RuoSlice, arm: ArmMLP | None = None) -> RuoSlice:
    """``draft`` with the step of slice ``s``'s ARM (or ``arm``) that minimises latent + ARM bits."""
    best, best_bits = None, float("inf")
    for k in STEP_EXPONENTS:
        try:
            layers = quantize_arm(model.arms[s] if arm is None else arm, k)
        except ValueError:
            continue
        candidate = RuoSlice(draft.latents, layers, k, draft.decoder, draft.decoder_step)
        total = _arm_bits(model, candidate)
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


REFIT_ITERATIONS = 100
REFIT_LR = 0.01


def refit_arm(model: RuoModel, s: int, latents: np.ndarray, iterations: int = REFIT_ITERATIONS) -> ArmMLP:
    """A copy of slice ``s``'s ARM trained on the code length of these integer latents alone.

    Lossless: the ARM never changes a sample. Phase 2 trains it against latents that move, at
    Adam's 1e-3, and it lags behind them; on MNIST (spc 9, one slice) a refit of the finished
    latents saved a fifth of their bits."""
    arm = copy.deepcopy(model.arms[s])
    z = torch.from_numpy(latents).to(model.neighbours.device, torch.float32)
    optimizer = torch.optim.Adam(arm.parameters(), lr=REFIT_LR)
    for _ in range(iterations):
        bits = model.latent_bits(s, z, arm).mean()
        optimizer.zero_grad()
        bits.backward()
        optimizer.step()
    return arm


def floor_arm(architecture: Architecture) -> list[tuple[np.ndarray, np.ndarray]]:
    """The constant ARM: all weights zero but the σ output's bias, so every latent is coded
    under Laplace(0, σ_min) (step 2^0): an all-zero latent then costs ~5·10⁻⁴ bits."""
    a = architecture
    sizes = [a.context] + [a.arm_width] * a.arm_depth + [2]
    layers = [(np.zeros((o, i), np.int64), np.zeros(o, np.int64)) for i, o in zip(sizes[:-1], sizes[1:])]
    layers[-1][1][1] = round(math.log2(SIGMAS[0]))
    return layers


def requantize(model: RuoModel, samples: RuoSamples, latents: list[np.ndarray]) -> RuoSamples:
    """``samples`` with each slice's latents replaced and its ARM chosen again: the fewest
    latent + ARM bits among the trained ARM, the ARM refitted to these latents (both at their
    best step) and :func:`floor_arm`.

    Under :func:`floor_arm` a latent's bits grow with its magnitude, so with that candidate in
    the running, zeroing more latents never raises the bound on latent + ARM bits."""
    slices = []
    for s, (piece, z) in enumerate(zip(samples.slices, latents)):
        draft = RuoSlice(z, piece.arm, piece.arm_step, piece.decoder, piece.decoder_step)
        candidates = [_arm_step(model, s, draft), _arm_step(model, s, draft, refit_arm(model, s, z)),
                      RuoSlice(z, floor_arm(model.architecture), 0, piece.decoder, piece.decoder_step)]
        slices.append(min(candidates, key=lambda c: _arm_bits(model, c)))
    return samples_of(model, slices)


def zeroed_latents(samples: RuoSamples, count: int) -> list[np.ndarray]:
    """Every slice's latents with ``count`` of the non-zero ones set to zero: the smallest in
    magnitude first, of equal magnitude the finest scale first, then in storage order. One fixed
    order for all counts, so a larger count zeroes a superset."""
    _, height, width = samples.sample_shape
    sizes = [h * w for h, w in scale_shapes(height, width, samples.scales)]
    scale = np.repeat(np.arange(len(sizes)), sizes)
    flat = np.concatenate([s.latents.reshape(-1) for s in samples.slices])
    scales = np.concatenate([np.broadcast_to(scale, s.latents.shape).reshape(-1) for s in samples.slices])
    nonzero = np.flatnonzero(flat)
    order = nonzero[np.lexsort((scales[nonzero], np.abs(flat[nonzero])))]
    flat[order[:count]] = 0
    parts = np.split(flat, np.cumsum([s.latents.size for s in samples.slices])[:-1])
    return [part.reshape(s.latents.shape) for part, s in zip(parts, samples.slices)]


def floor_samples(architecture: Architecture, slice_sizes: list[int]) -> RuoSamples:
    """The smallest file of this shape: all-zero latents, :func:`floor_arm`, all-zero decoders,
    both networks at step 2^0. Every sample decodes to zero, the normalised mean."""
    a = architecture
    channels, height, width = a.sample_shape
    m = sum(h * w for h, w in scale_shapes(height, width, a.scales))
    shapes = decoder_shapes(a.scales, channels, a.decoder_version)
    slices = [RuoSlice(np.zeros((n, m), np.int64), floor_arm(a), 0,
                       {name: np.zeros(shape, np.int64) for name, shape in shapes.items()}, 0) for n in slice_sizes]
    return RuoSamples(tuple(a.sample_shape), a.scales, a.context, a.arm_width, a.arm_depth, a.decoder_version, slices)
