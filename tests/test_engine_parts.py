"""The engine's parts in-process: freezing, optimizer groups, schedules, the step loop, trackers, hooks, config."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossbench.config import Experiment, OptimizerConfig, SchedulerConfig, validate_experiment
from lossbench.engine.loop import TrainLoop, autocast_for
from lossbench.engine.monitor import MetricMonitor, metric_names, resolve_metric
from lossbench.engine.optim import build_optimizer, build_scheduler, optimizer_param_groups
from lossbench.engine.stages import freeze_for_stage
from lossbench.errors import UserError
from lossbench.metrics import TaskMetrics
from lossbench.models import build_model, model_layout, parameter_groups
from lossbench.config import ModelConfig


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core runner, two spinning threads make a tiny ResNet step 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_loader(n=16, size=16, classes=3, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.arange(n) % classes
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def linear_model(classes=3, size=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes))


def make_loop(model, opt_cfg, trained=None, head=("1.",), **kwargs):
    groups = parameter_groups(model, head)
    optimizer = build_optimizer(opt_cfg, optimizer_param_groups(groups, trained or list(groups), opt_cfg))
    return TrainLoop(model=model, loss_fn=nn.CrossEntropyLoss(), optimizer=optimizer, device=torch.device("cpu"),
                     **kwargs)


def test_frozen_backbone_is_out_of_optimizer_and_keeps_weights_and_bn_stats():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18"), "classification", 3)
    groups, trained = freeze_for_stage(model, "head", ("fc.",))
    assert trained == ["head"]
    cfg = OptimizerConfig(name="sgd", lr=0.1, weight_decay=0.01)
    loop = make_loop(model, cfg, trained, head=("fc.",))
    in_optimizer = {id(p) for g in loop.optimizer.param_groups for p in g["params"]}
    assert all(not p.requires_grad and id(p) not in in_optimizer for p in groups["backbone"])
    assert {id(p) for p in groups["head"]} == in_optimizer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loop.train_epoch(tiny_loader(), TaskMetrics("classification", 3))
    after = model.state_dict()
    assert model.bn1.training is False and model.training is True
    for key, value in before.items():
        if key.startswith("fc."):
            assert not torch.equal(value, after[key]), key
        else:  # backbone weights and batch-norm running statistics did not move
            assert torch.equal(value, after[key]), key
    freeze_for_stage(model, "all", ("fc.",))
    assert all(p.requires_grad for p in model.parameters())


def test_unknown_stage_group_is_one_line():
    model = build_model(ModelConfig(name="resnet18"), "classification", 3)
    with pytest.raises(UserError, match="unknown parameter group 'neck'; this model has head, backbone"):
        freeze_for_stage(model, ["neck"], ("fc.",))


def test_weight_decay_skips_norms_and_biases_and_backbone_lr_is_scaled():
    model = build_model(ModelConfig(name="resnet18"), "classification", 3)
    cfg = OptimizerConfig(name="adamw", lr=0.01, weight_decay=0.05, backbone_lr_factor=0.1)
    groups = optimizer_param_groups(parameter_groups(model, model_layout(ModelConfig(name="resnet18"), model).head),
                                    ["head", "backbone"], cfg)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"head", "head/no_decay", "backbone", "backbone/no_decay"}
    assert by_name["head"]["lr"] == 0.01 and by_name["backbone"]["lr"] == pytest.approx(0.001)
    assert all(p.ndim > 1 for g in ("head", "backbone") for p in by_name[g]["params"])
    assert all(p.ndim <= 1 and by_name[g]["weight_decay"] == 0 for g in ("head/no_decay", "backbone/no_decay")
               for p in by_name[g]["params"])
    assert by_name["backbone"]["weight_decay"] == 0.05
    assert any(p is model.bn1.weight for p in by_name["backbone/no_decay"]["params"])
    opt = build_optimizer(cfg, groups)
    assert isinstance(opt, torch.optim.AdamW)
    sgd = build_optimizer(OptimizerConfig(name="sgd", nesterov=True), groups)
    assert sgd.defaults["nesterov"] is True


def lrs(cfg, epochs=4, steps=5, base=0.1, torch_scheduler=None, per_epoch=False):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    ours = build_scheduler(cfg, opt, epochs, steps)
    out = []
    for _ in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        ours.step()
    return out


def reference_lrs(make, epochs=4, steps=5, base=0.1, per_epoch=False):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = make(opt)
    out = []
    for i in range(epochs * steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if not per_epoch or (i + 1) % steps == 0:
            sched.step()
    return out


def test_schedules_match_torch_where_they_overlap():
    cos = lrs(SchedulerConfig(name="cosine", min_lr_factor=0.1))
    ref = reference_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.01))
    assert cos == pytest.approx(ref)
    step = lrs(SchedulerConfig(name="step", step_size=2, gamma=0.5))
    assert step == pytest.approx(reference_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5), per_epoch=True))
    multi = lrs(SchedulerConfig(name="multistep", milestones=[1, 3], gamma=0.1))
    assert multi == pytest.approx(reference_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [1, 3], 0.1),
                                                per_epoch=True))


def test_cosine_warmup_rises_linearly_then_decays():
    out = lrs(SchedulerConfig(name="cosine", warmup_epochs=1, warmup_start_factor=0.2))
    assert out[0] == pytest.approx(0.02)
    assert out[:6] == pytest.approx([0.02 + 0.08 * i / 5 for i in range(5)] + [0.1])
    assert all(a >= b for a, b in zip(out[5:], out[6:])) and out[-1] < 0.002


def test_onecycle_and_plateau():
    out = lrs(SchedulerConfig(name="onecycle", pct_start=0.25, div_factor=10))
    assert out[0] == pytest.approx(0.01) and max(out) == pytest.approx(0.1, rel=1e-3) and out[-1] < 1e-4
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    plateau = build_scheduler(SchedulerConfig(name="plateau", patience=1, gamma=0.5), opt, 5, 3, mode="max")
    for value in [0.5, 0.5, 0.5]:
        plateau.step(value)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_gradient_accumulation_equals_the_large_batch_step():
    torch.manual_seed(0)
    a, b = linear_model(), linear_model()
    b.load_state_dict(a.state_dict())
    cfg = OptimizerConfig(name="sgd", lr=0.5, momentum=0)
    make_loop(a, cfg, grad_accumulation=2).train_epoch(tiny_loader(size=4, batch=4, n=8), TaskMetrics("classification", 3))
    make_loop(b, cfg).train_epoch(tiny_loader(size=4, batch=8, n=8), TaskMetrics("classification", 3))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = linear_model()
    before = [p.detach().clone() for p in model.parameters()]
    cfg = OptimizerConfig(name="sgd", lr=1.0, momentum=0)
    make_loop(model, cfg, grad_clip_norm=1e-3).train_epoch(tiny_loader(size=4, batch=16), TaskMetrics("classification", 3))
    step = torch.cat([(p - q).flatten() for p, q in zip(model.parameters(), before)])
    assert 0 < step.norm() <= 1e-3 + 1e-7


def test_bf16_autocast_on_cpu_trains():
    torch.manual_seed(0)
    model = linear_model()
    loop = make_loop(model, OptimizerConfig(lr=0.01), autocast=autocast_for("bf16", torch.device("cpu")))
    result = loop.train_epoch(tiny_loader(size=4), TaskMetrics("classification", 3))
    assert math.isfinite(result.loss) and model[1].weight.dtype == torch.float32
    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        autocast_for("fp16", torch.device("cpu"))


class NanAt(nn.Module):
    """Cross-entropy, but NaN on the given batch numbers."""

    def __init__(self, bad):
        super().__init__()
        self.bad, self.calls = set(bad), 0

    def forward(self, logits, target):
        self.calls += 1
        loss = nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if self.calls in self.bad else loss


@pytest.mark.filterwarnings("ignore:The ``compute`` method")  # every batch skipped: no metric update
def test_nonfinite_loss_stops_with_one_line_or_skips_and_counts():
    model = linear_model()
    loop = make_loop(model, OptimizerConfig(lr=0.1))
    loop.loss_fn = NanAt({2})
    with pytest.raises(UserError, match=r"loss became nan \(e1, batch 2\); stopped"):
        loop.train_epoch(tiny_loader(size=4, batch=4), TaskMetrics("classification", 3), "e1")
    loop = make_loop(model, OptimizerConfig(lr=0.1), nonfinite_loss="skip")
    loop.loss_fn = NanAt({1, 2, 3, 4})
    before = model[1].weight.detach().clone()
    result = loop.train_epoch(tiny_loader(size=4, batch=4), TaskMetrics("classification", 3))
    assert result.skipped_steps == 4 and torch.equal(before, model[1].weight)


def test_ema_averages_the_weights():
    from lossbench.engine.ema import build_ema

    model = linear_model()
    ema = build_ema(model, 0.5)
    start = model[1].weight.detach().clone()
    ema.update_parameters(model)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module[1].weight, start + 0.5)
    loop = make_loop(model, OptimizerConfig(lr=0.1), ema=ema)
    loop.train_epoch(tiny_loader(size=4, batch=8), TaskMetrics("classification", 3))
    assert int(ema.n_averaged) == 4


def test_tracker_patience_min_delta_and_modes():
    t = MetricMonitor("val_loss", "min", min_delta=0.1)
    assert [t.update(v) for v in [1.0, 0.95, 0.85, 0.9]] == [True, False, True, False]
    assert t.best == 0.85 and t.bad_epochs == 1
    t = MetricMonitor("val_miou", "max")
    assert [t.update(v) for v in [float("nan"), 0.2, float("nan"), 0.3]] == [True, True, False, True]


def test_metric_names_resolve_bare_and_prefixed():
    names = metric_names("segmentation", 3)
    assert resolve_metric("miou", names, "best_metric") == "val_miou"
    assert resolve_metric("val_iou_2", names, "best_metric") == "val_iou_2"
    assert resolve_metric("train_loss", names, "best_metric") == "train_loss"
    with pytest.raises(UserError, match="best_metric: unknown metric 'balanced_accuracy'; choose one of"):
        resolve_metric("balanced_accuracy", names, "best_metric")


@pytest.mark.parametrize("raw, message", [
    ({"epochs": 3, "stages": [{"epochs": 2}]}, "epochs: 3 but the stages add up to 2"),
    ({"stages": [{"epochs": 0}]}, "stages.0.epochs"),
    ({"stages": [{"epochs": 1, "optimizer": {"lrr": 1}}]}, "stages.0.optimizer: lrr: Extra inputs"),
    ({"stages": [{"epochs": 1, "train": []}]}, "name at least one parameter group"),
    ({"optimizer": {"name": "adam", "nesterov": True}}, "nesterov: true needs name: sgd"),
    ({"scheduler": {"name": "multistep"}}, "multistep needs milestones"),
    ({"amp": "fp8"}, "amp: Input should be"),
    ({"ema": {"decay": 1.5}}, "ema.decay"),
])
def test_engine_config_mistakes_are_one_line(raw, message):
    with pytest.raises(UserError, match="^x.yaml: ") as err:
        validate_experiment(raw, "x.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stages_fill_epochs_and_merge_overrides():
    exp = Experiment(optimizer={"name": "sgd", "lr": 0.1, "weight_decay": 1e-4},
                     stages=[{"epochs": 2, "train": "head"}, {"epochs": 3, "lr": 0.01, "scheduler": {"name": "cosine"}}])
    assert exp.epochs == 5
    assert exp.stage_optimizer(0).lr == 0.1
    second = exp.stage_optimizer(1)
    assert (second.name, second.lr, second.weight_decay) == ("sgd", 0.01, 1e-4)
    assert exp.stage_scheduler(1).name == "cosine" and exp.stage_scheduler(0).name == "none"
    assert [s.epochs for s in Experiment(epochs=4).resolved_stages()] == [4]
    cut = Experiment(epochs=3, stages=[{"epochs": 2, "train": "head"}, {"epochs": 3, "lr": 0.01}, {"epochs": 1}])
    assert [(s.epochs, s.train, s.lr) for s in cut.stages] == [(2, "head", None), (1, "all", 0.01)]
    assert Experiment(epochs=1, stages=[{"epochs": 5, "train": "head"}, {"epochs": 10}]).stages[0].epochs == 1
