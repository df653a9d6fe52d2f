"""A ``.dd`` file as a Hugging Face Hub dataset folder: the file, a dataset card, its figures.

Distilled sets shared as Drive links, split pickles or bare ``.pt`` files on the Hub lose what
they need to be used (normalisation, label regime, learning rate) and who made them how. The
folder written here carries the file whole and a card that says all of it: YAML front matter
the Hub indexes (license, task, size, tags, source dataset; ``viewer: false``, since the Hub's
viewer cannot read ``.dd``), a preview grid, the bit account, the recipe, the provenance and
the line that loads it. Only a file that verifies is published.

The card's metadata goes through huggingface_hub's own ``DatasetCardData`` and the written
card is parsed back with ``DatasetCard``, so what the Hub reads is what was meant.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..reader import DDFile
from ..reader import open as open_dd
from .report import build_report

CARD = "README.md"
PREVIEW = "preview.png"
BITS = "bits.png"
TAGS = ["dataset-distillation", "distilled-dataset", "ddformat"]
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
PREVIEW_CLASSES = 20


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` samples."""
    return next((name for bound, name in SIZE_CATEGORIES if n < bound), "n>100M")


def _is_image_set(dataset: dict[str, Any]) -> bool:
    shape = dataset["sample_shape"]
    return len(shape) == 3 and shape[0] in (1, 3)


def card_data(dd: DDFile, *, pretty_name: str, license: str) -> Any:  # noqa: A002
    """The card's YAML front matter as huggingface_hub's ``DatasetCardData``."""
    from huggingface_hub import DatasetCardData

    source = dd.provenance.get("source_dataset") or ""
    return DatasetCardData(
        license=license,
        pretty_name=pretty_name,
        task_categories=["image-classification"] if _is_image_set(dd.dataset) else None,
        size_categories=[size_category(dd.num_samples)],
        source_datasets=[f"extended|{source}"] if source else None,
        tags=list(TAGS),
        viewer=False,
    )


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def card_body(report: dict[str, Any], *, pretty_name: str, filename: str, repo_id: str | None,
              figures: list[str]) -> str:
    """The card's markdown: what the set is, how to load it, its figures and tables."""
    url = f"hf://datasets/{repo_id or '<user>/<repo>'}/{filename}"
    bits, weights, labels = report["bits"], report["weights"], report["labels"]
    shape = "×".join(map(str, report["sample_shape"]))
    norm = report["normalization"]
    lines = [
        f"# {pretty_name}", "",
        f"A distilled dataset in the `.dd` format (ddformat): "
        f"{report['num_samples']} samples of {shape} {report['sample_dtype']} in {report['num_classes']} classes, "
        f"{labels['kind']} labels, {weights['scheme']} weights; {report['size']:,} bytes, "
        f"{report['bpc']:,.1f} bits per class. One file holds the samples, labels, weights, the training "
        "recipe and the provenance below; it opens without pickle and without the code that made it.", "",
        "## Use", "",
        "```bash", 'pip install "ddformat[torch,remote]"', "```", "",
        "```python",
        "import ddformat",
        "from ddformat.torch.losses import recipe_loss", "",
        f'ds = ddformat.DistilledDataset("{url}")',
        "loss_fn = recipe_loss(ds.recipe)  # the loss and weighting this recipe trains with",
        "for x, y, w in ds.loader(batch_size=256, shuffle=True):",
        "    loss = loss_fn(model(x), y, w)",
        "```", "",
        f"`ddformat inspect {url}` reads the header without downloading the file; `ddformat verify {filename}` checks every "
        f"checksum and the content hash `{report['provenance'].get('content_hash', '')}`.", "",
    ]
    if repo_id is None:
        lines += ["Replace `<user>/<repo>` with this repository's id.", ""]
    if PREVIEW in figures:
        lines += ["## Preview", "", f"![one row per class, first samples of each]({PREVIEW})", ""]
    lines += ["## Samples", ""] + _table(["field", "value"], [
        ["classes", report["num_classes"]], ["samples", report["num_samples"]], ["sample shape", shape],
        ["sample dtype", report["sample_dtype"]], ["value range", report["value_range"]],
        ["normalization", "none" if norm is None else
         f"mean {norm['mean']}, std {norm['std']} ({'applied to stored values' if norm['applied'] else 'apply before training'})"],
        ["labels", f"{labels['kind']} ({labels['codec']})"],
        ["weights", f"{weights['scheme']}, normalised {weights['normalization']}"
         + (f" ({weights['codec']})" if weights["codec"] else "")],
        ["class names", ", ".join(report["class_names"][:PREVIEW_CLASSES])
         + (" …" if report["num_classes"] > PREVIEW_CLASSES else "")]]) + [""]
    lines += ["## Bit account", "",
              f"{bits['total']:,} bits in all: **{report['bpc']:,.1f} bits per class** (bpc).", ""]
    if BITS in figures:
        lines += [f"![bits by component and by class]({BITS})", ""]
    lines += _table(["component", "bits", "bytes", "% of file"],
                    [[name, c["bits"], f"{c['bytes']:,.0f}", f"{c['percent']:.2f}"]
                     for name, c in bits["component_shares"].items()]) + [""]
    lines += _table(["section", "codec", "bytes"], [[s["kind"], s["codec"], s["length"]] for s in report["sections"]])
    lines += ["", "## Training recipe", ""] + _table(["key", "value"], list(report["recipe"].items()))
    lines += ["", "## Provenance", ""] + _table(["key", "value"], list(report["provenance"].items())) + [""]
    return "\n".join(lines)


def publish_folder(dd_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, repo_id: str | None = None,
                   pretty_name: str | None = None, license: str = "unknown") -> Path:  # noqa: A002
    """Write a Hub-ready dataset folder for ``dd_path`` at ``out_dir`` (empty or new): ``README.md``
    (the card), the ``.dd`` file, ``preview.png`` (image sets) and ``bits.png``.

    The file is verified first (every checksum, the content hash, a full decode): a file that
    does not verify raises its :class:`~ddformat.FormatError` and nothing is written.
    ``repo_id`` goes into the loading snippet; ``license`` is a Hub license id (default
    ``unknown``: say what it is). Returns ``out_dir``.
    """
    from huggingface_hub import DatasetCard

    from .plots import bit_breakdown_png
    from .preview import preview

    dd_path, out_dir = Path(dd_path), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty")
    with open_dd(dd_path) as dd:
        dd.verify()
        report = build_report(dd, dd_path.name)
        name = pretty_name or dd.dataset["name"] or dd_path.stem
        data = card_data(dd, pretty_name=name, license=license)
        grid = preview(dd, per_class=8, classes=PREVIEW_CLASSES, scale=max(1, 64 // max(dd.dataset["sample_shape"][1:]))) \
            if _is_image_set(dd.dataset) else None
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dd_path, out_dir / dd_path.name)
    figures = [BITS]
    bit_breakdown_png(report, out_dir / BITS)
    if grid is not None:
        grid.save(out_dir / PREVIEW, format="PNG")
        figures.append(PREVIEW)
    body = card_body(report, pretty_name=name, filename=dd_path.name, repo_id=repo_id, figures=figures)
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    card.save(out_dir / CARD)
    DatasetCard.load(out_dir / CARD)  # parses back, or raises naming what the Hub would not read
    return out_dir


def upload(folder: str | os.PathLike[str], repo_id: str, *, endpoint: str | None = None,
           token: str | None = None, private: bool = False) -> str:
    """Create the dataset repository ``repo_id`` if needed and upload ``folder`` as one commit.

    The token and endpoint come from the usual Hugging Face login and environment (``HF_TOKEN``,
    ``huggingface-cli login``, ``HF_ENDPOINT``) unless given. Returns the commit URL.
    """
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
    info = api.upload_folder(folder_path=os.fspath(folder), repo_id=repo_id, repo_type="dataset",
                             commit_message=f"Publish {Path(folder).name} with ddformat")
    return str(info.commit_url)
