"""The figures of a sweep report (PNG bytes): class counts, training curves, confusion matrices, per-class
bars and segmentation examples, each of the report's epoch and averaged or summed over a configuration's seeds."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.contract import IGNORE_INDEX
from lossbench.engine import runfolder
from lossbench.experiments.report_data import SeedGroup, row_value
from lossbench.experiments.report_metrics import PER_CLASS_FIGURE, facts_of
from lossbench.experiments.stats import finite_mean
from lossbench.metrics import normalized_confusion
from lossbench.plots import figure_png, plt


def per_class_label(task: str) -> str:
    """``per-class recall`` / ``per-class IoU``: the per-class figure's metric by its display name."""
    return f"per-class {facts_of(PER_CLASS_FIGURE[task]).display}"


def finished_summaries(sweep_dir: Path, group: SeedGroup) -> list[dict[str, Any]]:
    out = []
    for r in group.done:
        path = sweep_dir / r["cell"] / "summary.json"
        if path.is_file():
            out.append(runfolder.read_summary(path.parent))
    return out


def _curves(sweep_dir: Path, group: SeedGroup, keys: list[str]) -> dict[str, np.ndarray]:
    """Per-epoch curves of ``keys`` averaged over the group's seeds (up to the shortest run)."""
    runs = []
    for r in group.done:
        path = sweep_dir / r["cell"] / "metrics.csv"
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                runs.append(list(csv.DictReader(f)))
    runs = [run for run in runs if run]
    if not runs:
        return {}
    n = min(len(run) for run in runs)
    return {k: finite_mean([[row_value(run[i], k) for i in range(n)] for run in runs]) for k in keys if k in runs[0][0]}


def evaluated_counts(summary: dict[str, Any]) -> list[int] | None:
    """Evaluated images per class (row sums of a confusion matrix); None for sigmoid outputs, which have none."""
    cm = summary.get("best_confusion_matrix") or summary.get("final_confusion_matrix")
    return None if cm is None else [int(sum(row)) for row in cm]


def plot_class_counts(summary: dict[str, Any], title: str, split: str = "validation") -> bytes:
    names = summary["class_names"]
    train = summary["class_counts"]
    val = evaluated_counts(summary)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.2))
    ax.bar(x - 0.2, train, 0.4, label="train")
    if val is not None:
        ax.bar(x + 0.2, val, 0.4, label=split)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("pixels" if summary["task"] == "segmentation" else "images")
    ax.set_yscale("log" if max(train) > 20 * max(1, min(train)) else "linear")
    ax.set_title(title)
    ax.legend()
    return figure_png(fig, crop=True)


def plot_curves(sweep_dir: Path, groups: list[SeedGroup], main: str) -> bytes:
    """Loss and ``main`` per epoch, train dashed and evaluated split solid; empty when no run has a curve."""
    keys = ["train_loss", "val_loss", f"train_{main}", f"val_{main}"]
    curves = [(i, g, _curves(sweep_dir, g, keys)) for i, g in enumerate(groups)]
    curves = [(i, g, c) for i, g, c in curves if "val_loss" in c]
    if not curves:
        return b""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, g, c in curves:
        colour = f"C{i % 10}"
        epochs = np.arange(1, len(c["val_loss"]) + 1)
        for ax, name in zip(axes, ("loss", main)):
            if f"train_{name}" in c:
                ax.plot(epochs, c[f"train_{name}"], "--", color=colour)
            if f"val_{name}" in c:  # only the evaluated epochs (eval_every), marked when some were skipped
                values = c[f"val_{name}"]
                seen = np.isfinite(values)
                ax.plot(epochs[seen], values[seen], "-" if seen.all() else "-o", color=colour, label=g.label)
    axes[0].set_title("loss (dashed: train, solid: evaluated split)")
    axes[1].set_title(f"{main} (dashed: train, solid: evaluated split)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return figure_png(fig)


def summed_confusion(sweep_dir: Path, group: SeedGroup, epoch: str) -> tuple[np.ndarray, list[str]] | None:
    """The group's ``<epoch>_confusion_matrix`` summed over its seeds, with the class names; None without one."""
    sums = [s for s in finished_summaries(sweep_dir, group) if s.get(f"{epoch}_confusion_matrix") is not None]
    if not sums:
        return None
    return sum(np.asarray(s[f"{epoch}_confusion_matrix"], dtype=float) for s in sums), sums[0]["class_names"]


def plot_confusions(sweep_dir: Path, groups: list[SeedGroup], epoch: str) -> bytes:
    mats = []
    for g in groups:
        found = summed_confusion(sweep_dir, g, epoch)
        if found is not None:
            mats.append((g.label, normalized_confusion(torch.tensor(found[0])).numpy(), found[1]))
    if not mats:
        return b""
    k = len(mats[0][2])
    side = max(2.6, 0.35 * k + 1.5)
    fig, axes = plt.subplots(1, len(mats), figsize=(side * len(mats), side + 0.6), squeeze=False)
    for ax, (label, m, names) in zip(axes[0], mats):
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(label, fontsize=8)
        ax.set_xticks(range(k), names, rotation=90, fontsize=6)
        ax.set_yticks(range(k), names, fontsize=6)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if m[i, j] > 0.5 else "black")
    axes[0][0].set_ylabel("true")
    fig.supxlabel("predicted", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def per_class_values(sweep_dir: Path, group: SeedGroup, epoch: str) -> tuple[list[float], list[str]] | None:
    """Per-class recall (classification) or IoU (segmentation) at ``epoch``, mean over seeds, and class names."""
    key = PER_CLASS_FIGURE[group.task]
    sums = finished_summaries(sweep_dir, group)
    if not sums:
        return None
    names = sums[0]["class_names"]
    values = [[s[epoch].get(f"val_{key}_{i}", math.nan) for i in range(len(names))] for s in sums]
    return finite_mean(values).tolist(), names


def plot_per_class(sweep_dir: Path, groups: list[SeedGroup], epoch: str) -> bytes:
    bars = [(g.label, *found) for g in groups if (found := per_class_values(sweep_dir, g, epoch)) is not None]
    if not bars:
        return b""
    names = bars[0][2]
    x = np.arange(len(names))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 3.6))
    for i, (label, vals, _) in enumerate(bars):
        ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=label)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(per_class_label(groups[0].task))
    ax.legend(fontsize=7)
    return figure_png(fig, crop=True)


def _predict_examples(run_dir: Path, count: int, checkpoint: str) -> tuple[list, list, list]:
    """Evaluated images, true masks and predicted masks of a run's ``checkpoint`` (first ``count``)."""
    from lossbench.data import build_data
    from lossbench.engine.inference import load_run

    run = load_run(run_dir, checkpoint, "cpu", plugins=False)  # a report imports no code a config names
    data = build_data(run.exp)
    model = run.model
    images, masks, preds = [], [], []
    with torch.no_grad():
        for i in range(min(count, len(data.val))):
            image, mask = data.val[i]
            out = model(image.unsqueeze(0))
            out = out[-1] if isinstance(out, (list, tuple)) else out
            pred = out.argmax(1)[0] if out.shape[1] > 1 else (out[0, 0] > 0).long()
            shown = image[:3].permute(1, 2, 0).float()
            shown = (shown - shown.min()) / (shown.max() - shown.min()).clamp(min=1e-6)
            images.append(shown.numpy())
            masks.append(torch.as_tensor(mask).squeeze().long().numpy())
            preds.append(pred.numpy())
    return images, masks, preds


def plot_segmentation_examples(sweep_dir: Path, picks: list[tuple[str, SeedGroup]], epoch: str = "best",
                               count: int = 4) -> bytes:
    """Rows of image | true mask | each picked group's prediction (its first seed, at ``epoch``'s checkpoint)."""
    checkpoint = "best" if epoch == "best" else "last"
    panels = []
    for title, group in picks:
        if group.done:
            panels.append((title, *_predict_examples(sweep_dir / group.done[0]["cell"], count, checkpoint)))
    if not panels:
        return b""
    n = len(panels[0][1])
    masks = panels[0][2]
    fig, axes = plt.subplots(n, 2 + len(panels), figsize=(2 * (2 + len(panels)), 2 * n), squeeze=False)
    vmax = max(1, max(int(max(m.max(), p.max())) for _, _, ms, ps in panels for m, p in zip(ms, ps) if m.size))
    for i in range(n):
        axes[i][0].imshow(panels[0][1][i])
        axes[i][1].imshow(np.where(masks[i] == IGNORE_INDEX, 0, masks[i]), vmin=0, vmax=vmax, cmap="viridis",
                          interpolation="nearest")
        for j, (title, _, _, preds) in enumerate(panels):
            axes[i][2 + j].imshow(preds[i], vmin=0, vmax=vmax, cmap="viridis", interpolation="nearest")
            if i == 0:
                axes[0][2 + j].set_title(f"{title}: predicted", fontsize=8)
    axes[0][1].set_title("true mask", fontsize=8)
    axes[0][0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return figure_png(fig)
