"""Open + decode speed of a ``pixels`` set of 10,000 uint8 3×32×32 photo patches, side by side.

    python tools/bench_pixels.py [--samples 10000] [--repeats 7] [--before SRC] [--threads N] [--json out.json]

The patches are real photographs, not noise (noise makes every lossless store look alike): the
ten photos of ``ddformat.evaluation.realdata``'s ``textures`` source (scikit-image's bundled
PNGs; grey ones as three equal channels, as there), one class per photo, 1,000 crops each of a
random side between 32 pixels and half the photo, resized to 32×32 (bilinear). Crops of one
fixed 32-pixel size would not do: a 512×512 photo has room for only 256 disjoint ones, so 1,000
would mostly repeat each other's pixels, which zstd finds across samples.

The same (N, 3, 32, 32) tensor is stored as
- ``dd``: ``ddformat.save`` with default options; ``dd-fast``: with the ``pixels`` option
  ``size_tolerance=0.05`` (the fastest-decoding filter within 5 % of the fewest bytes);
- ``torch``: ``torch.save``, read with ``torch.load(weights_only=True)``;
- ``safetensors``: ``safetensors.torch.save_file`` / ``load_file``;
- ``png``: one PNG per image, decoded with PIL and stacked into one array;
- ``dd-before`` (with ``--before SRC``): ``dd`` written and read by the ddformat source tree at
  SRC (say, an earlier commit: ``git archive <commit> | tar -x -C SRC``), timed in a subprocess
  on the same patches, so that a speed-up is measured in the same run.

Each store is opened and decoded to one array (numpy for ``dd``, a tensor for torch and
safetensors) once to warm the page cache and lazy imports and to check that it equals the
original tensor exactly, then ``--repeats`` rounds time each store once in turn; the median is
reported, with the ratios of time and bytes to ``dd``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import safetensors.torch
import torch
import zstandard
from PIL import Image

import ddformat
from ddformat.codecs import frames
from ddformat.evaluation.realdata import TEXTURE_PHOTOS

SIDE = 32
FAST = {"samples": {"size_tolerance": 0.05}}


def _photo(name: str) -> Image.Image:
    import skimage.data

    photo = getattr(skimage.data, name)()
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(photo[..., None], (*photo.shape, 3))
                                                if photo.ndim == 2 else photo[..., :3]))


def make_patches(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 32, 32) uint8 patches, class-grouped (class c from photo c), and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(TEXTURE_PHOTOS)), -(-n // len(TEXTURE_PHOTOS)))[:n]
    images = np.empty((n, SIDE, SIDE, 3), np.uint8)
    for c, name in enumerate(TEXTURE_PHOTOS):
        photo = _photo(name)
        for i in np.flatnonzero(labels == c):
            s = int(rng.integers(SIDE, min(photo.size) // 2 + 1))
            x, y = int(rng.integers(0, photo.width - s + 1)), int(rng.integers(0, photo.height - s + 1))
            images[i] = np.asarray(photo.resize((SIDE, SIDE), Image.BILINEAR, box=(x, y, x + s, y + s)))
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels


# --------------------------------------------------------------------------- stores


def write_all(root: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, Path]:
    paths = {"dd": root / "set.dd", "dd-fast": root / "fast.dd", "torch": root / "set.pt",
             "safetensors": root / "set.safetensors", "png": root / "png"}
    ddformat.save(paths["dd"], images, labels)
    ddformat.save(paths["dd-fast"], images, labels, codec_options=FAST)
    tensor = torch.from_numpy(images)
    torch.save(tensor, paths["torch"])
    safetensors.torch.save_file({"images": tensor}, paths["safetensors"])
    paths["png"].mkdir(exist_ok=True)
    for i, img in enumerate(images.transpose(0, 2, 3, 1)):
        Image.fromarray(img).save(paths["png"] / f"{i:05d}.png")
    return paths


def load_dd(path: Path) -> np.ndarray:
    with ddformat.open(path) as f:
        return f.samples()


def load_png(root: Path) -> np.ndarray:
    pixels = np.stack([np.asarray(Image.open(f)) for f in sorted(root.glob("*.png"))])
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))


LOADERS: dict[str, Callable[[Path], np.ndarray | torch.Tensor]] = {
    "dd": load_dd,
    "dd-fast": load_dd,
    "torch": lambda path: torch.load(path, weights_only=True),
    "safetensors": lambda path: safetensors.torch.load_file(path)["images"],
    "png": load_png,
}


BEFORE = """
import json, sys, time
import numpy as np
import ddformat
src, images, labels, path = sys.argv[1:5]
assert ddformat.__file__.startswith(src), ddformat.__file__
images = np.load(images)
ddformat.save(path, images, np.load(labels))
def load():
    with ddformat.open(path) as f:
        return f.samples()
with ddformat.open(path) as f:
    chosen = next(s for s in f.header.sections if s.kind == "samples").params["filter"]
print(json.dumps({"exact": bool(np.array_equal(load(), images)), "filter": chosen}), flush=True)
for _ in sys.stdin:
    start = time.perf_counter()
    load()
    print(time.perf_counter() - start, flush=True)
"""


class Before:
    """``dd`` written and read by the ddformat source tree at ``src``, in a subprocess that times
    one open + decode per call, so that its runs interleave with the others'."""

    def __init__(self, src: Path, root: Path, images: np.ndarray, labels: np.ndarray) -> None:
        np.save(root / "images.npy", images)
        np.save(root / "labels.npy", labels)
        self.path, src = root / "before.dd", src.resolve()
        self.proc = subprocess.Popen([sys.executable, "-c", BEFORE, str(src), str(root / "images.npy"),
                                      str(root / "labels.npy"), str(self.path)], cwd=root, text=True,
                                     env={**os.environ, "PYTHONPATH": str(src)},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the ddformat at {src} failed to write or read the set")
        self.info = json.loads(line)

    def __call__(self) -> float:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _filter(path: Path) -> str:
    with ddformat.open(path) as f:
        return next(s for s in f.header.sections if s.kind == "samples").params["filter"]


def _stopwatch(load: Callable[[], object]) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        load()
        return time.perf_counter() - start
    return once


def bench(samples: int, repeats: int, root: Path, before: Path | None) -> dict:
    """Every store once to warm up and check, then ``repeats`` rounds of one timed run each, so
    that a change in the machine's load falls on all stores alike."""
    images, labels = make_patches(samples)
    paths = write_all(root, images, labels)
    results, timers = {}, {}
    if before is not None:
        old = Before(before, root, images, labels)
        timers["dd-before"] = old
        results["dd-before"] = {"bytes": _bytes(old.path), **old.info}
    for store, load in LOADERS.items():
        path = paths[store]
        results[store] = {"bytes": _bytes(path), "exact": bool(np.array_equal(np.asarray(load(path)), images))}
        if store.startswith("dd"):
            results[store]["filter"] = _filter(path)
        timers[store] = _stopwatch(lambda load=load, path=path: load(path))
    times: dict[str, list[float]] = {store: [] for store in timers}
    for _ in range(repeats):
        for store, timer in timers.items():
            times[store].append(timer())
    if before is not None:
        old.close()
    for store, r in results.items():
        r["median_ms"], r["min_ms"] = 1e3 * statistics.median(times[store]), 1e3 * min(times[store])
    for r in results.values():
        r["time_vs_dd"] = r["median_ms"] / results["dd"]["median_ms"]
        r["bytes_vs_dd"] = r["bytes"] / results["dd"]["bytes"]
    return {
        "samples": samples, "shape": [3, SIDE, SIDE], "photos": list(TEXTURE_PHOTOS), "repeats": repeats,
        "machine": {"cpu": _cpu(), "cpus_usable": len(os.sched_getaffinity(0)), "decode_threads": frames.THREADS,
                    "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                    "zstandard": zstandard.__version__, "safetensors": safetensors.__version__,
                    "load_average": os.getloadavg()},
        "results": results,
    }


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def render(report: dict) -> str:
    m = report["machine"]
    rows = [(f"{report['samples']:,} photo patches uint8 3x{SIDE}x{SIDE}; median of {report['repeats']} "
             f"warm runs; {m['cpu']}, {m['cpus_usable']} CPUs usable, load {m['load_average'][0]:.2f}"),
            (f"{'store':<12} {'filter':<6} {'bytes':>11} {'median ms':>10} {'min ms':>8} {'time/dd':>8} "
             f"{'bytes/dd':>8}  exact")]
    for store, r in report["results"].items():
        rows.append(f"{store:<12} {r.get('filter', ''):<6} {r['bytes']:>11,} {r['median_ms']:>10.1f} "
                    f"{r['min_ms']:>8.1f} {r['time_vs_dd']:>8.3f} {r['bytes_vs_dd']:>8.3f}  {r['exact']}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", type=Path, default=None,
                        help="source tree of another ddformat version to time on the same patches")
    parser.add_argument("--threads", type=int, default=frames.THREADS,
                        help=f"threads ddformat decodes on (default: the {frames.THREADS} CPUs usable)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here as JSON")
    args = parser.parse_args()
    frames.THREADS = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        report = bench(args.samples, args.repeats, root, args.before)
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
