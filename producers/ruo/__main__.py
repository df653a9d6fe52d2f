"""``python -m producers.ruo``: distil a real dataset into a ``ruo`` ``.dd`` file.

Every :class:`RuoConfig` field is a flag (``--init-iterations``, ``--gm-inner-loop``, …); the
common ones are also reachable as the paper names them (``--lambda``, ``--beta``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import ddformat
from producers.common import RealData, train_experts
from producers.common.experts import EXPERT_GLOB

from .distill import LOSSES, SEARCHES, RuoConfig, distill, distill_to_budget, save_result
from .model import RELAXATIONS
from .quantize import MSE_THRESHOLDS

HELP = {
    "spc": "synthetic samples per class",
    "slice_size": "samples sharing one ARM and decoder, taken in class order, so more than --spc spans "
                  "classes (default: one slice per class)",
    "scales": "latent scales L", "context": "ARM context size C", "arm_width": "ARM hidden width",
    "arm_depth": "ARM hidden layers", "decoder_version": "decoder of Table A1 (v4-40 … v5-320)",
    "relaxation": f"differentiable rounding: {', '.join(RELAXATIONS)}",
    "init_iterations": "Phase 1 iterations", "init_lr": "Phase 1 Adam learning rate",
    "beta": "Phase 1 distortion weight β (Eq. 22; per-element MSE vs. bits per sample)",
    "loss": "utility loss", "iterations": "Phase 2 iterations", "lr": "Phase 2 Adam learning rate",
    "lambdas": "λ₁,λ₂: weight of the utility loss in the first and second half of Phase 2",
    "mse_threshold": f"Phase 3 decoder-quantisation MSE threshold (paper: {', '.join(map(str, MSE_THRESHOLDS))})",
    "architecture": "network of the utility loss and of the file's evaluation recipe",
    "batch_real": "real images per class per DM/GM step", "tm_experts": "directory of expert trajectories",
    "eval_epochs": "epochs the file's recipe asks students to train",
}
ALIASES = {"lambdas": ["--lambda"], "decoder_version": ["--decoder"]}
OPTIONAL = {"slice_size": int, "tm_experts": str}


def _pair(text: str) -> tuple[float, float]:
    values = [float(v) for v in text.split(",")]
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected λ or λ₁,λ₂, got {text!r}")
    return (values[0], values[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m producers.ruo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a ddformat.evaluation.realdata source: mnist, digits, textures, lfw")
    parser.add_argument("--classes", type=int, help="keep only the first N classes (quick runs)")
    parser.add_argument("--out", required=True, type=Path, help="the .dd file to write")
    parser.add_argument("--target-bpc", type=float,
                        help="search λ for the largest file under this many bits per class; if no λ lands, "
                             "zero the fewest latents that do; refused up front below the fixed cost")
    parser.add_argument("--search-steps", type=int, default=6, help="runs the budget search may take")
    parser.add_argument("--search", choices=SEARCHES, default="lambda",
                        help="knob the budget search scales: λ (Phases 2–3 per run) or β (all phases per run)")
    parser.add_argument("--train-experts", type=int, default=0, metavar="N",
                        help="for --loss tm: first train N experts into --tm-experts if it holds none")
    parser.add_argument("--expert-train-epochs", type=int, default=20, help="epochs per trained expert")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    for f in dataclasses.fields(RuoConfig):
        flags = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
        if f.name == "lambdas":
            kind = _pair
        elif f.name in OPTIONAL:
            kind = OPTIONAL[f.name]
        else:
            kind = type(f.default)
        choices = {"loss": LOSSES, "relaxation": RELAXATIONS}.get(f.name)
        parser.add_argument(*flags, dest=f.name, type=kind, default=f.default, choices=choices,
                            help=f"{HELP.get(f.name, f.name.replace('_', ' '))} (default: {f.default})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = not args.quiet
    real = RealData.load(args.data, args.classes, args.device)
    config = RuoConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RuoConfig)})
    if config.loss == "tm" and args.train_experts and not any(Path(config.tm_experts).glob(EXPERT_GLOB)):
        train_experts(real, config.tm_experts, architecture=config.architecture, num_experts=args.train_experts,
                      epochs=args.expert_train_epochs, dsa=config.dsa, seed=config.seed, progress=progress)
    if args.target_bpc is None:
        result = distill(real, config, progress=progress)
    else:
        result = distill_to_budget(real, config, args.target_bpc, search_steps=args.search_steps,
                                   search=args.search, progress=progress)
    path = save_result(args.out, result, real)
    with ddformat.open(path) as f:
        parts = ", ".join(f"{k} {v / real.num_classes:.0f}" for k, v in f.bits["components"].items())
        fallback = "" if result.fallback is None else f", fallback {result.fallback}"
        print(f"{path}: {f.num_samples} samples, {f.bpc:.0f} bits per class ({parts}); "
              f"λ × {result.lambda_scale:.4g}{fallback}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
