"""The loss package as a library: modules found without an import list, papers cited, one-line warnings,
and the target shapes every loss (and the metrics) accept."""

import inspect
import pkgutil
import re
import sys
import warnings

import pytest
import torch

import lossbench.losses as losses_package
from lossbench.losses import LOSSES, build_loss
from lossbench.metrics import TaskMetrics

NO_PAPER = {"ce", "bce", "bce_dice"}  # textbook losses and the common BCE + Dice sum: nothing to cite


def test_every_module_of_the_package_is_imported_and_registers_from_its_own_file():
    names = [m.name for m in pkgutil.iter_modules(losses_package.__path__)]
    assert {"dsc", "generalized_dice", "balanced", "dice"} <= set(names)
    for name in names:
        assert f"lossbench.losses.{name}" in sys.modules
    homes = {LOSSES.get(loss).__module__ for loss in LOSSES}
    assert homes <= {f"lossbench.losses.{name}" for name in names}


def test_a_new_module_in_the_package_is_picked_up_without_editing_imports(tmp_path, monkeypatch):
    (tmp_path / "toy_square.py").write_text(
        '"""A loss in a file of its own."""\n'
        "from torch import nn\n"
        "from lossbench.losses.registry import register_loss\n\n\n"
        '@register_loss("toy_square")\n'
        "class ToySquare(nn.Module):\n"
        '    """Mean squared logit (Nobody et al. 2099)."""\n\n'
        "    def __init__(self, ctx, scale: float = 1.0):\n"
        "        super().__init__()\n"
        "        self.scale = scale\n\n"
        "    def forward(self, logits, target):\n"
        "        return self.scale * logits.float().pow(2).mean()\n")
    monkeypatch.setattr(losses_package, "__path__", [*losses_package.__path__, str(tmp_path)])
    monkeypatch.setattr(LOSSES, "_items", dict(LOSSES._items))
    try:
        assert "toy_square" in losses_package.import_loss_modules()
        assert build_loss("toy_square(scale=2)", 3)(torch.ones(2, 3), torch.zeros(2)).item() == 2.0
    finally:
        sys.modules.pop("lossbench.losses.toy_square", None)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_has_a_docstring_citing_its_paper(name):
    doc = inspect.getdoc(LOSSES.get(name)) or ""
    assert doc.splitlines() and len(doc.splitlines()[0]) > 20
    if name not in NO_PAPER:
        assert re.search(r"[A-Z][a-z]+ (et al\. |& [A-Z][a-z]+ )?(19|20)\d\d", doc), doc.splitlines()[0]


def test_a_class_without_training_images_is_one_warning_line():
    with pytest.warns(UserWarning) as record:
        build_loss("ldam", 3, class_counts=[10, 0, 5])
    assert len(record) == 1
    message = str(record[0].message)
    assert "class 1 has no training images" in message and "counted as 1" in message and "\n" not in message
    with pytest.warns(UserWarning, match="classes 0, 2 have no training images"):
        build_loss("ce(weight=balanced)", 3, class_counts=[0, 4, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_loss("cb", 3, class_counts=[10, 1, 5])


def test_ce_on_float_targets_says_once_that_it_computes_bce():
    loss = build_loss("ce", 3, "segmentation")
    z, y = torch.randn(2, 3, 4, 4), torch.randint(0, 2, (2, 3, 4, 4)).float()
    with pytest.warns(UserWarning) as record:
        first = loss(z, y)
        loss(z, y)
    assert len(record) == 1 and "per-channel binary cross-entropy" in str(record[0].message)
    assert first.item() == pytest.approx(build_loss("bce", 3, "segmentation")(z, y).item(), rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(z, y.argmax(1))


def test_metrics_read_an_n_1_h_w_mask_like_n_h_w():
    z, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    a, b = TaskMetrics("segmentation", 3), TaskMetrics("segmentation", 3)
    a.update(z, y)
    b.update(z, y.unsqueeze(1))
    assert a.compute()["confusion_matrix"] == b.compute()["confusion_matrix"]
