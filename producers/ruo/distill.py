"""Algorithm 1 of paper 000 (RUO) end to end: initialise, optimise rate + λ·utility, post-quantise.

* Phase 1, "overfitted compression" (Eq. 22): every synthetic sample is fitted to a random real
  image of its class, minimising r(Z; Φ) + β·D, with r the mean latent bits per sample (Eq. 13)
  and D the mean squared error per element in sample space; Adam at ``init_lr`` (C3's 0.01),
  cosine-decayed to zero.
* Phase 2, joint rate-utility optimisation (Eq. 20): r(Z; Φ) + λ·ℓ(D; S) with ℓ one of DM, GM
  or TM (:mod:`.losses`); Adam at 1e-3; λ = λ₁ for the first half of the iterations and λ₂ for
  the second (the paper's two-stage schedule: utility first, then the rate constraint).
* Phase 3, post-quantisation (:mod:`.quantize`).

:func:`distill_to_budget` searches λ (Phases 2–3 repeated from one Phase 1 result) or β (all
phases repeated) by bisection in log space, to land as close under a requested bpc as it can;
when no trial lands, it zeroes latents of the cheapest trial until one does, and refuses up
front a budget below the configuration's fixed cost (:func:`floor_result`).
:func:`save_result` writes the ``.dd`` file with a recipe for ``ddformat eval``.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import ddformat
from ddformat.codecs.ruo import RuoSamples, estimated_bits, synthesize_tensor
from producers.common import (DEFAULT_DSA, DistributionMatching, GradientMatching, RealData, TrajectoryMatching,
                              UtilityLoss, load_experts)

from .model import RELAXATIONS, Architecture, RuoModel
from .quantize import floor_samples, post_quantize, requantize, zeroed_latents

LOSSES = ("dm", "gm", "tm")


@dataclass(frozen=True)
class RuoConfig:
    """Every hyperparameter of a run; :meth:`to_dict` is what the file records."""

    spc: int = 10
    slice_size: int | None = None
    """Samples per slice, which share one ARM and decoder; None: one slice per class. Samples
    are in class order, so a slice may span classes: their networks' bits are then shared
    evenly among those classes in the bit account (spec § 5)."""
    scales: int = 6
    context: int = 8
    arm_width: int = 8
    arm_depth: int = 1
    decoder_version: str = "v4-40"
    init_std: float = 0.01
    relaxation: str = "ste"
    softround_temperature: float = 0.3
    # Phase 1
    init_iterations: int = 500
    init_lr: float = 0.01
    beta: float = 1e4
    # Phase 2
    loss: str = "dm"
    iterations: int = 500
    lr: float = 1e-3
    lambdas: tuple[float, float] = (10.0, 1.0)
    # Phase 3
    mse_threshold: float = 5e-5
    # Utility losses
    architecture: str = "ConvNet-D3"
    batch_real: int = 256
    dsa: str = DEFAULT_DSA
    gm_outer_loop: int = 10
    gm_inner_loop: int = 50
    gm_net_lr: float = 0.01
    tm_experts: str | None = None
    tm_syn_steps: int = 20
    tm_expert_epochs: int = 2
    tm_max_start_epoch: int = 10
    tm_batch_syn: int = 256
    tm_syn_lr: float = 0.01
    tm_lr_lr: float = 1e-7
    # Evaluation recipe written to the file (paper 000: 1,000 epochs, FreD's SGD protocol)
    eval_epochs: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.relaxation not in RELAXATIONS:
            raise ValueError(f"relaxation {self.relaxation!r} is not one of {', '.join(RELAXATIONS)}")
        if self.spc < 1 or (self.slice_size is not None and self.slice_size < 1):
            raise ValueError("spc and slice_size must be positive")
        if self.init_iterations < 0 or self.iterations < 0 or len(self.lambdas) != 2 or min(self.lambdas) < 0:
            raise ValueError("iterations must be non-negative and lambdas a pair of non-negative numbers")
        if self.loss == "tm" and self.tm_experts is None:
            raise ValueError("loss 'tm' needs tm_experts, a directory of expert trajectories (see train_experts)")

    def architecture_for(self, sample_shape: tuple[int, int, int]) -> Architecture:
        return Architecture(sample_shape, self.scales, self.context, self.arm_width, self.arm_depth,
                            self.decoder_version)

    def slices(self, num_classes: int) -> list[list[int]]:
        """Labels of every slice's samples: the class-ordered samples cut into runs of ``slice_size``."""
        labels = [c for c in range(num_classes) for _ in range(self.spc)]
        size = self.slice_size or self.spc
        return [labels[start:start + size] for start in range(0, len(labels), size)]

    def to_dict(self) -> dict[str, Any]:
        """The hyperparameters that shaped this run: all fields, less those of the utility losses
        not used (they would only cost header bits)."""
        unused = tuple(f"{loss}_" for loss in LOSSES if loss != self.loss)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if not k.startswith(unused)}


@dataclass
class RuoResult:
    """A finished run: what the file stores, the samples it decodes to, and what it cost."""

    samples: RuoSamples
    labels: np.ndarray
    images: torch.Tensor
    """(N, C, H, W) ``synthesize_tensor(samples, device)``: exactly what reading the file onto the
    training device gives (``ddformat.DistilledDataset``; numpy's ``open(...).samples()`` agrees
    within the spec's float tolerance)."""
    estimated_bits: dict[str, float]
    config: RuoConfig
    """The hyperparameters of this run (a β search changes ``beta``)."""
    lambda_scale: float = 1.0
    target_bpc: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per-iteration rate and losses; after :func:`distill_to_budget`, also every trial's knob
    scale (``search_scale``) and file bpc (``search_bpc``), in the order they ran, and those of
    the fallback's rungs (``fallback_zeroed``, ``fallback_bpc``; the floor counts as zeroing all)."""
    fallback: str | None = None
    """How the budget search's fallback made this file, as its provenance records it:
    ``"zeroed K/N"`` (K of the N non-zero latents zeroed, ARMs chosen again) or ``"floor"``."""


def build_utility(config: RuoConfig, real: RealData) -> UtilityLoss:
    common = dict(architecture=config.architecture, dsa=config.dsa, seed=config.seed)
    if config.loss == "dm":
        return DistributionMatching(real, batch_real=config.batch_real, **common)
    if config.loss == "gm":
        return GradientMatching(real, batch_real=config.batch_real, outer_loop=config.gm_outer_loop,
                                inner_loop=config.gm_inner_loop, net_lr=config.gm_net_lr, **common)
    return TrajectoryMatching(load_experts(config.tm_experts), real, syn_steps=config.tm_syn_steps,
                              expert_epochs=config.tm_expert_epochs, max_start_epoch=config.tm_max_start_epoch,
                              batch_syn=config.tm_batch_syn, syn_lr=config.tm_syn_lr, **common)


def build_model(config: RuoConfig, real: RealData) -> RuoModel:
    torch.manual_seed(config.seed)
    model = RuoModel(config.architecture_for(real.sample_shape), config.slices(real.num_classes),
                     init_std=config.init_std)
    return model.to(real.images.device)


def initialize(model: RuoModel, real: RealData, config: RuoConfig, progress: bool = True) -> dict[str, list[float]]:
    """Phase 1 (Eq. 22): fit each sample to a random real image of its class, all slices at once
    (their parameters are disjoint, so one Adam over the sum is independent fits)."""
    generator = torch.Generator().manual_seed(config.seed)
    targets = [torch.cat([real.sample(c, labels.count(c), generator) for c in sorted(set(labels))])
               for labels in model.slice_labels]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.init_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(config.init_iterations, 1))
    history: dict[str, list[float]] = {"init_bits": [], "init_mse": []}
    bar = tqdm(range(config.init_iterations), desc="phase 1: overfitted compression", disable=not progress)
    for _ in bar:
        bits, mse = 0.0, 0.0
        for s, target in enumerate(targets):
            images, slice_bits = model.slice_forward(s, config.relaxation, config.softround_temperature)
            bits = bits + slice_bits.sum()
            mse = mse + ((images - target) ** 2).mean(dim=(1, 2, 3)).sum()
        n = sum(model.slice_sizes)
        loss = (bits + config.beta * mse) / n
        if not torch.isfinite(loss):
            raise FloatingPointError(f"phase 1 diverged at iteration {len(history['init_bits'])}: "
                                     "lower init_lr or beta")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        history["init_bits"].append(float(bits.detach()) / n)
        history["init_mse"].append(float(mse.detach()) / n)
        bar.set_postfix(bits=f"{history['init_bits'][-1]:.1f}", mse=f"{history['init_mse'][-1]:.2e}")
    return history


def optimize(model: RuoModel, utility: UtilityLoss, config: RuoConfig, lambda_scale: float = 1.0,
             progress: bool = True) -> dict[str, list[float]]:
    """Phase 2 (Eq. 20): Adam on r(Z; Φ) + λ·ℓ, with λ = λ₁ then λ₂ (each × ``lambda_scale``).

    The utility loss's own parameters (TM's step size) follow the gradient of ℓ alone, by SGD
    with momentum 0.5 as in MTT: scaled by λ, its step would change with the rate trade-off."""
    torch.manual_seed(config.seed + 1)
    labels = model.labels().to(model.neighbours.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    extra = utility.extra_parameters()
    extra_optimizer = torch.optim.SGD(extra, lr=config.tm_lr_lr, momentum=0.5) if extra else None
    history: dict[str, list[float]] = {"bits": [], "utility": []}
    bar = tqdm(range(config.iterations), desc=f"phase 2: rate + λ·{config.loss}", disable=not progress)
    for it in bar:
        lam = lambda_scale * config.lambdas[0 if it < config.iterations / 2 else 1]
        images, bits = model(config.relaxation, config.softround_temperature)
        rate = bits.mean()
        ell = utility(images, labels)
        loss = rate + lam * ell
        if not torch.isfinite(loss):
            raise FloatingPointError(f"phase 2 diverged at iteration {it} (rate {float(rate):.4g}, "
                                     f"{config.loss} {float(ell):.4g}): lower λ, lr or tm_lr_lr")
        optimizer.zero_grad()
        if extra_optimizer is not None:
            extra_optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if extra_optimizer is not None and lam > 0:
            for p in extra:
                p.grad.div_(lam)
            extra_optimizer.step()
        history["bits"].append(float(rate.detach()))
        history["utility"].append(float(ell.detach()))
        bar.set_postfix(bits=f"{history['bits'][-1]:.1f}", utility=f"{history['utility'][-1]:.3g}", lam=f"{lam:.3g}")
    return history


def finish(model: RuoModel, config: RuoConfig, lambda_scale: float, history: dict[str, list[float]],
           progress: bool = True) -> RuoResult:
    """Phase 3 and the record of what the file will hold."""
    samples = post_quantize(model, config.mse_threshold, progress)
    labels = model.labels().numpy()
    images = synthesize_tensor(samples, model.neighbours.device)
    return RuoResult(samples, labels, images, estimated_bits(samples), config, lambda_scale, history=history)


def _run(real: RealData, config: RuoConfig, progress: bool, lambda_scale: float = 1.0) -> tuple[RuoModel, RuoResult]:
    model = build_model(config, real)
    history = initialize(model, real, config, progress)
    history |= optimize(model, build_utility(config, real), config, lambda_scale, progress)
    return model, finish(model, config, lambda_scale, history, progress)


def distill(real: RealData, config: RuoConfig, *, lambda_scale: float = 1.0, progress: bool = True) -> RuoResult:
    """Algorithm 1: Phases 1, 2 and 3 on ``real``."""
    return _run(real, config, progress, lambda_scale)[1]


def recipe(config: RuoConfig) -> dict[str, Any]:
    """How students train on the file (paper 000 / FreD: SGD 0.01, momentum 0.9, wd 5e-4,
    learning rate ÷10 halfway, DSA, hard-label cross-entropy)."""
    return {"loss": "ce", "architecture": config.architecture, "epochs": config.eval_epochs, "batch_size": 256,
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step"},
            "augmentation": ["dsa"]}


def save_result(path: str | Path, result: RuoResult, real: RealData) -> Path:
    """Write ``result`` as a ``.dd`` file whose provenance holds every hyperparameter."""
    config = result.config
    parameters = {**config.to_dict(), "lambda_scale": result.lambda_scale, "target_bpc": result.target_bpc}
    if result.fallback is not None:
        parameters["fallback"] = result.fallback
    return ddformat.save(path, result.samples, result.labels, num_classes=real.num_classes,
                         class_names=real.class_names, name=f"{real.source}-ruo-{config.loss}-spc{config.spc}",
                         normalization=real.normalization, recipe=recipe(config), producer="producers.ruo",
                         parameters=parameters, source_dataset=real.source)


def _bpc(result: RuoResult, real: RealData) -> float:
    with tempfile.TemporaryDirectory(prefix="ruo-budget-") as tmp:
        path = save_result(Path(tmp) / "trial.dd", result, real)
        with ddformat.open(path) as f:
            return f.bpc


SEARCHES = ("lambda", "beta")
FALLBACK_RUNGS = 64
"""The fallback zeroes k/64 of the non-zero latents (k < 64); rung 64 is the floor."""


class BudgetError(ValueError):
    """A target below what the configuration costs with nothing in it (:func:`floor_result`)."""

    def __init__(self, message: str, fixed_bpc: float) -> None:
        super().__init__(message)
        self.fixed_bpc = fixed_bpc


def floor_result(real: RealData, config: RuoConfig, target_bpc: float | None = None) -> RuoResult:
    """The smallest file ``config`` can write: header, labels and container as every run writes
    them, networks at their cheapest (zero but the ARM's σ bias, step 2^0) and all-zero latents.
    Its bpc is the fixed cost no training can go below; every sample decodes to the mean."""
    slices = config.slices(real.num_classes)
    samples = floor_samples(config.architecture_for(real.sample_shape), [len(labels) for labels in slices])
    labels = np.array([c for labels in slices for c in labels], dtype=np.int64)
    return RuoResult(samples, labels, synthesize_tensor(samples, real.images.device), estimated_bits(samples),
                     config, lambda_scale=0.0, target_bpc=target_bpc, fallback="floor")


def _fallback(real: RealData, model: RuoModel, source: RuoResult, floor: RuoResult, floor_bpc: float,
              target_bpc: float, progress: bool) -> RuoResult:
    """The fewest of ``source``'s non-zero latents zeroed (:func:`.quantize.zeroed_latents`, one
    nested order) that bring its file under ``target_bpc``, found by bisection over the rungs
    k/64, k = 0…63 (k = 0 only re-chooses the ARMs, which changes no sample); rung 64 is
    ``floor``, known to fit. Ends after at most 7 rungs, on a file at or under the target."""
    nonzero = int(sum(np.count_nonzero(piece.latents) for piece in source.samples.slices))
    measured: dict[int, tuple[float, RuoResult]] = {}
    zeroed, bpcs = [], []

    def fits(rung: int) -> bool:
        count = nonzero * rung // FALLBACK_RUNGS
        if count in measured:
            bpc, _ = measured[count]
        else:
            samples = requantize(model, source.samples, zeroed_latents(source.samples, count))
            result = RuoResult(samples, source.labels, synthesize_tensor(samples, source.images.device),
                               estimated_bits(samples), source.config, source.lambda_scale, target_bpc,
                               dict(source.history), fallback=f"zeroed {count}/{nonzero}")
            bpc = _bpc(result, real)
            measured[count] = bpc, result
            zeroed.append(count)
            bpcs.append(bpc)
            if progress:
                tqdm.write(f"fallback: {count} of {nonzero} non-zero latents zeroed, ARMs re-chosen: "
                           f"{bpc:.0f} bpc (target {target_bpc:.0f})")
        return bpc <= target_bpc

    low, high = 0, FALLBACK_RUNGS
    if fits(0):
        high = 0
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid
    if high == FALLBACK_RUNGS:
        best = dataclasses.replace(floor, history=dict(source.history))
        zeroed.append(nonzero)
        bpcs.append(floor_bpc)
        if progress:
            tqdm.write(f"fallback: only the floor fits ({floor_bpc:.0f} bpc): every sample decodes to the mean")
    else:
        best = measured[nonzero * high // FALLBACK_RUNGS][1]
    best.history = best.history | {"fallback_zeroed": zeroed, "fallback_bpc": bpcs}
    return best


def distill_to_budget(real: RealData, config: RuoConfig, target_bpc: float, *, search_steps: int = 6,
                      search: str = "lambda", progress: bool = True) -> RuoResult:
    """The best file at or under ``target_bpc``; :class:`BudgetError`, before any training, if
    the configuration's fixed cost (:func:`floor_result`) alone exceeds it.

    First one knob is scaled by factors found by bisection in log space (geometric steps of ×4
    first bracket the target, then halving the log-interval refines it); both knobs raise the
    rate as they grow, and the largest trial file under the target is kept.
    ``search="lambda"``: Phase 1 once, then Phases 2–3 per trial with both λs scaled (a larger λ
    buys utility with rate). ``search="beta"``: all three phases per trial with β scaled: β sets
    the rate Phase 1 starts from, which a short Phase 2 moves little.

    If no trial lands, the cheapest one falls back (:func:`_fallback`): its ARMs are chosen again
    (refitted to the finished latents) and its smallest latents zeroed, the fewest that fit; the
    last rung is the floor file, which fits, so the search always lands."""
    if target_bpc <= 0 or search_steps < 1:
        raise ValueError("target_bpc and search_steps must be positive")
    if search not in SEARCHES:
        raise ValueError(f"search {search!r} is not one of {', '.join(SEARCHES)}")
    floor = floor_result(real, config, target_bpc)
    floor_bpc = _bpc(floor, real)
    slices = len(floor.samples.slices)
    if floor_bpc > target_bpc:
        raise BudgetError(
            f"a budget of {target_bpc:.0f} bits per class is below this configuration's fixed cost of "
            f"{floor_bpc:.0f} bits per class (header, labels, container, and {slices} ARM {config.arm_width}×"
            f"{config.arm_depth} + decoder {config.decoder_version} at their smallest, with all-zero latents); "
            "lower spc, share networks across more samples (a larger slice_size) or raise the budget", floor_bpc)
    if progress:
        tqdm.write(f"fixed cost {floor_bpc:.0f} bpc (target {target_bpc:.0f})")
    if search == "lambda":
        start = build_model(config, real)
        history = initialize(start, real, config, progress)
    tried: list[tuple[float, float, RuoResult, RuoModel]] = []

    def trial(scale: float) -> float:
        if search == "lambda":
            model = copy.deepcopy(start)
            log = history | optimize(model, build_utility(config, real), config, scale, progress)
            result = finish(model, config, scale, log, progress)
        else:
            model, result = _run(real, dataclasses.replace(config, beta=config.beta * scale), progress)
        result.target_bpc = target_bpc
        bpc = _bpc(result, real)
        tried.append((scale, bpc, result, model))
        if progress:
            knob = "λ" if search == "lambda" else "β"
            tqdm.write(f"{knob} × {scale:.4g}: {bpc:.0f} bpc (target {target_bpc:.0f})")
        return bpc

    low, high = None, None  # log2 scales known to land under / over the target
    x = 0.0
    for _ in range(search_steps):
        if trial(2.0**x) <= target_bpc:
            low = x
        else:
            high = x
        if low is None:
            x -= 2
        elif high is None:
            x += 2
        else:
            x = (low + high) / 2
    feasible = [t for t in tried if t[1] <= target_bpc]
    if feasible:
        best = max(feasible, key=lambda t: t[1])[2]
    else:
        _, _, cheapest, model = min(tried, key=lambda t: t[1])
        best = _fallback(real, model, cheapest, floor, floor_bpc, target_bpc, progress)
    best.history = best.history | {"search_scale": [t[0] for t in tried], "search_bpc": [t[1] for t in tried]}
    return best
