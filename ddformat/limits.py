"""Format constants and the reader limits of ``spec/format.md`` § Limits.

Limits protect readers from files that would make them allocate or loop without bound. They are
checked before any allocation that depends on a number read from a file.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"\x89DDF\r\n\x1a\n"
MAJOR = 2
MINOR = 0
PREAMBLE_SIZE = 32

MAX_ALIGNMENT = 4096
SAMPLE_DTYPES = {"uint8": 1, "float16": 2, "float32": 4}
MAX_SAMPLE_RANK = 4
MAX_DIM = 65536
MAX_NUM_CLASSES = 1_000_000
MAX_NUM_SAMPLES = 2**31 - 1


EXPANSION_ALLOWANCE = 2**20


@dataclass(frozen=True)
class Limits:
    """Caps a reader enforces; raise them explicitly for files you trust to be large."""

    max_header_bytes: int = 16 * 2**20
    max_sections: int = 1024
    max_decoded_bytes: int = 16 * 2**30
    max_expansion: int = 1024
    """Decoded samples (and a ZCA matrix) may be at most this many times their payload bytes,
    plus :data:`EXPANSION_ALLOWANCE`: a few-KB file cannot make a reader allocate or compute
    gigabytes. Real sets stay far below it (measured: 20× for RUO latents at ~4,000 bpc)."""

    def check_expansion(self, decoded: int, payload: int) -> bool:
        """Whether ``decoded`` bytes are plausible for ``payload`` bytes of section data."""
        return decoded <= self.max_expansion * payload + EXPANSION_ALLOWANCE


DEFAULT_LIMITS = Limits()
