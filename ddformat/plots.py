"""Pictures of a file's bit account: where the bits go, by component and by class.

matplotlib is optional (``pip install ddformat[plots]``); nothing else in ddformat needs it.
"""

from __future__ import annotations

import os
from typing import Any


def bit_breakdown_png(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Two panels from an ``inspect`` report: KiB by component, and bits per class against
    the file's bpc."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting the bit account needs matplotlib: pip install 'ddformat[plots]'") from None
    bits = report["bits"]
    components = {k: v for k, v in bits["components"].items() if v}
    per_class = bits["per_class"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1, 2]})
    left.barh(list(components), [v / 8 / 1024 for v in components.values()], color="tab:blue")
    left.invert_yaxis()
    left.set_xlabel("KiB")
    left.set_title(f"by component ({bits['total'] / 8 / 1024:.1f} KiB in all)")
    right.bar(range(len(per_class)), per_class, color="tab:orange", width=0.8)
    right.axhline(report["bpc"], color="k", lw=1, ls="--", label=f"bpc = {report['bpc']:.6g}")
    right.set_xlabel("class")
    right.set_ylabel("bits")
    right.set_title("by class")
    right.legend(loc="lower right")
    fig.suptitle(report["name"] or str(report["file"]))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
