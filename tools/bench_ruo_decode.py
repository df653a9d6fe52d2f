"""Decode speed of the ``ruo`` codec at the sizes of paper 000, Table A7.

    python tools/bench_ruo_decode.py [--device cuda] [--repeats 3] [--json out.json]

Two files with random networks (speed does not depend on training): 7,180 samples of 3×32×32
(CIFAR-10 at spc 718: 20 slices of 359, decoder v4-1200, ARM 16×4) and 1,020 of 3×128×128 (an
ImageNet subset at spc 102: 10 slices of 102, decoder v5-240, ARM 32×4), L = 6 scales,
16-latent contexts. Timed: entropy decoding (integer ARM + constriction, numpy, on the CPU), then
synthesis twice: numpy on the CPU (what ``ddformat.open(...).samples()`` runs) and torch on
``--device`` (what ``DistilledDataset(..., device=...)`` runs).
Paper 000 Table A7 (A100, synthesis only): 318.57 ms and 295.87 ms.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import ddformat
from ddformat.codecs.ruo import RUO, RuoSamples, RuoSlice, schedule, synthesize, synthesize_tensor

CASES = {
    "cifar10-spc718": dict(shape=(3, 32, 32), slices=20, per_slice=359, version="v4-1200", width=16, paper_ms=318.57),
    "imagenet-spc102": dict(shape=(3, 128, 128), slices=10, per_slice=102, version="v5-240", width=32, paper_ms=295.87),
}


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, step: int) -> np.ndarray:
    """Integers of torch's default layer initialisation, U(±1/√fan_in), at step 2^-``step``."""
    return np.round(rng.uniform(-1, 1, shape) * 2**step / np.sqrt(fan_in)).astype(np.int64)


def random_set(shape, slices, per_slice, version, width, scales=6, context=16, depth=4, seed=0) -> RuoSamples:
    rng = np.random.default_rng(seed)
    m, _ = schedule(shape[1], shape[2], scales, context)
    template = RuoSamples(shape, scales, context, width, depth, version, [])
    out = []
    for _ in tqdm(range(slices), desc="random slices", leave=False):
        arm = [(_uniform(rng, (o, i), i, 8), _uniform(rng, (o,), i, 8)) for o, i in template.arm_shapes()]
        decoder = {k: _uniform(rng, v, int(np.prod(v[1:])) or 1, 12) for k, v in template.decoder_shapes().items()}
        latents = np.clip(np.round(rng.laplace(0, 1.5, size=(per_slice, m))), -64, 64).astype(np.int64)
        out.append(RuoSlice(latents, arm, 8, decoder, 12))
    return RuoSamples(shape, scales, context, width, depth, version, out)


def time_decode(path: Path, device: torch.device) -> tuple[float, float, float]:
    """Seconds of entropy decoding, numpy synthesis and torch synthesis on ``device``."""
    with ddformat.open(path) as f:
        c = f.container
        start = time.perf_counter()
        samples = RUO.read(c.section("samples"), f.layout, c.section)
        entropy = time.perf_counter() - start
        start = time.perf_counter()
        x = synthesize(samples)
        numpy_synthesis = time.perf_counter() - start
        start = time.perf_counter()
        y = synthesize_tensor(samples, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        torch_synthesis = time.perf_counter() - start
    assert x.shape[0] == y.shape[0] == f.num_samples
    return entropy, numpy_synthesis, torch_synthesis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            samples = random_set(case["shape"], case["slices"], case["per_slice"], case["version"], case["width"])
            labels = np.repeat(np.arange(10), case["slices"] * case["per_slice"] // 10)
            path = ddformat.save(Path(tmp) / f"{name}.dd", samples, labels)
            time_decode(path, device)  # warm-up
            runs = [time_decode(path, device) for _ in tqdm(range(args.repeats), desc=name, leave=False)]
            entropy, numpy_synthesis, torch_synthesis = (statistics.median(r[i] for r in runs) for i in range(3))
            rows.append({"case": name, "samples": samples.num_samples, "bytes": path.stat().st_size,
                         "entropy_ms": 1000 * entropy, "numpy_synthesis_ms": 1000 * numpy_synthesis,
                         "torch_synthesis_ms": 1000 * torch_synthesis, "paper_synthesis_ms": case["paper_ms"]})
    print(f"ruo decode, torch synthesis on {device}, torch {torch.__version__}, numpy {np.__version__}, "
          f"{platform.machine()}, median of {args.repeats}")
    print(f"{'case':<18}{'samples':>8}{'bytes':>12}{'entropy ms':>12}{'numpy synth ms':>16}{'torch synth ms':>16}"
          f"{'paper ms':>10}")
    for r in rows:
        print(f"{r['case']:<18}{r['samples']:>8}{r['bytes']:>12,}{r['entropy_ms']:>12.1f}"
              f"{r['numpy_synthesis_ms']:>16.1f}{r['torch_synthesis_ms']:>16.1f}{r['paper_synthesis_ms']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
