"""Decode speed of the ``ruo`` codec at the sizes of paper 000, Table A7.

    python tools/bench_ruo_decode.py [--device cuda] [--repeats 3] [--json out.json] [--entropy-only]
        [--baseline DIR]   # a checkout of an earlier ddformat: its entropy decoding of the same sets, side by side

Two sets with random networks (speed does not depend on training): 7,180 samples of 3×32×32
(CIFAR-10 at spc 718: 20 slices of 359, decoder v4-1200, ARM 16×4) and 1,020 of 3×128×128 (an
ImageNet subset at spc 102: 10 slices of 102, decoder v5-240, ARM 32×4), L = 6 scales,
16-latent contexts; each written twice: with the writer's default streams and with one stream
per sample (the most parallel file, ``samples_per_stream=1``). Timed: entropy decoding with
numpy on the CPU (integer ARM + lockstep rANS; what ``ddformat.open(...).samples()`` runs),
numpy synthesis, and the whole decode with torch on ``--device`` (entropy decoding there too on
an accelerator; what ``DistilledDataset(..., device=...)`` runs).
Paper 000 Table A7 (A100, synthesis only): 318.57 ms and 295.87 ms.
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

import numpy as np
import torch
from tqdm import tqdm

import ddformat
from ddformat.codecs.ruo import RUO, RuoSamples, RuoSlice, schedule, synthesize

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


def time_decode(path: Path, device: torch.device, entropy_only: bool = False) -> tuple[float, float, float]:
    """Seconds of numpy entropy decoding, numpy synthesis, and torch decoding on ``device``
    (NaN for the last two with ``entropy_only``)."""
    with ddformat.open(path) as f:
        c = f.container
        start = time.perf_counter()
        samples = RUO.read(c.section("samples"), f.layout, c.section)
        entropy = time.perf_counter() - start
        if entropy_only:
            return entropy, float("nan"), float("nan")
        start = time.perf_counter()
        x = synthesize(samples)
        numpy_synthesis = time.perf_counter() - start
        start = time.perf_counter()
        y = RUO.decode_tensor(c.section("samples"), f.layout, c.section, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        torch_decode = time.perf_counter() - start
    assert x.shape[0] == y.shape[0] == f.num_samples
    return entropy, numpy_synthesis, torch_decode


BASELINE = """
import json, statistics, sys, tempfile, time
from pathlib import Path
import numpy as np
import ddformat
from ddformat.codecs.ruo import RUO
from tools.bench_ruo_decode import CASES, random_set
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for name, case in CASES.items():
        samples = random_set(case["shape"], case["slices"], case["per_slice"], case["version"], case["width"])
        labels = np.repeat(np.arange(10), case["slices"] * case["per_slice"] // 10)
        with ddformat.open(ddformat.save(Path(tmp) / "b.dd", samples, labels)) as f:
            c = f.container
            times = []
            for _ in range(int(sys.argv[1]) + 1):
                start = time.perf_counter()
                RUO.read(c.section("samples"), f.layout, c.section)
                times.append(time.perf_counter() - start)
        out[name] = 1000 * statistics.median(times[1:])
print(json.dumps(out))
"""
"""Run in an earlier checkout: its own random sets (same generator and seed), written and
entropy-decoded by its own code, one warm-up and the median of the repeats."""


def baseline(checkout: Path, repeats: int) -> dict[str, float]:
    """Entropy-decoding ms per case of the implementation in ``checkout``."""
    proc = subprocess.run([sys.executable, "-c", BASELINE, str(repeats)], cwd=checkout, check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(checkout)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--baseline", type=Path, help="checkout of an earlier ddformat to time side by side")
    ap.add_argument("--entropy-only", action="store_true", help="time entropy decoding only (no synthesis)")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            samples = random_set(case["shape"], case["slices"], case["per_slice"], case["version"], case["width"])
            labels = np.repeat(np.arange(10), case["slices"] * case["per_slice"] // 10)
            for streams, options in (("default", {}), ("per-sample", {"samples_per_stream": 1})):
                path = ddformat.save(Path(tmp) / f"{name}.dd", samples, labels, codec_options={"samples": options})
                time_decode(path, device, args.entropy_only)  # warm-up
                runs = [time_decode(path, device, args.entropy_only)
                        for _ in tqdm(range(args.repeats), desc=f"{name} {streams}", leave=False)]
                entropy, numpy_synthesis, torch_decode = (statistics.median(r[i] for r in runs) for i in range(3))
                with ddformat.open(path) as f:
                    per_stream = f.header.sections[0].params["samples_per_stream"]
                rows.append({"case": name, "streams": streams, "samples_per_stream": per_stream,
                             "samples": samples.num_samples, "bytes": path.stat().st_size,
                             "entropy_ms": 1000 * entropy, "numpy_synthesis_ms": 1000 * numpy_synthesis,
                             "torch_decode_ms": 1000 * torch_decode, "paper_synthesis_ms": case["paper_ms"]})
    before = baseline(args.baseline, args.repeats) if args.baseline else {}
    print(f"ruo decode, torch on {device}, torch {torch.__version__}, numpy {np.__version__}, "
          f"{platform.machine()}, median of {args.repeats}")
    print(f"{'case':<17}{'streams':>11}{'G':>5}{'bytes':>12}{'entropy ms':>12}{'baseline ms':>13}{'speed-up':>10}"
          f"{'numpy synth ms':>16}{'torch decode ms':>17}")
    for r in rows:
        base = before.get(r["case"])
        r["baseline_entropy_ms"] = base
        print(f"{r['case']:<17}{r['streams']:>11}{r['samples_per_stream']:>5}{r['bytes']:>12,}{r['entropy_ms']:>12.1f}"
              f"{base or float('nan'):>13.1f}{(base or float('nan')) / r['entropy_ms']:>9.2f}×"
              f"{r['numpy_synthesis_ms']:>16.1f}{r['torch_decode_ms']:>17.1f}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
