"""Imported by the tests' fork servers (cli_helper.PRELOAD): one confusion matrix drawn in the server loads
matplotlib's fonts and glyph cache there once (about 0.3 s), not again in every run forked from it."""

import torch

from lossbench.plots import plot_confusion

plot_confusion(torch.eye(2), ["a", "b"], "warm-up")
