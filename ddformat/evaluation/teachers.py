"""Teacher networks as files: state dicts that can be read without running anything they contain.

A teacher relabels batches under the ``sl+kd`` regime of ``ddformat eval`` and gives producers
their soft labels. Checkpoints are plain state dicts: :func:`save_teacher` writes safetensors
(a header and raw tensor bytes, nothing to execute), and :func:`load_teacher` also reads ``.pt``
files, but only through ``torch.load(weights_only=True)``, whose unpickler refuses every object
that is not a tensor or a plain container, so a checkpoint cannot run code when it is opened.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .models import build_model


def save_teacher(model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` as safetensors (with string ``metadata``, e.g.
    the architecture and data it was trained on); returns the path."""
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(state, str(path), metadata=dict(metadata or {}))
    return Path(path)


def load_teacher(path: str | os.PathLike[str], architecture: str, in_channels: int, num_classes: int,
                 image_size: tuple[int, int]) -> nn.Module:
    """The network ``architecture`` (see :func:`~ddformat.evaluation.models.build_model`) with
    the state dict in ``path`` (``.safetensors``, or a ``.pt`` file read with
    ``weights_only=True``), in eval mode on the CPU.

    Raises :class:`ValueError` naming the file when it holds anything but a state dict of
    tensors, including a pickle that would construct other objects.
    """
    model = build_model(architecture, in_channels, num_classes, image_size)
    if str(path).endswith(".safetensors"):
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(f"{path}: refused: the checkpoint pickles objects other than tensors and plain "
                             "containers, and unpickling them could run code; save a state dict instead") from exc
        except (RuntimeError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    model.load_state_dict(state)
    return model.eval()

