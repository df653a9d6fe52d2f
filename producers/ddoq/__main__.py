"""``python -m producers.ddoq``: distil a real dataset with DDOQ (or D4M) on a latent diffusion prior
into one ``.dd`` file.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the classes are dealt round-robin to the ranks, each rank
distils its own, and rank 0 gathers them (``gather_object``; gloo on CPU, NCCL on GPUs) and
writes the file. Every class draws from its own seed, so the file is the same for any number of
ranks.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import ddformat
from producers.common import RealData
from producers.common.diffusion import LatentPrior, cache_dir, directory_hash
from producers.common.ranks import gather, process_group

from .cluster import CLUSTERINGS
from .distill import SCHEMES, DdoqConfig, distill, save_result

HELP = {
    "ipc": "images (centroids) per class K",
    "clustering": "clvq: paper 001 Algorithm 2 (DDOQ); d4m: Appendix E Algorithm 4 (D4M's online k-means)",
    "cluster_epochs": "passes over each class's latents",
    "weighting": "the recipe's scheme over the stored counts: " + "; ".join(f"{k}: {v}" for k, v in SCHEMES.items()),
    "strength": "how far toward pure noise each centroid is taken before denoising (1: generate from noise)",
    "steps": "DDIM steps of a full denoising (a run takes round(steps * strength))",
    "guidance": "classifier-free guidance scale (1: conditional only)",
    "seed": "seed of initialisation, sample order and noise, combined with each class",
    "eval_epochs": "epochs the file's recipe asks students to train",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m producers.ddoq", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a ddformat.evaluation.realdata source: mnist, digits, textures, lfw")
    parser.add_argument("--classes", type=int, help="keep only the first N classes (quick runs)")
    parser.add_argument("--prior", type=Path,
                        help="prior directory (vae/, unet/, scheduler/; default: the cache entry of --data, "
                             "see python -m producers.common.diffusion)")
    parser.add_argument("--out", required=True, type=Path, help="the .dd file to write")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    for f in dataclasses.fields(DdoqConfig):
        choices = {"clustering": CLUSTERINGS, "weighting": tuple(SCHEMES)}.get(f.name)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=f.default,
                            choices=choices, help=f"{HELP[f.name]} (default: {f.default})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = DdoqConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DdoqConfig)})
    with process_group(args.device) as (rank, world):
        prior_dir = args.prior or cache_dir(args.data)
        prior = LatentPrior.load(prior_dir, args.device)
        data = RealData.load(args.data, args.classes)
        mine = list(range(rank, data.num_classes, world))
        results = gather(distill(prior, data, config, mine, progress=not args.quiet and rank == 0))
        if rank == 0:
            prior_info = {"path": str(prior_dir), "sha256": directory_hash(prior_dir), "source": prior.source}
            path = save_result(args.out, results, data, config, prior_info)
            with ddformat.open(path) as f:
                seconds = f.provenance["parameters"]["seconds"]
                print(f"{path}: {f.num_samples} samples of {f.num_classes} classes, {f.bpc:.0f} bits per class; "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + f" (rank 0 of {world})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
