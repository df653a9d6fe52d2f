"""WebDataset shards and DD-Ranking tensors: written from a ``.dd`` file, read by the tools
that consume them, and imported back to the same tensors."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
import webdataset

import ddformat
from ddformat.cli.main import main
from ddformat.interop import export_tensor_files, export_webdataset, import_tensor_files, import_webdataset

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def _same_set(a_path, b_path) -> None:
    with ddformat.open(a_path) as a, ddformat.open(b_path) as b:
        assert np.array_equal(a.samples(), b.samples()) and a.samples().dtype == b.samples().dtype
        assert np.array_equal(a.labels(), b.labels()) and a.labels().dtype == b.labels().dtype
        wa, wb = a.stored_weights(), b.stored_weights()
        assert (wa is None and wb is None) or np.array_equal(wa, wb)
        assert a.dataset == b.dataset and a.recipe == b.recipe
        za, zb = a.zca(), b.zca()
        assert (za is None and zb is None) or all(np.array_equal(p, q) for p, q in zip(za, zb))


@pytest.fixture
def soft_float(tmp_path):
    """Normalised float32 samples with soft labels (arg-max 4 per class), float weights, a learned lr and a ZCA."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3, 6, 6)).astype(np.float32)
    soft = rng.dirichlet(np.ones(3) * 0.3, size=12) + 2 * np.eye(3)[np.arange(12) % 3]  # 4 per class
    soft = (soft / soft.sum(axis=1, keepdims=True)).astype(np.float32)
    d = 3 * 6 * 6
    zca = (rng.normal(size=d).astype(np.float32), rng.normal(size=(d, d)).astype(np.float32))
    return ddformat.save(tmp_path / "soft.dd", x, soft, weights=rng.random(12).astype(np.float32) + 0.5,
                         name="soft set", class_names=["cat", "dog", "owl"], zca=zca,
                         normalization={"mean": MEAN, "std": STD, "applied": True},
                         recipe={"weighting": {"scheme": "explicit", "normalization": "batch"},
                                 "optimizer": {"name": "sgd", "lr": 0.0123}})


@pytest.fixture
def hard_pixels(tmp_path):
    """uint8 RGB images, hard labels, integer counts: 4 classes of 5."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(20, 3, 8, 8), dtype=np.uint8)
    return ddformat.save(tmp_path / "hard.dd", x, np.arange(20) % 4, weights=rng.integers(1, 30, size=20),
                         recipe={"weighting": {"scheme": "sqrt", "normalization": "global"}})


def test_webdataset_shards_round_trip_exactly(tmp_path, soft_float, hard_pixels):
    for source in (soft_float, hard_pixels):
        shards = export_webdataset(source, tmp_path / f"{source.stem}-wds", maxcount=7)
        _same_set(source, import_webdataset(shards, tmp_path / f"{source.stem}-back.dd"))


def test_webdataset_reads_the_exported_shards_with_its_own_decoders(tmp_path, hard_pixels):
    shards = export_webdataset(hard_pixels, tmp_path / "wds", maxcount=6)
    names = sorted(p.name for p in shards.glob("*.tar"))
    assert names == [f"shard-{i:06d}.tar" for i in range(4)]  # 20 samples, 6 per shard
    stream = webdataset.WebDataset([str(shards / n) for n in names], shardshuffle=False).decode("rgb8")
    images, classes, weights = zip(*((s["png"], s["cls"], s["json"]["weight"]) for s in stream))
    with ddformat.open(hard_pixels) as dd:
        assert np.array_equal(np.stack(images).transpose(0, 3, 1, 2), dd.samples())
        assert list(classes) == dd.classes().tolist()
        assert list(weights) == dd.stored_weights().tolist()


def test_webdataset_import_refuses_a_class_that_contradicts_the_soft_label(tmp_path, soft_float):
    shards = export_webdataset(soft_float, tmp_path / "wds", maxcount=100)
    tar = next(shards.glob("*.tar"))
    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(tar, "w") as t:
        for member, data in members:
            if member.name == "00000003.cls":
                data = str((int(data) + 1) % 3).encode()
            member.size = len(data)
            t.addfile(member, io.BytesIO(data))
    with pytest.raises(ValueError, match="sample 3: class .* is not the arg-max of its soft label"):
        import_webdataset(shards, tmp_path / "bad.dd")


def test_cli_exports_and_converts_webdataset(tmp_path, hard_pixels, capsys):
    out = tmp_path / "wds"
    assert main(["export", str(hard_pixels), str(out), "--to", "webdataset", "--maxcount", "8"]) == 0
    assert len(list(out.glob("*.tar"))) == 3
    assert main(["convert", str(out), str(tmp_path / "back.dd")]) == 0
    assert "from webdataset: 20 samples, 4 classes" in capsys.readouterr().out
    _same_set(hard_pixels, tmp_path / "back.dd")
    assert main(["export", str(hard_pixels), str(tmp_path / "t"), "--maxcount", "8"]) == 2


def test_ddranking_layout_is_class_ordered_model_inputs_and_round_trips(tmp_path, soft_float):
    out = export_tensor_files(soft_float, tmp_path / "ddr", layout="ddranking")
    images = torch.load(out / "images.pt", weights_only=True)
    labels = torch.load(out / "labels.pt", weights_only=True)
    assert images.dtype == torch.float32 and labels.shape == (12, 3)
    assert float(torch.load(out / "lr.pt", weights_only=True)) == 0.0123
    assert torch.equal(labels.argmax(1), labels.argmax(1).sort(stable=True).values)  # class-ordered
    back = import_tensor_files(out, tmp_path / "back.dd", mean=MEAN, std=STD, name="soft set",
                               class_names=["cat", "dog", "owl"],
                               recipe={"weighting": {"scheme": "explicit", "normalization": "batch"}})
    with ddformat.open(soft_float) as a, ddformat.open(back) as b:
        order = np.argsort(a.classes(), kind="stable")
        assert np.array_equal(a.samples()[order], b.samples()) and np.array_equal(a.labels()[order], b.labels())
        assert np.array_equal(a.stored_weights()[order], b.stored_weights())
        assert a.recipe["optimizer"] == b.recipe["optimizer"] and a.dataset["normalization"] == b.dataset["normalization"]


def test_ddranking_export_of_pixels_gives_model_input_floats_with_labels_from_class_order(tmp_path):
    rng = np.random.default_rng(3)
    x, classes = rng.integers(0, 256, size=(20, 3, 8, 8), dtype=np.uint8), np.arange(20) % 4
    interleaved = ddformat.save(tmp_path / "interleaved.dd", x, classes, sort_by_class=False)
    out = export_tensor_files(interleaved, tmp_path / "ddr", layout="ddranking")
    images = torch.load(out / "images.pt", weights_only=True)
    order = np.argsort(classes, kind="stable")
    assert images.dtype == torch.float32
    assert torch.allclose(images, torch.from_numpy(x[order]).float() / 255, rtol=0, atol=1e-6)
    ipc = 5  # DD-Ranking's hard labels when none are given: ones(ipc) * c for each class
    implied = torch.tensor(np.array([np.ones(ipc) * c for c in range(4)]), dtype=torch.long).view(-1)
    assert torch.equal(torch.load(out / "labels.pt", weights_only=True), implied)


def test_ddranking_export_refuses_unequal_classes(tmp_path):
    x = np.zeros((5, 1, 4, 4), dtype=np.uint8)
    path = ddformat.save(tmp_path / "uneven.dd", x, np.array([0, 0, 0, 1, 1]))
    with pytest.raises(ValueError, match="same number of images per class; this set has 2 to 3"):
        export_tensor_files(path, tmp_path / "ddr", layout="ddranking")
