from collections import Counter

import pytest
import torch

from ddformat import realdata

SIZES = {
    ("mnist", "train"): (4000, (1, 28, 28)),
    ("mnist", "test"): (1000, (1, 28, 28)),
    ("digits", "train"): (1442, (1, 8, 8)),
    ("digits", "test"): (355, (1, 8, 8)),
}


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
    for shortcut, name in ((realdata.mnist, "mnist"), (realdata.digits, "digits")):
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
    images, labels = realdata.SOURCES[name].read()
    whole = keyed(torch.from_numpy(images), torch.from_numpy(labels))
    assert not set(train) & set(test)
    assert train + test == whole


@pytest.mark.parametrize("name", sorted(realdata.SOURCES))
def test_each_class_gives_a_fifth_to_test(name):
    _, all_labels = realdata.SOURCES[name].read()
    totals = torch.from_numpy(all_labels).bincount()
    test_counts = realdata.load(name, "test")[1].bincount(minlength=len(totals))
    train_counts = realdata.load(name, "train")[1].bincount(minlength=len(totals))
    assert torch.equal(test_counts, totals // realdata.TEST_SHARE)
    assert torch.equal(train_counts + test_counts, totals)


def test_mnist_classes_are_exactly_balanced():
    assert realdata.mnist("train")[1].bincount().tolist() == [400] * 10
    assert realdata.mnist("test")[1].bincount().tolist() == [100] * 10


def test_callers_get_copies_they_may_modify():
    images, labels = realdata.load("digits", "test")
    images.zero_()
    labels.fill_(3)
    again_images, again_labels = realdata.load("digits", "test")
    assert int(again_images.max()) == 255 and len(again_labels.unique()) == 10


def test_class_names_name_every_class():
    assert realdata.class_names("mnist") == [str(d) for d in range(10)]
    assert realdata.class_names("digits") == [str(d) for d in range(10)]


def test_unknown_names_and_splits_are_refused():
    with pytest.raises(ValueError, match="unknown real dataset 'cifar'"):
        realdata.load("cifar", "train")
    with pytest.raises(ValueError, match="split"):
        realdata.load("mnist", "validation")
    with pytest.raises(ValueError, match="unknown real dataset"):
        realdata.class_names("cifar")
