"""Pictures people would rather look at than numbers: a file's bit account, students'
learning curves, rate-utility curves.

matplotlib is optional (``pip install ddformat[plots]``); nothing else in ddformat needs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'ddformat[plots]'") from None
    return plt


def bit_breakdown_png(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Two panels from an ``inspect`` report: KiB by component, and bits per class against
    the file's bpc."""
    plt = _pyplot()
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


def learning_curve_png(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Mean test accuracy against epochs from an ``eval`` report, one line per training set."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in report["results"]:
        epochs, acc = zip(*r["curve"])
        ax.plot(epochs, [100 * a for a in acc], marker="o", label=f"{r['train']} ({r['samples']} samples)")
    p = report["protocol"]
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test accuracy on {report['test']} (%)")
    ax.set_title(f"{Path(report['file']).name}: {p['architecture']}, {p['regime']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def rate_utility_png(rows: list[dict[str, Any]], path: str | os.PathLike[str], title: str) -> None:
    """Accuracy against bits per class, one line per method (rows: ``method``, ``bpc``,
    ``accuracy``), bpc on a log scale."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r["bpc"], 100 * r["accuracy"]) for r in rows if r["method"] == method)
        ax.plot(*zip(*points), marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per class (whole file)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
