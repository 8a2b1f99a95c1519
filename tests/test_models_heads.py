"""model.head (linear | cosine) and model.bias_prior on every classifier."""

import math

import pytest
import torch
import torch.nn.functional as F

from lossbench.config import ModelConfig, validate_experiment
from lossbench.engine.stages import freeze_for_stage
from lossbench.errors import UserError
from lossbench.models import build_model, model_layout, parameter_groups
from lossbench.models.heads import CosineLinear

CLASSIFIERS = {  # name -> (config overrides, input shape, path of the layer giving the logits)
    "resnet20": ({"in_channels": 1}, (4, 1, 28, 28), "fc"),
    "resnet18": ({"stem": "small"}, (4, 3, 16, 16), "fc"),
    "timm:resnet10t": ({}, (4, 3, 32, 32), "fc"),
    "resnet_unet": ({"encoder_depth": 3}, (4, 3, 32, 32), "classification_head.3"),
}


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_cosine_head_gives_the_cosines_of_features_and_class_vectors(name):
    extra, shape, path = CLASSIFIERS[name]
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, head="cosine", **extra)
    model = build_model(cfg, "classification", 5).eval()
    head = model.get_submodule(path)
    assert isinstance(head, CosineLinear)
    features = []
    head.register_forward_hook(lambda m, i, o: features.append(i[0]))
    with torch.no_grad():
        out = model(torch.randn(*shape))
    f, w = features[0], head.directions
    cosines = torch.stack([torch.stack([f[n] @ w[c] / (f[n].norm() * w[c].norm()) for c in range(5)])
                           for n in range(shape[0])])
    assert out.shape == (shape[0], 5) and torch.allclose(out, cosines, atol=1e-5)
    assert out.abs().max() <= 1 + 1e-6
    groups = parameter_groups(model, model_layout(cfg, model).head)
    assert [id(p) for p in groups["head"]] == [id(head.directions)]  # no bias; in the head group
    assert all(not n.startswith(path + ".") for n, _ in model.named_parameters() if n.endswith("bias"))


def test_cosine_head_starts_with_unit_class_vectors_like_ldam_drw():
    """NormedLinear: uniform(-1, 1), each class vector renormed to length 1; the scale comes from the loss."""
    torch.manual_seed(0)
    head = build_model(ModelConfig(name="resnet32", head="cosine"), "classification", 10).fc
    assert head.directions.shape == (10, 64)
    assert torch.allclose(head.directions.norm(dim=1), torch.ones(10), atol=1e-6)
    assert head.directions.abs().max() <= 1
    x = torch.randn(3, 64)
    assert torch.allclose(head(x), F.normalize(x, dim=1) @ F.normalize(head.directions, dim=1).T, atol=1e-6)


def test_a_cosine_head_trains_alone_when_the_backbone_is_frozen():
    cfg = ModelConfig(name="resnet20", head="cosine")
    model = build_model(cfg, "classification", 3)
    _, trained = freeze_for_stage(model, "head", model_layout(cfg, model).head)
    assert trained == ["head"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.directions"]


def test_backbones_move_between_linear_and_cosine_heads_and_the_head_is_fresh(tmp_path, capsys):
    torch.manual_seed(1)
    linear = build_model(ModelConfig(name="resnet20"), "classification", 10)
    path = tmp_path / "linear.pth"
    torch.save(linear.state_dict(), path)
    torch.manual_seed(2)
    fresh = build_model(ModelConfig(name="resnet20", head="cosine"), "classification", 10).fc.directions.clone()
    torch.manual_seed(2)
    cosine = build_model(ModelConfig(name="resnet20", head="cosine", pretrained=str(path)), "classification", 10)
    assert torch.equal(cosine.layer3[2].conv2.weight, linear.layer3[2].conv2.weight)
    assert torch.equal(cosine.fc.directions, fresh)  # the linear fc.weight (same 10 x 64 shape) is not loaded
    assert "1 head tensors of the model keep their fresh initialisation" in capsys.readouterr().out
    path2 = tmp_path / "cosine.pth"
    torch.save(cosine.state_dict(), path2)
    back = build_model(ModelConfig(name="resnet20", pretrained=str(path2)), "classification", 10)
    assert torch.equal(back.layer1[0].bn1.weight, cosine.layer1[0].bn1.weight)
    same = build_model(ModelConfig(name="resnet20", head="cosine", pretrained=str(path2)), "classification", 10)
    assert torch.equal(same.fc.directions, cosine.fc.directions)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_bias_prior_sets_every_classifier_bias_to_the_sigmoid_prior(name):
    extra, _, path = CLASSIFIERS[name]
    model = build_model(ModelConfig(name=name, bias_prior=0.1, **extra), "classification", 5)
    bias = model.get_submodule(path).bias
    assert torch.allclose(bias, torch.full((5,), -math.log((1 - 0.1) / 0.1)))  # -log 9
    assert torch.allclose(torch.sigmoid(bias), torch.full((5,), 0.1))
    default = build_model(ModelConfig(name=name, **extra), "classification", 5).get_submodule(path).bias
    assert default.abs().max() < 1  # without the option: the framework's own initialisation


def test_bias_prior_starts_the_sigmoids_near_pi():
    """Batch-norm statistics of the batch (train mode), as at the first training step; random images."""
    means = {}
    for prior in (0.1, None):
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="resnet18", stem="small", bias_prior=prior), "classification", 10)
        with torch.no_grad():
            means[prior] = torch.sigmoid(model.train()(torch.randn(32, 3, 16, 16))).mean().item()
    assert abs(means[0.1] - 0.1) < 0.03 and means[None] > 0.3


@pytest.mark.parametrize("raw, message", [
    ({"head": "cosine", "bias_prior": 0.1}, "bias_prior needs a bias and head: cosine has none"),
    ({"bias_prior": 1.0}, "model.bias_prior: Input should be less than 1"),
    ({"head": "normed"}, "model.head: Input should be 'linear' or 'cosine'"),
])
def test_bad_head_options_are_one_line_config_errors(raw, message):
    with pytest.raises(UserError, match=message) as err:
        validate_experiment({"model": {"name": "resnet20", **raw}}, "exp.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("exp.yaml: model")


@pytest.mark.parametrize("name", ["unet", "nested_unet"])
def test_segmenters_refuse_the_classifier_head_options(name):
    for option in ({"head": "cosine"}, {"bias_prior": 0.1}):
        with pytest.raises(UserError, match=f"model.{next(iter(option))}: is a classifier option") as err:
            build_model(ModelConfig(name=name, encoder_depth=2, **option), "segmentation", 3)
        assert "\n" not in str(err.value)
