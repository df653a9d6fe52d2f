"""``python -m producers.wmdd``: distil a real dataset with WMDD (or the SRe2L / nearest-real
baselines) into one ``.dd`` file with weights and per-view soft labels.

The teacher is ``--teacher FILE`` (a safetensors or ``weights_only`` state dict of
``--teacher-arch``) or, by default, the cached one trained by :func:`producers.common.teachers.cached_teacher`
(``$DDFORMAT_TEACHER_CACHE``). Under ``torchrun`` (``WORLD_SIZE`` > 1) the units (classes; image
slots for ``sre2l``) are dealt round-robin to the ranks; rank 0 trains or reads the teacher first,
gathers every unit (``gather_object``; gloo on CPU, NCCL on GPUs) and writes the file. Every unit
draws from its own seed, so the file is the same for any number of ranks.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import ddformat
from producers.common import RealData
from producers.common.ranks import gather, process_group, rank_zero_first
from producers.common.teachers import TeacherConfig, cached_teacher, class_bn_statistics, load_teacher

from .distill import METHODS, WmddConfig, distill, file_sha256, save_result, units
from .recover import RecoverConfig

HELP = {
    "ipc": "images per class (barycenter points m)",
    "method": "; ".join(f"{k}: {v}" for k, v in METHODS.items()),
    "barycenter_iterations": "Algorithm 2 iterations",
    "barycenter_step": "largest change of one barycenter weight per subgradient step (halved until the W2 does not grow)",
    "learn_weights": "learn the barycenter masses (0: uniform masses, positions only)",
    "views": "rounds of per-view teacher labels (0: hard labels only)",
    "topk": "classes kept per view label",
    "label_bits": "bits of each kept probability",
    "temperature": "softmax temperature of the teacher labels",
    "label_batch": "batch size of the relabel views and of the recipe's students (CutMix pairs within it)",
    "seed": "seed of barycenter starts, noise and augmentation, combined with each unit",
    "eval_epochs": "epochs the file's recipe asks students to train",
    "iterations": "recover iterations per unit",
    "lr": "recover Adam learning rate (cosine to 0)",
    "bn_weight": "lambda: weight of the BN-statistics distance",
    "first_bn_multiplier": "extra weight of the first BN layer (SRe2L)",
    "ce_weight": "wmdd only: cross-entropy added to the feature distance (0: Eq. 15 as stated)",
    "min_crop": "smallest RandomResizedCrop area fraction of the recover views",
    "jitter": "largest random roll of the recover views, in pixels",
}


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default):
            continue
        kind = int if isinstance(f.default, bool) else type(f.default)
        choices = tuple(METHODS) if f.name == "method" else None
        parser.add_argument(f"--{prefix}{f.name.replace('_', '-')}", dest=f"{prefix}{f.name}", type=kind,
                            default=f.default, choices=choices, help=f"{HELP[f.name]} (default: {f.default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m producers.wmdd", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a ddformat.evaluation.realdata source: textures, mnist, digits, lfw")
    parser.add_argument("--classes", type=int, help="keep only the first N classes (quick runs)")
    parser.add_argument("--out", required=True, type=Path, help="the .dd file to write")
    parser.add_argument("--teacher", type=Path, help="a teacher state dict (default: the cached teacher, trained once)")
    parser.add_argument("--teacher-arch", default=TeacherConfig.architecture, help="the teacher's architecture")
    parser.add_argument("--teacher-epochs", type=int, default=TeacherConfig.epochs, help="epochs of a teacher trained here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_fields(parser, WmddConfig)
    _add_fields(parser, RecoverConfig)
    return parser


def _config(args: argparse.Namespace) -> WmddConfig:
    recover = RecoverConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RecoverConfig)})
    own = {f.name: getattr(args, f.name) for f in dataclasses.fields(WmddConfig) if f.name != "recover"}
    own["learn_weights"] = bool(own["learn_weights"])
    return WmddConfig(**own, recover=recover)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = _config(args)
    with process_group(args.device) as (rank, world):
        real = RealData.load(args.data, args.classes, device=args.device)
        progress = not args.quiet and rank == 0
        if args.teacher:
            c, h, w = real.sample_shape
            teacher = load_teacher(args.teacher, args.teacher_arch, c, real.num_classes, (h, w)).to(args.device)
            stats, path = class_bn_statistics(teacher, real), args.teacher
            info = {"path": str(path), "architecture": args.teacher_arch}
        else:
            teacher_config = TeacherConfig(architecture=args.teacher_arch, epochs=args.teacher_epochs)
            teacher, stats, path = rank_zero_first(lambda: cached_teacher(real, teacher_config, progress=progress))
            info = {"path": str(path), "architecture": teacher_config.architecture,
                    "trained": dataclasses.asdict(teacher_config)}
        info["sha256"] = file_sha256(path)
        mine = list(units(config, real.num_classes))[rank::world]
        results = gather(distill(teacher, stats, real, config, mine, progress=progress))
        if rank == 0:
            out = save_result(args.out, results, real, config, teacher, info, progress=progress)
            with ddformat.open(out) as f:
                p = f.provenance["parameters"]
                per_iteration = p.get("seconds_per_iteration")
                print(f"{out}: {f.num_samples} samples of {f.num_classes} classes, {f.bpc:.0f} bits per class; "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in p["seconds"].items())
                      + (f"; {per_iteration * 1000:.1f} ms per recover iteration" if per_iteration else "")
                      + f" (rank 0 of {world})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
