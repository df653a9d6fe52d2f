"""Distilled sets as WebDataset tar shards, and back to ``.dd``.

Streaming training stacks (WebDataset, and the loaders that read its layout) take a set as tar
shards in which the members sharing a key form one sample::

    shard-000000.tar   00000000.png  00000000.cls  00000000.json   (uint8 1- or 3-channel images)
                       00000001.npy  ...                           (any other sample: exact numpy)
    dataset.json       what tar members cannot say: class names, value range, normalisation,
                       recipe, provenance; ``zca.npz`` beside it when the set has a ZCA whitening

``.cls`` holds the class index (the arg-max of a soft label) as text, ``.json`` ``{"class",
"weight", "soft_label"}``: the stored weight (a count or a float) and the probability vector, or
``null``. Floats are written with every digit a float32 needs, so the round trip is exact.

Importing never unpickles: members are decoded here (PIL for PNG, ``numpy.load`` with
``allow_pickle=False``), not by WebDataset's default decoders.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import webdataset
from PIL import Image
from tqdm import tqdm

from ..reader import open as open_dd
from ..writer import save
from .tensor_files import IMAGE_CHANNELS, merged_save_options

SHARD_PATTERN = "shard-%06d.tar"
DATASET_FILE = "dataset.json"
ZCA_FILE = "zca.npz"


def _png(image: np.ndarray) -> bytes:
    """(C, H, W) uint8 with C = 1 or 3 as PNG bytes (lossless)."""
    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(out, format="PNG")
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _number(value: Any) -> int | float:
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def export_webdataset(dd_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                      maxcount: int = 10_000) -> Path:
    """Write a ``.dd`` file as WebDataset shards of at most ``maxcount`` samples each, in stored
    order, plus ``dataset.json`` (and ``zca.npz``); see the module docstring for the layout.

    uint8 samples that are 1- or 3-channel images become PNG members, everything else ``.npy``;
    both are exact. ``out_dir`` must be empty or not exist. Returns ``out_dir``.
    """
    if maxcount < 1:
        raise ValueError(f"maxcount must be at least 1, got {maxcount}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    with open_dd(dd_path) as dd:
        samples = dd.samples()
        labels = dd.labels()
        classes = dd.classes()
        weights = dd.stored_weights()
        zca = dd.zca()
        meta = {"name": dd.dataset["name"], "num_classes": dd.num_classes, "class_names": dd.class_names,
                "sample_shape": dd.dataset["sample_shape"], "sample_dtype": dd.dataset["sample_dtype"],
                "value_range": dd.dataset.get("value_range"), "normalization": dd.dataset.get("normalization"),
                "recipe": dd.recipe, "provenance": dd.provenance}
    as_png = samples.dtype == np.uint8 and samples.ndim == 4 and samples.shape[1] in IMAGE_CHANNELS
    out_dir.mkdir(parents=True, exist_ok=True)
    with webdataset.ShardWriter(str(out_dir / SHARD_PATTERN), maxcount=maxcount, verbose=0, encoder=False) as sink:
        for i in tqdm(range(len(samples)), desc="writing shards", unit="sample", disable=None):
            record = {"class": int(classes[i]),
                      "weight": None if weights is None else _number(weights[i]),
                      "soft_label": labels[i].tolist() if labels.ndim == 2 else None}
            sink.write({"__key__": f"{i:08d}",
                        "png" if as_png else "npy": _png(samples[i]) if as_png else _npy(samples[i]),
                        "cls": str(int(classes[i])).encode(),
                        "json": json.dumps(record).encode()})
    (out_dir / DATASET_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    if zca is not None:
        np.savez(out_dir / ZCA_FILE, mean=zca[0], matrix=zca[1])
    return out_dir


def _shards(source: str | os.PathLike[str] | Iterable[str]) -> tuple[list[str], Path | None]:
    """Shard URLs in name order, and the folder that may hold ``dataset.json``."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        folder = Path(source)
        shards = sorted(str(p) for p in folder.glob("*.tar"))
        if not shards:
            raise ValueError(f"{folder}: no .tar shards")
        return shards, folder
    if isinstance(source, (str, os.PathLike)):
        return [os.fspath(source)], None
    return list(source), None


def _decode_sample(sample: dict[str, Any], where: str) -> tuple[np.ndarray, int, dict[str, Any]]:
    try:
        if "png" in sample:
            with Image.open(io.BytesIO(sample["png"])) as im:
                array = np.asarray(im)
            if array.dtype != np.uint8 or array.ndim not in (2, 3):
                raise ValueError(f"a {im.mode} PNG is not an 8-bit grayscale or RGB image")
            x = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        elif "npy" in sample:
            x = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
        else:
            raise ValueError("no .png or .npy member")
        cls = int(sample["cls"].decode()) if "cls" in sample else None
        record = json.loads(sample["json"]) if "json" in sample else {}
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: .json holds a {type(record).__name__}, not an object")
    if cls is None:
        cls = record.get("class")
    if not isinstance(cls, int):
        raise ValueError(f"{where}: no class (.cls member or 'class' in .json)")
    return x, cls, record


def import_webdataset(source: str | os.PathLike[str] | Iterable[str], out: str | os.PathLike[str], *,
                      name: str | None = None, **save_kwargs: Any) -> Path:
    """Write WebDataset shards to ``out``: a folder of ``.tar`` shards (with the ``dataset.json``
    :func:`export_webdataset` writes, when there is one), one shard, or a list of shard URLs.

    Each sample needs a ``.png`` or ``.npy`` member and a class (``.cls``, or ``class`` in its
    ``.json``); ``soft_label`` and ``weight`` in the ``.json`` become soft labels and weights
    (all samples or none). Samples keep shard-name then tar order. Other keywords go to
    :func:`ddformat.save` and win over what was found. Returns ``out``.
    """
    shards, folder = _shards(source)
    meta: dict[str, Any] = {}
    if folder is not None and (folder / DATASET_FILE).is_file():
        meta = json.loads((folder / DATASET_FILE).read_text(encoding="utf-8"))
    xs, classes, soft, weights = [], [], [], []
    stream = webdataset.WebDataset(shards, shardshuffle=False, empty_check=False)
    for sample in tqdm(stream, desc="reading shards", unit="sample", disable=None):
        where = f"{sample.get('__url__', '?')}, sample {sample.get('__key__', '?')!r}"
        x, cls, record = _decode_sample(sample, where)
        if xs and x.shape != xs[0].shape:
            raise ValueError(f"{where}: sample of shape {x.shape}, but the first is {xs[0].shape}")
        xs.append(x)
        classes.append(cls)
        soft.append(record.get("soft_label"))
        weights.append(record.get("weight"))
    if not xs:
        raise ValueError(f"{shards[0] if len(shards) == 1 else folder}: the shards hold no samples")
    labels = _all_or_none(soft, "soft_label", np.float32)
    if labels is not None and not np.array_equal(labels.argmax(axis=1), classes):
        bad = int(np.flatnonzero(labels.argmax(axis=1) != np.asarray(classes))[0])
        raise ValueError(f"sample {bad}: class {classes[bad]} is not the arg-max of its soft label")
    stored = _all_or_none(weights, "weight", None)
    if stored is not None and stored.dtype.kind == "f":
        stored = stored.astype(np.float32)  # written from float32, so exact
    recipe = meta.get("recipe") or {}
    if stored is not None and "weighting" not in recipe:
        recipe = {**recipe, "weighting": {"scheme": "sqrt" if stored.dtype.kind in "iu" else "explicit",
                                          "normalization": "global"}}
    zca = None
    if folder is not None and (folder / ZCA_FILE).is_file():
        with np.load(folder / ZCA_FILE, allow_pickle=False) as z:
            zca = (z["mean"], z["matrix"])
    provenance = meta.get("provenance") or {}
    options = merged_save_options(save_kwargs, producer="ddformat.import_webdataset",
                                  parameters={"imported_from": "webdataset", "shards": len(shards)},
                                  recipe=recipe, soft_labels=labels is not None)
    for key in ("value_range", "normalization", "class_names", "num_classes"):
        if meta.get(key) is not None:
            options.setdefault(key, meta[key])
    if provenance.get("source_dataset"):
        options.setdefault("source_dataset", provenance["source_dataset"])
    if zca is not None:
        options.setdefault("zca", zca)
    return save(out, np.stack(xs), np.asarray(classes, dtype=np.int64) if labels is None else labels,
                weights=stored, name=meta.get("name", "") if name is None else name, **options)


def _all_or_none(values: list[Any], field: str, dtype: Any) -> np.ndarray | None:
    present = [v is not None for v in values]
    if not any(present):
        return None
    if not all(present):
        raise ValueError(f"sample {present.index(False)} has no {field!r} in its .json, others do")
    return np.asarray(values, dtype=dtype)
