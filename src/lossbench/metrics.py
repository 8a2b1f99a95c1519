"""Metrics accumulated over a whole evaluation set, never averaged per batch.

One torchmetrics ``MulticlassConfusionMatrix`` accumulates every prediction
(and syncs across DDP ranks); all figures derive from it:

classification: accuracy, balanced accuracy (mean per-class recall), macro-F1,
per-class recall; segmentation: per-class IoU = TP / (TP + FP + FN), mean IoU,
per-class Dice = 2TP / (2TP + FP + FN), mean Dice, pixel accuracy.
Classes with an empty denominator (absent from both target and prediction)
are left out of the means rather than counted as 0 or 1.
"""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from lossbench.losses.common import is_sigmoid_target

MAIN_METRIC = {"classification": "balanced_accuracy", "segmentation": "miou"}


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, float("nan")))


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def metrics_from_confusion(cm: torch.Tensor, task: str) -> dict[str, float | list[float]]:
    """Every metric of a task from a confusion matrix (rows = true class, columns = predicted)."""
    cm = cm.double()
    tp = cm.diag()
    true = cm.sum(1)
    pred = cm.sum(0)
    total = cm.sum()
    fp, fn = pred - tp, true - tp
    out: dict[str, float | list[float]] = {}
    accuracy = float(tp.sum() / total) if total > 0 else float("nan")
    if task == "classification":
        recall = _ratio(tp, true)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        out["accuracy"] = accuracy
        out["balanced_accuracy"] = _nanmean(recall)
        out["macro_f1"] = _nanmean(f1)
        out["recall"] = recall.tolist()
    else:
        iou = _ratio(tp, tp + fp + fn)
        dice = _ratio(2 * tp, 2 * tp + fp + fn)
        out["pixel_accuracy"] = accuracy
        out["miou"] = _nanmean(iou)
        out["dice"] = _nanmean(dice)
        out["iou"] = iou.tolist()
        out["per_class_dice"] = dice.tolist()
    return out


def normalized_confusion(cm: torch.Tensor) -> torch.Tensor:
    """Rows normalised over the true class (sklearn's ``normalize='true'``); empty rows stay 0."""
    cm = cm.double()
    return cm / cm.sum(1, keepdim=True).clamp(min=1)


class TaskMetrics(torch.nn.Module):
    """Accumulates predictions for a task over a whole set; ``compute()`` gives all metrics."""

    def __init__(self, task: str, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        self.task = task
        self.num_classes = num_classes
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if isinstance(logits, (list, tuple)):
            logits = logits[-1]
        if is_sigmoid_target(logits, target):
            raise NotImplementedError("metrics for multi-label (sigmoid) targets are not implemented yet")
        self.confusion.update(logits.argmax(1), target.long())

    def reset(self) -> None:
        self.confusion.reset()

    def compute(self) -> dict[str, float | list[float]]:
        cm = self.confusion.compute().cpu()
        out = metrics_from_confusion(cm, self.task)
        out["confusion_matrix"] = cm.tolist()
        return out
