"""What ``ddformat inspect`` says about a file: a plain dict, and a text rendering of it.

The dict is the ``--json`` output, so scripts and people read the same facts. Building it reads
the header and decodes only labels and weights (for the weight statistics), never the samples,
so it says which sections it left unchecked (``verify`` checks everything).
"""

from __future__ import annotations

import json
import shlex
from fractions import Fraction
from typing import Any, Collection

import numpy as np

from ..reader import DDFile

CLASSES_LISTED = 20
"""Up to this many classes the per-class bit account is printed in full, beyond it summarised."""

DECODED_SECTIONS = ("labels", "weights")
"""What the report decodes, checksum first; opening the file checked the preamble and header."""


def _jsonable(value: Any) -> Any:
    """Header values are msgpack values; bytes are the one kind JSON cannot hold."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    return value


def _stats(x: np.ndarray) -> dict[str, float]:
    x = x.astype(np.float64)
    return {"min": float(x.min()), "mean": float(x.mean()), "max": float(x.max()), "std": float(x.std())}


def _sections(dd: DDFile) -> list[dict[str, Any]]:
    return [{"kind": s.kind, "codec": s.codec, "component": s.component, "offset": s.offset,
             "length": s.length, "alignment": s.alignment, "required": s.required,
             "crc32": f"{s.crc32:08x}", "params": _jsonable(s.params)}
            for s in dd.header.sections]


def _bits(dd: DDFile) -> dict[str, Any]:
    bits = dd.bits
    total = bits["total"]
    per_class = bits["per_class"]
    return {
        "total": total,
        "total_bytes": total // 8,
        "bpc": dd.bpc,
        "bpc_exact": str(Fraction(total, len(per_class))),
        "components": dict(bits["components"]),
        "component_shares": {name: {"bits": b, "bytes": b / 8, "percent": 100 * b / total if total else 0.0}
                             for name, b in bits["components"].items()},
        "per_class": list(per_class),
        "per_class_summary": {"min": min(per_class), "mean": sum(per_class) / len(per_class),
                              "max": max(per_class)},
    }


def _labels(dd: DDFile) -> dict[str, Any]:
    entry = dd.container.entries["labels"]
    return {"kind": dd.label_kind, "codec": entry.codec,
            "kl_to_source": entry.params.get("kl_to_source") if dd.label_kind == "soft" else None}


def _weights(dd: DDFile) -> dict[str, Any]:
    weighting = dd.recipe["weighting"]
    stored = dd.stored_weights()
    loss = dd.loss_weights()
    return {
        "scheme": weighting["scheme"],
        "normalization": weighting["normalization"],
        "codec": dd.container.entries["weights"].codec if dd.container.has("weights") else None,
        "stored": _stats(stored) if stored is not None and stored.size else None,
        "loss": {"min": float(loss.min()), "max": float(loss.max())} if loss.size else None,
    }


def _checked(dd: DDFile) -> dict[str, Any]:
    kinds = [s.kind for s in dd.header.sections]
    return {"header": True, "sections": [k for k in kinds if k in DECODED_SECTIONS],
            "sections_not_checked": [k for k in kinds if k not in DECODED_SECTIONS], "content_hash": False}


def build_report(dd: DDFile, location: str = "") -> dict[str, Any]:
    """Everything ``inspect`` reports about an open file, as JSON-ready values."""
    d = dd.dataset
    return {
        "file": location,
        "size": dd.size,
        "name": d["name"],
        "num_classes": dd.num_classes,
        "num_samples": dd.num_samples,
        "class_names": list(dd.class_names),
        "sample_shape": list(d["sample_shape"]),
        "sample_dtype": d["sample_dtype"],
        "value_range": d["value_range"],
        "normalization": d["normalization"],
        "bpc": dd.bpc,
        "bits": _bits(dd),
        "sections": _sections(dd),
        "checked": _checked(dd),
        "labels": _labels(dd),
        "weights": _weights(dd),
        "recipe": _jsonable(dd.recipe),
        "provenance": _jsonable(dd.provenance),
    }


# --------------------------------------------------------------------------- text


def _table(rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def _num(x: float) -> str:
    return f"{x:.6g}"


def _per_class_lines(r: dict[str, Any]) -> list[str]:
    bits = r["bits"]
    per_class, names = bits["per_class"], r["class_names"]
    rows = [["class", "name", "bits", "bytes"]]
    shown = per_class if len(per_class) <= CLASSES_LISTED else per_class[:5]
    rows += [[str(c), names[c], str(b), _num(b / 8)] for c, b in enumerate(shown)]
    lines = _table(rows, right={0, 2, 3})
    if len(shown) < len(per_class):
        s = bits["per_class_summary"]
        lines.append(f"  ... {len(per_class) - len(shown)} more classes; over all {len(per_class)}: "
                     f"min {s['min']}, mean {_num(s['mean'])}, max {s['max']} bits")
    return lines


def _mapping_lines(m: dict[str, Any]) -> list[str]:
    return [f"  {k}: {json.dumps(v, sort_keys=True)}" for k, v in m.items()] or ["  (none)"]


def _not_checked_line(r: dict[str, Any]) -> str:
    unchecked = r["checked"]["sections_not_checked"]
    what = (f"section{'s' if len(unchecked) > 1 else ''} {', '.join(unchecked)} and " if unchecked else "") + \
        "the content hash"
    return (f"not checked: {what} (inspect reads the header, labels and weights only; "
            f"`ddformat verify {shlex.quote(r['file'])}` checks every checksum and decodes everything)")


def render_text(r: dict[str, Any]) -> str:
    """A human-readable rendering of :func:`build_report`'s dict."""
    bits = r["bits"]
    norm = r["normalization"]
    lines = [
        f"file: {r['file']}",
        f"name: {r['name'] or '(unnamed)'}",
        f"classes: {r['num_classes']}   samples: {r['num_samples']}",
        f"sample shape: {'x'.join(map(str, r['sample_shape']))}   dtype: {r['sample_dtype']}",
        f"value range: {r['value_range'] if r['value_range'] is not None else '(none)'}",
        "normalization: " + ("(none)" if norm is None else
                             f"mean {norm['mean']} std {norm['std']} "
                             f"({'applied to stored values' if norm['applied'] else 'to apply before training'})"),
        "",
        "sections:",
    ]
    rows = [["kind", "codec", "component", "offset", "length", "align", "required", "crc32"]]
    rows += [[s["kind"], s["codec"], s["component"], str(s["offset"]), str(s["length"]), str(s["alignment"]),
              "yes" if s["required"] else "no", s["crc32"]] for s in r["sections"]]
    lines += _table(rows, right={3, 4, 5})
    lines.append(_not_checked_line(r))
    lines += [
        "",
        f"size: {r['size']} bytes = {bits['total']} bits",
        f"bpc: {r['bpc']!r} bits per class (= {bits['total']} bits / {r['num_classes']} classes"
        f" = {bits['bpc_exact']}; {_num(bits['total'] / 8 / r['num_classes'])} bytes per class)",
        "bits by component:",
    ]
    rows = [["component", "bits", "bytes", "% of total"]]
    rows += [[name, str(c["bits"]), _num(c["bytes"]), f"{c['percent']:.2f}"]
             for name, c in bits["component_shares"].items()]
    lines += _table(rows, right={1, 2, 3})
    lines += ["bits by class:"] + _per_class_lines(r)

    labels, weights = r["labels"], r["weights"]
    lines += ["", f"labels: {labels['kind']} ({labels['codec']})"]
    if labels["kind"] == "soft":
        kl = labels["kl_to_source"]
        lines.append(f"  KL to source labels: {_num(kl) if kl is not None else '(not recorded)'}")
    lines.append(f"weights: scheme {weights['scheme']}, normalization {weights['normalization']}"
                 + (f", stored with {weights['codec']}" if weights["codec"] else ", none stored"))
    if weights["stored"] is not None:
        s = weights["stored"]
        lines.append(f"  stored values: min {_num(s['min'])}  mean {_num(s['mean'])}  max {_num(s['max'])}"
                     f"  std {_num(s['std'])}")
    if weights["loss"] is not None:
        lines.append(f"  loss weights: min {_num(weights['loss']['min'])}  max {_num(weights['loss']['max'])}")
    lines += ["", "recipe:"] + _mapping_lines(r["recipe"])
    lines += ["", "provenance:"] + _mapping_lines(r["provenance"])
    return "\n".join(lines)
