import pytest
import torch

from lossbench.config import ModelConfig
from lossbench.data.registry import SOURCES
from lossbench.errors import UserError
from lossbench.losses import LOSSES, build_loss
from lossbench.models import MODELS, build_model, model_layout, parameter_groups


@pytest.mark.parametrize("registry, name, close, plural", [
    (LOSSES, "focall", "focal", "losses"), (MODELS, "resnet19", "resnet18", "models"),
    (SOURCES, "synthetik", "synthetic", "sources"),
])
def test_unknown_name_lists_known_ones(registry, name, close, plural):
    with pytest.raises(UserError) as err:
        registry.get(name)
    msg = str(err.value)
    assert msg.startswith(f"unknown {registry.kind} {name!r}; did you mean {close!r}? known {plural}: ")
    for known in registry:
        assert known in msg


def test_registries_hold_skeleton_entries():
    assert {"ce", "focal", "dice"} <= set(LOSSES)
    assert {"resnet18", "unet"} <= set(MODELS)
    assert "synthetic" in SOURCES


def test_models_give_logits_of_the_contract():
    clf = build_model(ModelConfig(name="resnet18"), "classification", 5).eval()
    assert clf(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    seg = build_model(ModelConfig(name="unet", encoder="resnet18"), "segmentation", 3).eval()
    assert seg(torch.zeros(2, 3, 64, 64)).shape == (2, 3, 64, 64)
    groups = parameter_groups(clf, model_layout(ModelConfig(name="resnet18"), clf).head)
    assert len(groups["head"]) == 2 and len(groups["backbone"]) > 10


def test_model_task_mismatch_is_user_error():
    with pytest.raises(UserError, match="segmentation model"):
        build_model(ModelConfig(name="unet"), "classification", 3)


@pytest.mark.parametrize("spec", ["ce", "focal(gamma=2)", "dice", "focal(gamma=2) + 0.5 * dice"])
def test_losses_take_both_tasks(spec):
    torch.manual_seed(0)
    clf = build_loss(spec, 4, "classification")
    v = clf(torch.randn(6, 4, requires_grad=True), torch.tensor([0, 1, 2, 3, 0, 1]))
    assert v.ndim == 0 and torch.isfinite(v)
    seg = build_loss(spec, 3, "segmentation")
    logits = torch.randn(2, 3, 5, 5, requires_grad=True)
    v = seg(logits, torch.randint(0, 3, (2, 5, 5)))
    v.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("focal(gama=2)", "unknown parameter 'gama'; valid parameters: gamma, alpha"),
        ("focal(gamma=2", "syntax error"),
        ("__import__('os')", "keyword parameters only"),
        ("nonsense + ce", "unknown loss 'nonsense'"),
        ("ce * dice", "needs a number"),
    ],
)
def test_bad_loss_spec_names_the_problem(spec, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_loss(spec, 3)
