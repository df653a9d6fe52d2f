"""DDOQ / D4M measured on a real dataset: paper 001's Table 1, Table 7 and Table 5 at small scale.

    python -m tools.ddoq_bench --data mnist --prior PRIOR_DIR --out runs/ddoq [--seeds 0,1,2]
        [--ipcs 10,50] [--lrs 0.003,0.01,0.03] [--epochs 300] [--students 0,1,2]

- ``w2``: Table 1. Per class, the W2 distance (POT, exact ``ot.emd2`` on squared Euclidean costs)
  between the class's encoded training latents (uniform mass) and its K quantised latents with
  uniform mass (D4M) or their cluster counts (DDOQ), for each clustering (CLVQ, D4M's online
  k-means), each IPC and each seed; the reduction is 1 - W2(counts) / W2(uniform). The centroids
  are the paper's "distilled latents"; ``--after-decode`` also measures the latents Step 3 ends
  with (the centroids after the img2img DDIM run), at the cost of running it.
- ``students``: Table 7. One DDOQ distillation (CLVQ, the first IPC, the first seed) written
  with no weights (D4M), Eq. 34 (``sqrt``) and direct (``proportional``) weighting in its
  recipe — the same images and counts, only the weighting differs — and students trained on
  each through ``evaluate_file`` at each learning rate, with a class-balanced random real
  subset of the same size (``--baseline random``). With ``--soft-labels ROUNDS:K:BITS`` the
  three files first get per-view teacher labels through ``relabel`` (the same views for all
  three: one file is relabelled, the others get its views; the teacher is ``producers.common``'s
  cached one), students train on them (regime
  ``sl``) and the random real subset is relabelled online by the same teacher (``sl+kd``).
- ``seconds``: Table 5. Time of encode, cluster and decode, summed over classes, per IPC (and of
  relabel, for the Table 7 file, with ``--soft-labels``).

Writes ``ddoq_bench.json`` and ``ddoq_bench.md`` (the tables) under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import ddformat
from ddformat.evaluation.evaluate import evaluate_file
from ddformat.evaluation.relabel import relabel
from ddformat.writer import add_views
from producers.common import RealData
from producers.common.teachers import TeacherConfig, cached_teacher
from producers.common.diffusion import LatentPrior, directory_hash
from producers.common.ranks import unit_seed
from producers.ddoq import CLUSTERINGS, DdoqConfig, distill, quantize, save_result, w2

SCHEMES = {"uniform": "no weights (D4M)", "sqrt": "Eq. 34", "proportional": "direct v/Σv"}
SOFT_RECIPE_KEYS = ("loss", "temperature", "regime", "view_schedule")
"""What ``relabel`` sets in a recipe; the weighting stays each file's own."""


def table1(prior: LatentPrior, real: RealData, ipcs: list[int], seeds: list[int], epochs: int,
           after_decode: bool, config: DdoqConfig) -> list[dict[str, Any]]:
    images = real.to_pixels(real.images)
    latents = {c: prior.encode(images[real.indices(c)]) for c in range(real.num_classes)}
    rows = []
    jobs = [(ipc, clustering, seed) for ipc in ipcs for clustering in CLUSTERINGS for seed in seeds]
    for ipc, clustering, seed in tqdm(jobs, desc="W2"):
        for c, z in latents.items():
            flat = z.flatten(1).double().numpy()
            q = quantize(flat, ipc, clustering, rng=np.random.default_rng(unit_seed(seed, c)), epochs=epochs)
            counts = q.counts.astype(np.float64)
            row = {"ipc": ipc, "clustering": clustering, "seed": seed, "class": c,
                   "w2_uniform": w2(flat, q.centroids, np.ones(ipc)), "w2_counts": w2(flat, q.centroids, counts)}
            if after_decode and clustering == "clvq":
                start = torch.from_numpy(q.centroids).float().reshape(ipc, *z.shape[1:])
                out = prior.denoise(start, torch.full((ipc,), c), strength=config.strength, steps=config.steps,
                                    guidance=config.guidance,
                                    generator=torch.Generator().manual_seed(unit_seed(seed, c)))
                out = out.flatten(1).double().numpy()
                row |= {"w2_decoded_uniform": w2(flat, out, np.ones(ipc)), "w2_decoded_counts": w2(flat, out, counts)}
            rows.append(row)
    return rows


def table7(prior: LatentPrior, real: RealData, config: DdoqConfig, prior_info: dict[str, Any], out: Path,
           lrs: list[float], epochs: int, students: list[int],
           soft_labels: tuple[int, int, int] | None = None) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One distillation written three times, the recipe's weighting the only difference: students
    take their weights from the file's recipe (``evaluate_file``'s ``weighting`` override reaches
    the protocol's normalisation, not the weights ``DistilledDataset`` derives). ``soft_labels``
    (rounds, k, bits) relabels the three files with the same views first."""
    results = distill(prior, real, config)
    paths = {scheme: save_result(out / f"{real.source}_ddoq_ipc{config.ipc}_{scheme}.dd", results, real,
                                 dataclasses.replace(config, weighting=scheme), prior_info) for scheme in SCHEMES}
    with ddformat.open(paths["sqrt"]) as f:
        seconds = dict(f.provenance["parameters"]["seconds"])
    teacher = None
    if soft_labels is not None:
        rounds, k, bits = soft_labels
        model, _, teacher = cached_teacher(real)
        views_of = {scheme: path.with_name(f"{path.stem}_views.dd") for scheme, path in paths.items()}
        start = time.perf_counter()
        report = relabel(paths["uniform"], views_of["uniform"], model, rounds=rounds, k=k, bits=bits)
        seconds["relabel"] = time.perf_counter() - start
        tqdm.write(f"{report['label_bits_per_class']:,.0f} label bits per class, "
                   f"KL to the teacher {report['kl_to_teacher']:.2e}")
        with ddformat.open(views_of["uniform"]) as f:  # the same images: the other two get these views
            views, recipe = f.views(), {key: f.recipe[key] for key in SOFT_RECIPE_KEYS}
            parameters = {"relabel": f.provenance["parameters"]["relabel"]}
        for scheme in ("sqrt", "proportional"):
            add_views(paths[scheme], views_of[scheme], views, recipe=recipe, parameters=parameters)
        paths = views_of
    rows = []
    for lr in lrs:
        for scheme, path in paths.items():
            report = evaluate_file(path, real.source, seeds=students, epochs=epochs, lr=lr,
                                   baselines=("random",) if scheme == "uniform" else (), progress=False,
                                   teacher=teacher, teacher_architecture=TeacherConfig.architecture)
            for r in report["results"]:
                name = scheme if r["train"] == "distilled" else "random real"
                rows.append({"lr": lr, "train": name, "accuracies": r["accuracies"], "mean": r["mean"], "std": r["std"]})
                tqdm.write(f"lr {lr}: {name}: {100 * r['mean']:.2f} ± {100 * r['std']:.2f}")
    return rows, seconds


def _mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"


def markdown(result: dict[str, Any]) -> str:
    lines = ["## W2 between quantised and encoded training latents (Table 1 analogue)", "",
             "| IPC | clustering | W2 uniform (D4M) | W2 counts (DDOQ) | reduction | classes × seeds |",
             "|---|---|---|---|---|---|"]
    rows = result["w2"]
    for ipc in result["settings"]["ipcs"]:
        for clustering in CLUSTERINGS:
            sel = [r for r in rows if r["ipc"] == ipc and r["clustering"] == clustering]
            red = [1 - r["w2_counts"] / r["w2_uniform"] for r in sel]
            lines.append(f"| {ipc} | {clustering} | {_mean_std([r['w2_uniform'] for r in sel])} | "
                         f"{_mean_std([r['w2_counts'] for r in sel])} | {100 * statistics.fmean(red):.1f} % "
                         f"(min {100 * min(red):.1f}, max {100 * max(red):.1f}) | {len(sel)} |")
            if sel and "w2_decoded_uniform" in sel[0]:
                red = [1 - r["w2_decoded_counts"] / r["w2_decoded_uniform"] for r in sel]
                lines.append(f"| {ipc} | {clustering}, after Step 3 | {_mean_std([r['w2_decoded_uniform'] for r in sel])} | "
                             f"{_mean_std([r['w2_decoded_counts'] for r in sel])} | {100 * statistics.fmean(red):.1f} % "
                             f"(min {100 * min(red):.1f}, max {100 * max(red):.1f}) | {len(sel)} |")
    if result.get("students"):
        lrs = result["settings"]["lrs"]
        lines += ["", "## Student accuracy % by weighting and learning rate (Table 7 analogue)", "",
                  "| weights | " + " | ".join(f"lr {lr}" for lr in lrs) + " |", "|---|" + "---|" * len(lrs)]
        for name in [*SCHEMES, "random real"]:
            cells = []
            for lr in lrs:
                r = next(r for r in result["students"] if r["lr"] == lr and r["train"] == name)
                cells.append(f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}")
            lines.append(f"| {SCHEMES.get(name, name)} | " + " | ".join(cells) + " |")
    if result.get("seconds"):
        lines += ["", "## Step times, s (Table 5 analogue)", "", "| IPC | encode | cluster | decode | relabel |",
                  "|---|---|---|---|---|"]
        for ipc, s in result["seconds"].items():
            relabelled = f"{s['relabel']:.1f}" if "relabel" in s else "—"
            lines.append(f"| {ipc} | {s['encode']:.1f} | {s['cluster']:.1f} | {s['decode']:.1f} | {relabelled} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--classes", type=int, help="only the first N classes (no students: they test on all)")
    parser.add_argument("--prior", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--ipcs", default="10,50")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cluster-epochs", type=int, default=DdoqConfig.cluster_epochs)
    parser.add_argument("--after-decode", action="store_true")
    parser.add_argument("--lrs", default="0.003,0.01,0.03", help="student learning rates ('' skips Table 7)")
    parser.add_argument("--epochs", type=int, default=300, help="student epochs")
    parser.add_argument("--students", default="0,1,2", help="student seeds per setting")
    parser.add_argument("--strength", type=float, default=DdoqConfig.strength)
    parser.add_argument("--steps", type=int, default=DdoqConfig.steps)
    parser.add_argument("--soft-labels", metavar="ROUNDS:K:BITS",
                        help="Table 7 on per-view teacher labels (relabel's rounds, top-k and bits)")
    args = parser.parse_args()
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    ipcs, seeds, students = ints(args.ipcs), ints(args.seeds), ints(args.students)
    lrs = [float(v) for v in args.lrs.split(",") if v]
    soft_labels = tuple(ints(args.soft_labels.replace(":", ","))) if args.soft_labels else None
    if soft_labels is not None and len(soft_labels) != 3:
        parser.error(f"--soft-labels takes ROUNDS:K:BITS, got {args.soft_labels!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    prior = LatentPrior.load(args.prior)
    real = RealData.load(args.data, args.classes)
    config = DdoqConfig(ipc=ipcs[0], cluster_epochs=args.cluster_epochs, strength=args.strength, steps=args.steps,
                        seed=seeds[0])
    prior_info = {"path": str(args.prior), "sha256": directory_hash(args.prior), "source": prior.source}
    result: dict[str, Any] = {"settings": {**vars(args), "prior": prior_info, "ipcs": ipcs, "seeds": seeds, "lrs": lrs,
                                           "students": students, "torch_threads": torch.get_num_threads()}}
    result["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in result["settings"].items()}
    start = time.perf_counter()
    result["w2"] = table1(prior, real, ipcs, seeds, args.cluster_epochs, args.after_decode, config)
    result["w2_seconds"] = time.perf_counter() - start
    result["seconds"] = {}
    if lrs:
        result["students"], result["seconds"][ipcs[0]] = table7(prior, real, config, prior_info, args.out, lrs,
                                                                args.epochs, students, soft_labels)
    for ipc in ipcs[1:] if lrs else ipcs:
        other = DdoqConfig(**{**config.to_dict(), "ipc": ipc})
        path = save_result(args.out / f"{real.source}_ddoq_ipc{ipc}.dd", distill(prior, real, other), real, other,
                           prior_info)
        with ddformat.open(path) as f:
            result["seconds"][ipc] = f.provenance["parameters"]["seconds"]
    (args.out / "ddoq_bench.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "ddoq_bench.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
