"""Converting distilled sets between the layouts existing methods write and ``.dd``.

- :func:`import_tensor_files` / :func:`export_tensor_files`: directories of ``.pt`` tensors
  (MTT, DATM, DD-Ranking).
- :func:`import_imagefolder` / :func:`export_imagefolder`: image trees (SRe2L, WMDD, RDED, D4M).
- :func:`import_fkd`: FKD / SRe2L relabel output (per-epoch batch files) as stored views.
"""

from .fkd import import_fkd
from .imagefolder import export_imagefolder, import_imagefolder
from .tensor_files import export_tensor_files, import_tensor_files

__all__ = ["export_imagefolder", "export_tensor_files", "import_fkd", "import_imagefolder", "import_tensor_files"]
