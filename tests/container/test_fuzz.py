"""Structure-aware fuzzing with resealed checksums (``tools/fuzz.py``, run as a command).

Every mutant has its CRCs, lengths and content hash recomputed and its header compressed again
(offsets and the bit account are derived), so it reaches the header frame and schema, the layout
rules and the decoders instead of failing a checksum.
The fuzzer runs each mutant in a worker process under CPU and address-space limits and reports
anything but a ``FormatError`` or an identical decode that the spec allows, so a reader bug
cannot take this test process down. Figures and the longer run: docs/fuzzing.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _fuzz(tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, "-m", "tools.fuzz", *args, "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert out.exists(), proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_resealed_mutants_are_refused_or_decode_identically_within_cpu_and_memory_limits(tmp_path):
    summary = _fuzz(tmp_path, "--mutants", "6000", "--seed", "0", "--cpu", "2", "--memory-mib", "1024",
                    timeout=300)
    assert summary["violations"] == [], "\n".join(
        f"#{v['index']} {v['base']}: {v['mutation']} [expect {v['expect']}] -> {v['violation']}"
        for v in summary["violations"][:30])
    outcomes = summary["outcomes"]
    # The mutants get past the checksums to every kind of check behind them...
    for error in ("HeaderError", "LayoutError", "UnsupportedError", "DecodeError", "ChecksumError", "LimitError"):
        assert outcomes.get(f"error:{error}", 0) >= 20, (error, outcomes)
    # ...and valid rewrites (reordered sections, recompressed frames and headers, unknown keys) are accepted.
    assert outcomes["identical"] >= 700
    by_op = summary["by_op"]
    for op in ("value", "delete_key", "duplicate_key", "unknown_key", "nesting", "section_identity",
               "duplicate_section", "remove_section", "reorder", "layout", "preamble_padding", "class_bytes",
               "frames", "varints", "words", "tables_zstd", "content_hash", "header_frame", "inflate",
               "payload_byte"):
        assert sum(by_op.get(op, {}).values()) >= 30, (op, by_op.get(op))
    # A mutation that the spec makes invalid is refused, one kind of defect at a time.
    for op in ("duplicate_key", "class_bytes", "varints", "content_hash", "layout", "inflate"):
        assert set(by_op[op]) <= {f"error:{e}" for e in ("HeaderError", "DecodeError", "ChecksumError",
                                                          "LayoutError", "LimitError", "UnsupportedError",
                                                          "TruncatedError")}, by_op[op]


def test_fuzz_harness_reports_crashes_hangs_allocations_and_stray_exceptions(tmp_path):
    report = _fuzz(tmp_path, "--selftest", timeout=180)
    assert "MemoryError" in report["alloc"]
    assert "SIGABRT" in report["abort"]
    assert "KeyError" in report["keyerror"]
    assert "hung" in report["sleep"]
    assert "SIGXCPU" in report["spin"] or "hung" in report["spin"] or "CPU" in report["spin"]
    clean = {k: v for k, v in report.items() if k.startswith("clean-")}
    assert len(clean) == 5 and all(v is None for v in clean.values()), clean
