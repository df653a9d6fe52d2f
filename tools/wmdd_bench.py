"""WMDD measured on a real dataset: paper 004's comparison at small scale.

    python -m tools.wmdd_bench --data textures --ipc 10 --seeds 0,1,2 --epochs 100 --out runs/wmdd
        [--iterations 500] [--views 30 --topk 10 --bits 8] [--teacher-epochs 30] [--resume]

One teacher (the cached ConvNet-D3-BN of :func:`producers.common.teachers.cached_teacher`) serves
every method, and every set is relabelled with the same per-view protocol
(:func:`ddformat.evaluation.relabel.relabel`: ``--views`` rounds, top-``--topk`` at ``--bits``,
T = 20) and evaluated with the same students (its recipe: ConvNet-D3, KL on the replayed views,
AdamW, cosine, ``--epochs``), one student per seed:

- ``wmdd``: barycenter points + per-class BN statistics (producers.wmdd), with its barycenter
  masses as weights and, from the same file, without them (uniform weighting);
- ``sre2l``: SRe2L's recover, cross-entropy + running BN statistics, no barycenter;
- ``nearest``: the real image nearest each barycenter point, with and without the masses;
- ``random``: a class-balanced random real subset.

Also the time per recover iteration of ``wmdd`` and ``sre2l`` (paper 004 Table 7: one update of
one image per class; here one unit of IPC images) and a sample grid per method. Writes
``wmdd_bench.json``, ``wmdd_bench.md`` and ``grid-<method>.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import ddformat
from ddformat.cli.preview import preview
from ddformat.evaluation import realdata
from ddformat.evaluation.evaluate import evaluate_file, real_to_sample_space
from ddformat.evaluation.relabel import relabel
from ddformat.evaluation.training import accuracy
from producers.common import RealData
from producers.common.teachers import TeacherConfig, cached_teacher
from tools.rate_utility import class_subset
from producers.wmdd import RecoverConfig, WmddConfig, distill, recipe, save_result

METHODS = ("wmdd", "sre2l", "nearest", "random")
UNIFORM = {"scheme": "uniform", "normalization": "global"}


def random_subset(path: Path, real: RealData, config: WmddConfig, teacher: torch.nn.Module) -> Path:
    """A class-balanced random real subset, stored and relabelled as the producer stores its sets."""
    x, y = class_subset(*realdata.load(real.source, "train"), config.ipc, config.seed)
    with tempfile.TemporaryDirectory(prefix="wmdd-bench-") as tmp:
        hard = ddformat.save(Path(tmp) / "random.dd", x, y, num_classes=real.num_classes,
                             class_names=real.class_names, normalization={**real.normalization, "applied": False},
                             recipe=recipe(config), name=f"{real.source}-random-ipc{config.ipc}")
        relabel(hard, path, teacher, rounds=config.views, k=config.topk, bits=config.label_bits,
                batch_size=config.label_batch, temperature=config.temperature, seed=config.seed, progress=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="textures")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=100, help="student epochs")
    ap.add_argument("--iterations", type=int, default=500, help="recover iterations")
    ap.add_argument("--views", type=int, default=30)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=Path("runs/wmdd"))
    ap.add_argument("--resume", action="store_true", help="keep the rows already in OUT/wmdd_bench.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "wmdd_bench.json"
    rows: list[dict[str, Any]] = json.loads(results.read_text())["rows"] if args.resume and results.exists() else []

    real = RealData.load(args.data)
    teacher, stats, teacher_path = cached_teacher(real, TeacherConfig(epochs=args.teacher_epochs))
    x_test, y_test = realdata.load(args.data, "test")
    space = {"normalization": {**real.normalization, "applied": False}}
    with torch.no_grad():
        teacher_accuracy = accuracy(teacher, real_to_sample_space(x_test, space, None), y_test)
    tqdm.write(f"teacher {TeacherConfig.architecture} ({teacher_path}): test accuracy {100 * teacher_accuracy:.2f} %")

    jobs = [(m, s) for s in (int(v) for v in args.seeds.split(",")) for m in args.methods.split(",")]
    for method, seed in tqdm(jobs, desc="sets"):
        if any(r["method"] == method and r["seed"] == seed for r in rows):
            continue
        config = WmddConfig(ipc=args.ipc, method="sre2l" if method == "random" else method, views=args.views,
                            topk=args.topk, label_bits=args.bits, seed=seed, eval_epochs=args.epochs,
                            recover=RecoverConfig(iterations=args.iterations))
        path = args.out / f"{method}-ipc{args.ipc}-s{seed}.dd"
        if method == "random":
            random_subset(path, real, config, teacher)
        else:
            save_result(path, distill(teacher, stats, real, config, progress=False), real, config, teacher,
                        {"path": str(teacher_path)}, progress=False)
        with ddformat.open(path) as f:
            per_iteration = f.provenance.get("parameters", {}).get("seconds_per_iteration")
            weighted = f.stored_weights() is not None
            if seed == int(args.seeds.split(",")[0]):
                preview(f, per_class=min(args.ipc, 10), scale=2).save(args.out / f"grid-{method}.png")
        for weights in ((True, False) if weighted else (False,)):
            report = evaluate_file(path, args.data, seeds=[seed], epochs=args.epochs, progress=False,
                                   **({} if weights else {"weighting": UNIFORM}) if weighted else {})
            rows.append({"method": method, "weights": weights, "seed": seed, "ipc": args.ipc,
                         "accuracy": report["results"][0]["mean"], "seconds_per_iteration": per_iteration})
            tqdm.write(f"{method:<8} weights {str(weights):<5} seed {seed}  accuracy "
                       f"{100 * rows[-1]['accuracy']:.2f} %" + (f"  {1000 * per_iteration:.1f} ms/iteration"
                                                                if per_iteration else ""))
            results.write_text(json.dumps({"rows": rows}, indent=2))

    table = ["| method | weights | students | accuracy % | ms per recover iteration |", "|---|---|---|---|---|"]
    for (method, weights) in sorted({(r["method"], r["weights"]) for r in rows}, key=lambda k: (METHODS.index(k[0]), not k[1])):
        picked = [r for r in rows if r["method"] == method and r["weights"] == weights]
        acc = [100 * r["accuracy"] for r in picked]
        times = [1000 * r["seconds_per_iteration"] for r in picked if r["seconds_per_iteration"]]
        table.append(f"| {method} | {'barycenter masses' if weights else 'none'} | {len(acc)} | "
                     f"{statistics.fmean(acc):.2f} ± {statistics.pstdev(acc):.2f} | "
                     f"{f'{statistics.fmean(times):.1f}' if times else '—'} |")
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "teacher_accuracy": teacher_accuracy, "rows": rows}
    results.write_text(json.dumps(summary, indent=2))
    (args.out / "wmdd_bench.md").write_text("\n".join(table) + "\n")
    print(f"teacher test accuracy {100 * teacher_accuracy:.2f} %")
    print("\n".join(table))


if __name__ == "__main__":
    main()
