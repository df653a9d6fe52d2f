"""Benchmark: open and fully decode a set of 10,000 uint8 3×32×32 images stored three ways.

1. one ``.dd`` file (``pixels`` codec): ``ddformat.open`` + ``samples()`` + ``labels()``;
2. one ``torch.save`` file of the same tensors: ``torch.load(weights_only=True)``;
3. one PNG file per image in a folder per class: PIL → numpy → one stacked (N, 3, 32, 32) tensor.

The images are real photographs, not noise (noise would make every lossless codec look alike):
patches of random size cut from ten of scikit-image's bundled pictures and resized to 32×32,
one class per picture. Timings are medians over repeats with the files in the page cache, so
they measure decoding, not the disk. Every method's result is checked against the originals.

    python tools/bench_open.py [--samples 10000] [--repeats 5] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import ddformat

PICTURES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
            "retina", "colorwheel", "stereo_motorcycle", "logo")
SIDE = 32


def _picture(name: str) -> np.ndarray:
    """An (H, W, 3) uint8 photo; RGBA pictures are composited on white."""
    import skimage.data

    img = getattr(skimage.data, name)()
    img = img[0] if isinstance(img, tuple) else img
    if img.shape[-1] == 4:
        alpha = img[..., 3:].astype(np.float32) / 255
        img = (img[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return img


def make_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(n, 3, 32, 32) uint8 patches and their (n,) labels, classes interleaved as a loader would
    see them; crops are 32 pixels to half the picture wide, so detail ranges from fine to coarse."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(PICTURES)
    images = np.empty((n, SIDE, SIDE, 3), np.uint8)
    for c, name in enumerate(tqdm(PICTURES, desc="cut patches", unit="picture")):
        pic = Image.fromarray(_picture(name))
        for i in np.flatnonzero(labels == c):
            s = int(rng.integers(SIDE, min(pic.size) // 2 + 1))
            x, y = int(rng.integers(0, pic.width - s + 1)), int(rng.integers(0, pic.height - s + 1))
            images[i] = np.asarray(pic.resize((SIDE, SIDE), Image.BILINEAR, box=(x, y, x + s, y + s)))
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels), list(PICTURES)


# --------------------------------------------------------------------------- the three stores


def write_all(root: Path, images: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict[str, Path]:
    paths = {"dd": root / "set.dd", "torch": root / "set.pt", "png": root / "png"}
    ddformat.save(paths["dd"], images, labels, class_names=names, name="skimage patches 32x32")
    torch.save({"images": images, "labels": labels}, paths["torch"])
    for i, (img, c) in enumerate(tqdm(zip(images.permute(0, 2, 3, 1).numpy(), labels.tolist()),
                                      total=len(labels), desc="write PNG files", unit="file")):
        folder = paths["png"] / f"{c:02d}_{names[c]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return paths


def load_dd(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with ddformat.open(path) as dd:
        return dd.samples(), dd.labels()


def load_torch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.load(path, weights_only=True)
    return d["images"], d["labels"]


def load_png(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    files = sorted(root.glob("*/*.png"))
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])
    labels = torch.tensor([int(f.parent.name.split("_", 1)[0]) for f in files])
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))), labels


LOADERS: dict[str, Callable[[Path], tuple[torch.Tensor, torch.Tensor]]] = {
    "dd": load_dd, "torch": load_torch, "png": load_png}


def _disk(path: Path) -> tuple[int, int]:
    """(bytes of content, bytes allocated on disk) of a file or a folder tree."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    stats = [f.stat() for f in files]
    return sum(s.st_size for s in stats), sum(s.st_blocks * 512 for s in stats)


def _same_set(got: tuple[torch.Tensor, torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> bool:
    """Equal after a stable sort by class: the .dd writer and the PNG folders group by class
    and keep the original order within a class."""
    x, y = got
    order, expected = torch.argsort(y, stable=True), torch.argsort(labels, stable=True)
    return bool(torch.equal(y[order], labels[expected]) and torch.equal(x[order], images[expected]))


def bench(samples: int, repeats: int, root: Path) -> dict:
    images, labels, names = make_images(samples)
    paths = write_all(root, images, labels, names)
    results = {}
    for method, loader in LOADERS.items():
        loader(paths[method])  # warm the page cache and lazy imports
        times = []
        for _ in tqdm(range(repeats), desc=f"time {method}", unit="run"):
            start = time.perf_counter()
            got = loader(paths[method])
            times.append(time.perf_counter() - start)
        size, allocated = _disk(paths[method])
        results[method] = {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats,
                           "bytes": size, "bytes_allocated": allocated, "exact": _same_set(got, images, labels)}
    dd, pt, png = results["dd"], results["torch"], results["png"]
    return {
        "samples": samples, "shape": [3, SIDE, SIDE], "dtype": "uint8", "classes": names,
        "torch_threads": torch.get_num_threads(), "results": results,
        "ratios": {
            "time_dd_over_torch": dd["median_s"] / pt["median_s"],
            "time_dd_over_png": dd["median_s"] / png["median_s"],
            "size_dd_over_torch": dd["bytes"] / pt["bytes"],
            "size_dd_over_png": dd["bytes"] / png["bytes"],
        },
    }


def render(report: dict) -> str:
    rows = [f"{report['samples']} images uint8 3x{SIDE}x{SIDE}, {len(report['classes'])} classes; "
            f"median of {report['results']['dd']['repeats']} warm runs, torch threads {report['torch_threads']}",
            f"{'store':<7} {'median s':>9} {'min s':>8} {'bytes':>11} {'allocated':>11} {'bits/pixel':>10}  exact"]
    pixels = report["samples"] * 3 * SIDE * SIDE
    for method, r in report["results"].items():
        rows.append(f"{method:<7} {r['median_s']:>9.4f} {r['min_s']:>8.4f} {r['bytes']:>11,} "
                    f"{r['bytes_allocated']:>11,} {8 * r['bytes'] / pixels:>10.3f}  {r['exact']}")
    q = report["ratios"]
    rows.append(f"dd / torch.load: time {q['time_dd_over_torch']:.3f}x, size {q['size_dd_over_torch']:.3f}x")
    rows.append(f"dd / PNG files:  time {q['time_dd_over_png']:.3f}x, size {q['size_dd_over_png']:.3f}x")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = bench(args.samples, args.repeats, args.workdir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            report = bench(args.samples, args.repeats, Path(tmp))
    print(json.dumps(report, indent=2) if args.json else render(report))


if __name__ == "__main__":
    main()
