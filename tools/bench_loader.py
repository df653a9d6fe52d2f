"""Benchmark ``DistilledDataset.loader`` against ``ImageFolder`` + ``DataLoader`` on the same images,
and against two loaders of the same resident tensors.

Cuts ``--num-images`` 3×32×32 patches from the photographs bundled with scikit-image, writes them
once as a ``.dd`` file and once as an ImageFolder of PNGs, checks that both pipelines yield the
same normalised tensors, then times full shuffled epochs of batches of ``--batch-size`` (after
one untimed warm-up epoch each) and prints batches/s and three ratios. The pipelines are timed
in ``--repeats`` interleaved rounds and each keeps its fastest, so that load from other
processes on a shared machine skews them less; the resident ones first, because once a
``DataLoader``'s worker processes exist, batching in the main process slowed by up to 3× here. The two controls start
from the tensors the ``.dd`` file decoded to, already on the device, so they separate what
keeping a decoded set resident buys (against PNG decoding) from what the loader itself adds:
``TensorDataset`` + ``DataLoader`` (no workers: per-sample ``__getitem__`` and ``default_collate``),
and plain indexing of a shuffled permutation (``x[idx]``, what one would write by hand).

    python tools/bench_loader.py [--device cuda] [--epochs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets, transforms
from tqdm import tqdm

import ddformat
from ddformat import DistilledDataset

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]
NUM_CLASSES = 10


def photo_patches(n: int, size: int, seed: int) -> np.ndarray:
    """(n, 3, size, size) uint8 patches cut at random places from real photographs."""
    rng = np.random.default_rng(seed)
    photos = [getattr(skdata, name)()[..., :3] for name in PHOTOS]
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        photo = photos[i % len(photos)]
        r = rng.integers(0, photo.shape[0] - size + 1)
        c = rng.integers(0, photo.shape[1] - size + 1)
        out[i] = photo[r:r + size, c:c + size].transpose(2, 0, 1)
    return out


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> int:
    """One PNG per image under ``root/class_XX/``; returns the bytes written."""
    total = 0
    for i, (img, y) in enumerate(tqdm(zip(images, labels), total=len(images), desc="writing PNGs")):
        path = root / f"class_{y:02d}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(path)
        total += path.stat().st_size
    return total


def time_epochs(batches_of_epoch, epochs: int, device: torch.device) -> tuple[float, int]:
    """Seconds for ``epochs`` full passes (after one warm-up pass) and the batches they yielded."""
    def one_pass() -> int:
        count = 0
        for x, y, *_ in batches_of_epoch():
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            count += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return count

    one_pass()
    start = time.perf_counter()
    batches = sum(one_pass() for _ in range(epochs))
    return time.perf_counter() - start, batches


def plain_indexing(samples: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int):
    """Epochs of batches indexed by hand from resident tensors: ``x[perm[i:i + B]]``."""
    generator = torch.Generator().manual_seed(seed)

    def epoch():
        order = torch.randperm(len(samples), generator=generator).to(samples.device)
        for start in range(0, len(samples), batch_size):
            i = order[start:start + batch_size]
            yield samples[i], labels[i]

    return epoch


def timed_rounds(pipelines, repeats: int, epochs: int, device: torch.device) -> list[dict]:
    """``(name, setup_s, stored_bytes, batches_of_epoch)`` pipelines timed in ``repeats``
    interleaved rounds; each row keeps its fastest round."""
    rows = [{"pipeline": name, "setup_s": setup, "stored_bytes": stored, "seconds": math.inf}
            for name, setup, stored, _ in pipelines]
    for _ in tqdm(range(repeats), desc="rounds", leave=False):
        for row, (*_, batches_of_epoch) in zip(rows, pipelines):
            seconds, row["batches"] = time_epochs(batches_of_epoch, epochs, device)
            row["seconds"] = min(row["seconds"], seconds)
    return rows


def write_both(directory: Path, num_images: int, seed: int) -> tuple[Path, int]:
    """The same photo patches as ``directory/bench.dd`` and as an ImageFolder ``directory/folder``;
    returns the .dd path and the folder's size in bytes."""
    images = photo_patches(num_images, 32, seed)
    labels = np.arange(num_images) % NUM_CLASSES
    dd_path = ddformat.save(directory / "bench.dd", images, labels, num_classes=NUM_CLASSES,
                            normalization={"mean": MEAN, "std": STD, "applied": False})
    return dd_path, write_image_folder(directory / "folder", images, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for ImageFolder")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved timing rounds; each pipeline keeps its fastest")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dd_path, folder_bytes = write_both(tmp, args.num_images, args.seed)

        start = time.perf_counter()
        dd = DistilledDataset(dd_path, device=device)
        dd_setup = time.perf_counter() - start
        start = time.perf_counter()
        folder = datasets.ImageFolder(tmp / "folder", transform=transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]))
        folder_setup = time.perf_counter() - start
        max_diff = max(float((dd.samples[i].cpu() - folder[i][0]).abs().max()) for i in range(0, len(dd), 97))

        dd_loader = dd.loader(args.batch_size, shuffle=True, seed=args.seed)
        tensor_loader = DataLoader(TensorDataset(dd.samples, dd.labels), batch_size=args.batch_size, shuffle=True,
                                   generator=torch.Generator().manual_seed(args.seed))
        resident = [
            ("ddformat DistilledDataset.loader", dd_setup, dd.size, lambda: dd_loader),
            ("resident TensorDataset+DataLoader", 0.0, None, lambda: tensor_loader),
            ("resident plain indexing x[idx]", 0.0, None, plain_indexing(dd.samples, dd.labels, args.batch_size,
                                                                          args.seed)),
        ]
        rows = timed_rounds(resident, args.repeats, args.epochs, device)
        folder_loader = DataLoader(folder, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                   persistent_workers=args.workers > 0, pin_memory=device.type == "cuda")
        rows += timed_rounds([(f"ImageFolder+DataLoader(workers={args.workers})", folder_setup, folder_bytes,
                               lambda: folder_loader)], args.repeats, args.epochs, device)

    for row in rows:
        row["batches_per_s"] = row["batches"] / row["seconds"]
        row["images_per_s"] = row["batches_per_s"] * args.batch_size
    ratios = {row["pipeline"]: rows[0]["batches_per_s"] / row["batches_per_s"] for row in rows[1:]}

    print(f"\n{args.num_images} images 3x32x32, batch {args.batch_size}, {args.epochs} timed epoch(s), "
          f"fastest of {args.repeats} rounds, "
          f"device {device}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"same images check: max |dd - ImageFolder| = {max_diff:.2e}")
    print(f"{'pipeline':<40} {'stored MB':>9} {'setup s':>8} {'batches':>8} {'s':>8} {'batches/s':>10} {'images/s':>10}")
    for row in rows:
        stored = "-" if row["stored_bytes"] is None else f"{row['stored_bytes'] / 1e6:.2f}"
        print(f"{row['pipeline']:<40} {stored:>9} {row['setup_s']:>8.3f} {row['batches']:>8d} "
              f"{row['seconds']:>8.3f} {row['batches_per_s']:>10.1f} {row['images_per_s']:>10.0f}")
    for name, ratio in ratios.items():
        print(f"ratio ddformat / {name}: {ratio:.2f}x batches per second")
    if args.json:
        args.json.write_text(json.dumps({
            "num_images": args.num_images, "batch_size": args.batch_size, "epochs": args.epochs,
            "repeats": args.repeats, "workers": args.workers, "device": str(device), "torch": torch.__version__,
            "max_abs_diff": max_diff, "results": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
