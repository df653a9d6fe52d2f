"""Train one student from a ``.dd`` file with several processes (PyTorch DDP), launched by ``torchrun``.

    torchrun --standalone --nproc_per_node 2 -m ddformat.evaluation.train_ddp set.dd \\
        [--test mnist] [--epochs 300] [--out student.safetensors] [--device cuda] [--json]

Every process decodes the file once onto its device (``cuda:LOCAL_RANK``, or the CPU) and trains
the same :class:`~torch.nn.parallel.DistributedDataParallel` student with
:func:`~ddformat.evaluation.training.train_student`, taking its rank's share of each epoch from
:class:`~ddformat.torch.DeviceLoader` (the order of
:class:`~torch.utils.data.DistributedSampler`). Gradients are averaged over the processes by
``gloo`` on the CPU and ``nccl`` on GPUs. The recipe's batch size is the global one; when the
number of samples does not divide by the number of processes, each epoch is padded by wrapping
around, as ``DistributedSampler`` does, so a few samples are seen twice (``docs/training.md``).
Rank 0 tests the student on the real ``--test`` split and writes ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..reader import DDFile
from ..torch.dataset import DeviceLoader, DistilledDataset
from .evaluate import real_data_for, real_to_sample_space
from .models import build_model
from .teachers import save_teacher
from .training import Protocol, accuracy, protocol_for, train_student

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def process_group(device: str = "cpu") -> Iterator[torch.device]:
    """Join the process group ``torchrun`` set up (``gloo`` for the CPU, ``nccl`` for ``cuda``)
    and yield this process's device; leave the group on exit. Inside a group this process has
    already joined, use that one and leave it joined."""
    missing = [v for v in TORCHRUN_VARIABLES if v not in os.environ]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not set: launch with torchrun --nproc_per_node N -m "
                           "ddformat.evaluation.train_ddp (or train in one process with ddformat eval)")
    cuda = torch.device(device).type == "cuda"
    local = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(local)
    if dist.is_initialized():
        yield local
        return
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield local
    finally:
        dist.destroy_process_group()


def train_distributed(
    dataset: DistilledDataset,
    model: nn.Module,
    protocol: Protocol,
    *,
    seed: int = 0,
    evaluate: Callable[[nn.Module], float] | None = None,
    progress: bool = False,
) -> list[tuple[int, float]]:
    """Train ``model`` (on ``dataset``'s device) as this process's part of the process group.

    The model is wrapped in ``DistributedDataParallel``, which starts every process from rank
    0's parameters and averages gradients. ``evaluate`` runs on the unwrapped model, on rank 0
    only (pass it there); the curve is empty on the other ranks.
    """
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = dataset.device
    wrapped = DistributedDataParallel(model.to(device), device_ids=[device] if device.type == "cuda" else None)
    return train_student(dataset, wrapped, protocol, seed=seed, progress=progress and rank == 0, rank=rank,
                         world_size=world_size, evaluate=None if evaluate is None else (lambda _: evaluate(model)))


def epoch_share(dataset: DistilledDataset, world_size: int) -> dict[str, int]:
    """What one training epoch is across ``world_size`` processes: samples per process, and how
    many are seen twice to make the shares equal (see :class:`DeviceLoader`)."""
    per_rank = DeviceLoader(dataset, 1, world_size=world_size).num_samples
    return {"samples": len(dataset), "processes": world_size, "per_rank": per_rank,
            "padded": per_rank * world_size - len(dataset)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun --nproc_per_node N -m ddformat.evaluation.train_ddp",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help=".dd file (path or URL)")
    parser.add_argument("--test", help="real data rank 0 tests the student on: mnist, digits, textures or lfw")
    parser.add_argument("--device", default="cpu", help="cpu (gloo, default) or cuda (nccl, one GPU per process)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architecture", help="student network (default: the recipe's)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--out", help="rank 0 writes the trained student's state dict here (safetensors)")
    parser.add_argument("--json", action="store_true", help="rank 0 prints one JSON object")
    args = parser.parse_args(argv)

    with process_group(args.device) as device:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        dataset = DistilledDataset(args.file, device=device)
        protocol = protocol_for(dataset.recipe, dataset.label_kind, architecture=args.architecture,
                                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
        shape = tuple(dataset.header.dataset["sample_shape"])
        torch.manual_seed(args.seed)
        model = build_model(protocol.architecture, shape[0], dataset.num_classes, shape[1:])
        evaluate = None
        if args.test and rank == 0:
            with DDFile(args.file) as f:
                _, (x_test, y_test), zca = real_data_for(f, args.test)
                x_test = real_to_sample_space(x_test, f.dataset, zca)
            evaluate = lambda m: accuracy(m, x_test, y_test)  # noqa: E731
        curve = train_distributed(dataset, model, protocol, seed=args.seed, evaluate=evaluate,
                                  progress=not args.json)
        if rank != 0:
            return 0
        report: dict[str, Any] = {"file": args.file, "backend": dist.get_backend(), "protocol": protocol.to_dict(),
                                  "epoch": epoch_share(dataset, world_size),
                                  "accuracy": curve[-1][1] if curve else None}
        if args.out:
            report["student"] = str(save_teacher(model, args.out, {"architecture": protocol.architecture}))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        share = report["epoch"]
        print(f"trained {protocol.architecture} on {args.file} for {protocol.epochs} epochs with {world_size} "
              f"processes ({report['backend']}): {share['per_rank']} samples per process per epoch, "
              f"{share['samples']} in the set ({share['padded']} seen twice by padding)")
        if report["accuracy"] is not None:
            print(f"test accuracy on {args.test}: {100 * report['accuracy']:.2f} %")
        if args.out:
            print(f"wrote {report['student']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
