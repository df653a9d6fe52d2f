"""``python -m producers.igds``: distil a real dataset with IGDS (or unguided DDPM sampling) from a
pixel-space diffusion prior into one ``.dd`` file.

The prior is ``--prior DIR`` or the cache entry ``python -m producers.common.diffusion train
--data X --pixel`` writes; the variational estimator is ``--estimator DIR`` or trained once and
cached beside the priors. Under ``torchrun`` (``WORLD_SIZE`` > 1) the classes are dealt
round-robin to the ranks and rank 0 (which trains the estimator first, if needed) gathers them
and writes the file; every class draws from its own seed, so any number of ranks writes the same file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import ddformat
from producers.common import RealData
from producers.common.diffusion import LatentPrior, cache_dir, directory_hash, prior_name
from producers.common.ranks import gather, process_group, rank_zero_first

from .distill import IgdsConfig, cached_estimator, distill, save_result
from .estimator import EstimatorConfig, VariationalEstimator

HELP = {
    "ipc": "images per class",
    "beta": "weight of the contextual term (negative: the default for the IPC, see default_beta)",
    "eta": "guidance step size",
    "steps": "DDPM steps (paper: 250)",
    "guided": "1: IGDS; 0: plain DDPM sampling from the same prior (the unguided baseline)",
    "merge": "1: sample four images per stored one and merge them 2 x 2 (RDED)",
    "seed": "seed of the noise, combined with each class",
    "eval_epochs": "epochs the recipe asks students to train (0: Table 8 scaled)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m producers.igds", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a ddformat.evaluation.realdata source: textures, mnist, digits, lfw")
    parser.add_argument("--classes", type=int, help="keep only the first N classes (quick runs)")
    parser.add_argument("--prior", type=Path, help="pixel-space prior directory (default: the cache entry of --data)")
    parser.add_argument("--estimator", type=Path, help="estimator directory (default: trained once, cached)")
    parser.add_argument("--estimator-epochs", type=int, default=EstimatorConfig.epochs)
    parser.add_argument("--out", required=True, type=Path, help="the .dd file to write")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    for f in dataclasses.fields(IgdsConfig):
        kind = int if isinstance(f.default, bool) else type(f.default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=f.default,
                            help=f"{HELP[f.name]} (default: {f.default})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(IgdsConfig)}
    config = IgdsConfig(**{k: bool(v) if isinstance(IgdsConfig.__dataclass_fields__[k].default, bool) else v
                           for k, v in values.items()})
    with process_group(args.device) as (rank, world):
        progress = not args.quiet and rank == 0
        data = RealData.load(args.data, args.classes, device=args.device)
        prior_dir = args.prior or cache_dir(prior_name(args.data, pixel=True))
        prior = LatentPrior.load(prior_dir, args.device)
        if args.estimator:
            estimator, estimator_dir = VariationalEstimator.load(args.estimator, args.device), args.estimator
        else:
            estimator_config = EstimatorConfig(epochs=args.estimator_epochs)
            estimator, estimator_dir = rank_zero_first(
                lambda: cached_estimator(data, estimator_config, progress=progress))
        mine = list(range(rank, data.num_classes, world))
        results = gather(distill(prior, estimator, data, config, mine, progress=progress))
        if rank == 0:
            provenance = {"prior": {"path": str(prior_dir), "sha256": directory_hash(prior_dir), "source": prior.source},
                          "estimator": {"path": str(estimator_dir), "sha256": directory_hash(estimator_dir)}}
            path = save_result(args.out, results, data, config, provenance)
            with ddformat.open(path) as f:
                p = f.provenance["parameters"]
                print(f"{path}: {f.num_samples} samples of {f.num_classes} classes, {f.bpc:.0f} bits per class; "
                      f"β {p['beta']}, sampling {p['seconds']:.1f} s ({p['seconds_per_image']:.2f} s per image) "
                      f"(rank 0 of {world})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
