"""Rate-utility on real MNIST: RUO (DM loss) against pixel baselines at equal bytes.

    python tools/rate_utility.py --budgets 8000,16000,32000 --ruo-spc 9,22,47 [--epochs 300] [--runs 3]

For each budget (bits per class, the whole file counted), every method gets as many bits as it
can use without going over, and students are trained from each result with the same protocol
(``ddformat.evaluation.evaluate.evaluate_file``: ConvNet-D3, SGD, DSA, the given epochs) and tested on
the 1,000 held-out real digits. ``--runs R`` repeats everything R times with seeds ``--seed`` …
``--seed + R - 1`` (the subsets, DM and RUO initialisation and data order, and ``--seeds``
students per file whose seeds differ between runs); the table reports mean ± std over every
student of every run, and the bpc and samples per class of each run's file:

- ``ruo-dm``: ``producers.ruo`` with the DM loss at ``--ruo-spc`` samples per class (one value,
  or one per budget) and ``--ruo-slice-size`` samples per slice, λ searched to land under the
  budget (when no λ does, the producer zeroes the fewest latents that do; the row's
  ``fallback`` says so); skipped with a message when the configuration's fixed cost exceeds it;
- ``random-pixels``: a class-balanced random real subset stored losslessly (``pixels``), the
  largest number of images per class whose ``.dd`` file fits;
- ``random-jpeg`` / ``random-webp``: the same subsets coded with PIL at ``--quality``; bits are
  the encoded images' bytes (labels are free here: class order), students train on the decoded
  images;
- ``dm-pixels``: DM (distribution matching) run directly on pixels, initialised from the random
  subset of the pixel budget, stored as uint8 ``pixels``.

Writes ``rate_utility.json``, ``rate_utility.md`` (table) and ``rate_utility.png`` (curves).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import ddformat
from ddformat.evaluation import realdata
from ddformat.evaluation.evaluate import evaluate_file
from ddformat.cli.plots import rate_utility_png
from producers.common import DistributionMatching, RealData
from producers.ruo.distill import SEARCHES, BudgetError, RuoConfig, distill_to_budget, save_result

NUM_CLASSES = 10


def class_subset(x: torch.Tensor, y: torch.Tensor, ipc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` random images of each class (all of a class that has fewer), class by class."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:ipc]]
                     for c in range(NUM_CLASSES)])
    return x[idx], y[idx]


def largest_fitting(budget: float, bits_for: Callable[[int], float], limit: int = 400) -> int:
    """The most images per class (up to ``limit``) whose bits per class stay within ``budget``."""
    ipc = 0
    while ipc < limit and bits_for(ipc + 1) <= budget:
        ipc += 1
    return ipc


def _pixels_bpc(x: torch.Tensor, y: torch.Tensor, tmp: Path) -> float:
    with ddformat.open(ddformat.save(tmp / "probe.dd", x, y, num_classes=NUM_CLASSES)) as f:
        return f.bpc


def _codec_bytes(images: torch.Tensor, fmt: str, quality: int) -> tuple[int, torch.Tensor]:
    total, decoded = 0, []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img[0].numpy()).save(buf, format=fmt, quality=quality)
        total += buf.tell()
        buf.seek(0)
        decoded.append(torch.from_numpy(np.array(Image.open(buf).convert("L")))[None])
    return total, torch.stack(decoded)


def dm_pixels(real: RealData, x: torch.Tensor, y: torch.Tensor, iterations: int, seed: int,
              batch_real: int) -> torch.Tensor:
    """DM on pixels (Zhao & Bilen 2023): images initialised from real ones, SGD (lr 1, momentum
    0.5) on the distribution-matching loss in normalised space; back to uint8 at the end."""
    mean = torch.tensor(real.mean).view(1, -1, 1, 1)
    std = torch.tensor(real.std).view(1, -1, 1, 1)
    images = ((x.float() / 255 - mean) / std).requires_grad_(True)
    loss_fn = DistributionMatching(real, batch_real=batch_real, seed=seed)
    optimizer = torch.optim.SGD([images], lr=1.0, momentum=0.5)
    for _ in tqdm(range(iterations), desc="DM on pixels", leave=False):
        optimizer.zero_grad()
        loss_fn(images, y).backward()
        optimizer.step()
    return ((images.detach() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)


def run(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor, real: RealData, budgets: list[float],
        ruo_spc: list[int], seed: int, rows: list[dict[str, Any]], results: Path) -> None:
    """One repetition at ``seed``: every method at every budget, rows appended (and saved) as measured."""
    def todo(method: str, budget: float) -> bool:
        return not any(r["method"] == method and r["budget_bpc"] == budget and r["seed"] == seed for r in rows)

    def evaluate(method: str, budget: float, path: Path, bpc: float, ipc: int, **extra: Any) -> None:
        students = range(seed * args.seeds, (seed + 1) * args.seeds)
        report = evaluate_file(path, "mnist", seeds=students, epochs=args.epochs, progress=False)
        r = report["results"][0]
        rows.append({"method": method, "budget_bpc": budget, "seed": seed, "bpc": bpc, "samples_per_class": ipc,
                     "accuracies": r["accuracies"], **extra})
        results.write_text(json.dumps({"rows": rows}, indent=2))
        tqdm.write(f"{method:<14} budget {budget:>7.0f}  bpc {bpc:>9.1f}  ipc {ipc:>3}  "
                   f"seed {seed}  accuracy {100 * r['mean']:.2f} ± {100 * r['std']:.2f}")

    with tempfile.TemporaryDirectory(prefix=f"rate-utility-{seed}-") as tmp_name:
        tmp = Path(tmp_name)
        for budget, spc in tqdm(list(zip(budgets, ruo_spc)), desc="budgets"):
            ipc = largest_fitting(budget, lambda k: _pixels_bpc(*class_subset(x, y, k, seed), tmp))
            if ipc and todo("random-pixels", budget):
                xs, ys = class_subset(x, y, ipc, seed)
                path = ddformat.save(args.out / f"random-pixels-{budget:.0f}-{seed}.dd", xs, ys)
                evaluate("random-pixels", budget, path, _pixels_bpc(xs, ys, tmp), ipc)
            if ipc and todo("dm-pixels", budget):
                k = ipc  # DM images compress worse than real ones: rescale by the bits they took, then shrink
                while k:
                    xk, yk = class_subset(x, y, k, seed)
                    dm = dm_pixels(real, xk, yk, args.dm_iterations, seed, args.batch_real)
                    path = ddformat.save(args.out / f"dm-pixels-{budget:.0f}-{seed}.dd", dm, yk, name="mnist-dm-pixels")
                    with ddformat.open(path) as f:
                        bpc = f.bpc
                    if bpc <= budget:
                        evaluate("dm-pixels", budget, path, bpc, k)
                        break
                    k = min(k - 1, int(k * budget / bpc))
            for fmt in ("JPEG", "WEBP"):
                if not todo(f"random-{fmt.lower()}", budget):
                    continue
                k = largest_fitting(budget, lambda k: 8 * _codec_bytes(class_subset(x, y, k, seed)[0], fmt,
                                                                          args.quality)[0] / NUM_CLASSES)
                if k:
                    xs, ys = class_subset(x, y, k, seed)
                    nbytes, decoded = _codec_bytes(xs, fmt, args.quality)
                    path = ddformat.save(tmp / f"{fmt}.dd", decoded, ys)
                    evaluate(f"random-{fmt.lower()}", budget, path, 8 * nbytes / NUM_CLASSES, k)
            if not todo("ruo-dm", budget):
                continue
            config = RuoConfig(spc=spc, slice_size=args.ruo_slice_size, loss="dm",
                               init_iterations=args.ruo_init_iterations,
                               iterations=args.ruo_iterations, batch_real=args.batch_real, seed=seed)
            try:
                result = distill_to_budget(real, config, budget, search_steps=args.ruo_search_steps,
                                           search=args.ruo_search)
            except BudgetError as exc:
                tqdm.write(f"ruo-dm at {budget:.0f} bpc: {exc}")
                continue
            path = save_result(args.out / f"ruo-dm-{budget:.0f}-{seed}.dd", result, real)
            with ddformat.open(path) as f:
                evaluate("ruo-dm", budget, path, f.bpc, spc, fallback=result.fallback)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (budget, method): mean ± std over every student of every run, and the runs'
    bpc (mean and range) and samples per class."""
    table: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for r in rows:
        table.setdefault((r["budget_bpc"], r["method"]), []).append(r)
    out = []
    for (budget, method), runs in sorted(table.items()):
        accuracies = [a for r in runs for a in r["accuracies"]]
        bpcs = [r["bpc"] for r in runs]
        out.append({"method": method, "budget_bpc": budget, "runs": len(runs), "bpc": statistics.fmean(bpcs),
                    "bpc_min": min(bpcs), "bpc_max": max(bpcs),
                    "samples_per_class": sorted({r["samples_per_class"] for r in runs}),
                    "accuracy": statistics.fmean(accuracies),
                    "std": statistics.pstdev(accuracies) if len(accuracies) > 1 else 0.0,
                    "fallbacks": sum(bool(r.get("fallback")) for r in runs)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="8000,16000,32000", help="bits per class, comma-separated")
    ap.add_argument("--epochs", type=int, default=300, help="student epochs for every evaluation")
    ap.add_argument("--seeds", type=int, default=2, help="students per file")
    ap.add_argument("--runs", type=int, default=1, help="independent repetitions, seeds --seed, --seed + 1, ...")
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--ruo-spc", default="10", help="samples per class: one value, or one per budget")
    ap.add_argument("--ruo-slice-size", type=int, default=None,
                    help="samples sharing networks (default one slice per class; ≥ 10·spc: one for all)")
    ap.add_argument("--ruo-init-iterations", type=int, default=300)
    ap.add_argument("--ruo-iterations", type=int, default=200)
    ap.add_argument("--ruo-search-steps", type=int, default=4)
    ap.add_argument("--ruo-search", choices=SEARCHES, default="lambda", help="knob of the budget search")
    ap.add_argument("--batch-real", type=int, default=256, help="real images per class per DM step")
    ap.add_argument("--dm-iterations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0, help="seed of the first run")
    ap.add_argument("--out", type=Path, default=Path("runs/rate_utility"))
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows already in OUT/rate_utility.json and run only what they lack")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    budgets = [float(b) for b in args.budgets.split(",")]
    ruo_spc = [int(k) for k in args.ruo_spc.split(",")]
    if len(ruo_spc) not in (1, len(budgets)):
        ap.error("--ruo-spc takes one value or one per budget")
    ruo_spc *= len(budgets) // len(ruo_spc)
    x, y = realdata.load("mnist", "train")
    real = RealData.load("mnist")
    results = args.out / "rate_utility.json"
    rows: list[dict[str, Any]] = json.loads(results.read_text())["rows"] if args.resume and results.exists() else []

    for seed in range(args.seed, args.seed + args.runs):
        run(args, x, y, real, budgets, ruo_spc, seed, rows, results)
    rows.sort(key=lambda r: (r["budget_bpc"], r["seed"]))
    results.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    summary = aggregate(rows)
    table = ["| budget (bits/class) | method | runs | bpc (min–max) | samples/class | accuracy % |",
             "|---|---|---|---|---|---|"]
    table += [f"| {r['budget_bpc']:,.0f} | {r['method']} | {r['runs']} | {r['bpc']:,.0f} ({r['bpc_min']:,.0f}–"
              f"{r['bpc_max']:,.0f}) | {'/'.join(map(str, r['samples_per_class']))} | "
              f"{100 * r['accuracy']:.2f} ± {100 * r['std']:.2f} |" for r in summary]
    (args.out / "rate_utility.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    rate_utility_png(summary, args.out / "rate_utility.png", f"rate-utility on MNIST, ConvNet-D3 students ({args.epochs} epochs)")


if __name__ == "__main__":
    main()
