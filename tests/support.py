"""Helpers the tests share with ``tools/make_vectors.py``: digests of decoded tensors (spec § 7)
and re-sealing a file after editing its header, so that a test pins one semantic rule with every
checksum and length consistent."""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any, Callable

import msgpack
import numpy as np
import torch
from sklearn.cluster import KMeans
from tqdm import tqdm

import ddformat
from ddformat.codecs.ruo import RUO
from ddformat.container.header import compress_header, decompress_header
from ddformat.container.sections import align
from ddformat.container.writing import pack_preamble
from ddformat.limits import DEFAULT_LIMITS, PREAMBLE_SIZE


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
    out = {**samples, "labels": digest(f.labels()), "weights": digest(f.stored_weights())}
    views = f.views()
    if views is not None:  # int64 (V, N, 10 + 2k): crop, flip, partner, mix box, class indices, levels
        out["views"] = digest(np.concatenate([views.crops, views.flips[..., None], views.partners[..., None],
                                              views.mix_boxes, views.indices, views.levels], axis=-1).astype(np.int64))
    return out


def split_header(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The decompressed header map and the bytes after it."""
    (h,) = struct.unpack_from("<I", data, 12)
    text = decompress_header(data[PREAMBLE_SIZE:PREAMBLE_SIZE + h], DEFAULT_LIMITS.max_header_bytes)
    return msgpack.unpackb(text), data[PREAMBLE_SIZE + h:]


def store_header(data: bytes, raw: bytes) -> bytes:
    """``data`` with ``raw`` stored as its header, the sections' bytes following it unchanged, and
    the preamble's lengths and CRCs recomputed: whatever ``raw`` gets wrong is the only defect."""
    (h,) = struct.unpack_from("<I", data, 12)
    body = data[PREAMBLE_SIZE + h:]
    return pack_preamble(raw, PREAMBLE_SIZE + len(raw) + len(body)) + raw + body


def _offsets(header: dict[str, Any], start: int) -> list[int]:
    offsets = []
    for s in header["sections"]:
        start = align(start, s.get("alignment", 1))
        offsets.append(start)
        start += s["length"]
    return offsets


def reseal(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """Edit the decompressed header and re-lay the file so that every CRC and length and the
    content hash (unless ``edit`` set it) stay consistent; offsets and the bit account follow
    from them. An edit may reorder, drop or copy entries of ``header["sections"]``: each keeps
    its payload (a new entry has none)."""
    header, _ = split_header(data)
    (h,) = struct.unpack_from("<I", data, 12)
    for s, start in zip(header["sections"], _offsets(header, PREAMBLE_SIZE + h)):
        s["_body"] = data[start:start + s["length"]]
    stored_hash = header["provenance"]["content_hash"]
    edit(header)
    bodies = [s.pop("_body", b"") for s in header["sections"]]
    for s, body in zip(header["sections"], bodies):
        s["length"], s["crc32"] = len(body), zlib.crc32(body) & 0xFFFFFFFF
    if header["provenance"].get("content_hash") == stored_hash:
        header["provenance"]["content_hash"] = hashlib.sha256(b"".join(bodies)).digest()
    raw = compress_header(msgpack.packb(header, use_bin_type=True))
    offsets = _offsets(header, PREAMBLE_SIZE + len(raw))
    size = offsets[-1] + len(bodies[-1]) if bodies else PREAMBLE_SIZE + len(raw)
    out = bytearray(size)
    out[PREAMBLE_SIZE:PREAMBLE_SIZE + len(raw)] = raw
    for start, body in zip(offsets, bodies):
        out[start:start + len(body)] = body
    out[:PREAMBLE_SIZE] = pack_preamble(raw, size)
    return bytes(out)


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
