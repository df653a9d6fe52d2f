"""Decode speed of the ``ruo`` codec at the sizes of paper 000, Table A7.

    python tools/bench_ruo_decode.py [--device cuda] [--repeats 3] [--json out.json]

Two files with random-initialised networks (speed does not depend on training): 7,180 samples
of 3×32×32 (CIFAR-10 at spc 718: 20 slices of 359, decoder v4-1200, ARM 16×4) and 1,020 of
3×128×128 (an ImageNet subset at spc 102: 10 slices of 102, decoder v5-240, ARM 32×4), L = 6
scales, 16-latent contexts. Timed: bits → sample tensors resident on the device (entropy
decoding with the integer ARM on the CPU, synthesis on ``--device``), split into the two parts.
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
from ddformat.codecs.ruo import RUO, RuoSamples, RuoSlice, quantize_decoder, synthesize
from ddformat.codecs.ruo.arm import ArmMLP, quantize_arm
from ddformat.codecs.ruo.grid import schedule

CASES = {
    "cifar10-spc718": dict(shape=(3, 32, 32), slices=20, per_slice=359, version="v4-1200", width=16, paper_ms=318.57),
    "imagenet-spc102": dict(shape=(3, 128, 128), slices=10, per_slice=102, version="v5-240", width=32, paper_ms=295.87),
}


def random_set(shape, slices, per_slice, version, width, scales=6, context=16, depth=4, seed=0) -> RuoSamples:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    m, _ = schedule(shape[1], shape[2], scales, context)
    template = RuoSamples(shape, scales, context, width, depth, version, [])
    out = []
    for _ in tqdm(range(slices), desc="random slices", leave=False):
        arm = ArmMLP(context, width, depth)
        latents = np.clip(np.round(rng.laplace(0, 1.5, size=(per_slice, m))), -64, 64).astype(np.int64)
        out.append(RuoSlice(latents, quantize_arm(arm, 8), 8, quantize_decoder(template.new_decoder(), 12), 12))
    return RuoSamples(shape, scales, context, width, depth, version, out)


def time_decode(path: Path, device: torch.device) -> tuple[float, float]:
    with ddformat.open(path) as f:
        c = f.container
        start = time.perf_counter()
        samples = RUO.read(c.section("samples"), f.layout, c.section)
        entropy = time.perf_counter() - start
        start = time.perf_counter()
        x = synthesize(samples, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        synthesis = time.perf_counter() - start
    assert x.shape[0] == f.num_samples
    return entropy, synthesis


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
            entropy = statistics.median(r[0] for r in runs)
            synthesis = statistics.median(r[1] for r in runs)
            rows.append({"case": name, "samples": samples.num_samples, "bytes": path.stat().st_size,
                         "entropy_ms": 1000 * entropy, "synthesis_ms": 1000 * synthesis,
                         "total_ms": 1000 * (entropy + synthesis), "paper_synthesis_ms": case["paper_ms"]})
    print(f"ruo decode, device {device}, torch {torch.__version__}, {platform.machine()}, median of {args.repeats}")
    print(f"{'case':<18}{'samples':>8}{'bytes':>12}{'entropy ms':>12}{'synthesis ms':>14}{'total ms':>10}{'paper ms':>10}")
    for r in rows:
        print(f"{r['case']:<18}{r['samples']:>8}{r['bytes']:>12,}{r['entropy_ms']:>12.1f}{r['synthesis_ms']:>14.1f}"
              f"{r['total_ms']:>10.1f}{r['paper_synthesis_ms']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
