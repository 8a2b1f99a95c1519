"""Imported by the cell server only (forked_cells.PRELOAD): one confusion matrix drawn there loads matplotlib's
fonts and glyph cache once per sweep, not again at the end of every cell forked from it (about 0.3 s on an idle
machine, 2 s on a busy one: a sixth of a quickstart segmentation cell)."""

import torch

from lossbench.plots import plot_confusion

plot_confusion(torch.eye(2), ["a", "b"], "warm-up")
