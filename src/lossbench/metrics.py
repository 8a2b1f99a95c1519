"""Metrics accumulated over a whole evaluation set, never averaged per batch.

One confusion matrix accumulates every prediction (summed across DDP ranks
when computed); all figures derive from it:

classification: accuracy, balanced accuracy (mean per-class recall), macro-F1,
per-class recall, quadratic weighted kappa (Cohen 1968), and the expected
calibration error (15 equal-width bins, Guo et al. 2017) from softmax
confidences; segmentation: per-class IoU = TP / (TP + FP + FN), mean IoU,
per-class Dice = 2TP / (2TP + FP + FN), mean Dice, pixel accuracy, and the
foreground mean IoU ``fg_miou``: the mean IoU of the classes other than
background (class 0 of an index mask).
Classes with an empty denominator (absent from both target and prediction)
are left out of the means rather than counted as 0 or 1.

Binary and multi-label segmentation (float targets shaped like the logits,
sigmoid outputs thresholded at 0.5) accumulate per-channel TP / FP / TN / FN
instead; IoU and Dice are then those of each channel's foreground, and every
channel is a foreground class, so ``fg_miou`` equals ``miou`` (for one channel,
its IoU). A one-channel sigmoid model and a 2-class softmax model making the
same prediction thus have the same ``fg_miou``, while their ``miou`` differ
(the softmax one also averages in the background's IoU).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from lossbench.contract import IGNORE_INDEX, TASKS
from lossbench.errors import UserError
from lossbench.losses.common import canonical_target, is_sigmoid_target

MAIN_METRIC = {"classification": "balanced_accuracy", "segmentation": "miou"}


@dataclass(frozen=True)
class MetricFacts:
    """What the code around a metric must know about it, written once (:data:`METRICS`).

    ``name``: its key in :meth:`TaskMetrics.compute` and metrics.csv (``val_<name>``);
    ``tasks``: the tasks whose runs measure it; ``higher_is_better``: whether the
    best epoch, early stopping and tuning maximise it; ``per_class``: one value per
    class (columns ``val_<name>_<k>``); ``display``: its name for people;
    ``value_range``: the interval its values lie in.
    """

    name: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    per_class: bool
    display: str
    value_range: tuple[float, float] = (0.0, 1.0)


CLASSIFICATION, SEGMENTATION = ("classification",), ("segmentation",)
#: every metric a run records, in the order reports show them (per task)
METRICS: tuple[MetricFacts, ...] = (
    MetricFacts("balanced_accuracy", CLASSIFICATION, True, False, "balanced accuracy"),
    MetricFacts("accuracy", CLASSIFICATION, True, False, "accuracy"),
    MetricFacts("macro_f1", CLASSIFICATION, True, False, "macro-F1"),
    MetricFacts("quadratic_kappa", CLASSIFICATION, True, False, "quadratic weighted kappa", (-1.0, 1.0)),
    MetricFacts("ece", CLASSIFICATION, False, False, "expected calibration error"),
    MetricFacts("many_shot_accuracy", CLASSIFICATION, True, False, "many-shot accuracy"),
    MetricFacts("medium_shot_accuracy", CLASSIFICATION, True, False, "medium-shot accuracy"),
    MetricFacts("few_shot_accuracy", CLASSIFICATION, True, False, "few-shot accuracy"),
    MetricFacts("recall", CLASSIFICATION, True, True, "recall"),
    MetricFacts("miou", SEGMENTATION, True, False, "mIoU"),
    MetricFacts("dice", SEGMENTATION, True, False, "mean Dice"),
    MetricFacts("pixel_accuracy", SEGMENTATION, True, False, "pixel accuracy"),
    MetricFacts("fg_miou", SEGMENTATION, True, False, "foreground mIoU"),
    MetricFacts("iou", SEGMENTATION, True, True, "IoU"),
    MetricFacts("per_class_dice", SEGMENTATION, True, True, "Dice"),
    MetricFacts("loss", TASKS, False, False, "loss", (0.0, math.inf)),
)
_BY_NAME = {m.name: m for m in METRICS}


def metric_facts(name: str) -> MetricFacts:
    """The facts of the metric called ``name``; a UserError listing the known metrics otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r}; known metrics: {', '.join(_BY_NAME)}") from None


def task_metrics(task: str) -> list[MetricFacts]:
    """The metrics runs of ``task`` record, in the table's order."""
    return [m for m in METRICS if task in m.tasks]


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, float("nan")))


def _nanmean(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def per_class_figures(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class support, predictions, precision, recall, F1 (= Dice) and IoU from float64 TP / FP / FN counts.

    A figure whose denominator is empty is NaN.
    """
    return {
        "support": tp + fn,
        "predicted": tp + fp,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
    }


def confusion_figures(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`per_class_figures` of a confusion matrix (rows = true class, columns = predicted)."""
    cm = cm.double()
    tp = cm.diag()
    return per_class_figures(tp, cm.sum(0) - tp, cm.sum(1) - tp)


def channel_figures(stats: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`per_class_figures` of sigmoid channels from their (tp, fp, tn, fn, support) rows: each foreground's."""
    stats = stats.double().reshape(-1, 5)
    return per_class_figures(stats[:, 0], stats[:, 1], stats[:, 3])


def metrics_from_confusion(cm: torch.Tensor, task: str) -> dict[str, float | list[float]]:
    """Every metric of a task from a confusion matrix (rows = true class, columns = predicted)."""
    cm = cm.double()
    figures = confusion_figures(cm)
    total = cm.sum()
    out: dict[str, float | list[float]] = {}
    accuracy = float(cm.diag().sum() / total) if total > 0 else float("nan")
    if task == "classification":
        recall = figures["recall"]
        out["accuracy"] = accuracy
        out["balanced_accuracy"] = _nanmean(recall)
        out["macro_f1"] = _nanmean(figures["f1"])
        out["quadratic_kappa"] = quadratic_weighted_kappa(cm)
        out["recall"] = recall.tolist()
    else:
        iou, dice = figures["iou"], figures["f1"]
        out["pixel_accuracy"] = accuracy
        out["miou"] = _nanmean(iou)
        out["fg_miou"] = foreground_miou(iou)
        out["dice"] = _nanmean(dice)
        out["iou"] = iou.tolist()
        out["per_class_dice"] = dice.tolist()
    return out


def foreground_miou(iou: torch.Tensor) -> float:
    """Mean IoU over the classes of an index mask except background (class 0); absent classes left out."""
    return _nanmean(iou[1:])


SHOT_METRICS = ("many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy")  # computed by shot_accuracies


def shot_accuracies(recall: list[float], train_counts: list[int], many: int = 100, few: int = 20
                    ) -> dict[str, float]:
    """Mean per-class recall over many-, medium- and few-shot classes by their training image count.

    The long-tail convention (Liu et al. 2019, OLTR; Kang et al. 2020): many-shot
    classes have more than ``many`` training images, few-shot fewer than ``few``,
    medium-shot the rest (``few`` to ``many`` inclusive). A group with no class,
    or whose classes are all absent from the evaluated set, is NaN.
    """
    if len(recall) != len(train_counts):
        raise ValueError(f"{len(recall)} per-class recalls but {len(train_counts)} class counts")
    groups: dict[str, list[float]] = {name: [] for name in SHOT_METRICS}
    for r, n in zip(recall, train_counts):
        name = SHOT_METRICS[0] if n > many else SHOT_METRICS[2] if n < few else SHOT_METRICS[1]
        groups[name].append(r)
    return {name: _nanmean(torch.tensor(vals, dtype=torch.float64)) for name, vals in groups.items()}


def quadratic_weighted_kappa(cm: torch.Tensor) -> float:
    """Cohen's kappa with quadratic disagreement weights (i - j)^2 / (K - 1)^2 from a confusion matrix."""
    cm = cm.double()
    k = cm.shape[0]
    total = cm.sum()
    if k < 2 or total == 0:
        return float("nan")
    idx = torch.arange(k, dtype=torch.float64)
    w = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    expected = cm.sum(1, keepdim=True) * cm.sum(0, keepdim=True) / total
    den = (w * expected).sum()
    return float(1 - (w * cm).sum() / den) if den > 0 else float("nan")


def metrics_from_stat_scores(stats: torch.Tensor) -> dict[str, float | list[float]]:
    """Segmentation metrics of sigmoid channels from per-channel (tp, fp, tn, fn, support) rows."""
    stats = stats.double().reshape(-1, 5)
    tp, fp, tn, fn = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    figures = channel_figures(stats)
    iou, dice = figures["iou"], figures["f1"]
    total = (tp + fp + tn + fn).sum()
    return {
        "pixel_accuracy": float((tp + tn).sum() / total) if total > 0 else float("nan"),
        "miou": _nanmean(iou),
        "fg_miou": _nanmean(iou),
        "dice": _nanmean(dice),
        "iou": iou.tolist(),
        "per_class_dice": dice.tolist(),
    }


def normalized_confusion(cm: torch.Tensor) -> torch.Tensor:
    """Rows normalised over the true class (sklearn's ``normalize='true'``); empty rows stay 0."""
    cm = cm.double()
    return cm / cm.sum(1, keepdim=True).clamp(min=1)


#: float64 K x K matrices alive at once while the metrics are computed from a K x K confusion matrix (its copies,
#: the kappa's weights and expectations)
CONFUSION_COPIES = 6


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (``MemAvailable``), or None where that cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_confusion_memory(num_classes: int) -> None:
    """Refuse, with the numbers, a class count whose confusion matrix (and the metrics computed from it) would not
    fit in the memory available."""
    need = CONFUSION_COPIES * 8 * max(num_classes, 2) ** 2
    free = available_memory()
    if free is not None and need > free:
        raise UserError(f"{num_classes} classes: their {num_classes} x {num_classes} confusion matrix and the metrics "
                        f"computed from it need {need / 2**30:.1f} GB of memory, {free / 2**30:.1f} GB is available; "
                        "check data.num_classes (or the labels it is inferred from), or choose fewer with data.classes")


def summed_over_ranks(counts: torch.Tensor) -> torch.Tensor:
    """``counts`` summed over the DDP ranks (each rank holds its shard's); itself outside DDP."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return counts
    counts = counts.clone()
    dist.all_reduce(counts)
    return counts


class ConfusionCounts(torch.nn.Module):
    """A K x K confusion matrix (rows = true class, columns = predicted); targets at ``ignore_index`` not counted."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.register_buffer("counts", torch.zeros(num_classes, num_classes, dtype=torch.long), persistent=False)

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != self.ignore_index
        predicted, target = predicted[keep].long(), target[keep].long()
        k = self.num_classes
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
            raise ValueError(f"targets must be class indices in [0, {k}) or {self.ignore_index} (ignored)")
        self.counts += torch.bincount(target * k + predicted, minlength=k * k).reshape(k, k)

    def compute(self) -> torch.Tensor:
        return summed_over_ranks(self.counts)

    def reset(self) -> None:
        self.counts.zero_()


class CalibrationBins(torch.nn.Module):
    """Top-1 confidence and correctness in equal-width bins over [0, 1]; ``compute`` gives the (l1) expected
    calibration error sum_b |acc_b - conf_b| n_b / n (Guo et al. 2017), with torchmetrics' binning (a
    confidence of exactly 1 has a bin of its own)."""

    def __init__(self, bins: int, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("edges", torch.linspace(0, 1, bins + 1), persistent=False)
        self.register_buffer("sums", torch.zeros(3, bins + 1, dtype=torch.float64), persistent=False)

    def update(self, probabilities: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != self.ignore_index
        confidence, predicted = probabilities[keep].max(dim=1)
        correct = predicted.eq(target[keep]).double()
        index = torch.bucketize(confidence, self.edges, right=True) - 1
        for row, values in enumerate((torch.ones_like(correct), confidence.double(), correct)):
            self.sums[row].scatter_add_(0, index, values)

    def compute(self) -> torch.Tensor:
        count, confidence, correct = summed_over_ranks(self.sums)
        occupied = count.clamp(min=1)
        return ((correct / occupied - confidence / occupied).abs() * count / count.sum()).sum()

    def reset(self) -> None:
        self.sums.zero_()


class ChannelCounts(torch.nn.Module):
    """Per-channel (tp, fp, tn, fn, support) of sigmoid outputs thresholded at 0.5; entries of a target at
    ``ignore_index`` not counted. ``update`` takes N x C probabilities and 0 / 1 targets."""

    def __init__(self, channels: int, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("counts", torch.zeros(channels, 4, dtype=torch.long), persistent=False)

    def update(self, probabilities: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != self.ignore_index
        predicted, positive = (probabilities > 0.5) & keep, (target == 1) & keep
        negative = (target == 0) & keep
        self.counts += torch.stack([(predicted & positive).sum(0), (predicted & negative).sum(0),
                                    (~predicted & negative).sum(0), (~predicted & positive).sum(0)], dim=1)

    def compute(self) -> torch.Tensor:
        counts = summed_over_ranks(self.counts)
        return torch.cat([counts, counts[:, :1] + counts[:, 3:]], dim=1)

    def reset(self) -> None:
        self.counts.zero_()


class TaskMetrics(torch.nn.Module):
    """Accumulates predictions for a task over a whole set; ``compute()`` gives all metrics.

    Index targets feed a confusion matrix (and, for classification, a
    calibration-error accumulator); float targets shaped like the logits feed
    per-channel stat scores. All are counts, summed across DDP ranks when computed.
    """

    def __init__(self, task: str, num_classes: int, ignore_index: int = IGNORE_INDEX, calibration_bins: int = 15) -> None:
        super().__init__()
        check_confusion_memory(num_classes)
        self.task = task
        self.num_classes = num_classes
        self.confusion = ConfusionCounts(max(num_classes, 2), ignore_index)
        self.calibration = (CalibrationBins(calibration_bins, ignore_index)
                            if task == "classification" and num_classes >= 2 else None)
        self.channels = ChannelCounts(num_classes, ignore_index)
        self._sigmoid = False

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if isinstance(logits, (list, tuple)):
            logits = logits[-1]
        logits = logits.float()
        target = canonical_target(logits, target)  # an N x 1 x H x W integer mask reads as N x H x W
        if is_sigmoid_target(logits, target) and logits.shape[1] > 1:
            self._sigmoid = True
            c = logits.shape[1]
            self.channels.update(torch.sigmoid(logits).movedim(1, -1).reshape(-1, c),
                                 target.movedim(1, -1).reshape(-1, c).long())
            return
        if logits.shape[1] == 1:
            self._sigmoid = True
            self.channels.update(torch.sigmoid(logits).reshape(-1, 1), target.reshape(-1, 1).long())
            return
        self.confusion.update(logits.argmax(1), target.long())
        if self.calibration is not None:
            self.calibration.update(torch.softmax(logits, 1), target.long())

    @property
    def sigmoid_outputs(self) -> bool:
        """Whether the updates so far were sigmoid channels (per-channel counts, no confusion matrix)."""
        return self._sigmoid

    def reset(self) -> None:
        self.confusion.reset()
        self.channels.reset()
        if self.calibration is not None:
            self.calibration.reset()

    def compute(self) -> dict[str, float | list[float]]:
        if self._sigmoid:
            return metrics_from_stat_scores(self.channels.compute().cpu())
        cm = self.confusion.compute().cpu()
        out = metrics_from_confusion(cm, self.task)
        if self.calibration is not None:  # nothing counted (every step of an epoch skipped as non-finite): nan
            out["ece"] = float(self.calibration.compute()) if int(cm.sum()) > 0 else float("nan")
        out["confusion_matrix"] = cm.tolist()
        return out
