"""``lossbench export``: a finished run's network as ONNX or TorchScript, checked against PyTorch.

Writes the file plus ``export.json`` with what a deployment needs: the
input's shape and every preprocessing step from an image file to it (the
data layer's own decoding and evaluation transform, written out by
:func:`lossbench.data.decode.decoding_steps` and
:func:`lossbench.data.transforms.evaluation_steps`), and what the outputs mean. The export is run (onnxruntime /
``torch.jit.load``) on a batch of another size than the export example and
compared with PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lossbench.engine import runfolder
from lossbench.data import resolve_config
from lossbench.data.decode import decoding_steps
from lossbench.data.transforms import evaluation_steps
from lossbench.engine.inference.run import LoadedRun, load_run
from lossbench.errors import UserError


@dataclass
class ExportResult:
    """Where the exported network went and how far its outputs are from PyTorch's (None if not checked)."""

    path: Path
    max_abs_diff: float | None


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, probe: torch.Tensor, expected: torch.Tensor,
                 path: Path, check: bool, log: Callable[[str], None]) -> float | None:
    """Write ``model`` as ONNX to ``path``; max |onnxruntime - PyTorch| on ``probe`` (None when not checked)."""
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript: pip install 'lossbench[export]'") from None
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, dynamo=True,
                          external_data=False, verbose=False)
    tmp.replace(path)
    if not check:
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        log("onnxruntime not installed: the export was not checked (pip install 'lossbench[export]')")
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": probe.numpy()})[0]
    return float(np.abs(got - expected.numpy()).max())


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, probe: torch.Tensor, expected: torch.Tensor,
                        path: Path, check: bool) -> float | None:
    """Write ``model`` traced as TorchScript to ``path``; max |TorchScript - PyTorch| on ``probe`` (or None)."""
    # torch.jit is deprecated in favour of torch.export, but TorchScript is still what C++ / mobile
    # runtimes load; the warnings say nothing the user can act on here.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        runfolder.atomic_write_bytes(path, buf.getvalue())
        return float((torch.jit.load(str(path))(probe) - expected).abs().max()) if check else None


def preprocessing_steps(run: LoadedRun) -> list[dict]:
    """Every step from an image file to the exported network's input, as ``lossbench predict`` takes them:
    the data layer's decoding and evaluation transform, then the input's layout."""
    channels, size = int(resolve_config(run.exp).channels), run.exp.data.image_size
    order = "R, G, B" if channels == 3 else "one gray channel"
    return [*decoding_steps(channels, size), *evaluation_steps(run.mean, run.std),
            {"step": "layout", "how": f"float32 N x {channels} x {size} x {size} (NCHW), channels {order}, as the "
                                      "input named 'images'"}]


def export_run(
    run_dir: str | Path,
    fmt: str = "onnx",
    out: str | Path | None = None,
    checkpoint: str = "auto",
    check: bool = True,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export a run's network (eval mode, CPU, dynamic batch) as ONNX or TorchScript.

    With ``check`` the exported file is run (onnxruntime / ``torch.jit.load``)
    on a random batch of another size than the export example and compared
    with PyTorch; a difference above 1e-4 (times the largest output, when
    that exceeds 1) is an error. ``checkpoint`` ``auto``: best.pt unless it was chosen on the test split,
    else last.pt; export.json and the log line say which.
    """
    if fmt not in ("onnx", "torchscript"):
        raise UserError(f"--format {fmt!r}: use onnx or torchscript")
    run = load_run(run_dir, checkpoint, "cpu")
    model, exp = run.model, run.exp
    size, channels = exp.data.image_size, exp.model.in_channels
    path = Path(out) if out else run.run_dir / "export" / ("model.onnx" if fmt == "onnx" else "model.torchscript.pt")
    runfolder.check_writable_folder(path.parent, "choose another --out")  # before the (slow) export
    example = torch.randn(2, channels, size, size)
    probe = torch.randn(3, channels, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(probe)
    if fmt == "onnx":
        diff = _export_onnx(model, example, probe, expected, path, check, log)
    else:
        diff = _export_torchscript(model, example, probe, expected, path, check)
    scale = max(1.0, float(expected.abs().max()))  # logits in the hundreds carry float32 rounding of ~1e-5
    if diff is not None and diff > 1e-4 * scale:
        raise UserError(f"{path}: exported outputs differ from PyTorch by {diff:.2e} (> 1e-4 x output scale "
                        f"{scale:.3g}); the export is not trustworthy, please report this")
    runfolder.write_json(path.parent / "export.json", {
        "file": path.name, "format": fmt, "task": exp.task, "model": exp.model.name, "checkpoint": run.checkpoint.name,
        "checkpoint_chosen_on": run.chosen_on, "epoch": run.epoch,
        "input": {"name": "images", "shape": ["batch", channels, size, size],
                                      "scale": "pixel / 255", "mean": run.mean, "std": run.std,
                                      "preprocessing": preprocessing_steps(run)},
        "output": {"name": "logits", "shape": ["batch", len(run.class_names)]
                   + ([size, size] if exp.task == "segmentation" else []), **run.output_description()},
        "class_names": run.class_names,
    })
    checked = f"max |exported - PyTorch| = {diff:.2e}" if diff is not None else "not checked"
    log(f"{exp.name}: {fmt} of {run.checkpoint_note} -> {path} ({checked})")
    return ExportResult(path, diff)
