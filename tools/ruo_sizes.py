"""Section sizes of the same RUO result under two implementations of the format.

    python tools/ruo_sizes.py produce OUT --spc 9 --slice-size 1000 [--seed 0] [--init-iterations 150] [--iterations 100]
    python tools/ruo_sizes.py encode OUT.npz                         # with this checkout's ddformat
    PYTHONPATH=OLD_CHECKOUT python tools/ruo_sizes.py encode OUT.npz  # with another one's

``produce`` distils real MNIST with the RUO producer (DM loss, the rate-utility settings) and
keeps its integer latents and networks as ``OUT.npz`` + ``OUT.json`` (no pickle); ``encode``
writes them with whichever ``ddformat`` is importable and prints the file's and each section's
bytes, so that two bitstreams are compared on identical content (docs/rate_utility.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import ddformat
from ddformat.codecs.ruo import RuoSamples, RuoSlice


def produce(out: Path, spc: int, slice_size: int | None, seed: int, init_iterations: int, iterations: int) -> None:
    from producers.common import RealData
    from producers.ruo.distill import RuoConfig, distill

    config = RuoConfig(spc=spc, slice_size=slice_size, loss="dm", init_iterations=init_iterations,
                       iterations=iterations, batch_real=64, seed=seed)
    result = distill(RealData.load("mnist"), config)
    s = result.samples
    arrays = {"labels": result.labels, "sizes": np.array([len(x.latents) for x in s.slices]),
              "latents": np.concatenate([x.latents for x in s.slices]),
              "arm_steps": np.array([x.arm_step for x in s.slices]),
              "decoder_steps": np.array([x.decoder_step for x in s.slices])}
    for i, x in enumerate(s.slices):
        for j, (w, b) in enumerate(x.arm):
            arrays[f"arm{i}_{j}_w"], arrays[f"arm{i}_{j}_b"] = w, b
        arrays |= {f"dec{i}_{k}": v for k, v in x.decoder.items()}
    np.savez(out.with_suffix(".npz"), **arrays)
    out.with_suffix(".json").write_text(json.dumps({
        "shape": list(s.sample_shape), "scales": s.scales, "context": s.context, "arm_width": s.arm_width,
        "arm_depth": s.arm_depth, "decoder_version": s.decoder_version, "arm_layers": len(s.slices[0].arm),
        "decoder_keys": list(s.slices[0].decoder)}))


def encode(npz: Path) -> dict:
    a, meta = np.load(npz), json.loads(npz.with_suffix(".json").read_text())
    slices, start = [], 0
    for i, n in enumerate(a["sizes"]):
        arm = [(a[f"arm{i}_{j}_w"], a[f"arm{i}_{j}_b"]) for j in range(meta["arm_layers"])]
        decoder = {k: a[f"dec{i}_{k}"] for k in meta["decoder_keys"]}
        slices.append(RuoSlice(a["latents"][start:start + n], arm, int(a["arm_steps"][i]), decoder,
                               int(a["decoder_steps"][i])))
        start += n
    samples = RuoSamples(tuple(meta["shape"]), meta["scales"], meta["context"], meta["arm_width"], meta["arm_depth"],
                         meta["decoder_version"], slices)
    with tempfile.TemporaryDirectory() as tmp:
        path = ddformat.save(Path(tmp) / "x.dd", samples, a["labels"])
        with ddformat.open(path) as f:
            return {"ddformat": ddformat.__file__, "bytes": f.size,
                    "sections": {e.kind: e.length for e in f.header.sections}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("out", type=Path)
    p.add_argument("--spc", type=int, default=9)
    p.add_argument("--slice-size", type=int, help="samples per slice (default: one slice per class)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-iterations", type=int, default=150)
    p.add_argument("--iterations", type=int, default=100)
    e = sub.add_parser("encode")
    e.add_argument("npz", type=Path)
    args = ap.parse_args()
    if args.command == "produce":
        produce(args.out, args.spc, args.slice_size, args.seed, args.init_iterations, args.iterations)
    else:
        print(json.dumps(encode(args.npz)))


if __name__ == "__main__":
    main()
