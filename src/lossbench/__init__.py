"""lossbench: compare loss functions, models and recipes for class-imbalanced image data.

From Python (the documentation's "Getting started", docs/examples/use_from_python.py)::

    import lossbench

    loss = lossbench.build_loss("focal(gamma=2) + 0.5 * dice", num_classes=3, task="segmentation")
    model = lossbench.build_model("unet", num_classes=3, encoder="resnet34")
    run = lossbench.train("recipes/example.yaml", epochs=1)
    predictions = lossbench.load_run(run.folder).predict(["photo.jpg"])

``import lossbench`` is cheap: torch and the rest load when a function first
needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lossbench._version import __version__

if TYPE_CHECKING:
    from lossbench.api import SweepResult, TrainedRun, build_loss, build_model, load_run, sweep, train
    from lossbench.config import Experiment
    from lossbench.errors import UserError

#: public name -> the module that defines it, imported on first use
_LAZY = {
    "build_loss": "lossbench.api", "build_model": "lossbench.api", "train": "lossbench.api",
    "sweep": "lossbench.api", "load_run": "lossbench.api", "TrainedRun": "lossbench.api",
    "SweepResult": "lossbench.api", "Experiment": "lossbench.config", "UserError": "lossbench.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lossbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
