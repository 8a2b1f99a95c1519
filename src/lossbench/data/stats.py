"""``lossbench data stats``: what a config's data looks like before any training.

Images per split, class counts and proportions (for segmentation the pixel
share of each class, and the number of objects of each class when the source
knows where its objects are, as ``fashion_mnist_scenes`` does), per-channel
mean / std of the training images, the range of original image sizes, and a
class-distribution bar chart PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lossbench.config import Experiment
from lossbench.data import PreparedSplits, count_classes, auto_mean_std, prepare_splits


def _size_range(samples) -> str:
    sizes = [s for s in getattr(samples, "sizes", []) if s and s[0] > 0]
    if not sizes:
        return "unknown"
    w = [s[0] for s in sizes]
    h = [s[1] for s in sizes]
    return f"{min(w)}-{max(w)} x {min(h)}-{max(h)} (w x h)"


def object_counts(samples, num_classes: int) -> list[int] | None:
    """Objects of each class in a split, for sources that place objects (None otherwise)."""
    count = getattr(samples, "object_counts", None)
    return count(num_classes) if callable(count) else None


def split_counts(prepared: PreparedSplits) -> dict[str, list[int]]:
    """Class counts of each split present."""
    out = {"train": prepared.class_counts}
    for split in ("val", "test"):
        samples = getattr(prepared, split)
        if samples is not None:
            out[split] = count_classes(samples, len(prepared.class_names))
    return out


def plot_distribution(names: list[str], counts: dict[str, list[int]], title: str, path: Path) -> Path:
    """Grouped bar chart of class counts per split, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(names))
    width = 0.8 / len(counts)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 2), 3.5))
    for j, (split, c) in enumerate(counts.items()):
        ax.bar(x + (j - (len(counts) - 1) / 2) * width, c, width, label=split)
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def data_stats(exp: Experiment, plot_path: Path) -> list[str]:
    """Lines of the stats report of one experiment's data; writes the bar chart to ``plot_path``."""
    prepared = prepare_splits(exp)
    unit = "pixels" if exp.task == "segmentation" else "images"
    lines = [f"{exp.name}: source {exp.data.source}, {exp.task}, {len(prepared.class_names)} classes"]
    counts = split_counts(prepared)
    for split, c in counts.items():
        samples = getattr(prepared, split)
        total = max(sum(c), 1)
        lines.append(f"  {split}: {len(samples)} images, original sizes {_size_range(samples)}")
        objects = object_counts(samples, len(prepared.class_names))
        for k, (name, n) in enumerate(zip(prepared.class_names, c)):
            line = f"    {name:<20} {n:>10} {unit}  {100 * n / total:5.1f}%"
            lines.append(line + (f"  {objects[k]:>7} objects" if objects else ""))
    mean, std = auto_mean_std(exp, prepared)
    lines.append("  train mean " + ", ".join(f"{m:.4f}" for m in mean) + "; std " + ", ".join(f"{s:.4f}" for s in std))
    if prepared.generated_val:
        lines.append(f"  val: stratified split of train (val_fraction {exp.data.val_fraction}, seed {exp.seed})")
    plot_distribution(prepared.class_names, counts, f"{exp.name}: class distribution ({unit})", plot_path)
    lines.append(f"  class-distribution chart: {plot_path}")
    return lines
