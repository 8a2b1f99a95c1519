"""Figures shared by run folders and reports (matplotlib, no display needed)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lossbench.metrics import normalized_confusion  # noqa: E402

TIGHT_PAD_INCHES = 0.1  # the margin around a cropped figure: savefig's pad_inches default


def figure_png(fig, crop: bool = False) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards): written atomically or embedded by the caller.
    ``crop``: the image is cut to what the figure draws (labels included), the PNG ``bbox_inches="tight"`` gives
    byte for byte; the box is measured from the artists' extents, without the layout-only drawing that
    ``"tight"`` (and ``tight_layout``) does first, so a figure is drawn once (a fifth less time)."""
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(TIGHT_PAD_INCHES) if crop else None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches=box)
    plt.close(fig)
    return buf.getvalue()


def plot_confusion(cm: torch.Tensor, class_names: list[str], title: str = "") -> bytes:
    """Normalised confusion matrix (rows = true class, each row sums to 1) as PNG bytes."""
    norm = normalized_confusion(torch.as_tensor(cm)).numpy()
    k = len(class_names)
    side = max(3.5, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    else:  # too many cells to print their values: a colour scale reads them instead (a third of the drawing time)
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title or "normalized confusion matrix")
    return figure_png(fig, crop=True)  # every run writes one: tight_layout's extra drawing cost 40 % of a tiny run
