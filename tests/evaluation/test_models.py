import pytest
import torch
from torch import nn

from ddformat.evaluation.models import ARCHITECTURES, BasicBlock, ConvNet, ResNet, build_model, canonical_architecture, norm_layer

INPUTS = ((1, (28, 28)), (3, (32, 32)), (3, (64, 64)))
DEEPEST_CONVNET = {28: 4, 32: 5, 64: 6}


def fits(architecture, size):
    return not architecture.startswith("ConvNet-D") or int(architecture[9]) <= DEEPEST_CONVNET[size[0]]


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def strided_convolutions(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]


@pytest.mark.parametrize("architecture,channels,size", [
    pytest.param(a, c, s, id=f"{a}-{c}x{s[0]}x{s[1]}") for a in ARCHITECTURES for c, s in INPUTS if fits(a, s)])
def test_every_architecture_maps_a_batch_to_one_logit_per_class(architecture, channels, size):
    torch.manual_seed(0)
    model = build_model(architecture, channels, 7, size)
    logits = model(torch.randn(2, channels, *size))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()


@pytest.mark.parametrize("architecture,expected", [
    ("ConvNet-D3", 320_010),       # DC/MTT's ConvNet on CIFAR-10
    ("ResNet-18", 11_173_962),     # the CIFAR ResNet-18
    ("ResNet-18-IN", 11_173_962),
    ("ResNetAP-10", 4_903_242),
    ("ResNetAP-10-BN", 4_903_242),
])
def test_parameter_counts_match_the_published_networks_on_cifar(architecture, expected):
    assert parameter_count(build_model(architecture, 3, 10, (32, 32))) == expected


def test_large_inputs_get_the_imagenet_stem():
    model = build_model("ResNet-18", 3, 10, (224, 224))
    assert model.stem[0].kernel_size == (7, 7) and model.stem[0].stride == (2, 2)
    assert isinstance(model.stem[-1], nn.MaxPool2d)
    assert parameter_count(model) == 11_181_642  # torchvision's resnet18 with a 10-class head
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 10)


def test_small_inputs_keep_their_resolution_in_the_stem():
    model = build_model("ResNet-18", 3, 10, (64, 64))
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_convnet_depth_sets_the_number_of_pooling_blocks():
    for depth in (3, 4, 5, 6):
        model = build_model(f"ConvNet-D{depth}", 3, 10, (64, 64))
        assert sum(isinstance(m, nn.AvgPool2d) for m in model.modules()) == depth
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == depth and all(c.out_channels == 128 for c in convs)
        assert model.classifier.in_features == 128 * (64 >> depth) ** 2


@pytest.mark.parametrize("depth,size", [(5, (28, 28)), (6, (32, 32)), (4, (8, 8)), (3, (32, 4)), (0, (32, 32))])
def test_convnet_refuses_a_depth_that_pools_below_one_pixel(depth, size):
    with pytest.raises(ValueError, match=f"ConvNet-D{depth} does not fit"):
        ConvNet(3, 10, size, depth=depth)


def test_convnet_keeps_its_positional_constructor():
    model = ConvNet(1, 10, (28, 28), 3, 64)
    assert model.classifier.in_features == 64 * 3 * 3


@pytest.mark.parametrize("architecture,norm", [
    ("ConvNet-D3", nn.GroupNorm), ("ConvNet-D3-BN", nn.BatchNorm2d), ("ResNet-18", nn.BatchNorm2d), ("ResNet-18-IN", nn.GroupNorm),
    ("ResNetAP-10", nn.GroupNorm), ("ResNetAP-10-BN", nn.BatchNorm2d),
])
def test_each_variant_uses_only_its_normalisation(architecture, norm):
    model = build_model(architecture, 3, 10, (32, 32))
    norms = [m for m in model.modules() if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d))]
    assert norms and all(type(m) is norm for m in norms)


def test_instance_norm_is_groupnorm_with_one_channel_per_group_and_affine():
    layer = norm_layer("instance", 16)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 16 and layer.affine
    with pytest.raises(ValueError, match="norm must be"):
        norm_layer("layer", 16)


def test_instance_normalised_students_treat_each_sample_alone():
    torch.manual_seed(0)
    model = build_model("ResNetAP-10", 3, 10, (32, 32)).train()
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(model(x)[:1], model(x[:1]), atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (128, 128), (224, 224)])
def test_resnetap10_downsamples_only_by_average_pooling(size):
    model = build_model("ResNetAP-10", 3, 10, size)
    assert not strided_convolutions(model)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 4


def test_resnet18_downsamples_by_strided_convolution():
    model = build_model("ResNet-18", 3, 10, (32, 32))
    # three halving stages, each with a strided 3×3 convolution and a strided 1×1 shortcut
    assert len(strided_convolutions(model)) == 6
    assert not any(isinstance(m, nn.AvgPool2d) for m in model.modules())


def test_resnetap_stem_follows_idc_by_resolution():
    pools = {size: [m.kernel_size for m in build_model("ResNetAP-10", 3, 10, (size, size)).stem
                    if isinstance(m, nn.AvgPool2d)] for size in (64, 128, 224)}
    assert pools == {64: [], 128: [2], 224: [4]}


def test_average_pooling_resnet_refuses_inputs_it_would_pool_away():
    with pytest.raises(ValueError, match="at least 8 pixels"):
        ResNet(3, 10, (4, 4), blocks=(1, 1, 1, 1), downsample="avgpool")
    with pytest.raises(ValueError, match="downsample must be"):
        ResNet(3, 10, (32, 32), downsample="maxpool")


@pytest.mark.parametrize("name", ["ResNetAP-10", "ResNet-18-IN"])
def test_instance_normalised_resnet_refuses_inputs_that_leave_a_one_pixel_last_stage(name):
    with pytest.raises(ValueError, match="1×1 map.*at least 16 pixels"):
        build_model(name, 1, 10, (8, 8))
    model = build_model(name, 1, 10, (16, 16)).eval()
    x = torch.randn(2, 1, 16, 16)
    assert not torch.allclose(model(x)[0], model(x)[1])


def test_batch_normalised_resnet_accepts_the_smallest_inputs():
    assert build_model("ResNetAP-10-BN", 1, 10, (8, 8))(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name,canonical", [
    ("convnet-d3", "ConvNet-D3"), ("ConvNet-D3", "ConvNet-D3"), ("convnet", "ConvNet-D3"),
    ("CONVNET-D6", "ConvNet-D6"), ("convnetd4", "ConvNet-D4"), ("resnet18", "ResNet-18"),
    ("ResNet-18", "ResNet-18"), ("resnet18-in", "ResNet-18-IN"), ("resnetap10", "ResNetAP-10"),
    ("ResNetAP-10", "ResNetAP-10"), ("resnetap10-bn", "ResNetAP-10-BN"),
])
def test_architecture_names_are_matched_ignoring_case_and_hyphens(name, canonical):
    assert canonical_architecture(name) == canonical


def test_build_model_names_its_variant():
    assert isinstance(build_model("convnet", 1, 10, (28, 28)), ConvNet)
    bn = build_model("resnet18", 3, 10, (32, 32))
    assert isinstance(bn, ResNet) and any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())


@pytest.mark.parametrize("name", ["vgg11", "convnet-d7", "resnet", "", None])
def test_unknown_architectures_are_refused_with_the_known_names(name):
    with pytest.raises(ValueError, match="unknown architecture.*ConvNet-D3.*ResNetAP-10"):
        build_model(name, 3, 10, (32, 32))
