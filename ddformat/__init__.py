"""ddformat: one safe, compressed file for a distilled dataset.

Public API: :func:`save`, :func:`open`, :class:`DistilledDataset`, :mod:`ddformat.losses` and the
:class:`FormatError` hierarchy. Everything else is an implementation detail.
"""

__version__ = "1.0.0"

from .errors import FormatError  # noqa: E402
from .reader import DDFile, open  # noqa: E402,A004
from .writer import save  # noqa: E402
from .dataset import DistilledDataset  # noqa: E402

__all__ = ["DDFile", "DistilledDataset", "FormatError", "open", "save", "__version__"]
