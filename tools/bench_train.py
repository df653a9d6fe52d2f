"""Benchmark student-training steps per second: on-device batches + batched augmentation vs a DataLoader.

Both sides train the same ``ConvNet(3, 10, (32, 32), depth=3)`` with SGD on the same real 3×32×32
photo patches (cut by ``tools/bench_loader.py``'s :func:`photo_patches`), batch ``--batch-size``,
with RandomResizedCrop + horizontal flip:

1. ``DistilledDataset.loader`` on ``--device`` with :class:`ddformat.evaluation.augment.RandomResizedCropFlip`
   as its ``batch_transform`` (one batched ``grid_sample`` per step, no workers);
2. ``ImageFolder`` of PNGs + ``DataLoader(num_workers=--workers)`` with torchvision's
   ``transforms.v2`` ``RandomResizedCrop`` + ``RandomHorizontalFlip`` per sample on CPU workers,
   batches copied to ``--device``.

Each side runs ``--warmup`` untimed steps, then ``--steps`` timed ones; the tool also times the
pipelines alone (producing batches, no training) to show where the time goes. On a CPU the
model's own arithmetic dominates both sides, so the ratio is close to 1 there; the comparison is
meant for a GPU, where the model is fast and the data pipeline becomes the bottleneck.

    python tools/bench_train.py [--device cuda] [--steps 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2
from tqdm import tqdm

from bench_loader import MEAN, NUM_CLASSES, STD, write_both
from ddformat import DistilledDataset
from ddformat.evaluation.augment import RandomResizedCropFlip
from ddformat.torch.losses import weighted_cross_entropy
from ddformat.evaluation.models import ConvNet

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def endless(loader: Iterable, to_batch: Callable[[tuple], Batch]) -> Iterator[Batch]:
    """Batches of ``loader``, epoch after epoch."""
    while True:
        for item in loader:
            yield to_batch(item)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(batches: Iterator[Batch], step: Callable[[Batch], None], count: int, device: torch.device,
               desc: str) -> float:
    """Seconds for ``count`` calls of ``step`` on the next batches, synchronised at both ends."""
    synchronize(device)
    start = time.perf_counter()
    for _ in tqdm(range(count), desc=desc, leave=False):
        step(next(batches))
    synchronize(device)
    return time.perf_counter() - start


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[Batch], None]:
    def step(batch: Batch) -> None:
        x, y, w = batch
        optimizer.zero_grad(set_to_none=True)
        weighted_cross_entropy(model(x), y, w).backward()
        optimizer.step()
    return step


def fresh_model(seed: int, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = ConvNet(3, NUM_CLASSES, (32, 32), depth=3).to(device).train()
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)


def measure(name: str, batches: Iterator[Batch], args: argparse.Namespace, device: torch.device) -> dict:
    """Pipeline-only batches/s, then training steps/s, each after its warm-up."""
    def consume(batch: Batch) -> None:
        batch[0].sum()  # touch the batch so device work is not skipped

    time_steps(batches, consume, args.warmup, device, f"{name}: warm-up")
    pipeline_s = time_steps(batches, consume, args.steps, device, f"{name}: pipeline")
    model, optimizer = fresh_model(args.seed, device)
    step = training_step(model, optimizer)
    time_steps(batches, step, args.warmup, device, f"{name}: warm-up training")
    train_s = time_steps(batches, step, args.steps, device, f"{name}: training")
    return {"pipeline": name, "pipeline_batches_per_s": args.steps / pipeline_s,
            "train_steps_per_s": args.steps / train_s, "train_s": train_s, "steps": args.steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each measurement")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for ImageFolder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dd_path, _ = write_both(tmp, args.num_images, args.seed)

        dd = DistilledDataset(dd_path, device=device)
        crop_flip, generator = RandomResizedCropFlip(), torch.Generator().manual_seed(args.seed)
        dd_loader = dd.loader(args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                              batch_transform=lambda x: crop_flip(x, generator))

        folder = datasets.ImageFolder(tmp / "folder", transform=v2.Compose([
            v2.ToImage(), v2.RandomResizedCrop(32, antialias=True), v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]))
        folder_loader = DataLoader(folder, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                   num_workers=args.workers, persistent_workers=args.workers > 0,
                                   pin_memory=device.type == "cuda")

        def to_device(item: tuple) -> Batch:
            x, y = item
            return x.to(device, non_blocking=True), y.to(device, non_blocking=True), None

        rows = [measure("ddformat loader + RandomResizedCropFlip", endless(dd_loader, tuple), args, device),
                measure(f"ImageFolder + DataLoader(workers={args.workers})", endless(folder_loader, to_device),
                        args, device)]
    ratio = rows[0]["train_steps_per_s"] / rows[1]["train_steps_per_s"]
    pipeline_ratio = rows[0]["pipeline_batches_per_s"] / rows[1]["pipeline_batches_per_s"]

    print(f"\n{args.num_images} images 3x32x32, batch {args.batch_size}, ConvNet-D3, {args.steps} timed steps, "
          f"device {device}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'pipeline':<42} {'pipeline batches/s':>18} {'train steps/s':>14}")
    for row in rows:
        print(f"{row['pipeline']:<42} {row['pipeline_batches_per_s']:>18.2f} {row['train_steps_per_s']:>14.3f}")
    print(f"ratio (ddformat / DataLoader): training {ratio:.2f}x, pipeline alone {pipeline_ratio:.1f}x")
    if args.json:
        args.json.write_text(json.dumps({
            "num_images": args.num_images, "batch_size": args.batch_size, "steps": args.steps,
            "warmup": args.warmup, "workers": args.workers, "device": str(device), "torch": torch.__version__,
            "results": rows, "train_ratio": ratio, "pipeline_ratio": pipeline_ratio}, indent=2))


if __name__ == "__main__":
    main()
