"""The zstd dictionary every header is compressed with (``spec/format.md`` § 2).

A header is a few hundred bytes of msgpack, mostly key names and values that every file
repeats (``num_classes``, ``sample_dtype``, ``weighting``, codec names, a producer's parameter
names); zstd alone cannot compress what it has not seen yet, so a header shrinks by only a
third on its own. Compressed against these examples, a 10-class RUO file's header costs under
200 bytes instead of ~1,900. The dictionary is raw content (no entropy tables, dictionary ID 0):
any zstd decoder can use it as history. It is normative: changing one byte makes every file
unreadable, so its bytes are pinned by :data:`SHA256`, checked on import, and kept in
``spec/header-dictionary.bin``. The examples are typical headers and parameter vocabularies
(published distillation methods, the importers, ``producers/ruo``), most common last (zstd
reaches recent history with shorter offsets).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

SHA256 = "de24cadcb4cff95140f949e0aa82837b27040f42edb7bf410353bcda26d9b581"
"""SHA-256 of :data:`DICTIONARY`, as ``spec/format.md`` § 2 gives it."""

_METHODS: dict[str, Any] = {
    "provenance": {"producer": "ddformat.import_tensor_files", "producer_version": "1.0.0", "parameters": {
        "imported_from": "tensor_files", "images_file": "images.pt", "labels_file": "labels.pt",
        "labels": "hard", "lr_file": "lr.pt", "weights_file": "weights.pt", "soft_labels_file": "soft_labels.pt",
        "method": "mtt", "dataset": "CIFAR10", "model": "ConvNet", "ipc": 10, "syn_steps": 30,
        "expert_epochs": 2, "min_start_epoch": 0, "max_start_epoch": 20, "lr_img": 1000.0, "lr_lr": 1e-05,
        "lr_teacher": 0.01, "lr_y": 2.0, "lr_net": 0.01, "batch_syn": 256, "batch_real": 256,
        "batch_train": 256, "pix_init": "real", "init": "real", "dsa": True,
        "dsa_strategy": "color_crop_cutout_flip_scale_rotate", "zca": True, "zca_reg": 0.1, "texture": False,
        "Iteration": 5000, "iterations": 1000, "epochs": 300, "num_eval": 5, "epoch_eval_train": 1000,
        "eval_mode": "S", "num_experts": 100, "train_epochs": 50, "teacher": "ResNet18", "student": "ResNet18",
        "arch": "ConvNetD3", "r_bn": 0.01, "first_bn_multiplier": 10.0, "jitter": 32, "factor": 2, "mipc": 300,
        "temperature": 20.0, "soft_label": True, "label_type": "soft", "weight_decay": 0.0005, "momentum": 0.9,
        "optimizer": "sgd", "lr": 0.01, "image_size": 32, "resolution": 32, "num_classes": 10,
        "outer_loop": 10, "inner_loop": 50, "lambda": 1.0, "alpha": 0.5, "beta": 1.0, "gamma": 0.1, "k": 5,
        "bits": 8, "threshold": 0.5, "spc": 10, "steps": 1000, "loss": "dm", "commit": "", "command": "",
        "seed": 0},
        "source_dataset": "cifar10", "content_hash": bytes(32)},
    "recipe": {"loss": "kl", "temperature": 4.0, "weighting": {"scheme": "sqrt", "normalization": "batch"},
               "architecture": "ResNet18", "epochs": 300, "batch_size": 128, "regime": "sl+kd",
               "augmentation": ["rrc", "flip", "cutmix", "zca", "dsa"],
               "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.01, "schedule": "cosine",
                             "warmup_epochs": 5}},
}

_ROWS = {"frames": [], "frame_rows": []}

_PIXELS: dict[str, Any] = {
    "dataset": {"name": "", "num_classes": 100, "class_names": [], "num_samples": 1000,
                "sample_shape": [3, 32, 32], "sample_dtype": "uint8", "value_range": [0.0, 1.0],
                "normalization": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616],
                                  "applied": True}},
    "sections": [
        {"kind": "samples", "codec": "pixels", "component": "samples", "length": 0, "crc32": 0,
         "params": {"dtype": "float16", "filter": "shuffle", "compression": "zstd", **_ROWS}, "class_bytes": []},
        {"kind": "labels", "codec": "topk", "component": "labels", "length": 0, "crc32": 0,
         "params": {"k": 2, "bits": 8, "level_tables": 1, "tables": 0, "table_compression": "zstd", "words": 0,
                    "kl_to_source": 0.0}},
        {"kind": "labels", "codec": "dense", "component": "labels", "length": 0, "crc32": 0,
         "params": {"dtype": "float32", "filter": "none", "compression": "none", **_ROWS, "kl_to_source": 0.0}},
        {"kind": "labels", "codec": "indices", "component": "labels", "length": 0, "crc32": 0,
         "params": {"tables": 0, "table_compression": "none", "words": 0}},
        {"kind": "weights", "codec": "counts", "component": "weights", "length": 0, "crc32": 0,
         "params": {"width": 2, "filter": "none", "compression": "zstd", **_ROWS}},
        {"kind": "weights", "codec": "float", "component": "weights", "length": 0, "crc32": 0,
         "params": {"dtype": "float32", "filter": "shuffle", "compression": "zstd", **_ROWS}},
        {"kind": "zca", "codec": "matrix", "component": "other", "length": 0, "crc32": 0,
         "params": {"dtype": "float32", "filter": "shuffle", "compression": "zstd", **_ROWS}},
        {"kind": "samples", "codec": "pixels", "component": "samples", "length": 0, "crc32": 0,
         "params": {"dtype": "uint8", "filter": "med", "compression": "zstd", **_ROWS}, "class_bytes": []},
        {"kind": "labels", "codec": "grouped", "component": "labels", "length": 0, "crc32": 0, "class_bytes": []},
    ],
    "provenance": {"producer": "ddformat.import_imagefolder", "producer_version": "1.0.0",
                   "parameters": {"imported_from": "imagefolder", "labels": "soft"},
                   "source_dataset": "cifar10", "content_hash": bytes(32)},
    "recipe": {"loss": "ce", "temperature": 1.0, "weighting": {"scheme": "uniform", "normalization": "global"}},
}

_RUO_NETWORKS = {"steps": [], "sigmas": [], "ranges": [], "weights_per_stream": 0}

_RUO: dict[str, Any] = {
    "dataset": {"name": "mnist-ruo-dm-spc10", "num_classes": 10, "class_names": [str(c) for c in range(10)],
                "num_samples": 100, "sample_shape": [1, 28, 28], "sample_dtype": "float32",
                "normalization": {"mean": [0.1307], "std": [0.3081], "applied": False}},
    "sections": [
        {"kind": "samples", "codec": "ruo", "component": "samples", "length": 0, "crc32": 0,
         "params": {"scales": 6, "context": 8, "arm_width": 8, "arm_depth": 1, "decoder_version": "v4-40",
                    "slices": [], "samples_per_stream": 1}},
        {"kind": "ruo.arm", "codec": "ruo", "component": "entropy_networks", "length": 0, "crc32": 0,
         "params": _RUO_NETWORKS},
        {"kind": "ruo.decoder", "codec": "ruo", "component": "decoders", "length": 0, "crc32": 0,
         "params": _RUO_NETWORKS},
        {"kind": "labels", "codec": "grouped", "component": "labels", "length": 10, "crc32": 0,
         "class_bytes": [1] * 10},
    ],
    "provenance": {"producer": "producers.ruo", "producer_version": "1.0.0", "parameters": {
        "spc": 10, "slice_size": None, "scales": 6, "context": 8, "arm_width": 8, "arm_depth": 1,
        "decoder_version": "v4-40", "init_std": 0.01, "relaxation": "ste", "softround_temperature": 0.3,
        "init_iterations": 500, "init_lr": 0.01, "beta": 10000.0, "loss": "dm", "iterations": 500, "lr": 0.001,
        "lambdas": [10.0, 1.0], "mse_threshold": 5e-05, "architecture": "ConvNet-D3", "batch_real": 256,
        "dsa": "color_crop_cutout_flip_scale_rotate", "eval_epochs": 1000, "seed": 0, "lambda_scale": 1.0,
        "target_bpc": None},
        "source_dataset": "mnist", "content_hash": bytes(32)},
    "recipe": {"loss": "ce", "architecture": "ConvNet-D3", "epochs": 1000, "batch_size": 256,
               "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "step"},
               "augmentation": ["dsa"], "temperature": 1.0,
               "weighting": {"scheme": "uniform", "normalization": "global"}},
}

EXAMPLES = (_METHODS, _PIXELS, _RUO)

DICTIONARY = b"".join(msgpack.packb(example, use_bin_type=True) for example in EXAMPLES)
"""The dictionary's bytes: the examples' msgpack encodings, concatenated."""

if hashlib.sha256(DICTIONARY).hexdigest() != SHA256:
    raise ImportError("the header dictionary built from ddformat.container.dictionary is not the one the spec "
                      f"names (SHA-256 {hashlib.sha256(DICTIONARY).hexdigest()}, expected {SHA256}): "
                      "this msgpack encodes differently, and headers would not decode")
