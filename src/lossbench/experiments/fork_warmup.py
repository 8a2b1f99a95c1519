"""Imported by the cell server only (forked_cells.PRELOAD): what every cell would otherwise do again, done once per
sweep in the server, whose state each forked cell inherits.

- One confusion matrix drawn loads matplotlib's fonts and glyph cache (about 0.3 s on an idle machine, 2 s on a
  busy one: a sixth of a quickstart segmentation cell).
- The installed packages' lossbench entry points are read and loaded (about 0.013 s idle), as a cell reads them
  (plugins.load_entry_points): a sweep's cells see the plugins installed when it started, as its plan did. A
  plugin that fails to load is left for each cell to report in its own one-line error.
"""

import torch

from lossbench.errors import UserError
from lossbench.plots import plot_confusion
from lossbench.plugins import load_entry_points

plot_confusion(torch.eye(2), ["a", "b"], "warm-up")
try:
    load_entry_points()
except UserError:
    pass
