"""ddformat: one safe, compressed file for a distilled dataset.

Public API: :func:`save`, :func:`open`, :class:`DDFile`, :class:`Limits` and the
:class:`FormatError` hierarchy (format core: numpy, no torch), :class:`DistilledDataset`
(imported from :mod:`ddformat.torch` on first use, so reading a file never imports torch) and
:mod:`ddformat.torch.losses`.
"""

from typing import Any

__version__ = "1.0.0"

from .errors import FormatError  # noqa: E402
from .limits import Limits  # noqa: E402
from .reader import DDFile, open  # noqa: E402,A004
from .writer import save  # noqa: E402

__all__ = ["DDFile", "DistilledDataset", "FormatError", "Limits", "open", "save", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "DistilledDataset":
        from .torch import DistilledDataset

        return DistilledDataset
    raise AttributeError(f"module 'ddformat' has no attribute {name!r}")
