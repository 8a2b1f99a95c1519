"""Deferred re-weighting (drw_epoch / drw_beta) of any loss, and the cosine-head warning for LDAM."""

import csv

import pytest
import torch
import yaml
import torch.nn.functional as F
from torch import nn

from lossbench.config import validate_experiment
from lossbench.engine import resume, train
from lossbench.engine.reweighting import DeferredReweighting, cosine_head_warning, drw_class_weights
from lossbench.errors import UserError
from lossbench.losses import LossCapabilities, build_loss, declare_loss

COUNTS = [5000, 500, 50]

@declare_loss("weight_taker", LossCapabilities(accepts_class_weights=True))
class WeightTaker(nn.Module):
    """Records what the engine sets; stands for any loss term that declares it takes class weights."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def set_class_weights(self, weight):
        self.seen.append(weight)


def test_drw_weights_are_the_official_effective_number_weights():
    """LDAM-DRW cifar_train.py: (1 - beta) / (1 - beta^n_c), normalised to sum to C; beta 0 gives all ones."""
    beta = 0.9999
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    expected = torch.tensor([w / sum(raw) * len(COUNTS) for w in raw])
    assert torch.allclose(drw_class_weights(COUNTS, beta), expected.float(), rtol=1e-6)
    assert torch.allclose(drw_class_weights(COUNTS, 0.0), torch.ones(3))
    assert torch.isfinite(drw_class_weights([10, 0, 3], beta)).all()  # a class without images counts as one


def test_weights_are_set_on_every_taker_from_drw_epoch_on_and_cleared_before():
    first, second = WeightTaker(), WeightTaker()
    tree = nn.ModuleList([first, nn.ModuleList([nn.Identity(), second])])
    drw = DeferredReweighting(tree, 3, 0.9999, COUNTS, "tree")
    for epoch in (1, 2, 3, 4, 2):  # the last: a resumed run starts from the epoch alone
        drw.start_epoch(epoch)
    w = drw_class_weights(COUNTS, 0.9999)
    for taker in (first, second):
        assert [None if x is None else x.tolist() for x in taker.seen] == [None, None, w.tolist(), w.tolist(), None]
    untouched = WeightTaker()
    off = DeferredReweighting(untouched, None, 0.9999, COUNTS, "tree")
    off.start_epoch(1), off.start_epoch(200)
    assert untouched.seen == []  # without drw_epoch a loss keeps its own weights


def test_drw_epoch_with_a_loss_that_takes_no_class_weights_is_one_line_error():
    loss = build_loss("lovasz_softmax", 3, class_counts=COUNTS)
    with pytest.raises(UserError, match="drw_epoch: 7 is set, but loss lovasz_softmax has no term that takes class "
                                        "weights") as err:
        DeferredReweighting(loss, 7, 0.9999, COUNTS, "lovasz_softmax")
    assert "\n" not in str(err.value)
    DeferredReweighting(loss, None, 0.9999, COUNTS, "lovasz_softmax")  # nothing asked, nothing refused


def test_drw_beta_must_be_in_zero_one():
    with pytest.raises(UserError, match="drw_beta: Input should be less than 1"):
        validate_experiment({"drw_beta": 1.0}, "exp.yaml")


def test_ce_drw_is_plain_ce_then_the_weighted_ce_of_the_official_code():
    torch.manual_seed(0)
    loss = build_loss("ce", 3, class_counts=COUNTS)
    logits, target = torch.randn(8, 3), torch.tensor([0, 0, 0, 0, 1, 1, 2, 0])
    drw = DeferredReweighting(loss, 2, 0.9999, COUNTS, "ce")
    drw.start_epoch(1)
    assert torch.allclose(loss(logits, target), F.cross_entropy(logits, target))
    drw.start_epoch(2)
    w = drw_class_weights(COUNTS, 0.9999)
    weighted = sum(-w[t] * F.log_softmax(z, 0)[t] for z, t in zip(logits, target)) / w[target].sum()
    assert torch.allclose(loss(logits, target), weighted)  # nn.CrossEntropyLoss(weight=w), as cifar_train.py


RUN = """
name: NAME
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 16, train_per_class: 12, val_per_class: 3, imbalance_ratio: 4}
model: {name: resnet20}
optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
loss: ce
drw_epoch: 2
epochs: 3
batch_size: 8
"""


class Interrupt(Exception):
    pass


def _rows(run):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader((run / "metrics.csv").open())]


def test_ce_drw_run_resumes_exactly(tmp_path):
    """The weights follow from the epoch alone: a run stopped after epoch 1 and resumed matches an unbroken one."""
    full = validate_experiment(yaml.safe_load(RUN.replace("NAME", "full").replace("OUT", str(tmp_path / "runs"))),
                               "full.yaml")
    cut = full.model_copy(update={"name": "cut"})
    train(full, log=lambda *_: None)

    def stop(epoch):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cut, log=lambda *_: None, on_epoch_end=stop)
    resume(tmp_path / "runs" / "cut", log=lambda *_: None)
    rows = _rows(tmp_path / "runs" / "full")
    assert rows == _rows(tmp_path / "runs" / "cut") and len(rows) == 3


@declare_loss("scaled_margins", LossCapabilities(expects_cosine_logits=True))
class ScaledMargins(nn.Module):
    def __init__(self, ctx=None, s: float = 30.0):
        super().__init__()
        self.s = s


def test_cosine_head_warning_names_the_scale_and_both_ways_out():
    tree = nn.ModuleList([nn.Identity(), ScaledMargins()])
    line = cosine_head_warning(tree, "linear")
    assert line == ("warning: ScaledMargins with s=30 expects the cosine head of the paper; set model.head: cosine, "
                    "or use ScaledMargins(s=1) on a linear head")
    assert cosine_head_warning(tree, "cosine") is None
    assert cosine_head_warning(nn.ModuleList([nn.Identity()]), "linear") is None


def test_training_ldam_on_a_linear_head_logs_one_warning_line(tmp_path):
    base = {"output_dir": str(tmp_path), "epochs": 1, "batch_size": 8, "loss": "ldam",
            "data": {"source": "synthetic", "num_classes": 3, "image_size": 16, "train_per_class": 8,
                     "val_per_class": 2, "imbalance_ratio": 2}}
    for head, expected in (("linear", 1), ("cosine", 0)):
        lines = []
        train(validate_experiment({**base, "name": head, "model": {"name": "resnet20", "head": head}}, "x"),
              log=lines.append)
        warnings = [ln for ln in lines if ln.startswith("warning:")]
        assert len(warnings) == expected, lines
        if expected:
            assert warnings[0] == ("warning: ldam with s=30 expects the cosine head of the paper; "
                                   "set model.head: cosine, or use ldam(s=1) on a linear head")
