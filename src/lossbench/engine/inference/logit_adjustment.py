"""Post-hoc logit adjustment: a classifier trained with plain CE, predicting with logits - tau * log(prior).

Menon et al. 2021, "Long-tail learning via logit adjustment" (ICLR), Sec. 4,
Eq. 9: predict argmax_y f_y(x) - tau * log pi_y, with pi the training label
prior; tau = 1 is the Bayes-optimal correction for balanced error when the
network's softmax estimates P(y | x). Their official code
(google-research/google-research, ``logit_adjustment/main.py``, ``mode =
'posthoc'``) applies it to a trained ERM model with ``tau = 1.0`` by default;
the paper also tunes tau on held-out data. Here tau is chosen from
:data:`TAUS` on a split the reported figures are not measured on (the run's
held-out split, ``data.holdout: true``; or its validation split when the test
split is scored) by balanced accuracy (the error the correction targets);
ties go to the tau closest to 1. Without such a split, tau = 1, labelled so.

The result for a run's checkpoint is kept in ``RUN/posthoc_la.json``, keyed
by the checkpoint's sha256 and the tau grid, so a report rebuilt later does
not evaluate again, also once the checkpoint has been deleted to save disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lossbench.contract import IGNORE_INDEX
from lossbench.data import DataBundle, build_data
from lossbench.engine import runfolder
from lossbench.engine.inference.run import LoadedRun, load_run
from lossbench.engine.selection import evaluated_split
from lossbench.errors import UserError
from lossbench.losses.weights import log_class_prior
from lossbench.metrics import TaskMetrics, metrics_from_confusion, shot_accuracies

#: the tau values searched (the official default, 1, among them)
TAUS: tuple[float, ...] = tuple(k / 4 for k in range(13))
DEFAULT_TAU = 1.0
SELECTION_METRIC = "balanced_accuracy"
CACHE_NAME = "posthoc_la.json"
CACHE_VERSION = 1


def training_log_prior(class_counts: Sequence[int]) -> torch.Tensor:
    """log pi of the training class counts (a class without images counted as one, as the losses do)."""
    return log_class_prior(torch.tensor(list(class_counts), dtype=torch.float64).clamp(min=1)).float()


def adjust_logits(logits: torch.Tensor, log_prior: torch.Tensor, tau: float) -> torch.Tensor:
    """``logits - tau * log_prior`` over the class dimension (N x K)."""
    return logits - tau * log_prior.to(logits.device, logits.dtype)


def collect_logits(run: LoadedRun, dataset: Dataset, batch_size: int, num_workers: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's logits (N x K, float, CPU) and labels (N) over all of ``dataset``, in its order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    logits, labels = [], []
    with torch.inference_mode():
        for images, target in loader:
            out = run.model(images.to(run.device))
            logits.append((out[-1] if isinstance(out, (list, tuple)) else out).float().cpu())
            labels.append(torch.as_tensor(target))
    return torch.cat(logits), torch.cat(labels)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_counts: Sequence[int]
                           ) -> dict[str, Any]:
    """Every metric training records for these logits: :class:`TaskMetrics` and the shot accuracies."""
    metrics = TaskMetrics("classification", logits.shape[1], IGNORE_INDEX)
    metrics.update(logits, labels)
    values = metrics.compute()
    values.update(shot_accuracies(values["recall"], list(class_counts)))
    return values


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean per-class recall of argmax predictions (classes present in ``labels``)."""
    k = logits.shape[1]
    keep = labels != IGNORE_INDEX
    cm = torch.bincount(labels[keep] * k + logits[keep].argmax(1), minlength=k * k).reshape(k, k)
    return float(metrics_from_confusion(cm, "classification")[SELECTION_METRIC])


def choose_tau(logits: torch.Tensor, labels: torch.Tensor, log_prior: torch.Tensor,
               taus: Sequence[float] = TAUS) -> tuple[float, dict[float, float]]:
    """The tau of ``taus`` whose adjusted logits score the highest balanced accuracy (ties: closest to 1)."""
    scores = {float(t): balanced_accuracy(adjust_logits(logits, log_prior, t), labels) for t in taus}
    best = max(scores.values())
    return min((t for t, s in scores.items() if s == best), key=lambda t: abs(t - DEFAULT_TAU)), scores


@dataclass
class PosthocResult:
    """A checkpoint scored with post-hoc logit adjustment on the run's evaluated split.

    ``chosen_on``: the split tau was chosen on (``holdout`` or ``val``), or
    None when tau is fixed (given, or the default for want of a split).
    ``scores``: balanced accuracy per tau on that split. ``metrics``: all
    metrics of the adjusted logits on the evaluated split.
    """

    tau: float
    chosen_on: str | None
    scores: dict[float, float]
    metrics: dict[str, Any]
    checkpoint: str
    epoch: int | None

    @property
    def tau_note(self) -> str:
        """How tau was set, in words."""
        if self.chosen_on is not None:
            return f"tau {self.tau:g} chosen on the {self.chosen_on} split"
        return f"tau {self.tau:g} fixed"


def selection_split(bundle: DataBundle, eval_split: str, scored: str) -> tuple[str, Dataset] | None:
    """The split to choose tau on for scoring the split named ``scored`` (val, test, holdout or train): the
    held-out split when there is one and it is not the one scored, else the validation split when the test
    split is scored on a run that evaluated val."""
    if bundle.holdout is not None and scored != "holdout":
        return "holdout", bundle.holdout
    if scored == "test" and eval_split == "val":
        return "val", bundle.val
    return None


def training_class_counts(run_dir: Path, bundle: DataBundle) -> list[int]:
    """The run's training class counts as its ``class_counts.json`` recorded them (the prior it trained
    under, whatever data is scored now); the bundle's when the file is missing or unreadable."""
    try:
        found = json.loads((run_dir / "class_counts.json").read_text(encoding="utf-8"))
        counts = [int(n) for n in found.values()]
    except (OSError, ValueError, AttributeError, TypeError):
        return list(bundle.class_counts)
    return counts if len(counts) == bundle.num_classes else list(bundle.class_counts)


def require_classifier(run: LoadedRun) -> None:
    """One line when ``run`` is not a classifier: the adjustment shifts class logits by a label prior."""
    if run.exp.task != "classification":
        raise UserError(f"{run.run_dir}: post-hoc logit adjustment is for classifiers; this run is a "
                        f"{run.exp.task} run")


def score_with_adjustment(run: LoadedRun, class_counts: Sequence[int], scored: Dataset, tau: float | None,
                          selection: tuple[str, Dataset] | None, batch_size: int) -> PosthocResult:
    """Choose tau on ``selection`` (unless ``tau`` is given) and score ``scored`` with the logits adjusted by
    the prior of the training ``class_counts``."""
    require_classifier(run)
    log_prior = training_log_prior(class_counts)
    scores: dict[float, float] = {}
    chosen_on = None
    if tau is None and selection is not None:
        chosen_on, dataset = selection
        tau, scores = choose_tau(*collect_logits(run, dataset, batch_size, run.exp.data.num_workers), log_prior)
    tau = DEFAULT_TAU if tau is None else float(tau)
    logits, labels = collect_logits(run, scored, batch_size, run.exp.data.num_workers)
    metrics = classification_metrics(adjust_logits(logits, log_prior, tau), labels, class_counts)
    return PosthocResult(tau, chosen_on, scores, metrics, run.checkpoint.name, run.epoch)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_posthoc(run_dir: str | Path, checkpoint: str = "last") -> PosthocResult:
    """Post-hoc logit adjustment of a run's ``checkpoint`` on its evaluated split, tau chosen as the module
    says; read from ``RUN/posthoc_la.json`` when that holds this checkpoint's result, else computed and kept."""
    run_dir = Path(run_dir)
    path = run_dir / f"{checkpoint}.pt"
    key = {"version": CACHE_VERSION, "checkpoint": path.name, "taus": list(TAUS),
           "sha256": _sha256(path) if path.is_file() else None}
    cached = _read_cache(run_dir / CACHE_NAME)
    if cached is not None and _cache_holds(cached.get("key"), key):
        result = cached["result"]
        return PosthocResult(**{**result, "scores": {float(t): s for t, s in result["scores"].items()}})
    run = load_run(run_dir, checkpoint, "cpu")
    bundle = build_data(run.exp)
    selection = selection_split(bundle, run.exp.data.eval_split, evaluated_split(run.exp.data))
    result = score_with_adjustment(run, training_class_counts(run_dir, bundle), bundle.val, None, selection,
                                   run.exp.batch_size)
    runfolder.write_json(run_dir / CACHE_NAME, {"key": key, "result": asdict(result)})
    return result


def _cache_holds(cached: Any, key: dict[str, Any]) -> bool:
    """Whether a cache entry keyed ``cached`` is the result for ``key``: the same checkpoint file, or, once that
    checkpoint was deleted (a sweep pruned to save disk), the result kept for it under the same name and taus."""
    if key["sha256"] is None and isinstance(cached, dict):
        return cached.get("sha256") is not None and {**cached, "sha256": None} == key
    return cached == key


def _read_cache(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None  # a cut-off write: computed again and replaced
    return found if isinstance(found, dict) else None
