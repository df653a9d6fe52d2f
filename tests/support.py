"""Helpers the tests share with ``tools/make_vectors.py``: digests of decoded tensors (spec § 7)
and re-sealing a file after editing its header, so that a test pins one semantic rule with every
checksum, offset and length consistent."""

from __future__ import annotations

import hashlib
import struct
import zlib
from types import SimpleNamespace
from typing import Any, Callable

import msgpack
import numpy as np
import torch
from sklearn.cluster import KMeans
from tqdm import tqdm

import ddformat
from ddformat.codecs.ruo import RUO
from ddformat.container.bits import bit_account
from ddformat.container.writing import pack_preamble
from ddformat.limits import PREAMBLE_SIZE


def decoded_digests(f: ddformat.DDFile) -> dict[str, str | None]:
    """SHA-256 of each decoded tensor's C-order little-endian bytes (spec § 7). A `ruo` file's
    samples come from float synthesis, which devices reproduce only to a tolerance: it gets the
    digest of its integer latents instead (int64, (N, M), slices in order) and no samples digest."""

    def digest(a: np.ndarray | None) -> str | None:
        if a is None:
            return None
        return hashlib.sha256(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()).hexdigest()

    section = f.container.section("samples")
    if section.codec == RUO.name:
        latents = np.concatenate([s.latents for s in RUO.read(section, f.layout, f.container.section).slices])
        samples = {"samples": None, "latents": digest(latents.astype(np.int64))}
    else:
        samples = {"samples": digest(f.samples())}
    return {**samples, "labels": digest(f.labels()), "weights": digest(f.stored_weights())}


def split_header(data: bytes) -> tuple[dict[str, Any], bytes]:
    (h,) = struct.unpack_from("<I", data, 12)
    return msgpack.unpackb(data[PREAMBLE_SIZE:PREAMBLE_SIZE + h]), data[PREAMBLE_SIZE + h:]


def reseal(data: bytes, edit: Callable[[dict[str, Any]], None], rebits: bool = False) -> bytes:
    """Edit the header and re-lay the file so that every CRC, offset and length, the content
    hash (unless ``edit`` set it) and, with ``rebits``, the bit account stay consistent. An
    edit may reorder, drop or copy entries of ``header["sections"]``: each keeps its payload
    (a new entry has none)."""
    header, _ = split_header(data)
    for s in header["sections"]:
        s["_body"] = data[s["offset"]:s["offset"] + s["length"]]
    stored_hash = header["provenance"]["content_hash"]
    edit(header)
    bodies = [s.pop("_body", b"") for s in header["sections"]]
    for s, body in zip(header["sections"], bodies):
        s["length"], s["crc32"] = len(body), zlib.crc32(body) & 0xFFFFFFFF
    if header["provenance"].get("content_hash") == stored_hash:
        header["provenance"]["content_hash"] = "sha256:" + hashlib.sha256(b"".join(bodies)).hexdigest()
    raw = b""
    for _ in range(8):
        pos = PREAMBLE_SIZE + len(raw)
        for s in header["sections"]:
            pos = -(-pos // s["alignment"]) * s["alignment"]
            s["offset"] = pos
            pos += s["length"]
        if rebits:
            _rebits(header, pos, len(raw))
        packed = msgpack.packb(header, use_bin_type=True)
        if len(packed) == len(raw):
            raw = packed
            break
        raw = packed
    else:
        raise RuntimeError("header length did not settle")
    out = bytearray(pos)
    out[PREAMBLE_SIZE:PREAMBLE_SIZE + len(raw)] = raw
    for s, b in zip(header["sections"], bodies):
        out[s["offset"]:s["offset"] + s["length"]] = b
    out[:PREAMBLE_SIZE] = pack_preamble(raw, pos)
    return bytes(out)


def _rebits(header: dict[str, Any], file_length: int, header_length: int) -> None:
    secs = [SimpleNamespace(component=s["component"], length=s["length"], class_bytes=s.get("class_bytes"))
            for s in header["sections"]]
    header["bits"] = bit_account(header_length, file_length, secs, header["dataset"]["num_classes"])


def kmeans_prototypes(x: torch.Tensor, y: torch.Tensor, ipc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class k-means centroids (rounded to uint8 pixels) and their cluster sizes."""
    images, labels, counts = [], [], []
    for c in tqdm(sorted(set(y.tolist())), desc="k-means per class", leave=False):
        xc = x[y == c].reshape(int((y == c).sum()), -1).float().numpy()
        km = KMeans(ipc, n_init=3, random_state=seed).fit(xc)
        images.append(torch.from_numpy(km.cluster_centers_).round().clamp(0, 255).to(torch.uint8))
        labels.append(torch.full((ipc,), c, dtype=torch.int64))
        counts.append(torch.from_numpy(np.bincount(km.labels_, minlength=ipc)).to(torch.int64))
    return torch.cat(images).reshape(-1, *x.shape[1:]), torch.cat(labels), torch.cat(counts)
