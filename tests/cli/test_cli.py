"""The ``ddformat`` command line: what it prints, what it writes, and its exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ddformat
from ddformat.cli import preview as preview_module
from ddformat.cli import main

REPO = Path(__file__).resolve().parents[2]


def _hard_file(path: Path, num_classes: int = 3, per_class: int = 4, side: int = 8) -> Path:
    rng = np.random.default_rng(0)
    n = num_classes * per_class
    x = rng.integers(0, 256, size=(n, 3, side, side), dtype=np.uint8)
    y = np.arange(n) % num_classes
    return ddformat.save(path, x, y, num_classes=num_classes,
                         class_names=[f"class{c}" for c in range(num_classes)],
                         weights=rng.integers(1, 5, size=n), name="tiny",
                         recipe={"weighting": {"scheme": "proportional", "normalization": "global"}})


def _soft_file(path: Path, channels: int = 1) -> Path:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, channels, 5, 7)).astype(np.float32)
    y = rng.dirichlet(np.ones(4), size=6).astype(np.float32)
    norm = {"mean": [0.5] * channels, "std": [0.25] * channels, "applied": True}
    return ddformat.save(path, x, y, normalization=norm, recipe={"loss": "kl", "temperature": 4.0})


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ddformat", *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.fixture
def hard(tmp_path: Path) -> Path:
    return _hard_file(tmp_path / "hard.dd")


def _inspect_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --------------------------------------------------------------------------- inspect


def test_inspect_json_reports_counts_and_bpc_of_exactly_8_size_over_k(hard: Path, capsys) -> None:
    report = _inspect_json(hard, capsys)
    size = hard.stat().st_size
    assert (report["num_classes"], report["num_samples"]) == (3, 12)
    assert report["bpc"] == 8 * size / 3
    assert report["bits"]["total"] == 8 * size
    assert {"components", "per_class"} <= report["bits"].keys()
    assert {"sections", "labels", "weights", "recipe", "provenance", "normalization"} <= report.keys()


def test_inspect_bits_by_component_and_by_class_sum_to_total(hard: Path, capsys) -> None:
    bits = _inspect_json(hard, capsys)["bits"]
    assert sum(bits["components"].values()) == bits["total"]
    assert sum(bits["per_class"]) == bits["total"]
    assert len(bits["per_class"]) == 3


def test_inspect_text_prints_bpc_as_the_exact_float(hard: Path, capsys) -> None:
    assert main(["inspect", str(hard)]) == 0
    text = capsys.readouterr().out
    bpc_line = next(line for line in text.splitlines() if line.startswith("bpc:"))
    assert float(bpc_line.split()[1]) == 8 * hard.stat().st_size / 3
    assert f"size: {hard.stat().st_size} bytes" in text


def test_inspect_text_shows_sections_weights_and_recipe(hard: Path, capsys) -> None:
    main(["inspect", str(hard)])
    text = capsys.readouterr().out
    for expected in ("sections:", "samples", "labels: hard", "weights: scheme proportional",
                     "stored values: min", "loss weights: min", "recipe:", "provenance:", "class2"):
        assert expected in text


def test_inspect_summarises_the_per_class_account_of_many_classes(tmp_path: Path, capsys) -> None:
    path = _hard_file(tmp_path / "many.dd", num_classes=50, per_class=1, side=2)
    main(["inspect", str(path)])
    text = capsys.readouterr().out
    assert "45 more classes; over all 50: min" in text
    assert "class49" not in text


def test_inspect_reports_soft_labels_and_their_kl_to_source(tmp_path: Path, capsys) -> None:
    report = _inspect_json(_soft_file(tmp_path / "soft.dd"), capsys)
    assert report["labels"]["kind"] == "soft"
    assert "kl_to_source" in report["labels"]
    assert report["normalization"]["applied"] is True
    assert report["weights"]["stored"] is None


def _flip_byte_of(path: Path, kind: str) -> None:
    with ddformat.open(path) as dd:
        entry = dd.container.entries[kind]
    data = bytearray(path.read_bytes())
    data[entry.offset + entry.length // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_inspect_says_it_did_not_check_the_samples_and_content_hash(hard: Path, capsys) -> None:
    _flip_byte_of(hard, "samples")
    assert main(["inspect", str(hard)]) == 0
    text = capsys.readouterr().out
    assert "not checked: section samples and the content hash" in text
    assert f"`ddformat verify {hard}` checks every checksum" in text
    checked = _inspect_json(hard, capsys)["checked"]
    assert checked == {"header": True, "sections": ["labels", "weights"], "sections_not_checked": ["samples"],
                       "content_hash": False}
    assert main(["verify", str(hard)]) == 1


@pytest.mark.parametrize("kind", ["labels", "weights"])
def test_inspect_fails_on_a_damaged_section_it_reports_as_checked(hard: Path, capsys, kind) -> None:
    _flip_byte_of(hard, kind)
    assert main(["inspect", str(hard)]) == 1
    assert f"section '{kind}'" in capsys.readouterr().err


# --------------------------------------------------------------------------- verify


def test_inspect_plot_draws_the_bit_account_as_png(hard: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "bits.png"
    assert main(["inspect", str(hard), "--plot", str(out)]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 400


def test_verify_exits_0_on_a_good_file(hard: Path, capsys) -> None:
    assert main(["verify", str(hard)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {hard}")


def test_verify_exits_1_naming_the_section_of_a_flipped_sample_byte(hard: Path) -> None:
    _flip_byte_of(hard, "samples")
    result = _run("verify", str(hard))
    assert result.returncode == 1
    assert "section 'samples'" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_exits_2_for_a_missing_file(tmp_path: Path) -> None:
    result = _run("verify", str(tmp_path / "absent.dd"))
    assert result.returncode == 2
    assert "absent.dd" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_exits_1_on_a_file_that_is_not_dd(tmp_path: Path, capsys) -> None:
    path = tmp_path / "notes.dd"
    path.write_text("hello, this is not a container at all\n")
    assert main(["verify", str(path)]) == 1
    assert "magic" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------- preview


def test_preview_writes_a_grid_of_classes_by_samples(hard: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    assert main(["preview", str(hard), "--out", str(out), "--per-class", "4", "--no-names"]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == (4 * (8 + 2) + 2, 3 * (8 + 2) + 2)


def test_preview_puts_class_names_in_a_left_margin(hard: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    assert main(["preview", str(hard), "--out", str(out), "--per-class", "2", "--classes", "2",
                 "--scale", "3"]) == 0
    with Image.open(out) as img:
        grid_width = 3 * (2 * (8 + 2) + 2)
        assert img.height == 3 * (2 * (8 + 2) + 2)
        assert img.width > grid_width
        assert np.asarray(img)[:, : img.width - grid_width].min() < 128  # some text was drawn


def test_preview_shows_normalised_grayscale_floats_as_rgb(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    assert main(["preview", str(_soft_file(tmp_path / "soft.dd")), "--out", str(out), "--no-names"]) == 0
    with Image.open(out) as img:
        assert img.mode == "RGB"
        assert np.asarray(img).max() > 0


def test_preview_refuses_samples_that_are_not_images(tmp_path: Path, capsys) -> None:
    path = ddformat.save(tmp_path / "vectors.dd", np.zeros((4, 16), np.uint8), np.arange(4) % 2)
    assert main(["preview", str(path), "--out", str(tmp_path / "g.png")]) == 1
    assert "C×H×W" in capsys.readouterr().err


def test_preview_numpy_tiling_matches_make_grid(monkeypatch) -> None:
    if preview_module.make_grid is None:
        pytest.skip("torchvision is not installed")
    images = torch.randint(0, 256, (7, 3, 5, 6), dtype=torch.uint8)
    expected = preview_module.tile(images, 3)
    monkeypatch.setattr(preview_module, "make_grid", None)
    np.testing.assert_array_equal(preview_module.tile(images, 3), expected)


# --------------------------------------------------------------------------- convert / export


def _tensor_dir(root: Path) -> tuple[Path, torch.Tensor, torch.Tensor]:
    root.mkdir()
    x = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8).float() / 255
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    torch.save(x, root / "images.pt")
    torch.save(y, root / "labels.pt")
    return root, x, y


def test_convert_and_export_round_trip_tensor_files(tmp_path: Path, capsys) -> None:
    source, x, y = _tensor_dir(tmp_path / "src")
    out = tmp_path / "set.dd"
    assert main(["convert", str(source), str(out), "--name", "tiny", "--class-names", "a,b,c"]) == 0
    summary = capsys.readouterr().out
    assert "6 samples, 3 classes" in summary and f"{out.stat().st_size} bytes" in summary
    with ddformat.open(out) as dd:
        assert dd.class_names == ["a", "b", "c"] and dd.dataset["name"] == "tiny"
        assert np.array_equal(dd.labels(), [0, 0, 1, 1, 2, 2])

    exported = tmp_path / "exported"
    assert main(["export", str(out), str(exported), "--to", "tensors"]) == 0
    images = torch.load(exported / "images.pt", weights_only=True)
    labels = torch.load(exported / "labels.pt", weights_only=True)
    order = torch.argsort(y, stable=True)
    assert torch.equal(labels, y[order])
    assert images.dtype == torch.float32 and torch.equal(images, x[order])


def test_export_imagefolder_converts_back_to_the_same_classes(hard: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "folder"
    assert main(["export", str(hard), str(folder), "--style", "rded"]) == 0
    back = tmp_path / "back.dd"
    assert main(["convert", str(folder), str(back)]) == 0
    assert "from imagefolder: 12 samples, 3 classes" in capsys.readouterr().out
    with ddformat.open(hard) as a, ddformat.open(back) as b:
        assert b.class_names == a.class_names
        assert np.array_equal(b.labels(), a.labels())
        assert np.array_equal(b.samples(), a.samples())


def _images_dir(root: Path, images: torch.Tensor, labels: torch.Tensor | None = None) -> Path:
    root.mkdir()
    torch.save(images, root / "images.pt")
    torch.save(torch.arange(len(images)) % 2 if labels is None else labels, root / "labels.pt")
    return root


def test_convert_refuses_normalised_floats_without_their_mean_and_std(tmp_path: Path, capsys) -> None:
    x = (torch.linspace(0, 1, 6 * 16).reshape(6, 1, 4, 4) - 0.1307) / 0.3081
    source = _images_dir(tmp_path / "src", x)
    out = tmp_path / "set.dd"
    assert main(["convert", str(source), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{source / 'images.pt'}: float images span [-0.424213, 2.82149], outside [0, 1]" in err
    assert "--mean/--std" in err and "--value-range" in err
    assert not out.exists()
    assert main(["convert", str(source), str(out), "--mean", "0.1307", "--std", "0.3081"]) == 0


def test_convert_value_range_records_the_range_so_export_does_not_clip(tmp_path: Path, capsys) -> None:
    codes = torch.arange(256, dtype=torch.float32)[torch.randperm(256, generator=torch.Generator().manual_seed(0))]
    x = (codes / 255 * 4 - 1).reshape(4, 1, 8, 8)  # values -1 .. 3, one per uint8 code
    source = _images_dir(tmp_path / "src", x, torch.tensor([0, 1, 0, 1]))
    out = tmp_path / "set.dd"
    assert main(["convert", str(source), str(out), "--value-range=-1,2"]) == 1
    assert "outside [-1, 2] (value_range)" in capsys.readouterr().err
    assert main(["convert", str(source), str(out), "--value-range=-1,3"]) == 0
    with ddformat.open(out) as dd:
        assert dd.dataset["value_range"] == [-1.0, 3.0]
    assert main(["export", str(out), str(tmp_path / "tree")]) == 0
    exported = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "tree").glob("*/*.png"))])
    order = torch.argsort(torch.tensor([0, 1, 0, 1]), stable=True)
    assert np.array_equal(exported, codes.reshape(4, 8, 8)[order].to(torch.uint8).numpy())


@pytest.mark.parametrize("shape,fix", [
    ((4, 64), "2 dimensions: reshape flattened images to (N, C, H, W)"),
    ((4, 8, 8), "a channel dimension is missing"),
    ((4, 8, 8, 3), "it looks channels-last (N, H, W, C)"),
    ((4, 2, 8, 8), "dimension 1 (channels) is 2"),
], ids=["flat", "no_channels", "nhwc", "two_channels"])
def test_convert_refuses_samples_that_are_not_nchw_images(tmp_path: Path, capsys, shape, fix) -> None:
    source = _images_dir(tmp_path / "src", torch.zeros(shape))
    out = tmp_path / "set.dd"
    assert main(["convert", str(source), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{source / 'images.pt'}: images have shape {shape}, expected (N, C, H, W) with C = 1 or 3; {fix}" in err
    assert not out.exists()


@pytest.mark.parametrize("flags,label,message", [
    (["--num-classes", "10"], 12, "label 12 at index 4 is outside the classes (10 classes are 0 .. 9; 1 label is"),
    (["--class-names", "a,b,c"], 3, "label 3 at index 4 is outside the classes (3 classes are 0 .. 2"),
    ([], -1, "label -1 at index 4 is outside the classes (class indices are never negative"),
], ids=["num_classes", "class_names", "negative"])
def test_convert_refuses_labels_outside_the_declared_classes(tmp_path: Path, capsys, flags, label, message) -> None:
    labels = torch.tensor([0, 1, 2, 1, label, 0])
    source = _images_dir(tmp_path / "src", torch.zeros(6, 1, 4, 4), labels)
    out = tmp_path / "set.dd"
    assert main(["convert", str(source), str(out), *flags]) == 1
    assert f"{source / 'labels.pt'}: {message}" in capsys.readouterr().err
    assert not out.exists()


def test_convert_refuses_a_label_count_that_differs_from_the_images(tmp_path: Path, capsys) -> None:
    source = _images_dir(tmp_path / "src", torch.zeros(6, 1, 4, 4), torch.tensor([0, 1, 0, 1, 0]))
    assert main(["convert", str(source), str(tmp_path / "set.dd")]) == 1
    assert f"{source / 'labels.pt'}: 5 labels for the 6 images in images.pt" in capsys.readouterr().err


def test_convert_refuses_options_of_the_other_source_kind(tmp_path: Path, capsys) -> None:
    source, _, _ = _tensor_dir(tmp_path / "src")
    assert main(["convert", str(source), str(tmp_path / "o.dd"), "--weights-file", "w.txt"]) == 2
    assert "--weights-file applies to --from imagefolder" in capsys.readouterr().err


def test_python_m_ddformat_lists_the_subcommands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for name in ("inspect", "verify", "preview", "convert", "export"):
        assert name in result.stdout
