"""Converting distilled sets between the layouts existing methods write and ``.dd``.

- :func:`import_tensor_files` / :func:`export_tensor_files`: directories of ``.pt`` tensors
  (MTT, DATM; ``layout="ddranking"`` for DD-Ranking's ``compute_metrics``).
- :func:`import_imagefolder` / :func:`export_imagefolder`: image trees (SRe2L, WMDD, RDED, D4M).
- :func:`import_webdataset` / :func:`export_webdataset`: WebDataset tar shards.
- :func:`import_fkd`: FKD / SRe2L relabel output (per-epoch batch files) as stored views.
"""

from .fkd import import_fkd
from .imagefolder import export_imagefolder, import_imagefolder
from .tensor_files import export_tensor_files, import_tensor_files
from .webdataset import export_webdataset, import_webdataset

__all__ = ["export_imagefolder", "export_tensor_files", "export_webdataset", "import_fkd", "import_imagefolder",
           "import_tensor_files", "import_webdataset"]
