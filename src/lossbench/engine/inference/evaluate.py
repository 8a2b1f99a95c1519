"""``lossbench eval``: measure a finished run's checkpoint on its data or on another dataset.

The checkpoint is measured on the run's validation split, its test split, or
another dataset (a config file or ``KEY=VALUE`` overrides of the data section,
:func:`lossbench.config.with_data`), writing ``metrics.json`` /
``metrics.csv``, a per-class table and the confusion matrix normalised over
the true class (sklearn's ``normalize='true'``: rows = true class) into
``RUN/eval/``. Metrics and per-class figures are those of
:mod:`lossbench.metrics`, so on the run's own validation split they are the
ones training recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lossbench.config import DataConfig, with_data
from lossbench.contract import IGNORE_INDEX
from lossbench.data import DataBundle, build_data
from lossbench.data.transforms import Relabel, Transformed
from lossbench.engine import runfolder
from lossbench.engine.inference.logit_adjustment import PosthocResult, require_classifier, score_with_adjustment, \
    selection_split, training_class_counts
from lossbench.engine.inference.run import LoadedRun, load_run
from lossbench.engine.selection import evaluated_split
from lossbench.errors import UserError
from lossbench.metrics import TaskMetrics, channel_figures, confusion_figures, metrics_from_confusion, \
    normalized_confusion
from lossbench.plots import plot_confusion


#: the splits ``eval --split`` may name
SPLITS = ("val", "test", "holdout", "train")


def named_split(bundle: DataBundle, data: DataConfig, split: str) -> Dataset:
    """The split named ``split`` by what it is: under ``eval_split: test`` the split the run evaluated every
    epoch (``bundle.val``) is the test split, and there is no validation split besides the held-out one."""
    evaluated = evaluated_split(data)
    splits = {"train": bundle.train, "val": None, "test": bundle.test, "holdout": bundle.holdout}
    splits[evaluated] = bundle.val
    if split not in splits:
        raise UserError(f"--split {split!r}: use {', '.join(SPLITS)}")
    if splits[split] is not None:
        return splits[split]
    if split == "val" and evaluated == "test":
        raise UserError("--split val: this run has no validation split (data.eval_split: test evaluated the test "
                        "split every epoch); use --split test, or --split holdout with data.holdout: true")
    if split == "holdout":
        raise UserError(f"--split holdout: the run has no held-out split (data.holdout is not set); use --split "
                        f"{evaluated}")
    raise UserError(f"--split {split}: the data source has no {split} split; use --split {evaluated}")


def run_class_indices(run: LoadedRun, bundle: DataBundle, log: Callable[[str], None]) -> list[int] | None:
    """The run's index of each of the data's classes, or None when they are the run's classes in its order.

    Classes match by name when both the run's and the data's are named
    (``named_classes``): the data may lack some of the run's classes (their
    support is 0), but a class the run does not know cannot be scored, and a
    multi-label run needs every one of its channels. Names made up from
    indices match by index, with as many classes as the run.
    """
    names, theirs = run.class_names, bundle.class_names
    if theirs == names:
        return None
    listed = f"the {len(names)} classes {run.run_dir} was trained on ({', '.join(names)})"
    if not (run.named_classes and bundle.named_classes):
        if len(theirs) != len(names):
            raise UserError(f"--data: the data has {len(theirs)} classes ({', '.join(theirs)}) but {listed}; "
                            "classes without names match by index only, so the counts must agree")
        log(f"note: the data's classes ({', '.join(theirs)}) are scored by index as the run's ({', '.join(names)})")
        return None
    unknown = [n for n in theirs if n not in names]
    if unknown:
        raise UserError(f"--data: the data has {len(theirs)} classes ({', '.join(theirs)}) and "
                        f"{', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not among {listed}; "
                        "evaluate on data of the run's classes")
    absent = [n for n in names if n not in theirs]
    if absent and bundle.target == "multilabel":
        raise UserError(f"--data: the data has no mask channel {', '.join(map(repr, absent))} of {listed}; a "
                        "multi-label run is scored on data with every one of its channels")
    log("note: the data's classes are matched to the run's by name" + (
        f"; the data has no {', '.join(map(repr, absent))} (support 0)" if absent else ""))
    return [names.index(n) for n in theirs]


def per_class_rows(figures: dict[str, torch.Tensor], task: str, class_names: list[str], sigmoid: bool = False
                   ) -> list[dict[str, Any]]:
    """One table row per class (or sigmoid channel) from :func:`lossbench.metrics.per_class_figures`:
    support, predicted, precision, recall, and F1 (classification) or IoU and Dice (segmentation)."""
    rows = []
    for k, name in enumerate(class_names):
        row: dict[str, Any] = {"class": name, "support": int(figures["support"][k]),
                               "predicted": int(figures["predicted"][k]),
                               "precision": float(figures["precision"][k]), "recall": float(figures["recall"][k])}
        if task == "classification" and not sigmoid:
            row["f1"] = float(figures["f1"][k])
        else:
            row["iou"] = float(figures["iou"][k])
            row["dice"] = float(figures["f1"][k])
        rows.append(row)
    return rows


def _measure(run: LoadedRun, dataset: Dataset, task: str, batch_size: int, num_workers: int) -> TaskMetrics:
    """The run's network over all of ``dataset``, accumulated."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    metrics = TaskMetrics(task, len(run.class_names), IGNORE_INDEX).to(run.device)
    with torch.inference_mode():
        for images, target in loader:
            metrics.update(run.model(images.to(run.device)), target.to(run.device))
    return metrics


def evaluate_run(
    run_dir: str | Path,
    data: Sequence[str] = (),
    split: str | None = None,
    name: str | None = None,
    checkpoint: str = "auto",
    batch_size: int | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
    posthoc_la: bool = False,
    tau: float | None = None,
) -> dict[str, Any]:
    """Evaluate a run's checkpoint on a split of its data (or of ``data``) and write ``RUN/eval[/name]/``.

    ``split`` names the split by what it is (:func:`named_split`; default: the one the run evaluated every
    epoch, val or test); ``checkpoint`` ``auto`` takes best.pt unless it was chosen on the test split
    (:func:`lossbench.engine.inference.run.choose_checkpoint`), and the log line says which it took.
    Returns what ``metrics.json`` holds: the metrics of :mod:`lossbench.metrics`,
    the raw and row-normalised confusion matrices, and the per-class table.
    With ``posthoc_la`` (or a fixed ``tau``) the logits are adjusted by the
    training prior first (:mod:`.logit_adjustment`), tau chosen on a split
    other than the one scored; ``metrics.json`` then records tau and where it
    was chosen.
    """
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be a positive number of images")
    run = load_run(run_dir, checkpoint, device)
    exp = with_data(run.exp, data)
    bundle = build_data(exp)
    lut = run_class_indices(run, bundle, log)
    split = split or evaluated_split(exp.data)
    dataset = named_split(bundle, exp.data, split)
    if lut is not None:
        dataset = Transformed(dataset, Relabel(lut, len(run.class_names)))
    adjusted = None
    if posthoc_la or tau is not None:
        adjusted = _adjusted(run, bundle, dataset, split, tau, batch_size or exp.batch_size, lut)
        cm = torch.tensor(adjusted.metrics["confusion_matrix"])
        values = metrics_from_confusion(cm, exp.task)
        rows = per_class_rows(confusion_figures(cm), exp.task, run.class_names)
    else:
        values, rows, cm = _measured(run, dataset, exp.task, batch_size or exp.batch_size, exp.data.num_workers)
    result = {"run": str(run.run_dir), "checkpoint": run.checkpoint.name, "epoch": run.epoch,
              "checkpoint_chosen_on": run.chosen_on, "split": split,
              "data": exp.data.model_dump(mode="json"), "num_images": len(dataset), "class_names": run.class_names,
              "data_class_names": bundle.class_names, "metrics": values, "per_class": rows}
    if adjusted is not None:
        result["posthoc_la"] = {"tau": adjusted.tau, "chosen_on": adjusted.chosen_on,
                                "balanced_accuracy_by_tau": adjusted.scores}
    if cm is not None:
        result["confusion_matrix"] = cm.tolist()
        result["normalized_confusion_matrix"] = normalized_confusion(cm).tolist()
    out = run.run_dir / "eval" / name if name else run.run_dir / "eval"
    _write_eval(out, result, cm, f"{exp.name}: {split}, {run.checkpoint.stem} checkpoint"
                + (f" (epoch {run.epoch})" if run.epoch else "")
                + (f", post-hoc logit adjustment ({adjusted.tau_note})" if adjusted is not None else ""))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if not isinstance(v, list))
    adjusted_note = f" with post-hoc logit adjustment, {adjusted.tau_note}" if adjusted is not None else ""
    log(f"{exp.name}: {split} ({len(dataset)} images), {run.checkpoint_note}{adjusted_note}: {shown} -> {out}")
    return result


def _adjusted(run: LoadedRun, bundle: DataBundle, dataset: Dataset, split: str, tau: float | None,
              batch_size: int, lut: list[int] | None = None) -> PosthocResult:
    """``dataset`` scored with post-hoc logit adjustment; tau given, or chosen on another split (its labels
    mapped to the run's classes by ``lut`` like the scored split's)."""
    require_classifier(run)
    if tau is not None and tau < 0:
        raise UserError(f"--tau {tau}: must be >= 0 (1 is the paper's default)")
    selection = None
    if tau is None:
        selection = selection_split(bundle, run.exp.data.eval_split, split)
        if selection is None:
            raise UserError(f"--posthoc-la: tau is chosen on a split other than the one scored, and {run.run_dir} "
                            f"has none besides --split {split}; train with data.holdout: true, evaluate --split "
                            "test, or give --tau (1 is the paper's default)")
        if lut is not None:
            selection = (selection[0], Transformed(selection[1], Relabel(lut, len(run.class_names))))
    return score_with_adjustment(run, training_class_counts(run.run_dir, bundle), dataset, tau, selection,
                                 batch_size)


def _measured(run: LoadedRun, dataset: Dataset, task: str, batch_size: int, num_workers: int
              ) -> tuple[dict[str, Any], list[dict[str, Any]], torch.Tensor | None]:
    """Metrics, per-class rows and confusion matrix (None for sigmoid outputs) of the run on ``dataset``."""
    metrics = _measure(run, dataset, task, batch_size, num_workers)
    cm = None
    if metrics.sigmoid_outputs:  # binary / multi-label channels: per-channel counts, no K x K confusion matrix
        values = metrics.compute()
        rows = per_class_rows(channel_figures(metrics.channels.compute().cpu()), task, run.class_names, True)
    else:
        cm = metrics.confusion.compute().cpu()
        values = metrics_from_confusion(cm, task)
        rows = per_class_rows(confusion_figures(cm), task, run.class_names)
    return values, rows, cm


def _write_eval(out: Path, result: dict[str, Any], cm: torch.Tensor | None, title: str) -> None:
    """metrics.json, metrics.csv, per_class.csv and, with a confusion matrix, its normalised CSV and plot."""
    runfolder.write_json(out / "metrics.json", result)
    scalars = {k: v for k, v in result["metrics"].items() if not isinstance(v, list)}
    runfolder.write_csv(out / "metrics.csv", [{"checkpoint": result["checkpoint"], "epoch": result["epoch"],
                                               "split": result["split"], "num_images": result["num_images"],
                                               **scalars}])
    runfolder.write_csv(out / "per_class.csv", result["per_class"])
    if cm is not None:
        names = result["class_names"]
        norm = normalized_confusion(cm)
        runfolder.write_csv(out / "confusion_matrix_normalized.csv",
                            [{"true": n, **{p: float(v) for p, v in zip(names, r)}}
                             for n, r in zip(names, norm.tolist())])
        runfolder.atomic_write_bytes(out / "confusion_matrix.png", plot_confusion(cm, names, title))
