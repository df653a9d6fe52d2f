from collections import Counter

import numpy as np
import pytest
import torch

from ddformat.evaluation import realdata

SIZES = {
    ("mnist", "train"): (4000, (1, 28, 28)),
    ("mnist", "test"): (1000, (1, 28, 28)),
    ("digits", "train"): (1442, (1, 8, 8)),
    ("digits", "test"): (355, (1, 8, 8)),
    ("textures", "train"): (3000, (3, 32, 32)),
    ("textures", "test"): (1000, (3, 32, 32)),
    ("lfw", "train"): (160, (1, 25, 25)),
    ("lfw", "test"): (40, (1, 25, 25)),
}
DRAWN = sorted(name for name in realdata.SOURCES if realdata.SOURCES[name].read().test is None)


@pytest.mark.parametrize("name,split", sorted(SIZES))
def test_splits_have_documented_sizes_shapes_and_dtypes(name, split):
    images, labels = realdata.load(name, split)
    n, shape = SIZES[name, split]
    assert images.shape == (n, *shape) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert int(labels.min()) == 0 and int(labels.max()) == len(realdata.class_names(name)) - 1


def test_pixels_use_the_full_uint8_range():
    for name in realdata.SOURCES:
        images, _ = realdata.load(name, "train")
        assert int(images.min()) == 0 and int(images.max()) == 255


def test_named_shortcuts_equal_the_registry():
    for shortcut, name in ((realdata.mnist, "mnist"), (realdata.digits, "digits"),
                           (realdata.textures, "textures"), (realdata.lfw, "lfw")):
        for split in realdata.SPLITS:
            a, b = shortcut(split), realdata.load(name, split)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("name", sorted(realdata.SOURCES))
def test_splits_are_the_same_after_reparsing(name):
    first = {s: realdata.load(name, s) for s in realdata.SPLITS}
    realdata._splits.cache_clear()
    for split in realdata.SPLITS:
        images, labels = realdata.load(name, split)
        assert torch.equal(images, first[split][0]) and torch.equal(labels, first[split][1])


@pytest.mark.parametrize("name", sorted(realdata.SOURCES))
def test_train_and_test_are_disjoint_and_together_are_the_whole_source(name):
    def keyed(images, labels):
        return Counter((x.numpy().tobytes(), int(y)) for x, y in zip(images, labels))

    train, test = keyed(*realdata.load(name, "train")), keyed(*realdata.load(name, "test"))
    pool = realdata.SOURCES[name].read()
    whole = keyed(torch.from_numpy(pool.images), torch.from_numpy(pool.labels))
    assert not set(train) & set(test)
    assert train + test == whole


def test_sources_that_choose_their_own_test_images_keep_them():
    pool = realdata.SOURCES["textures"].read()
    images, labels = realdata.textures("test")
    assert torch.equal(images, torch.from_numpy(pool.images[pool.test]))
    assert torch.equal(labels, torch.from_numpy(pool.labels[pool.test]))


@pytest.mark.parametrize("name", DRAWN)
def test_each_class_gives_a_fifth_to_test(name):
    all_labels = realdata.SOURCES[name].read().labels
    totals = torch.from_numpy(all_labels).bincount()
    test_counts = realdata.load(name, "test")[1].bincount(minlength=len(totals))
    train_counts = realdata.load(name, "train")[1].bincount(minlength=len(totals))
    assert torch.equal(test_counts, totals // realdata.TEST_SHARE)
    assert torch.equal(train_counts + test_counts, totals)


def test_mnist_classes_are_exactly_balanced():
    assert realdata.mnist("train")[1].bincount().tolist() == [400] * 10
    assert realdata.mnist("test")[1].bincount().tolist() == [100] * 10


def test_textures_and_lfw_classes_are_exactly_balanced():
    assert realdata.textures("train")[1].bincount().tolist() == [300] * 10
    assert realdata.textures("test")[1].bincount().tolist() == [100] * 10
    assert realdata.lfw("train")[1].bincount().tolist() == [80, 80]
    assert realdata.lfw("test")[1].bincount().tolist() == [20, 20]


@pytest.mark.parametrize("width", [384, 451, 512, 550, 600, 1000])
def test_texture_train_and_test_patches_never_share_a_column(width):
    train, test = realdata._patch_columns(width)
    assert train and test
    assert train[-1] + realdata.TEXTURE_PATCH <= test[0]
    assert test[-1] + realdata.TEXTURE_PATCH <= width
    assert test[0] == int(width * realdata.TEXTURE_TRAIN_COLUMNS)


def test_texture_patches_come_from_the_columns_asked_for():
    columns = torch.arange(200, dtype=torch.int64).expand(1, 64, 200).numpy()  # pixel value = its column
    rng = np.random.default_rng(0)
    patches = realdata._tiles(columns, range(120, 200 - realdata.TEXTURE_PATCH + 1, realdata.TEXTURE_STRIDE), 6, rng)
    assert patches.shape == (6, 1, 32, 32) and patches.min() >= 120
    with pytest.raises(ValueError, match="patch places"):
        realdata._tiles(columns, range(120, 160, 16), 100, rng)


def test_no_texture_test_patch_repeats_a_train_patch():
    train = {(x.numpy().tobytes(), int(y)) for x, y in zip(*realdata.textures("train"))}
    test = [(x.numpy().tobytes(), int(y)) for x, y in zip(*realdata.textures("test"))]
    assert not any(key in train for key in test)
    assert not {key[0] for key in train} & {key[0] for key in test}


def test_grey_texture_photos_are_replicated_to_rgb_and_colour_ones_are_not():
    images, labels = realdata.textures("train")
    names = realdata.class_names("textures")
    brick, astronaut = images[labels == names.index("brick")], images[labels == names.index("astronaut")]
    assert torch.equal(brick[:, 0], brick[:, 1]) and torch.equal(brick[:, 0], brick[:, 2])
    assert not torch.equal(astronaut[:, 0], astronaut[:, 1])


def test_lfw_faces_come_first_in_the_source():
    pool = realdata.SOURCES["lfw"].read()
    assert pool.labels.tolist() == [0] * 100 + [1] * 100
    assert pool.images.shape == (200, 1, 25, 25) and pool.images.dtype == np.uint8


def test_callers_get_copies_they_may_modify():
    images, labels = realdata.load("digits", "test")
    images.zero_()
    labels.fill_(3)
    again_images, again_labels = realdata.load("digits", "test")
    assert int(again_images.max()) == 255 and len(again_labels.unique()) == 10


def test_class_names_name_every_class():
    assert realdata.class_names("mnist") == [str(d) for d in range(10)]
    assert realdata.class_names("digits") == [str(d) for d in range(10)]
    assert realdata.class_names("lfw") == ["face", "non-face"]
    assert len(realdata.class_names("textures")) == 10 == len(set(realdata.class_names("textures")))


def test_unknown_names_and_splits_are_refused():
    with pytest.raises(ValueError, match="unknown real dataset 'cifar'"):
        realdata.load("cifar", "train")
    with pytest.raises(ValueError, match="split"):
        realdata.load("mnist", "validation")
    with pytest.raises(ValueError, match="unknown real dataset"):
        realdata.class_names("cifar")
