"""What ``import_fkd`` refuses in SRe2L batch files, each defect alone and named with the file,
and what it stores besides the views: the KL to the teacher, the recipe, the provenance."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ddformat
from ddformat.codecs.soft_labels import expand_top_k, mean_kl
from ddformat.interop import import_fkd

N, K, SIZE = 4, 3, 4
GOOD = dict(coords=[[0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.5, 0.5], [0.0, 0.5, 1.0, 0.5], [0.5, 0.0, 0.5, 1.0]],
            flips=[False, True, False, True], index=[1, 0, 3, 2], bbox=[1, 1, 3, 2],
            output=[[1.0, 2.0, 3.0], [0.5, -1.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 2.0]])


@pytest.fixture
def source(tmp_path) -> Path:
    x = np.arange(N * 3 * SIZE * SIZE, dtype=np.uint8).reshape(N, 3, SIZE, SIZE)
    return ddformat.save(tmp_path / "set.dd", x, np.array([0, 1, 2, 2]), num_classes=K)


def batch_file(root: Path, epoch: int = 0, batch: int = 0, **change) -> Path:
    """One ``epoch_{e}/batch_{b}.tar`` in SRe2L's layout, with fields replaced by ``change``."""
    f = {**GOOD, **change}
    as_tensor = lambda v, dtype: v if v is None or isinstance(v, torch.Tensor) else torch.tensor(v, dtype=dtype)  # noqa: E731
    path = root / f"epoch_{epoch}" / f"batch_{batch}.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    bbox = None if f["bbox"] is None else [np.int64(v) for v in f["bbox"]]
    torch.save([as_tensor(f["coords"], torch.float32), as_tensor(f["flips"], torch.bool),
                as_tensor(f["index"], torch.int64), 0.5, bbox, as_tensor(f["output"], torch.float16)], path)
    return path


def refusal(source: Path, tmp_path: Path, **change) -> str:
    path = batch_file(tmp_path / "run", **change)
    with pytest.raises(ValueError) as info:
        import_fkd(source, tmp_path / "run", tmp_path / "out.dd", k=2, bits=4, progress=False)
    assert not (tmp_path / "out.dd").exists()
    return str(info.value).replace(str(path), "FILE")


SHAPES = "FILE: expected coords (4, 4), flips (4,) and output (4, 3)"


def crop(i: int, box: list[float]) -> list[list[float]]:
    coords = [list(c) for c in GOOD["coords"]]
    coords[i] = box
    return coords


@pytest.mark.parametrize(("change", "message"), [
    (dict(coords=[[0.0, 0.0, 1.0, 1.0]] * 3), SHAPES),
    (dict(flips=[[True]] * 4), SHAPES),
    (dict(output=[[0.0, 1.0]] * 4), SHAPES),
    (dict(coords=crop(2, [0.0, 0.0, 0.1, 1.0])), "FILE: crop 2 ([0.0, 0.0, 0.10000000149011612, 1.0]) is not inside a 4×4 image"),
    (dict(coords=crop(2, [0.0, 0.0, 1.0, 0.1])), "FILE: crop 2 ([0.0, 0.0, 1.0, 0.10000000149011612]) is not inside a 4×4 image"),
    (dict(coords=crop(2, [-0.25, 0.0, 0.5, 0.5])), "FILE: crop 2 ([-0.25, 0.0, 0.5, 0.5]) is not inside a 4×4 image"),
    (dict(coords=crop(2, [0.0, -0.25, 0.5, 0.5])), "FILE: crop 2 ([0.0, -0.25, 0.5, 0.5]) is not inside a 4×4 image"),
    (dict(coords=crop(2, [0.75, 0.0, 0.5, 0.5])), "FILE: crop 2 ([0.75, 0.0, 0.5, 0.5]) is not inside a 4×4 image"),
    (dict(coords=crop(2, [0.0, 0.75, 0.5, 0.5])), "FILE: crop 2 ([0.0, 0.75, 0.5, 0.5]) is not inside a 4×4 image"),
    (dict(index=[1, 0, 3, 4]), "FILE: mix_index must be a permutation of the batch's 4 positions"),
    (dict(index=[1, 0, 3, -1]), "FILE: mix_index must be a permutation of the batch's 4 positions"),
    (dict(index=[1, 0, 2]), "FILE: mix_index must be a permutation of the batch's 4 positions"),
    (dict(bbox=[4, 0, 4, 2]), "FILE: mix_bbox [4, 0, 4, 2] is not inside a 4×4 image"),
    (dict(bbox=[0, 4, 2, 4]), "FILE: mix_bbox [0, 4, 2, 4] is not inside a 4×4 image"),
    (dict(bbox=[2, 0, 1, 2]), "FILE: mix_bbox [2, 0, 1, 2] is not inside a 4×4 image"),
    (dict(bbox=[0, 0, 5, 2]), "FILE: mix_bbox [0, 0, 5, 2] is not inside a 4×4 image"),
    (dict(bbox=[0, -1, 2, 2]), "FILE: mix_bbox [0, -1, 2, 2] is not inside a 4×4 image"),
    (dict(bbox=None), "FILE: mixup views (mix_index without mix_bbox) blend whole images and cannot be stored as "
                      "CutMix boxes"),
], ids=["coords-rows", "flips", "output-classes", "crop-height-0", "crop-width-0", "crop-top", "crop-left",
        "crop-bottom", "crop-right", "partner-N", "partner-negative", "partners-short", "box-top-is-H",
        "box-left-is-W", "box-upside-down", "box-bottom", "box-left", "mixup"])
def test_each_defect_of_a_batch_file_alone_is_refused_naming_the_file(source, tmp_path, change, message):
    assert refusal(source, tmp_path, **change) == message


def test_one_pixel_crops_empty_cutmix_boxes_and_unmixed_batches_are_accepted(source, tmp_path):
    batch_file(tmp_path / "empty", bbox=[2, 1, 2, 1], coords=crop(1, [0.75, 0.5, 0.25, 0.25]))
    with ddformat.open(import_fkd(source, tmp_path / "empty", tmp_path / "e.dd", k=2, bits=4, progress=False)) as f:
        assert (f.views().partners >= 0).all() and (f.views().mix_boxes == [2, 1, 0, 0]).all()
        assert [1, 1] in f.views().crops[0, :, 2:].tolist()
        assert f.views().temperature == 20.0 and f.recipe["temperature"] == 20.0  # SRe2L's default
    batch_file(tmp_path / "plain", index=None, bbox=None)
    with ddformat.open(import_fkd(source, tmp_path / "plain", tmp_path / "p.dd", k=2, bits=4, progress=False)) as f:
        assert (f.views().partners == -1).all()


def test_import_stores_the_kl_to_the_teacher_the_recipe_and_where_the_views_came_from(source, tmp_path):
    """Logits at fp16's top of range (± 60,000) at temperature 1 must not overflow the softmax."""
    logits = np.array([[60000.0, 0.0, -60000.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-5.0, 5.0, 1.0]])
    batch_file(tmp_path / "run", output=logits.tolist())
    batch_file(tmp_path / "run", epoch=1, output=(logits / 2).tolist())
    out = import_fkd(source, tmp_path / "run", tmp_path / "out.dd", k=2, bits=6, temperature=1.0, seed=7,
                     progress=False)
    with ddformat.open(out) as f:
        views = f.views()
        recipe, parameters = f.recipe, f.provenance["parameters"]
    exact = [np.exp(z - z.max(axis=1, keepdims=True)) for z in (logits, logits / 2)]
    exact = np.concatenate([p / p.sum(axis=1, keepdims=True) for p in exact])
    order = np.concatenate([np.asarray(list(_order(seed=7))[0]) + 0, np.asarray(list(_order(seed=7, epoch=1))[0])])
    stored = np.concatenate([expand_top_k(views.indices[r], views.levels[r], K, 6)[order[N * r:N * (r + 1)]]
                             for r in range(2)])
    assert views.kl_to_source == pytest.approx(mean_kl(exact, stored), rel=1e-9)
    assert views.temperature == 1.0 and np.isfinite(stored).all()
    assert {k: recipe[k] for k in ("loss", "temperature", "regime", "view_schedule", "batch_size")} == \
        {"loss": "kl", "temperature": 1.0, "regime": "sl", "view_schedule": "cycle", "batch_size": 4}
    assert parameters["fkd_import"] == {"epochs": 2, "batch_size": 4, "fkd_seed": 7, "k": 2, "bits": 6,
                                        "temperature": 1.0}


def _order(seed: int, epoch: int = 0):
    """The batches SRe2L's seeded sampler makes in ``epoch`` (one generator across epochs)."""
    sampler = torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(range(N), generator=torch.Generator().manual_seed(seed)), SIZE, False)
    for _ in range(epoch):
        list(sampler)
    return list(sampler)


def test_run_folders_that_do_not_match_the_set_are_refused_naming_the_folder(source, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ValueError, match=f"^{run}: no epoch_0 directory$"):
        import_fkd(source, run, tmp_path / "o.dd", k=2, bits=4, progress=False)
    (run / "epoch_0").mkdir()
    with pytest.raises(ValueError, match=f"^{run / 'epoch_0'}: no batch files$"):
        import_fkd(source, run, tmp_path / "o.dd", k=2, bits=4, progress=False)
    batch_file(run, epoch=0, batch=0)
    batch_file(run, epoch=0, batch=1)
    with pytest.raises(ValueError, match=f"^{run / 'epoch_0'}: 2 batch files; 4 images in batches of 4 make 1$"):
        import_fkd(source, run, tmp_path / "o.dd", k=2, bits=4, progress=False)
    (run / "epoch_2").mkdir()
    pattern = r"epoch_(\d+)"
    with pytest.raises(ValueError, match="^" + re.escape(f"{run}: entries {pattern!r} are not numbered 0 .. 1") + "$"):
        import_fkd(source, run, tmp_path / "o.dd", k=2, bits=4, progress=False)


def test_batch_files_that_are_not_six_field_lists_or_not_torch_files_are_refused(source, tmp_path):
    path = tmp_path / "run" / "epoch_0" / "batch_0.tar"
    path.parent.mkdir(parents=True)
    torch.save({"coords": torch.zeros(4, 4)}, path)
    with pytest.raises(ValueError, match=rf"^{path}: expected \[coords, flips, mix_index, mix_lam, mix_bbox, output\]$"):
        import_fkd(source, tmp_path / "run", tmp_path / "o.dd", k=2, bits=4, progress=False)
    torch.save([torch.zeros(4, 4)] * 5, path)
    with pytest.raises(ValueError, match=rf"^{path}: expected \[coords, flips, mix_index, mix_lam, mix_bbox, output\]$"):
        import_fkd(source, tmp_path / "run", tmp_path / "o.dd", k=2, bits=4, progress=False)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"^{path}: not a readable torch file \(EOFError\)$"):
        import_fkd(source, tmp_path / "run", tmp_path / "o.dd", k=2, bits=4, progress=False)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=f"^{path}: not a readable torch file$"):
        import_fkd(source, tmp_path / "run", tmp_path / "o.dd", k=2, bits=4, progress=False)
