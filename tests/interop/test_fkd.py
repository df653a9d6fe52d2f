"""Import of FKD / SRe2L relabel output, from a fixture of real texture patches written in that
exact layout (``epoch_{e}/batch_{b}.tar`` lists, SRe2L's sampler order, numpy box integers)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import BatchSampler, RandomSampler
from torchvision.transforms import RandomResizedCrop

import ddformat
from ddformat.codecs.views import quantise_views
from ddformat.evaluation import realdata
from ddformat.evaluation.models import build_model
from ddformat.interop import import_fkd
from ddformat.torch import DistilledDataset

EPOCHS, BATCH, T = 2, 8, 4.0


def _sre2l_relabel(images: torch.Tensor, teacher: torch.nn.Module, out: Path, mix: str = "cutmix") -> list:
    """What SRe2L's generate_soft_label.py writes (its steps, re-done on tensors): per epoch the
    seeded RandomSampler's batches; per image a RandomResizedCrop with fractional coords and a
    flip; per batch CutMix with numpy's rand_bbox; the teacher's fp16 logits. Returns the
    teacher inputs of every batch, to compare replay against."""
    n, _, h, w = images.shape
    sampler = BatchSampler(RandomSampler(range(n), generator=torch.Generator().manual_seed(42)), BATCH, False)
    np.random.seed(0)
    torch.manual_seed(0)
    seen = []
    for epoch in range(EPOCHS):
        (out / f"epoch_{epoch}").mkdir(parents=True)
        for b, members in enumerate(sampler):
            views, coords, flips = [], [], []
            for i in members:
                top, left, ch, cw = RandomResizedCrop.get_params(images[i], (0.08, 1.0), (3 / 4, 4 / 3))
                coords.append([top / h, left / w, ch / h, cw / w])
                view = TF.resized_crop(images[i], top, left, ch, cw, [h, w], antialias=False)
                flip = bool(torch.rand(1) < 0.5)
                views.append(TF.hflip(view) if flip else view)
                flips.append(flip)
            x = torch.stack(views)
            index, lam, bbox = None, None, None
            if mix == "cutmix":
                index = torch.randperm(len(x))
                lam = np.random.beta(1.0, 1.0)
                cut = np.sqrt(1.0 - lam)
                cut_w, cut_h = int(h * cut), int(w * cut)
                cx, cy = np.random.randint(h), np.random.randint(w)
                bbx1, bby1 = np.clip(cx - cut_w // 2, 0, h), np.clip(cy - cut_h // 2, 0, w)
                bbx2, bby2 = np.clip(cx + cut_w // 2, 0, h), np.clip(cy + cut_h // 2, 0, w)
                x[:, :, bbx1:bbx2, bby1:bby2] = x[index, :, bbx1:bbx2, bby1:bby2]
                bbox = [bbx1, bby1, bbx2, bby2]
            elif mix == "mixup":
                index, lam = torch.randperm(len(x)), 0.3
                x = lam * x + (1 - lam) * x[index]
            with torch.no_grad():
                output = teacher(x).half()
            torch.save([torch.tensor(coords, dtype=torch.float32), torch.tensor(flips), index, lam, bbox, output],
                       out / f"epoch_{epoch}" / f"batch_{b}.tar")
            seen.append((epoch, list(members), x, output))
    return seen


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    x, y = realdata.load("textures", "train")
    pick = torch.cat([torch.nonzero(y == c).flatten()[:3] for c in range(10)])  # 30 real patches, class order
    root = tmp_path_factory.mktemp("fkd")
    path = ddformat.save(root / "textures.dd", x[pick].numpy(), y[pick].numpy(), num_classes=10)
    torch.manual_seed(0)
    teacher = build_model("ConvNet-D3", 3, 10, (32, 32)).eval()
    return root, path, DistilledDataset(path).samples, teacher


def test_fkd_relabel_output_imports_as_views_that_replay_its_teacher_inputs(textures):
    root, path, images, teacher = textures
    seen = _sre2l_relabel(images, teacher, root / "run")
    out = import_fkd(path, root / "run", root / "views.dd", k=4, bits=8, temperature=T, progress=False)
    ds = DistilledDataset(out)
    with ddformat.open(out) as f:
        f.verify()
        views = f.views()
        assert f.recipe["batch_size"] == BATCH and f.recipe["temperature"] == T
    assert views.rounds == EPOCHS
    for epoch, members, x, output in seen:
        index = torch.tensor(members)
        assert torch.allclose(ds.views.inputs(epoch, index), x, atol=2e-6, rtol=0)
        logits = output.double().numpy() / T
        probs = np.exp(logits - logits.max(1, keepdims=True))
        idx, q, _ = quantise_views(probs / probs.sum(1, keepdims=True), 4, 8)
        assert np.array_equal(views.indices[epoch, members], idx) and np.array_equal(views.levels[epoch, members], q)
    assert (views.partners >= 0).all()


def test_fkd_import_prunes_to_the_first_epochs_and_refuses_mixup(textures, tmp_path):
    _, path, images, teacher = textures
    _sre2l_relabel(images, teacher, tmp_path / "run")
    out = import_fkd(path, tmp_path / "run", tmp_path / "one.dd", k=2, bits=4, epochs=1, progress=False)
    with ddformat.open(out) as f:
        assert f.views().rounds == 1
    _sre2l_relabel(images, teacher, tmp_path / "mixup", mix="mixup")
    with pytest.raises(ValueError, match="mixup"):
        import_fkd(path, tmp_path / "mixup", tmp_path / "m.dd", k=2, bits=4, progress=False)


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_fkd_batch_files_that_pickle_code_are_refused_without_running_it(textures, tmp_path, monkeypatch):
    _, path, images, _ = textures
    (tmp_path / "run" / "epoch_0").mkdir(parents=True)
    with open(tmp_path / "run" / "epoch_0" / "batch_0.tar", "wb") as fh:
        pickle.dump([_Exploit()], fh, protocol=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="refused"):
        import_fkd(path, tmp_path / "run", tmp_path / "x.dd", k=2, bits=4, progress=False)
    assert not (tmp_path / "pwned").exists()
