"""Real digits end to end: MNIST -> tensor files -> ``ddformat convert`` -> .dd -> weighted
student training through ``DistilledDataset.loader`` -> accuracy on held-out real digits."""

import torch

import ddformat
from ddformat import cli
from ddformat.evaluation import realdata
from ddformat.evaluation.models import ConvNet
from ddformat.evaluation.training import accuracy, protocol_for, train_student
from tests.support import kmeans_prototypes

IPC = 10
MIN_ACCURACY = 0.80  # chance is 0.10; measured 0.863, 0.889, 0.889 for seeds 0, 1, 2


def test_mnist_kmeans_set_converted_from_tensor_files_trains_a_student(tmp_path):
    x_train, y_train = realdata.mnist("train")
    x_test, y_test = realdata.mnist("test")
    images, labels, counts = kmeans_prototypes(x_train, y_train, IPC, seed=0)
    src = tmp_path / "tensors"
    src.mkdir()
    for name, t in (("images", images), ("labels", labels), ("weights", counts)):
        torch.save(t, src / f"{name}.pt")
    assert cli.main(["convert", str(src), str(tmp_path / "mnist.dd")]) == 0

    dataset = ddformat.DistilledDataset(tmp_path / "mnist.dd")
    assert len(dataset) == 10 * IPC and dataset.recipe["weighting"]["scheme"] == "sqrt"
    assert int(counts.sum()) == len(x_train)
    assert not torch.allclose(dataset.weights, torch.ones_like(dataset.weights))
    assert dataset.bpc == 8 * (tmp_path / "mnist.dd").stat().st_size / 10

    model = ConvNet(1, 10, (28, 28), depth=3, width=64)
    protocol = protocol_for(dataset.recipe, dataset.label_kind, epochs=60, batch_size=50, augmentation=())
    train_student(dataset, model, protocol, seed=0, progress=False)
    assert accuracy(model, x_test.float() / 255, y_test) >= MIN_ACCURACY
