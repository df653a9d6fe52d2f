import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import ddformat
from ddformat.interop import export_imagefolder, export_tensor_files, import_imagefolder, import_tensor_files
from ddformat.evaluation.realdata import mnist

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_NORM = {"mean": MNIST_MEAN, "std": MNIST_STD}
IPC = 3


@pytest.fixture(scope="module")
def digits_few():
    """IPC real MNIST images per class, class-ordered: uint8 (30, 1, 28, 28) and int64 labels."""
    images, labels = mnist("train")
    idx = torch.cat([(labels == c).nonzero().flatten()[:IPC] for c in range(10)])
    return images[idx], labels[idx]


def normalised(images):
    return (images.float() / 255 - MNIST_MEAN) / MNIST_STD


def save_tensor_dir(directory, **tensors):
    directory.mkdir(exist_ok=True)
    for filename, value in tensors.items():
        torch.save(value, directory / f"{filename}.pt")
    return directory


def write_tree(root, images, labels, folder, filename, ext="png"):
    for i, (image, label) in enumerate(zip(images, labels)):
        c = int(label)
        k = int((labels[:i] == c).sum())
        (root / folder(c)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(root / folder(c) / f"{filename(c, k)}.{ext}")
    return root


def sre2l_tree(root, images, labels, ext="jpg"):
    return write_tree(root, images, labels, lambda c: f"new{c:03d}", lambda c, k: f"class{c:03d}_id{k:03d}", ext)


# ---------------------------------------------------------------- tensor files


@pytest.mark.parametrize("saved_lr", [torch.tensor(0.0123, requires_grad=True), 0.0123],
                         ids=["datm_tensor_lr", "mtt_float_lr"])
def test_mtt_directory_keeps_normalised_images_labels_and_learned_lr(tmp_path, digits_few, saved_lr):
    images, labels = digits_few
    x = normalised(images).requires_grad_(True)
    src = save_tensor_dir(tmp_path / "mtt", images_best=x, labels_best=labels, lr_best=saved_lr,
                          images_100=torch.zeros(1))
    out = import_tensor_files(src, tmp_path / "mtt.dd", mean=[MNIST_MEAN], std=[MNIST_STD])
    with ddformat.open(out) as dd:
        assert torch.from_numpy(dd.samples()).dtype == torch.float32
        assert torch.equal(torch.from_numpy(dd.samples()), x.detach())
        assert torch.equal(torch.from_numpy(dd.labels()), labels)
        assert dd.recipe["optimizer"]["lr"] == float(torch.tensor(0.0123) if torch.is_tensor(saved_lr) else saved_lr)
        assert dd.dataset["normalization"] == {"mean": [MNIST_MEAN], "std": [MNIST_STD], "applied": True}
        assert dd.provenance["parameters"]["labels"] == "hard"
        assert dd.provenance["parameters"]["images_file"] == "images_best.pt"


def test_float16_option_halves_the_stored_floats(tmp_path, digits_few):
    images, labels = digits_few
    src = save_tensor_dir(tmp_path / "mtt", images=normalised(images), labels=labels)
    with ddformat.open(import_tensor_files(src, tmp_path / "a.dd", sample_dtype="float16", **MNIST_NORM)) as dd:
        assert torch.from_numpy(dd.samples()).dtype == torch.float16
        assert torch.equal(torch.from_numpy(dd.samples()), normalised(images).half())


def test_zca_whitened_sets_say_so_in_provenance(tmp_path, digits_few):
    images, labels = digits_few
    src = save_tensor_dir(tmp_path / "zca", images_best=normalised(images), labels_best=labels)
    with ddformat.open(import_tensor_files(src, tmp_path / "z.dd", zca=True, **MNIST_NORM)) as dd:
        assert dd.provenance["parameters"]["zca"] is True


def test_uint8_image_tensors_are_stored_as_pixels(tmp_path, digits_few):
    images, labels = digits_few
    src = save_tensor_dir(tmp_path / "u8", images=images, labels=labels)
    with ddformat.open(import_tensor_files(src, tmp_path / "u8.dd", mean=MNIST_MEAN, std=MNIST_STD)) as dd:
        assert torch.equal(torch.from_numpy(dd.samples()), images)
        assert dd.dataset["normalization"]["applied"] is False


def test_datm_soft_logits_become_probabilities(tmp_path, digits_few):
    images, _ = digits_few
    logits = torch.randn(len(images), 10, generator=torch.Generator().manual_seed(0)) * 3
    logits[torch.arange(len(images)), torch.arange(len(images)) // IPC] += 30  # arg-max keeps class order
    src = save_tensor_dir(tmp_path / "datm", images_best=normalised(images), labels_best=logits)
    with ddformat.open(import_tensor_files(src, tmp_path / "datm.dd", **MNIST_NORM)) as dd:
        assert dd.label_kind == "soft"
        assert torch.allclose(torch.from_numpy(dd.labels()), torch.softmax(logits.double(), 1).float(), atol=1e-6)
        assert dd.provenance["parameters"]["labels"] == "logits"


def test_probability_labels_are_kept_and_contradicting_kind_is_refused(tmp_path, digits_few):
    images, labels = digits_few
    probs = torch.full((len(images), 10), 0.02)
    probs[torch.arange(len(images)), labels] = 0.82
    src = save_tensor_dir(tmp_path / "p", images=normalised(images), labels=probs)
    with ddformat.open(import_tensor_files(src, tmp_path / "p.dd", **MNIST_NORM)) as dd:
        assert torch.allclose(torch.from_numpy(dd.labels()), probs, atol=1e-6)
        assert dd.provenance["parameters"]["labels"] == "probs"
    save_tensor_dir(src, labels=probs.log())
    with pytest.raises(ValueError, match="labels.pt.*not probabilities"):
        import_tensor_files(src, tmp_path / "q.dd", soft_labels="probs", **MNIST_NORM)


def test_dd_ranking_class_ordered_images_without_labels_are_labelled_by_order(tmp_path, digits_few):
    images, labels = digits_few
    src = save_tensor_dir(tmp_path / "ddr", images=normalised(images))
    with ddformat.open(import_tensor_files(src, tmp_path / "ddr.dd", num_classes=10, **MNIST_NORM)) as dd:
        assert torch.equal(torch.from_numpy(dd.labels()), labels)
        assert dd.provenance["parameters"]["labels"] == "class_order"
    with pytest.raises(ValueError, match="labels.pt is missing; give num_classes"):
        import_tensor_files(src, tmp_path / "x.dd", **MNIST_NORM)
    with pytest.raises(ValueError, match="not the same number for each of 7 classes"):
        import_tensor_files(src, tmp_path / "x.dd", num_classes=7, **MNIST_NORM)


def test_non_tensor_pt_files_are_refused_without_running_their_code(tmp_path, digits_few):
    images, labels = digits_few
    src = save_tensor_dir(tmp_path / "bad", images={"x": normalised(images)}, labels=labels)
    with pytest.raises(ValueError, match=r"images\.pt: holds a dict, not a tensor"):
        import_tensor_files(src, tmp_path / "bad.dd")

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os
            return os.mkdir, (str(marker),)

    with open(src / "images.pt", "wb") as f:
        pickle.dump(Exploit(), f, protocol=2)
    with pytest.raises(ValueError, match=r"images\.pt: cannot be read with torch.load\(weights_only=True\)"):
        import_tensor_files(src, tmp_path / "bad.dd")
    torch.save(normalised(images), src / "images.pt")
    torch.save(Exploit(), src / "labels.pt")
    with pytest.raises(ValueError, match=r"labels\.pt: cannot be read"):
        import_tensor_files(src, tmp_path / "bad.dd")
    assert not marker.exists()


def test_tensor_files_round_trip_preserves_tensors_and_lr(tmp_path, digits_few):
    images, labels = digits_few
    src = save_tensor_dir(tmp_path / "mtt", images_best=normalised(images), labels_best=labels,
                          lr_best=torch.tensor(0.01))
    first = import_tensor_files(src, tmp_path / "a.dd", mean=MNIST_MEAN, std=MNIST_STD)
    exported = export_tensor_files(first, tmp_path / "exported")
    assert sorted(p.name for p in exported.iterdir()) == ["images.pt", "labels.pt", "lr.pt"]
    for path in exported.iterdir():
        assert isinstance(torch.load(path, weights_only=True), torch.Tensor)
    second = import_tensor_files(exported, tmp_path / "b.dd", mean=MNIST_MEAN, std=MNIST_STD)
    with ddformat.open(first) as a, ddformat.open(second) as b:
        assert np.array_equal(a.samples(), b.samples()) and np.array_equal(a.labels(), b.labels())
        assert a.recipe["optimizer"] == b.recipe["optimizer"] == {"name": "sgd", "lr": float(torch.tensor(0.01))}
        assert a.dataset["normalization"] == b.dataset["normalization"]
    with pytest.raises(FileExistsError):
        export_tensor_files(first, exported)


# ---------------------------------------------------------------- image folders


def test_sre2l_jpeg_tree_with_wmdd_weights_gives_explicit_batch_weights(tmp_path, digits_few):
    images, labels = digits_few
    root = sre2l_tree(tmp_path / "sre2l", images, labels)
    weights = np.random.default_rng(0).uniform(0.1, 2.0, size=(10, IPC)).astype(np.float32)
    (root / "sample_weights.txt").write_text(
        "".join(", ".join("%.9g" % v for v in row) + "\n" for row in weights) + "\n")
    with ddformat.open(import_imagefolder(root, tmp_path / "wmdd.dd")) as dd:
        decoded = np.stack([np.asarray(Image.open(p))[None] for p in sorted(root.glob("new*/*.jpg"))])
        assert torch.from_numpy(dd.samples()).dtype == torch.uint8
        assert np.array_equal(dd.samples(), decoded)
        assert torch.equal(torch.from_numpy(dd.labels()), labels)
        assert torch.equal(torch.from_numpy(dd.stored_weights()), torch.from_numpy(weights.reshape(-1)))
        assert dd.recipe["weighting"] == {"scheme": "explicit", "normalization": "batch"}
        assert dd.class_names == [f"new{c:03d}" for c in range(10)]


def test_rded_tree_orders_classes_by_folder_and_images_by_filename(tmp_path, digits_few):
    images, labels = digits_few
    rgb = images.repeat(1, 3, 1, 1)
    rgb[:, 0] //= 2  # make the channels differ
    root = tmp_path / "rded"
    for i in reversed(range(len(images))):  # creation order must not matter
        c, k = int(labels[i]), i % IPC
        (root / f"{c:05d}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[i].permute(1, 2, 0).numpy()).save(root / f"{c:05d}" / f"class{c:05d}_id{k:05d}.png")
    (root / "00003" / ".DS_Store").write_bytes(b"junk")
    (root / "notes.txt").write_text("not a class")
    with ddformat.open(import_imagefolder(root, tmp_path / "rded.dd")) as dd:
        assert torch.equal(torch.from_numpy(dd.samples()), rgb)
        assert torch.equal(torch.from_numpy(dd.labels()), labels)
        assert dd.stored_weights() is None and dd.recipe["weighting"]["scheme"] == "uniform"


@pytest.mark.parametrize("style", ["sre2l", "rded"])
def test_imagefolder_round_trip_preserves_samples_labels_weights_and_class_names(tmp_path, digits_few, style):
    images, labels = digits_few
    weights = np.random.default_rng(1).uniform(0, 3, size=len(images)).astype(np.float32)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    original = ddformat.save(tmp_path / "orig.dd", images, labels, class_names=names, weights=weights,
                             recipe={"weighting": {"scheme": "explicit", "normalization": "batch"}})
    tree = export_imagefolder(original, tmp_path / "tree", style=style)
    folder = "new000" if style == "sre2l" else "00000"
    stem = "class000_id000" if style == "sre2l" else "class00000_id00000"
    assert (tree / folder / f"{stem}.png").is_file()
    with ddformat.open(import_imagefolder(tree, tmp_path / "back.dd")) as back, ddformat.open(original) as dd:
        assert torch.equal(torch.from_numpy(back.samples()), torch.from_numpy(dd.samples()))
        assert torch.equal(torch.from_numpy(back.labels()), torch.from_numpy(dd.labels()))
        assert torch.equal(torch.from_numpy(back.stored_weights()), torch.from_numpy(dd.stored_weights()))
        assert back.class_names == names
        assert back.recipe["weighting"] == dd.recipe["weighting"]


def test_soft_labels_round_trip_through_labels_pt(tmp_path, digits_few):
    images, labels = digits_few
    probs = torch.softmax(torch.randn(len(images), 10, generator=torch.Generator().manual_seed(2)), 1)
    probs = 0.5 * probs + 0.5 * torch.nn.functional.one_hot(labels, 10)
    original = ddformat.save(tmp_path / "soft.dd", images, probs)
    tree = export_imagefolder(original, tmp_path / "tree", style="rded")
    assert isinstance(torch.load(tree / "labels.pt", weights_only=True), torch.Tensor)
    with ddformat.open(import_imagefolder(tree, tmp_path / "back.dd")) as back, ddformat.open(original) as dd:
        assert back.label_kind == "soft"
        assert torch.equal(torch.from_numpy(back.labels()), torch.from_numpy(dd.labels()))
        assert torch.equal(torch.from_numpy(back.samples()), torch.from_numpy(dd.samples()))


def test_float_samples_are_denormalised_for_export(tmp_path, digits_few):
    images, labels = digits_few
    src = save_tensor_dir(tmp_path / "mtt", images=normalised(images), labels=labels)
    dd_path = import_tensor_files(src, tmp_path / "f.dd", mean=MNIST_MEAN, std=MNIST_STD)
    tree = export_imagefolder(dd_path, tmp_path / "tree")
    with ddformat.open(import_imagefolder(tree, tmp_path / "back.dd")) as back:
        assert (torch.from_numpy(back.samples()).int() - images.int()).abs().max() <= 1


def test_images_of_another_size_are_refused_naming_the_file(tmp_path, digits_few):
    images, labels = digits_few
    root = sre2l_tree(tmp_path / "t", images, labels, ext="png")
    odd = root / "new004" / "class004_id001.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(odd)
    with pytest.raises(ValueError, match=r"class004_id001\.png: image is 32x32 with 1 channel, but .* is 28x28"):
        import_imagefolder(root, tmp_path / "x.dd")


@pytest.mark.parametrize("text,message", [
    ("1 1 1\n" * 9, r"9 rows for 10 class folders"),
    ("1 1 1\n" * 4 + "1 1\n" + "1 1 1\n" * 5, r"line 5: 2 weights for the 3 images in new004/"),
    ("1 1 1\n" * 2 + "1 x 1\n" + "1 1 1\n" * 7, r"line 3: 'x' is not a number"),
    ("1 1 1\n" * 9 + "1 -1 1\n", r"line 10: weight -1 is not finite and non-negative"),
])
def test_bad_weights_files_are_refused_with_the_line(tmp_path, digits_few, text, message):
    images, labels = digits_few
    root = sre2l_tree(tmp_path / "t", images, labels, ext="png")
    (root / "sample_weights.txt").write_text(text)
    with pytest.raises(ValueError, match=r"sample_weights\.txt.*" + message):
        import_imagefolder(root, tmp_path / "x.dd")


def test_export_refuses_a_non_empty_directory_and_non_images(tmp_path, digits_few):
    images, labels = digits_few
    dd_path = ddformat.save(tmp_path / "a.dd", images, labels)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        export_imagefolder(dd_path, tmp_path / "full")
    flat = ddformat.save(tmp_path / "flat.dd", images.reshape(len(images), -1), labels)
    with pytest.raises(ValueError, match="not 1- or 3-channel"):
        export_imagefolder(flat, tmp_path / "out")


def test_tensor_files_carry_weights_both_ways(tmp_path, digits_few):
    images, labels = digits_few
    counts = torch.arange(1, len(images) + 1)
    save_tensor_dir(tmp_path / "src", images=images, labels=labels, weights=counts)
    dd_path = import_tensor_files(tmp_path / "src", tmp_path / "w.dd")
    with ddformat.open(dd_path) as f:
        assert torch.equal(torch.from_numpy(f.stored_weights()), counts)
        assert f.recipe["weighting"] == {"scheme": "sqrt", "normalization": "global"}
    export_tensor_files(dd_path, tmp_path / "out")
    assert torch.equal(torch.load(tmp_path / "out" / "weights.pt", weights_only=True), counts)
