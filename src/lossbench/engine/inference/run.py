"""A finished run, loaded: its experiment, class names and network, and predictions on new inputs.

A run folder is enough (ARCHITECTURE.md): ``config.yaml`` rebuilds the model
and the data, ``summary.json`` names the classes and the kind of target the
run trained on, ``best.pt`` or ``last.pt`` holds the weights under
``"model"``, read with ``torch.load(weights_only=True)`` (by default best.pt,
unless it was chosen on the test split: :func:`choose_checkpoint`). New images go
through the data layer's own decoder and evaluation transform, so a
prediction sees exactly what evaluation saw.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from lossbench.config import Experiment, load_experiment
from lossbench.data import TargetKind, build_data, resolve_config
from lossbench.data.decode import BadFile, image_array, read_image
from lossbench.data.transforms import SampleTransform, normalization
from lossbench.engine.distributed import resolve_device
from lossbench.engine.selection import recorded_selection_split, selection_split
from lossbench.errors import UserError
from lossbench.models import build_model
from lossbench.models.weights import read_checkpoint
from lossbench.plugins import load_plugins, plugin_changes

#: what :meth:`LoadedRun.predict` takes: model-ready tensors, or images (files or PIL images)
Inputs = torch.Tensor | str | Path | Image.Image | Sequence[str | Path | Image.Image]


@dataclass
class Predictions:
    """What a run predicts for a batch of inputs.

    ``probabilities``: softmax over classes (N x K, or N x K x H x W), or
    per-channel sigmoid for binary / multi-label segmenters. ``labels``: the
    class index per image (N) or per pixel (N x H x W); for sigmoid channels a
    pixel is channel k's (label k + 1) when its probability is the highest
    and above 0.5, else background (0). ``label_names`` name the label values.
    """

    probabilities: torch.Tensor
    labels: torch.Tensor
    label_names: list[str]


@dataclass
class LoadedRun:
    """A run's experiment, class names and network with the checkpoint's weights, in eval mode.

    ``mean`` / ``std``: the normalisation it trained with; ``target``: what its
    outputs are; ``named_classes``: whether its class names say what the classes
    are, so other data can be matched to them by name (``split.json``);
    ``chosen_on``: the split best.pt was chosen on (None for last.pt, the final
    weights); ``why``: why this checkpoint, when it is not the one asked for.
    """

    run_dir: Path
    exp: Experiment
    class_names: list[str]
    model: nn.Module
    checkpoint: Path
    epoch: int | None
    mean: list[float] | None = None
    std: list[float] | None = None
    target: TargetKind = "label"
    named_classes: bool = True
    chosen_on: str | None = None
    why: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def checkpoint_note(self) -> str:
        """Which weights these are, in words: ``best.pt (epoch 3, chosen on the holdout split)``."""
        epoch = f"epoch {self.epoch}, " if self.epoch else ""
        what = f"chosen on the {self.chosen_on} split" if self.chosen_on else "the final weights"
        caution = "; its scores on the test split are optimistic" if self.chosen_on == "test" else ""
        return f"{self.checkpoint.name} ({epoch}{what}{caution}{'; ' + self.why if self.why else ''})"

    def preprocess(self, image: str | Path | Image.Image) -> torch.Tensor:
        """An image file or PIL image as the network saw its evaluation data (float C x S x S).

        The data layer's decoder (channels, JPEG draft, resize to
        ``data.image_size``) and evaluation transform (scaling, normalisation)
        do the work, so predictions agree with ``lossbench eval``.
        """
        channels, size = int(resolve_config(self.exp).channels), self.exp.data.image_size
        try:
            if isinstance(image, Image.Image):
                array = image_array(image, channels, size)
            else:
                array, _ = read_image(Path(image), channels, size)
        except BadFile as exc:
            where = str(image) if not isinstance(image, Image.Image) else "image"
            reason = str(exc).removeprefix(f"{where}: ")
            raise UserError(f"{where}: cannot read this image ({reason})") from None
        return SampleTransform(size, channels, self.mean, self.std, None)(torch.from_numpy(array), None)[0]

    def predict(self, inputs: Inputs, batch_size: int = 32) -> Predictions:
        """Class / mask predictions for a model-ready float tensor (C x H x W or N x C x H x W; NumPy arrays too)
        or for images: files, PIL images, or uint8 pixel tensors (H x W, C x H x W or N x C x H x W), which are
        decoded as evaluation decoded its images. Anything else, or NaN / infinite values, is one UserError line."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"predict: batch_size must be a whole number of 1 or more, got {batch_size!r}")
        if isinstance(inputs, np.ndarray):
            inputs = torch.from_numpy(np.ascontiguousarray(inputs))
        if isinstance(inputs, torch.Tensor) and inputs.dtype != torch.uint8:
            return self.predict_batch(self._model_ready(inputs))
        images = self._images(inputs)
        parts = [self.predict_batch(torch.stack([self.preprocess(im) for im in images[i:i + batch_size]]))
                 for i in range(0, len(images), batch_size)]
        if not parts:
            raise UserError("predict: no inputs given")
        return Predictions(torch.cat([p.probabilities for p in parts]), torch.cat([p.labels for p in parts]),
                           parts[0].label_names)

    def _model_ready(self, tensor: torch.Tensor) -> torch.Tensor:
        """A float tensor as an N x C x H x W batch of this run's channels, or one line saying what it expects."""
        channels, size = int(resolve_config(self.exp).channels), self.exp.data.image_size
        expected = (f"a model-ready float tensor N x {channels} x H x W (e.g. N x {channels} x {size} x {size}), or "
                    "images (files, PIL images, uint8 pixel tensors) to be converted")
        if not tensor.is_floating_point() or tensor.ndim not in (3, 4):
            raise UserError(f"predict: got a {str(tensor.dtype).removeprefix('torch.')} tensor of shape "
                            f"{' x '.join(map(str, tensor.shape)) or 'scalar'}; give {expected}")
        batch = (tensor if tensor.ndim == 4 else tensor.unsqueeze(0)).float()
        if batch.shape[1] != channels:
            raise UserError(f"predict: the tensor has {batch.shape[1]} channels (shape "
                            f"{' x '.join(map(str, tensor.shape))}), this run's model takes {channels}; give {expected}")
        bad = int((~torch.isfinite(batch)).sum())
        if bad:
            raise UserError(f"predict: the input holds {bad} NaN or infinite values; a prediction from them would "
                            "mean nothing, replace them first")
        return batch

    def _images(self, inputs: object) -> list[str | Path | Image.Image]:
        """Image files or PIL images, one per input (a uint8 tensor's images as PIL images)."""
        if isinstance(inputs, torch.Tensor):  # uint8 pixels: H x W, C x H x W or N x C x H x W
            pixels = inputs[None, None] if inputs.ndim == 2 else inputs[None] if inputs.ndim == 3 else inputs
            if pixels.ndim != 4 or pixels.shape[1] not in (1, 3, 4):
                raise UserError(f"predict: a uint8 image tensor is H x W, C x H x W or N x C x H x W with 1, 3 or 4 "
                                f"channels, got shape {' x '.join(map(str, inputs.shape))}")
            return [Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im)
                    for im in pixels.permute(0, 2, 3, 1).cpu().numpy()]
        if inputs is None or not isinstance(inputs, (str, Path, Image.Image, Sequence)):
            raise UserError(f"predict: got {type(inputs).__name__}; give image files, PIL images, uint8 pixel "
                            "tensors or a model-ready float tensor N x C x H x W")
        images = [inputs] if isinstance(inputs, (str, Path, Image.Image)) else list(inputs)
        for i, item in enumerate(images):
            if not isinstance(item, (str, Path, Image.Image)):
                raise UserError(f"predict: item {i} is a {type(item).__name__}; a list holds image files or PIL "
                                "images (pass tensors and arrays whole, not in a list)")
        return images

    @property
    def sigmoid_outputs(self) -> bool:
        """Whether the outputs are independent sigmoid channels (a multi-label or one-channel segmenter)."""
        return self.exp.task == "segmentation" and (self.target == "multilabel" or len(self.class_names) == 1)

    def predict_batch(self, batch: torch.Tensor) -> Predictions:
        """:class:`Predictions` of one N x C x H x W batch of model inputs (on the CPU), read as
        :meth:`output_description` says."""
        with torch.inference_mode():
            logits = self.model(batch.to(self.device))
        logits = (logits[-1] if isinstance(logits, (list, tuple)) else logits).float()
        if self.sigmoid_outputs:
            probs = torch.sigmoid(logits).cpu()
            labels = (probs.argmax(1) + 1) * (probs.amax(1) > 0.5)
            return Predictions(probs, labels, ["background", *self.class_names])
        probs = torch.softmax(logits, 1).cpu()
        return Predictions(probs, probs.argmax(1), list(self.class_names))

    def output_description(self) -> dict:
        """What the network's outputs mean and how :meth:`predict_batch` reads them (for export.json)."""
        size = self.exp.data.image_size
        if self.exp.task == "classification":
            return {"activation": "softmax", "labels": list(self.class_names),
                    "how": "softmax over dim 1 gives each class's probability; the class is the argmax, an index "
                           "into labels"}
        where = (f"a {size} x {size} mask; lossbench predict resizes it to the image's own size with nearest "
                 "neighbour")
        if self.sigmoid_outputs:
            return {"activation": "sigmoid", "labels": ["background", *self.class_names],
                    "how": "sigmoid per channel; a pixel's label is k + 1 for the channel k of highest probability "
                           f"when that is above 0.5, else 0 (background), an index into labels: {where}"}
        return {"activation": "softmax", "labels": list(self.class_names),
                "how": f"softmax over dim 1; a pixel's label is the argmax over dim 1, an index into labels: {where}"}


#: what ``checkpoint`` may be: ``auto`` (best.pt unless it was chosen on the test split, else last.pt), best, last
CHECKPOINTS = ("auto", "best", "last")


def choose_checkpoint(run_dir: Path, exp: Experiment, checkpoint: str) -> tuple[Path, dict, dict, str | None, str]:
    """``(path, weights, meta, chosen_on, why)`` of the checkpoint to load; ``auto`` never takes a best.pt chosen
    on the test split (:mod:`lossbench.engine.selection`) and ``why`` says so when it takes last.pt instead."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"--checkpoint {checkpoint!r}: use {', '.join(CHECKPOINTS)}")
    best, last = run_dir / "best.pt", run_dir / "last.pt"
    why = ""
    if checkpoint != "last" and best.is_file():
        state, meta = read_checkpoint(best)
        chosen_on = recorded_selection_split(meta, exp.data)
        if checkpoint == "best" or chosen_on != "test":
            return best, state, meta, chosen_on, why
        why = "best.pt was chosen on the test split"
    elif checkpoint == "best":
        fix = ("nothing is chosen on a run with data.eval_split: test and no data.holdout"
               if selection_split(exp.data) is None else "the run has not finished an epoch")
        raise UserError(f"{best}: no such checkpoint ({fix}); use --checkpoint last")
    elif checkpoint == "auto":
        why = ("nothing was chosen (data.eval_split: test without data.holdout)" if selection_split(exp.data) is None
               else "the run has no best.pt")
    if not last.is_file():
        raise UserError(f"{last}: no such checkpoint; the run has not finished an epoch")
    state, meta = read_checkpoint(last)
    return last, state, meta, None, why


def load_run(run_dir: str | Path, checkpoint: str = "auto", device: str = "cpu", plugins: bool = True
             ) -> LoadedRun:
    """Rebuild a run's network from its ``config.yaml`` and load its weights (:func:`choose_checkpoint`).

    The model is built without its ``pretrained`` source (the checkpoint
    replaces it, and the source need not exist here) and loaded strictly.
    ``plugins``: import the run's ``plugins:`` (installed entry points are
    loaded either way); ``report`` passes False, it runs no code a config names.
    """
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.yaml); give runs/<name> of a finished run")
    exp = load_experiment(config)
    load_plugins(exp.plugins if plugins else [], exp.where("plugins"))  # its model may be a plugin's
    for change in plugin_changes(exp.versions):
        warnings.warn(f"{run_dir}: {change}", stacklevel=2)
    ckpt, state, meta, chosen_on, why = choose_checkpoint(run_dir, exp, checkpoint)
    names, target = _recorded_data(run_dir, exp)
    model = build_model(exp.model.model_copy(update={"pretrained": None}), exp.task, len(names), log=lambda _: None)
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{ckpt}: does not fit the model of {config} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    epoch = meta.get("epoch") if isinstance(meta.get("epoch"), int) else None
    mean, std = run_normalization(run_dir, exp)
    return LoadedRun(run_dir, exp, list(names), model.to(resolve_device(device, "--device")).eval(), ckpt, epoch,
                     mean, std, target, _recorded_named_classes(run_dir), chosen_on, why)


def _recorded_data(run_dir: Path, exp: Experiment) -> tuple[list[str], TargetKind]:
    """Class names and target kind from ``summary.json``; from the data itself for what it does not record."""
    path = run_dir / "summary.json"
    names: list[str] | None = None
    target: TargetKind | None = None
    if path.is_file():
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
            names, target = summary.get("class_names"), summary.get("target")
        except (ValueError, AttributeError):
            raise UserError(f"{path}: not valid JSON (a cut-off write?); delete it to take the class names "
                            "from the data, or train the run again") from None
    if exp.task == "classification":
        target = "label"
    if not names or target is None:  # an unfinished run, or one trained before summaries recorded the target
        bundle = build_data(exp)
        names, target = names or bundle.class_names, target or bundle.target
    return list(names), target


def _recorded_named_classes(run_dir: Path) -> bool:
    """Whether the run's class names say what its classes are (``split.json``; runs that predate it: True)."""
    try:
        return bool(json.loads((run_dir / "split.json").read_text(encoding="utf-8")).get("named_classes", True))
    except (OSError, ValueError, AttributeError):
        return True


def run_normalization(run_dir: Path, exp: Experiment) -> tuple[list[float] | None, list[float] | None]:
    """The per-channel ``(mean, std)`` the run trained with: its ``normalization.json``, else the config's."""
    path = run_dir / "normalization.json"
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
            return found.get("mean"), found.get("std")
        except (ValueError, AttributeError):
            raise UserError(f"{path}: not valid JSON; delete it to fall back to the config's data.normalize") \
                from None
    if exp.data.normalize == "auto":
        bundle = build_data(exp)
        return bundle.mean, bundle.std
    return normalization(exp.data.normalize, exp.model.in_channels)

