"""Using a finished run: load it (:mod:`.run`), and one module per command on it.

- :func:`load_run` rebuilds a run's network from its folder; the
  :class:`LoadedRun` predicts on tensors or images through the data layer.
- :func:`evaluate_run` (``lossbench eval``, :mod:`.evaluate`) measures a
  checkpoint on a split of the run's data or of another dataset.
- :func:`predict_paths` (``lossbench predict``, :mod:`.predict`) writes
  classes or masks and overlays for images and folders.
- :func:`export_run` (``lossbench export``, :mod:`.export`) writes ONNX or
  TorchScript, checked against PyTorch.
"""

from lossbench.engine.inference.evaluate import evaluate_run
from lossbench.engine.inference.export import ExportResult, export_run
from lossbench.engine.inference.predict import image_files, predict_paths
from lossbench.engine.inference.run import LoadedRun, Predictions, load_run, run_normalization

__all__ = ["ExportResult", "LoadedRun", "Predictions", "evaluate_run", "export_run", "image_files", "load_run",
           "predict_paths", "run_normalization"]
