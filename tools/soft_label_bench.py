"""Per-view soft labels on real texture patches: label bits against student accuracy.

    python -m tools.soft_label_bench [--ipc 10] [--epochs 100] [--seeds 3] [--out docs/soft_labels]

A ConvNet-D3 teacher is trained here on the real textures training split (3,000 32×32 patches
of 10 photos, RRC+flip). The "distilled" set is a class-balanced random real subset at ``--ipc``
images per class. ``ddformat relabel`` (:func:`ddformat.evaluation.relabel.relabel`) stores its
teacher's soft labels (T = 20) for views drawn as FKD draws them (RRC+flip, CutMix in batches of
50), under each label setting:

- ``fp16-like``: one round of views per training epoch, all K = 10 probabilities at 16 bits (the
  FKD baseline; its stored size is what fp16 per-view labels cost: 16·K bits a view);
- pruned rounds (fewer rounds than epochs, cycled: LPLD's label pruning), top-k, fewer bits;
- ``sl+kd``: no stored labels, the teacher relabels every augmented batch online (upper bound);
- ``hl``: hard labels with the same augmentation (what soft labels buy).

Students (ConvNet-D3, paper 002 Table 1 SL column: KL at T = 20, AdamW 1e-3, cosine) train
``--epochs`` epochs on the replayed views with ``--seeds`` seeds and are tested on the 1,000
held-out patches (``ddformat.evaluation.evaluate.evaluate_file``). Loader throughput is measured
in the same run, on the first setting's file: batches per second replaying stored views against
indexing plain samples and against drawing RRC+flip+CutMix online.

Writes ``<out>.json`` and ``<out>.png`` (accuracy against label bits per class).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import ddformat
from ddformat.evaluation import realdata
from ddformat.evaluation.augment import RandomResizedCropFlip, cutmix
from ddformat.evaluation.evaluate import evaluate_file
from ddformat.evaluation.models import build_model
from ddformat.evaluation.relabel import relabel
from ddformat.evaluation.teachers import save_teacher
from ddformat.evaluation.training import Protocol, accuracy, train_student
from ddformat.torch import DistilledDataset
from tools.rate_utility import class_subset

NUM_CLASSES = 10
BATCH = 50
TEMPERATURE = 20.0


DEFAULT_SETTINGS = "all:10:16,all:3:8,e/10:10:16,e/10:3:8,e/10:1:4,e/100:3:8,e/100:2:6"


def _setting(text: str, epochs: int) -> tuple[str, int, int, int]:
    """``ROUNDS:K:BITS`` → (name, rounds, k, bits); ROUNDS is ``all`` (a round per epoch, FKD),
    ``e/N`` (epochs ÷ N, at least 1) or a number of rounds."""
    rounds_text, k, bits = text.split(":")
    if rounds_text == "all":
        rounds, what = epochs, "a round per epoch"
    elif rounds_text.startswith("e/"):
        rounds, what = max(1, epochs // int(rounds_text[2:])), f"rounds ÷{rounds_text[2:]}"
    else:
        rounds = int(rounds_text)
        what = f"{rounds} round" + ("s" if rounds != 1 else "")
    labels = f"all {k} at {bits} bits" if int(k) == NUM_CLASSES else f"top-{k} at {bits} bits"
    return f"{what}, {labels}" + (" (FKD's labels)" if rounds == epochs and int(k) == NUM_CLASSES else ""), \
        rounds, int(k), int(bits)


def _teacher(epochs: int) -> tuple[torch.nn.Module, float]:
    x, y = realdata.load("textures", "train")
    xt, yt = realdata.load("textures", "test")
    torch.manual_seed(0)
    model = build_model("ConvNet-D3", 3, NUM_CLASSES, (32, 32))
    train_student((x.float() / 255, y), model, Protocol(epochs=epochs, batch_size=128, augmentation=("rrc+flip",)),
                  progress=True)
    return model.eval(), accuracy(model, xt.float() / 255, yt)


def _students(path: Path, seeds: list[int], epochs: int, **overrides: Any) -> dict[str, Any]:
    report = evaluate_file(path, "textures", seeds=seeds, epochs=epochs, batch_size=BATCH, progress=False,
                           **overrides)
    r = report["results"][0]
    return {"accuracies": r["accuracies"], "mean": r["mean"], "std": r["std"], "protocol": report["protocol"]}


def _throughput(path: Path, epochs: int) -> dict[str, float]:
    """Batches per second over ``epochs`` epochs: replayed views, plain samples, online RRC+flip+CutMix."""
    ds = DistilledDataset(path)
    rrc = RandomResizedCropFlip(flip=0.5)
    g = torch.Generator().manual_seed(0)

    def rate(loader: Any, augment: bool = False) -> float:
        start, batches = time.perf_counter(), 0
        for _ in range(epochs):
            for x, y, w in loader:
                if augment:
                    x, _, _ = cutmix(rrc(x, g), y, w, num_classes=NUM_CLASSES, generator=g)
                batches += 1
        return batches / (time.perf_counter() - start)

    return {"replayed_views": rate(ds.loader(BATCH)), "plain_samples": rate(ds.loader(BATCH, replay=False)),
            "online_rrc_flip_cutmix": rate(ds.loader(BATCH, replay=False), augment=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=100, help="student epochs (paper 002 uses 300)")
    ap.add_argument("--teacher-epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--settings", default=DEFAULT_SETTINGS,
                    help="label settings ROUNDS:K:BITS, comma-separated; ROUNDS 'all' is one round per epoch")
    ap.add_argument("--out", type=Path, default=Path("docs/soft_labels"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny networks: one thread beats two contended ones
    e = args.epochs
    settings = [_setting(text, e) for text in args.settings.split(",")]
    teacher, teacher_accuracy = _teacher(args.teacher_epochs)
    print(f"teacher: ConvNet-D3, {args.teacher_epochs} epochs on 3,000 real patches, test accuracy "
          f"{teacher_accuracy:.4f}")
    x, y = realdata.load("textures", "train")
    xs, ys = class_subset(x, y, args.ipc, 0)
    seeds = list(range(args.seeds))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="soft-labels-") as tmp:
        base = ddformat.save(Path(tmp) / "subset.dd", xs.numpy(), ys.numpy(), name=f"textures-random-ipc{args.ipc}")
        ckpt = save_teacher(teacher, Path(tmp) / "teacher.safetensors")
        fp16_bits = 16 * NUM_CLASSES * len(ys) * e
        for name, rounds, k, bits in tqdm(settings, desc="label settings"):
            path = Path(tmp) / f"views-{rounds}-{k}-{bits}.dd"
            report = relabel(base, path, teacher, rounds=rounds, k=k, bits=bits, batch_size=BATCH,
                             temperature=TEMPERATURE, progress=False)
            row = {"setting": name, "rounds": rounds, "k": k, "bits": bits, "label_bits": report["label_bits"],
                   "label_bits_per_class": report["label_bits_per_class"], "kl_to_teacher": report["kl_to_teacher"],
                   "fp16_ratio": fp16_bits / report["label_bits"], **_students(path, seeds, e)}
            rows.append(row)
            print(f"{name}: {row['label_bits_per_class']:.0f} label bits/class, {row['fp16_ratio']:.1f}x under fp16, "
                  f"accuracy {100 * row['mean']:.2f} ± {100 * row['std']:.2f}")
            if len(rows) == 1:
                throughput = {"file": name, **_throughput(path, 5)}
        online = _students(base, seeds, e, regime="sl+kd", temperature=TEMPERATURE, teacher=str(ckpt),
                           augmentation=("rrc+flip", "cutmix"))
        hard = _students(base, seeds, e, regime="hl", augmentation=("rrc+flip", "cutmix"))
    result = {"ipc": args.ipc, "epochs": e, "seeds": seeds, "teacher_accuracy": teacher_accuracy,
              "fp16_per_view_bits_per_class": fp16_bits / NUM_CLASSES, "settings": rows,
              "sl+kd": online, "hl": hard, "loader_batches_per_s": throughput,
              "machine": "2-core CPU shared with other jobs, no GPU", "torch_threads": torch.get_num_threads()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, args.out.with_suffix(".png"))
    print(f"sl+kd (online teacher): {100 * online['mean']:.2f} ± {100 * online['std']:.2f}; "
          f"hl: {100 * hard['mean']:.2f} ± {100 * hard['std']:.2f}; loader {throughput}")


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in result["settings"]:
        ax.errorbar(row["label_bits_per_class"], 100 * row["mean"], yerr=100 * row["std"], fmt="o", capsize=3,
                    label=f"{row['rounds']} rounds, top-{row['k']} @ {row['bits']} bits")
    ax.axvline(result["fp16_per_view_bits_per_class"], color="grey", ls=":", label="fp16 per view (FKD)")
    for key, style in (("sl+kd", "--"), ("hl", "-.")):
        mean = 100 * result[key]["mean"]
        ax.axhline(mean, color="k", ls=style, lw=1, label=f"{key}: {mean:.1f} %")
    ax.set_xscale("log")
    ax.set_xlabel("label bits per class (views section)")
    ax.set_ylabel(f"student test accuracy, % (mean ± std, {len(result['seeds'])} seeds)")
    ax.set_title(f"textures, IPC {result['ipc']}, {result['epochs']} epochs, ConvNet-D3 teacher "
                 f"({100 * result['teacher_accuracy']:.1f} %)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
