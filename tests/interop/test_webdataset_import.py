"""Importing WebDataset shards that ``export_webdataset`` did not write (no ``dataset.json``), and
every refusal naming the shard and sample at fault; the export's own limits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset
from PIL import Image

import ddformat
from ddformat.interop.webdataset import export_webdataset, import_webdataset


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def shard(path: Path, samples: list[dict[str, bytes]]) -> str:
    """A tar shard of raw members, as another tool would write it."""
    with webdataset.TarWriter(str(path), encoder=False) as sink:
        for i, sample in enumerate(samples):
            sink.write({"__key__": f"s{i}", **sample})
    return str(path)


def member(pixels: int, cls: int | None = None, **record) -> dict[str, bytes]:
    sample = {"png": png(np.full((2, 2), pixels, np.uint8))}
    if cls is not None:
        sample["cls"] = str(cls).encode()
    if record:
        sample["json"] = json.dumps(record).encode()
    return sample


def test_foreign_shards_import_in_shard_name_then_tar_order_with_counts_weighted_by_sqrt(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    shard(folder / "b.tar", [member(30, 1, weight=4), member(40, 0, weight=9)])
    shard(folder / "a.tar", [member(10, cls=None, **{"class": 1, "weight": 1}), member(20, 0, weight=2)])
    out = import_webdataset(folder, tmp_path / "set.dd")
    with ddformat.open(out) as f:
        # ``save`` groups by class, keeping the read order within each class
        assert f.samples()[:, 0, 0, 0].tolist() == [20, 40, 10, 30]
        assert f.classes().tolist() == [0, 0, 1, 1]
        assert f.stored_weights().tolist() == [2, 9, 1, 4]
        assert f.recipe["weighting"] == {"scheme": "sqrt", "normalization": "global"}
        assert f.dataset["name"] == ""
        assert f.provenance["parameters"] == {"imported_from": "webdataset", "shards": 2}


def test_float_weights_are_kept_exactly_as_explicit_weights_and_the_name_can_be_given(tmp_path):
    weights = np.array([0.1, 2.5], np.float32)
    path = shard(tmp_path / "one.tar", [member(1, 0, weight=float(weights[0])), member(2, 1, weight=float(weights[1]))])
    with ddformat.open(import_webdataset(path, tmp_path / "set.dd", name="mine")) as f:
        assert f.stored_weights().dtype == np.float32 and np.array_equal(f.stored_weights(), weights)
        assert f.recipe["weighting"] == {"scheme": "explicit", "normalization": "global"}
        assert f.dataset["name"] == "mine"


def test_soft_labels_in_the_json_become_the_files_labels_exactly(tmp_path):
    """0.9 and 0.1 are not float16 numbers: the import stores float32, losing nothing."""
    soft = np.array([[0.9, 0.1], [0.1, 0.9]], np.float32)
    path = shard(tmp_path / "one.tar", [member(1, 0, soft_label=soft[0].tolist()),
                                        member(2, 1, soft_label=soft[1].tolist())])
    with ddformat.open(import_webdataset(path, tmp_path / "set.dd")) as f:
        assert np.array_equal(f.labels(), soft)
        assert f.provenance["producer"] == "ddformat.import_webdataset"


def test_an_npy_member_holding_pickled_objects_is_refused_not_unpickled(tmp_path):
    out = io.BytesIO()
    np.save(out, np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    message = _refusal(tmp_path, [{"npy": out.getvalue(), "cls": b"0"}])
    assert message.startswith("SHARD, sample 's0': ") and "allow_pickle=False" in message


def test_a_zca_file_holding_pickled_objects_is_refused_not_unpickled(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    shard(folder / "a.tar", [member(1, 0), member(2, 1)])
    np.savez(folder / "zca.npz", mean=np.zeros(4), matrix=np.array([{"payload": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        import_webdataset(folder, tmp_path / "set.dd")


def _refusal(tmp_path, samples) -> str:
    path = shard(tmp_path / "bad.tar", samples)
    with pytest.raises(ValueError) as info:
        import_webdataset(path, tmp_path / "set.dd")
    assert not (tmp_path / "set.dd").exists()
    return str(info.value).replace(path, "SHARD")


@pytest.mark.parametrize(("samples", "message"), [
    ([{"cls": b"0"}], "SHARD, sample 's0': no .png or .npy member"),
    ([{"png": png(np.zeros((2, 2), np.uint16)), "cls": b"0"}],
     "SHARD, sample 's0': a I;16 PNG is not an 8-bit grayscale or RGB image"),
    ([{"png": b"not a png", "cls": b"0"}], "SHARD, sample 's0': cannot identify image file"),
    ([{"png": png(np.zeros((2, 2), np.uint8)), "cls": b"zero"}],
     "SHARD, sample 's0': invalid literal for int() with base 10: 'zero'"),
    ([member(0), member(0)], "SHARD, sample 's0': no class (.cls member or 'class' in .json)"),
    ([{**member(0), "json": b"[0]"}], "SHARD, sample 's0': .json holds a list, not an object"),
    ([member(0, 0), {"png": png(np.zeros((3, 3), np.uint8)), "cls": b"1"}],
     "SHARD, sample 's1': sample of shape (1, 3, 3), but the first is (1, 2, 2)"),
    ([member(0, 0, weight=1), member(0, 1)], "sample 1 has no 'weight' in its .json, others do"),
    ([member(0, 0), member(0, 1, soft_label=[0.0, 1.0])], "sample 0 has no 'soft_label' in its .json, others do"),
], ids=["no-image", "16-bit-png", "broken-png", "bad-cls", "no-class", "json-list", "shapes", "weights", "soft"])
def test_bad_samples_are_refused_naming_shard_and_sample(tmp_path, samples, message):
    assert _refusal(tmp_path, samples).startswith(message)


def test_empty_shards_and_folders_without_shards_are_refused_naming_them(tmp_path):
    empty = shard(tmp_path / "empty.tar", [])
    with pytest.raises(ValueError, match=f"^{empty}: the shards hold no samples$"):
        import_webdataset(empty, tmp_path / "set.dd")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match=f"^{folder}: no .tar shards$"):
        import_webdataset(folder, tmp_path / "set.dd")
    shard(folder / "a.tar", [])
    shard(folder / "b.tar", [])
    with pytest.raises(ValueError, match=f"^{folder}: the shards hold no samples$"):
        import_webdataset(folder, tmp_path / "set.dd")


def test_export_splits_shards_at_maxcount_and_refuses_a_used_folder_or_no_room(tmp_path):
    x = np.arange(7 * 2 * 3 * 3, dtype=np.float32).reshape(7, 2, 3, 3)
    dd = ddformat.save(tmp_path / "set.dd", x, np.arange(7) % 2)
    out = export_webdataset(dd, tmp_path / "shards", maxcount=3)
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with ddformat.open(import_webdataset(out, tmp_path / "back.dd")) as back, ddformat.open(dd) as f:
        assert np.array_equal(back.samples(), f.samples())  # float samples travel as exact .npy members
    with pytest.raises(FileExistsError, match=f"^{out} is not empty$"):
        export_webdataset(dd, out)
    with pytest.raises(ValueError, match="^maxcount must be at least 1, got 0$"):
        export_webdataset(dd, tmp_path / "other", maxcount=0)


def test_export_meta_and_records_carry_what_the_import_restores(tmp_path):
    """``dataset.json`` holds what tar members cannot say, each sample's ``.json`` its class and
    weight; an empty class (num_classes 3, samples of 2) survives the trip."""
    dd = ddformat.save(tmp_path / "set.dd", np.arange(4 * 4, dtype=np.uint8).reshape(4, 1, 2, 2),
                       np.array([0, 0, 1, 1]), weights=np.array([1, 2, 3, 4]), num_classes=3,
                       class_names=["a", "b", "c"], value_range=[-1, 1], source_dataset="mnist",
                       normalization={"mean": [0.5], "std": [0.25], "applied": False})
    out = tmp_path / "shards"
    out.mkdir()  # an existing empty folder is fine
    export_webdataset(dd, out, maxcount=1)
    assert export_webdataset(dd, tmp_path / "a" / "b", maxcount=2).is_dir()  # so is a new nested one
    assert len(list(out.glob("*.tar"))) == 4
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert (meta["num_classes"], meta["class_names"], meta["value_range"]) == (3, ["a", "b", "c"], [-1.0, 1.0])
    assert meta["provenance"]["source_dataset"] == "mnist" and meta["sample_dtype"] == "uint8"
    records = [json.loads(s["json"]) for s in webdataset.WebDataset(str(out / "shard-000003.tar"), shardshuffle=False)]
    assert records == [{"class": 1, "weight": 4, "soft_label": None}]
    with ddformat.open(import_webdataset(out, tmp_path / "back.dd")) as back:
        assert (back.num_classes, back.class_names, back.dataset["value_range"]) == (3, ["a", "b", "c"], [-1.0, 1.0])
        assert back.dataset["normalization"] == {"mean": [0.5], "std": [0.25], "applied": False}
        assert back.provenance["source_dataset"] == "mnist"
        assert back.stored_weights().tolist() == [1, 2, 3, 4] and back.stored_weights().dtype.kind in "iu"
    shards = sorted(str(p) for p in out.glob("*.tar"))
    with ddformat.open(import_webdataset(shards[:2], tmp_path / "two.dd")) as two:  # a list of shard URLs
        assert two.num_samples == 2
