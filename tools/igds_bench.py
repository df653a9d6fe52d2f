"""IGDS measured on a real dataset: paper 003's Tables 1/7 comparison and its Fig. 3 at small scale.

    python -m tools.igds_bench --data digits --ipcs 1,10,50 --betas 0,0.05,0.1,0.5,1 --seeds 0,1,2 \
        --out runs/igds [--steps 100] [--eta 0.1] [--epochs 0] [--resume]

One pixel-space prior (``python -m producers.common.diffusion train --data DATA --pixel``) and one
variational estimator (cached by :func:`producers.igds.cached_estimator`) serve every set. At each
IPC and seed: plain DDPM samples of the prior (``unguided``), IGDS at every β (the same noise
seeds), and a class-balanced random real subset (``random``); one student of each ``--students``
architecture (ConvNet-D3, ResNetAP-10) trains on each with the paper's protocol as the files'
recipe (Adam 0.01, RandomResizedCrop + flip + CutMix, Table 8's epochs scaled; ``--epochs``
overrides), one student per seed. Sampling time per image is read from each file's provenance.
Writes ``igds_bench.json``, ``igds_bench.md`` and ``igds_beta.png`` (accuracy against β per IPC,
one row of plots per student, unguided and random as reference lines).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import ddformat
from ddformat.cli.preview import preview
from ddformat.evaluation import realdata
from ddformat.evaluation.evaluate import evaluate_file
from ddformat.evaluation.models import canonical_architecture
from producers.common import RealData
from producers.common.diffusion import LatentPrior, cache_dir, directory_hash, prior_name
from tools.rate_utility import class_subset
from producers.igds import EstimatorConfig, IgdsConfig, cached_estimator, distill, recipe, save_result


def _random(path: Path, real: RealData, config: IgdsConfig) -> Path:
    x, y = class_subset(*realdata.load(real.source, "train"), config.ipc, config.seed)
    return ddformat.save(path, x, y, num_classes=real.num_classes, class_names=real.class_names,
                         normalization={**real.normalization, "applied": False}, recipe=recipe(config),
                         name=f"{real.source}-random-ipc{config.ipc}")


def _png(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ipcs = sorted({r["ipc"] for r in rows})
    students = sorted({r["student"] for r in rows})
    fig, axes = plt.subplots(len(students), len(ipcs), figsize=(4 * len(ipcs), 3.4 * len(students)), squeeze=False)
    for (student, ipc), ax in zip([(s, i) for s in students for i in ipcs], axes.flat):
        mine = [r for r in rows if r["ipc"] == ipc and r["student"] == student]
        ax.set_title(f"IPC {ipc}, {student}")
        if not mine:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        betas = sorted({r["beta"] for r in mine if r["method"] == "igds"})
        mean = [statistics.fmean(100 * r["accuracy"] for r in mine if r["method"] == "igds" and r["beta"] == b)
                for b in betas]
        ax.plot(range(len(betas)), mean, "o-", label="IGDS")
        for method, style in (("unguided", "--"), ("random", ":")):
            acc = [100 * r["accuracy"] for r in mine if r["method"] == method]
            if acc:
                ax.axhline(statistics.fmean(acc), linestyle=style, color="gray" if method == "random" else "C1",
                           label=method)
        ax.set_xticks(range(len(betas)), [str(b) for b in betas])
        ax.set_xlabel("β")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy %")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--prior", type=Path, help="pixel-space prior (default: the cache entry of --data)")
    ap.add_argument("--ipcs", default="1,10,50")
    ap.add_argument("--betas", default="0,0.05,0.1,0.5,1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=100, help="DDPM steps (paper: 250)")
    ap.add_argument("--eta", type=float, default=IgdsConfig.eta)
    ap.add_argument("--students", default="ConvNet-D3", help="student architectures, comma-separated")
    ap.add_argument("--epochs", type=int, default=0, help="student epochs (0: the recipe's, Table 8 scaled)")
    ap.add_argument("--estimator-epochs", type=int, default=EstimatorConfig.epochs)
    ap.add_argument("--out", type=Path, default=Path("runs/igds"))
    ap.add_argument("--resume", action="store_true", help="keep the rows already in OUT/igds_bench.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "igds_bench.json"
    rows: list[dict[str, Any]] = json.loads(results.read_text())["rows"] if args.resume and results.exists() else []
    for row in rows:
        row.setdefault("student", "ConvNet-D3")  # rows written before students were chosen
    students = [canonical_architecture(a) for a in args.students.split(",")]

    real = RealData.load(args.data)
    prior_dir = args.prior or cache_dir(prior_name(args.data, pixel=True))
    prior = LatentPrior.load(prior_dir)
    estimator, estimator_dir = cached_estimator(real, EstimatorConfig(epochs=args.estimator_epochs))
    provenance = {"prior": {"path": str(prior_dir), "sha256": directory_hash(prior_dir), "source": prior.source},
                  "estimator": {"path": str(estimator_dir), "sha256": directory_hash(estimator_dir)}}
    betas = [float(b) for b in args.betas.split(",")]
    jobs = [(ipc, seed, method, beta) for ipc in (int(v) for v in args.ipcs.split(","))
            for seed in (int(v) for v in args.seeds.split(","))
            for method, beta in [("random", None), ("unguided", None)] + [("igds", b) for b in betas]]
    for ipc, seed, method, beta in tqdm(jobs, desc="sets"):
        done = {r["student"] for r in rows if (r["ipc"], r["seed"], r["method"], r["beta"]) == (ipc, seed, method, beta)}
        todo = [a for a in students if a not in done]
        if not todo:
            continue
        config = IgdsConfig(ipc=ipc, beta=-1.0 if beta is None else beta, eta=args.eta, steps=args.steps,
                            guided=method == "igds", seed=seed, eval_epochs=args.epochs)
        with tempfile.TemporaryDirectory(prefix="igds-bench-") as tmp:
            path = Path(tmp) / "set.dd"
            if method == "random":
                _random(path, real, config)
                per_image = None
            else:
                save_result(path, distill(prior, estimator, real, config, progress=False), real, config, provenance)
                with ddformat.open(path) as f:
                    per_image = f.provenance["parameters"]["seconds_per_image"]
                if seed == int(args.seeds.split(",")[0]):
                    with ddformat.open(path) as f:
                        name = method if beta is None else f"{method}-beta{beta}"
                        preview(f, per_class=min(ipc, 10), scale=4).save(args.out / f"grid-ipc{ipc}-{name}.png")
            for student in todo:
                report = evaluate_file(path, args.data, seeds=[seed], progress=False, architecture=student,
                                       **({"epochs": args.epochs} if args.epochs else {}))
                rows.append({"ipc": ipc, "seed": seed, "method": method, "beta": beta, "student": student,
                             "accuracy": report["results"][0]["mean"], "epochs": report["protocol"]["epochs"],
                             "seconds_per_image": per_image})
                tqdm.write(f"IPC {ipc:>3} seed {seed} {method:<9} β {beta if beta is not None else '—':<5} "
                           f"{student:<11} accuracy {100 * rows[-1]['accuracy']:.2f} %"
                           + (f"  {per_image:.3f} s/image" if per_image else ""))
        results.write_text(json.dumps({"rows": rows}, indent=2))

    table = ["| student | IPC | method | β | seeds | accuracy % | s per image (sampling) |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["student"], r["ipc"], r["method"], r["beta"]) for r in rows},
                  key=lambda k: (k[0], k[1], ["random", "unguided", "igds"].index(k[2]), k[3] or 0))
    for student, ipc, method, beta in keys:
        picked = [r for r in rows if (r["student"], r["ipc"], r["method"], r["beta"]) == (student, ipc, method, beta)]
        acc = [100 * r["accuracy"] for r in picked]
        times = [r["seconds_per_image"] for r in picked if r["seconds_per_image"]]
        table.append(f"| {student} | {ipc} | {method} | {beta if beta is not None else '—'} | {len(acc)} | "
                     f"{statistics.fmean(acc):.2f} ± {statistics.pstdev(acc):.2f} | "
                     f"{f'{statistics.fmean(times):.3f}' if times else '—'} |")
    results.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    (args.out / "igds_bench.md").write_text("\n".join(table) + "\n")
    _png(rows, args.out / "igds_beta.png")
    print("\n".join(table))


if __name__ == "__main__":
    main()
