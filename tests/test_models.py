"""The model registry: shapes of the contract, parameter groups, stems, CIFAR ResNets, nested U-Net."""

import pytest
import segmentation_models_pytorch as smp
import torch
from torch import nn

from lossbench.cli import main
from lossbench.config import ModelConfig
from lossbench.errors import UserError
from lossbench.losses import build_loss
from lossbench.losses.combine import DeepSupervision
from lossbench.models import MODELS, build_model, model_layout, parameter_groups, registry_key

TINY = {  # model name -> (task, config overrides, input shape): small enough for a fast CPU test
    "resnet18": ("classification", {}, (2, 3, 32, 32)),
    "resnet34": ("classification", {"stem": "small"}, (2, 3, 16, 16)),
    "resnet20": ("classification", {"in_channels": 1}, (2, 1, 28, 28)),
    "resnet32": ("classification", {}, (2, 3, 32, 32)),
    "timm:resnet10t": ("classification", {}, (2, 3, 32, 32)),
    "resnet_unet": ("classification", {"encoder_depth": 3}, (2, 3, 32, 32)),
    "unet": ("segmentation", {"encoder_depth": 3}, (2, 3, 32, 32)),
    "unetplusplus": ("segmentation", {"encoder_depth": 3}, (2, 3, 32, 32)),
    "nested_unet": ("segmentation", {"encoder_depth": 2, "base_channels": 4}, (2, 3, 24, 24)),
}
#: too big for a CPU forward in a unit test: their structure is checked on the meta device
BIG_RESNETS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3], "resnet152": [3, 8, 36, 3]}


def test_every_registered_model_is_exercised():
    """A newly registered model fails here until it has a row in TINY (or BIG_RESNETS)."""
    assert {registry_key(name) for name in TINY} | set(BIG_RESNETS) == set(MODELS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_model_gives_logits_and_named_groups(name):
    task, extra, shape = TINY[name]
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, **extra)
    model = build_model(cfg, task, 5).eval()
    with torch.no_grad():
        out = model(torch.randn(*shape))
    assert out.shape == ((2, 5) if task == "classification" else (2, 5, *shape[2:]))
    groups = parameter_groups(model, model_layout(cfg, model).head)
    assert groups["head"] and groups["backbone"]
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    head_out = {p.shape[0] for p in groups["head"] if p.ndim >= 1}
    assert 5 in head_out  # the layer that gives the logits belongs to the head


def test_bigger_torchvision_resnets_are_registered_with_their_own_depth():
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        for arch, blocks in BIG_RESNETS.items():
            model = build_model(ModelConfig(name=arch, in_channels=1), "classification", 3)
            assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == blocks
            assert model.fc.out_features == 3 and model.conv1.in_channels == 1


@pytest.mark.parametrize("arch", ["Unet", "UnetPlusPlus"])
def test_smp_segmenters_take_every_resnet_encoder(arch):
    name = {"Unet": "unet", "UnetPlusPlus": "unetplusplus"}[arch]
    with torch.device("meta"):
        for encoder, last in [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048),
                              ("resnet152", 2048)]:
            model = build_model(ModelConfig(name=name, encoder=encoder), "segmentation", 4)
            assert type(model) is getattr(smp, arch) and model.encoder.out_channels[-1] == last
            assert model.segmentation_head[0].out_channels == 4


@pytest.mark.parametrize("name, blocks, params", [("resnet20", 3, 269_722), ("resnet32", 5, 464_154)])
def test_cifar_resnets_match_he_et_al(name, blocks, params):
    """6n+2 layers, 16/32/64 channels, 3x3 stride-1 stem; 0.27M / 0.46M parameters as in the paper's table 6."""
    model = build_model(ModelConfig(name=name), "classification", 10)
    assert sum(p.numel() for p in model.parameters()) == params
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.out_channels) == ((3, 3), (1, 1), 16)
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(s) for s in stages] == [blocks] * 3
    assert [s[-1].conv2.out_channels for s in stages] == [16, 32, 64]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == 6 * blocks + 2  # + the linear layer
    feats = []
    model.layer3.register_forward_hook(lambda m, i, o: feats.append(o.shape))
    model.eval()(torch.zeros(1, 3, 32, 32))
    assert feats == [(1, 64, 8, 8)]


def test_cifar_resnet_shortcut_is_parameter_free_identity_with_zero_padding():
    block = build_model(ModelConfig(name="resnet20"), "classification", 10).layer2[0]
    x = torch.randn(1, 16, 8, 8)
    s = block.shortcut(x)
    assert s.shape == (1, 32, 4, 4)
    assert torch.equal(s[:, 8:24], x[:, :, ::2, ::2])
    assert s[:, :8].abs().sum() == 0 and s[:, 24:].abs().sum() == 0


def test_small_stem_keeps_resolution_for_32px_images():
    standard = build_model(ModelConfig(name="resnet18"), "classification", 4).eval()
    small = build_model(ModelConfig(name="resnet18", stem="small", in_channels=1), "classification", 4).eval()
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.conv1.in_channels == 1
    assert isinstance(small.maxpool, nn.Identity)
    sizes = []
    for model, channels in [(standard, 3), (small, 1)]:
        model.layer4.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
        model(torch.zeros(1, channels, 32, 32))
    assert sizes == [1, 4]


def test_nested_unet_deep_supervision_lists_side_outputs_in_training_and_last_in_eval():
    torch.manual_seed(0)
    cfg = ModelConfig(name="nested_unet", deep_supervision=True, encoder_depth=3, base_channels=4)
    model = build_model(cfg, "segmentation", 3)
    x = torch.randn(2, 3, 16, 16)
    target = torch.randint(0, 3, (2, 16, 16))
    outs = model.train()(x)
    assert isinstance(outs, list) and len(outs) == 3 and all(o.shape == (2, 3, 16, 16) for o in outs)
    loss = DeepSupervision(build_loss("ce", 3, "segmentation"))(outs, target)
    loss.backward()
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in model.heads)
    model.eval()
    with torch.no_grad():
        final = model(x)
        model.training = True  # top module only: side outputs with eval-mode batch norm
        side = model(x)
    assert isinstance(final, torch.Tensor) and torch.equal(final, side[-1])
    # The nested skip pathways: X(0,3) sees X(0,0..2) plus the upsampled X(1,2).
    assert model.decoder["x0_3"][0].in_channels == 4 * 3 + 8


def test_nested_unet_without_deep_supervision_has_one_head():
    model = build_model(ModelConfig(name="nested_unet", encoder_depth=2, base_channels=4), "segmentation", 2)
    assert len(model.heads) == 1 and isinstance(model.train()(torch.randn(2, 3, 16, 16)), torch.Tensor)


def test_resnet_unet_classifier_gives_smp_unet_class_logits():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet_unet", encoder_depth=3), "classification", 4).eval()
    full = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(256, 128, 64), classes=1,
                    aux_params={"classes": 4}).eval()
    missing, unexpected = full.load_state_dict(model.state_dict(), strict=False)
    dropped = ("decoder.", "segmentation_head.", "encoder.layer3.", "encoder.layer4.")  # unused at depth 3
    assert not unexpected and all(k.startswith(dropped) for k in missing)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, labels = full(x)
        assert torch.allclose(model(x), labels, atol=1e-6)


@pytest.mark.parametrize(
    "cfg, task, message",
    [
        (dict(name="timm:resnet10", pretrained=None), "classification", "did you mean"),
        (dict(name="unet", encoder="resnet19"), "segmentation", "model.encoder: smp has no encoder 'resnet19'"),
        (dict(name="unet", stem="small"), "segmentation", "model.stem"),
        (dict(name="resnet20", stem="standard"), "classification", "only small"),
        (dict(name="resnet18", deep_supervision=True), "classification", "model.deep_supervision"),
        (dict(name="resnet20", pretrained="imagenet"), "classification", "has no ImageNet weights"),
        (dict(name="nested_unet", pretrained="imagenet"), "segmentation", "has no ImageNet weights"),
        (dict(name="resnet18", pretrained="no/such/file.pth"), "classification", "neither imagenet nor"),
    ],
)
def test_bad_model_options_are_one_line_user_errors(cfg, task, message):
    with pytest.raises(UserError, match=message) as err:
        build_model(ModelConfig(**cfg), task, 3)
    assert "\n" not in str(err.value)


def test_list_models_shows_every_family(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for name in ["resnet18", "resnet152", "resnet20", "resnet32", "timm:<name>", "unet", "unetplusplus",
                 "nested_unet", "resnet_unet"]:
        assert name in out
    assert set(MODELS) >= {"resnet34", "resnet50", "resnet101"}


@pytest.mark.parametrize("name, task", [("unet", "segmentation"), ("resnet_unet", "classification"),
                                        ("nested_unet", "segmentation"), ("resnet20", "classification")])
def test_every_parameter_gets_a_gradient(name, task):
    """No dead parameters (a shallow smp encoder's unused stages are dropped): DDP needs no unused-parameter search."""
    model = build_model(ModelConfig(name=name, encoder_depth=3 if "unet" in name else None, base_channels=4),
                        task, 3).train()
    out = model(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
