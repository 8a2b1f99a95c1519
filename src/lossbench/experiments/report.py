"""The sweep report: which configuration is better, and is the difference real?

``build_report(sweep_dir)`` reads ``sweep.json``, ``results.csv`` and each
cell's run folder, and writes ``report.html`` (self-contained: images embedded
as base64) and ``report.md`` (images in ``report_files/``).

Cells of one document that differ only in ``seed`` form a :class:`SeedGroup`
(a configuration). Per document the report shows one table of configurations
(each metric's mean over seeds with its 95 % t-interval, clipped to the
metric's range) and one of comparisons with the baseline on the report's
metric: paired seeds, mean difference with its clipped 95 % paired
t-interval, the paired t-test's p, its Holm-Bonferroni adjusted p over all
comparisons with that baseline, and a verdict that needs at least three
paired seeds (:mod:`lossbench.experiments.stats`). Every figure, table, curve
marker, confusion matrix and per-class bar is of the same epoch:
``report.epoch`` (:mod:`lossbench.experiments.report_options`).
"""

from __future__ import annotations


import base64
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbench.config import read_documents
from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.report_metrics import LOWER_IS_BETTER, TABLE_METRICS, metric_range
from lossbench.experiments.schema import ReportOptions, default_epoch, validate_report_options
from lossbench.experiments.stats import (
    ALPHA,
    MIN_PAIRS,
    PairedComparison,
    compare_with_baseline,
    finite_mean,
    t_interval,
)
from lossbench.experiments.results import load_sweep
from lossbench.metrics import MAIN_METRIC, normalized_confusion
from lossbench.plots import figure_png, plt

SPLIT_NAMES = {"val": "validation", "test": "test"}


@dataclass
class SeedGroup:
    """The cells of one document with the same grid values, one per seed: a configuration."""

    document: str
    task: str
    label: str
    values: dict[str, Any]
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def done(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r["status"] == "done"]


@dataclass
class DocumentSetup:
    """What one document's report compares: its seed groups, baseline, metric, epoch and evaluated split."""

    document: str
    task: str
    groups: list[SeedGroup]
    baseline: SeedGroup
    metric: str
    epoch: str
    eval_split: str
    posthoc_la: bool = False

    @property
    def best_on_test(self) -> bool:
        """True when each run's best epoch was chosen on the split its figures are measured on."""
        return self.epoch == "best" and self.eval_split == "test"


def _num(row: Mapping[str, Any], key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except (TypeError, ValueError):
        return math.nan


def group_by_seed(meta: dict[str, Any], rows: list[dict[str, str]]) -> list[SeedGroup]:
    """Seed groups in grid order, each with its cells (one per seed)."""
    by_name = {r["cell"]: r for r in rows}
    groups: dict[tuple[str, str], SeedGroup] = {}
    for cell in meta["cells"]:
        values = {k: v for k, v in cell["values"].items() if k != "seed"}
        label = ", ".join(f"{k}={v}" for k, v in values.items()) or cell["document"]
        key = (cell["document"], label)
        row = by_name.get(cell["name"])
        if row is None:
            continue
        if key not in groups:
            groups[key] = SeedGroup(cell["document"], row["task"], label, values)
        groups[key].rows.append(row)
    return list(groups.values())


def _grid(meta: dict[str, Any], document: str) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for cell in meta["cells"]:
        if cell["document"] == document:
            for key, value in cell["values"].items():
                if value not in grid.setdefault(key, []):
                    grid[key].append(value)
    return grid


def evaluated_split(sweep_dir: Path, groups: list[SeedGroup]) -> str:
    """"test" when any cell evaluated the test split (``data.eval_split`` of its recorded config), else "val"."""
    for row in (r for g in groups for r in g.rows):
        for path in (sweep_dir / "configs" / f"{row['cell']}.yaml", sweep_dir / row["cell"] / "config.yaml"):
            if path.is_file():
                try:
                    data = read_documents(path)[0].get("data") or {}
                except UserError:
                    continue
                if data.get("eval_split") == "test":
                    return "test"
                break
    return "val"


def find_baseline(groups: list[SeedGroup], baseline: dict[str, Any] | None) -> SeedGroup:
    """The first seed group whose grid values match ``baseline``; the first group without one."""
    for g in groups if baseline else []:
        if all(str(g.values.get(k)) == str(v) for k, v in baseline.items()):
            return g
    return groups[0]


def setup_document(sweep_dir: Path, meta: dict[str, Any], groups: list[SeedGroup]) -> DocumentSetup:
    """The document's ``report:`` options from sweep.json, validated as at plan time, and resolved."""
    document, task = groups[0].document, groups[0].task
    stored = meta.get("report") or {}
    # sweeps planned before the fix keyed a single unnamed document's options as <stem>-0
    raw = stored.get(document, stored.get(f"{document}-0"))
    options: ReportOptions = validate_report_options(raw, str(sweep_dir / "sweep.json"), task=task,
                                                     grid=_grid(meta, document))
    split = evaluated_split(sweep_dir, groups)
    return DocumentSetup(document, task, groups, find_baseline(groups, options.baseline),
                         options.metric or MAIN_METRIC[task], options.epoch or default_epoch(split), split,
                         bool(options.posthoc_la))


def values_by_seed(group: SeedGroup, metric: str, epoch: str) -> dict[int, float]:
    """seed -> the metric at ``epoch`` ("best" / "final") of each finished cell."""
    return {int(r["seed"]): _num(r, f"{epoch}_{metric}") for r in group.done}


def mean_and_interval(values: list[float], metric: str) -> tuple[float, float, float]:
    """(mean, low, high) over the finite values: the 95 % t-interval clipped to the metric's range."""
    x = [v for v in values if math.isfinite(v)]
    if not x:
        return math.nan, math.nan, math.nan
    return (float(np.mean(x)), *t_interval(x, clip=metric_range(metric)))


def _fmt_mean(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if math.isnan(low) else f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def metric_table(setup: DocumentSetup) -> tuple[list[str], list[list[str]]]:
    """Header and rows of mean [95 % interval] per metric; the best mean per column is marked with ★.

    A metric no finished run has (e.g. few-shot accuracy without few-shot classes) gets no column.
    """
    groups, epoch = setup.groups, setup.epoch
    stats = {m: [mean_and_interval([_num(r, f"{epoch}_{m}") for r in g.done], m) for g in groups]
             for m in dict.fromkeys([*TABLE_METRICS[setup.task], setup.metric])}
    metrics = [m for m, s in stats.items() if m == setup.metric or any(math.isfinite(t[0]) for t in s)]
    best = {}
    for m in metrics:
        finite = [t[0] for t in stats[m] if math.isfinite(t[0])]
        if finite:
            best[m] = (min if m in LOWER_IS_BETTER else max)(finite)
    body = []
    for i, g in enumerate(groups):
        cells = [g.label, str(len(g.done)), str(len(g.rows) - len(g.done))]
        for m in metrics:
            text = _fmt_mean(*stats[m][i])
            cells.append(("★ " + text) if m in best and stats[m][i][0] == best[m] else text)
        body.append(cells)
    return ["configuration", "seeds", "failed", *metrics], body


def compare(setup: DocumentSetup, derived: Mapping[str, Mapping[int, float]] | None = None
            ) -> list[PairedComparison]:
    """Every configuration (and each ``derived`` one: label -> seed -> value) against the baseline.

    One Holm family: all of them, on the document's metric at its epoch.
    """
    others = {g.label: values_by_seed(g, setup.metric, setup.epoch) for g in setup.groups if g is not setup.baseline}
    others.update(derived or {})
    return compare_with_baseline(values_by_seed(setup.baseline, setup.metric, setup.epoch), others,
                                 value_range=metric_range(setup.metric),
                                 higher_is_better=setup.metric not in LOWER_IS_BETTER)


def _fmt_p(p: float) -> str:
    return "–" if math.isnan(p) else ("< 0.0001" if p < 1e-4 else f"{p:.4f}")


def comparison_table(setup: DocumentSetup, comparisons: list[PairedComparison]
                     ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: the baseline first, then each comparison with n, Δ, its interval, p, Holm p, verdict."""
    header = ["configuration", "paired seeds", f"Δ {setup.metric} vs baseline", "95 % interval of Δ", "p",
              "p (Holm)", "verdict"]
    body = [[setup.baseline.label, str(len(setup.baseline.done)), "baseline", "", "", "", ""]]
    for c in comparisons:
        diff = "–" if math.isnan(c.diff) else f"{c.diff:+.4f}"
        interval = "–" if math.isnan(c.low) else f"[{c.low:+.4f}, {c.high:+.4f}]"
        body.append([c.label, str(c.n), diff, interval, _fmt_p(c.p), _fmt_p(c.p_holm), c.verdict])
    return header, body


def method_sentence(setup: DocumentSetup, comparisons: list[PairedComparison]) -> str:
    """Which split, epoch, interval, test, correction and verdict rule the document's tables use."""
    split = SPLIT_NAMES.get(setup.eval_split, setup.eval_split)
    epoch = ("each run's final epoch" if setup.epoch == "final"
             else f"each run's best epoch (chosen on the {split} split by the run's best_metric)")
    tested = sum(math.isfinite(c.p) for c in comparisons)
    direction = " (lower is better)" if setup.metric in LOWER_IS_BETTER else ""
    return (f"Evaluated on the {split} split at {epoch}. Configurations: mean over seeds with its 95 % "
            f"t-interval over n seeds, clipped to the metric's range; ★ marks the best mean per column. "
            f"Comparisons with the baseline {setup.baseline.label} on {setup.metric}{direction}: Δ = "
            f"configuration − baseline over the seeds both finished, with its 95 % paired t-interval over n seeds, "
            f"clipped to the metric's range; p from a two-sided paired t-test, Holm-Bonferroni adjusted over the "
            f"{tested} comparison{'s' if tested != 1 else ''} with this baseline; the verdict (better / worse / "
            f"not significant at α = {ALPHA} on the adjusted p) needs at least {MIN_PAIRS} paired seeds.")


def failures(groups: list[SeedGroup]) -> list[list[str]]:
    return [[r["cell"], r["status"], r.get("error", "")] for g in groups for r in g.rows if r["status"] != "done"]


def _summaries(sweep_dir: Path, group: SeedGroup) -> list[dict[str, Any]]:
    out = []
    for r in group.done:
        path = sweep_dir / r["cell"] / "summary.json"
        if path.is_file():
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def _curves(sweep_dir: Path, group: SeedGroup, keys: list[str]) -> dict[str, np.ndarray]:
    """Per-epoch curves of ``keys`` averaged over the group's seeds (up to the shortest run)."""
    import csv

    runs = []
    for r in group.done:
        path = sweep_dir / r["cell"] / "metrics.csv"
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                runs.append(list(csv.DictReader(f)))
    runs = [run for run in runs if run]
    if not runs:
        return {}
    n = min(len(run) for run in runs)
    return {k: finite_mean([[_num(run[i], k) for i in range(n)] for run in runs]) for k in keys if k in runs[0][0]}


def _val_counts(summary: dict[str, Any]) -> list[int] | None:
    """Evaluated images per class (row sums of a confusion matrix); None for sigmoid outputs, which have none."""
    cm = summary.get("best_confusion_matrix") or summary.get("final_confusion_matrix")
    return None if cm is None else [int(sum(row)) for row in cm]


def plot_class_counts(summary: dict[str, Any], title: str, split: str = "validation") -> bytes:
    names = summary["class_names"]
    train = summary["class_counts"]
    val = _val_counts(summary)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.2))
    ax.bar(x - 0.2, train, 0.4, label="train")
    if val is not None:
        ax.bar(x + 0.2, val, 0.4, label=split)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("pixels" if summary["task"] == "segmentation" else "images")
    ax.set_yscale("log" if max(train) > 20 * max(1, min(train)) else "linear")
    ax.set_title(title)
    ax.legend()
    return figure_png(fig, crop=True)


def plot_curves(sweep_dir: Path, groups: list[SeedGroup], main: str) -> bytes:
    """Loss and ``main`` per epoch, train dashed and evaluated split solid; empty when no run has a curve."""
    keys = ["train_loss", "val_loss", f"train_{main}", f"val_{main}"]
    curves = [(i, g, _curves(sweep_dir, g, keys)) for i, g in enumerate(groups)]
    curves = [(i, g, c) for i, g, c in curves if "val_loss" in c]
    if not curves:
        return b""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, g, c in curves:
        colour = f"C{i % 10}"
        epochs = np.arange(1, len(c["val_loss"]) + 1)
        for ax, name in zip(axes, ("loss", main)):
            if f"train_{name}" in c:
                ax.plot(epochs, c[f"train_{name}"], "--", color=colour)
            if f"val_{name}" in c:
                ax.plot(epochs, c[f"val_{name}"], "-", color=colour, label=g.label)
    axes[0].set_title("loss (dashed: train, solid: evaluated split)")
    axes[1].set_title(f"{main} (dashed: train, solid: evaluated split)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return figure_png(fig)


def summed_confusion(sweep_dir: Path, group: SeedGroup, epoch: str) -> tuple[np.ndarray, list[str]] | None:
    """The group's ``<epoch>_confusion_matrix`` summed over its seeds, with the class names; None without one."""
    sums = [s for s in _summaries(sweep_dir, group) if s.get(f"{epoch}_confusion_matrix") is not None]
    if not sums:
        return None
    return sum(np.asarray(s[f"{epoch}_confusion_matrix"], dtype=float) for s in sums), sums[0]["class_names"]


def plot_confusions(sweep_dir: Path, groups: list[SeedGroup], epoch: str) -> bytes:
    mats = []
    for g in groups:
        found = summed_confusion(sweep_dir, g, epoch)
        if found is not None:
            mats.append((g.label, normalized_confusion(torch.tensor(found[0])).numpy(), found[1]))
    if not mats:
        return b""
    k = len(mats[0][2])
    side = max(2.6, 0.35 * k + 1.5)
    fig, axes = plt.subplots(1, len(mats), figsize=(side * len(mats), side + 0.6), squeeze=False)
    for ax, (label, m, names) in zip(axes[0], mats):
        ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(label, fontsize=8)
        ax.set_xticks(range(k), names, rotation=90, fontsize=6)
        ax.set_yticks(range(k), names, fontsize=6)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if m[i, j] > 0.5 else "black")
    axes[0][0].set_ylabel("true")
    fig.supxlabel("predicted", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def per_class_values(sweep_dir: Path, group: SeedGroup, epoch: str) -> tuple[list[float], list[str]] | None:
    """Per-class recall (classification) or IoU (segmentation) at ``epoch``, mean over seeds, and class names."""
    key = "recall" if group.task == "classification" else "iou"
    sums = _summaries(sweep_dir, group)
    if not sums:
        return None
    names = sums[0]["class_names"]
    values = [[s[epoch].get(f"val_{key}_{i}", math.nan) for i in range(len(names))] for s in sums]
    return finite_mean(values).tolist(), names


def plot_per_class(sweep_dir: Path, groups: list[SeedGroup], epoch: str) -> bytes:
    bars = [(g.label, *found) for g in groups if (found := per_class_values(sweep_dir, g, epoch)) is not None]
    if not bars:
        return b""
    names = bars[0][2]
    x = np.arange(len(names))
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 3.6))
    for i, (label, vals, _) in enumerate(bars):
        ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=label)
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"per-class {'recall' if groups[0].task == 'classification' else 'IoU'}")
    ax.legend(fontsize=7)
    return figure_png(fig, crop=True)


def _predict_examples(run_dir: Path, count: int, checkpoint: str) -> tuple[list, list, list]:
    """Evaluated images, true masks and predicted masks of a run's ``checkpoint`` (first ``count``)."""
    from lossbench.data import build_data
    from lossbench.engine.inference import load_run

    run = load_run(run_dir, checkpoint, "cpu")
    data = build_data(run.exp)
    model = run.model
    images, masks, preds = [], [], []
    with torch.no_grad():
        for i in range(min(count, len(data.val))):
            image, mask = data.val[i]
            out = model(image.unsqueeze(0))
            out = out[-1] if isinstance(out, (list, tuple)) else out
            pred = out.argmax(1)[0] if out.shape[1] > 1 else (out[0, 0] > 0).long()
            shown = image[:3].permute(1, 2, 0).float()
            shown = (shown - shown.min()) / (shown.max() - shown.min()).clamp(min=1e-6)
            images.append(shown.numpy())
            masks.append(torch.as_tensor(mask).squeeze().long().numpy())
            preds.append(pred.numpy())
    return images, masks, preds


def plot_segmentation_examples(sweep_dir: Path, picks: list[tuple[str, SeedGroup]], epoch: str = "best",
                               count: int = 4) -> bytes:
    """Rows of image | true mask | each picked group's prediction (its first seed, at ``epoch``'s checkpoint)."""
    checkpoint = "best" if epoch == "best" else "last"
    panels = []
    for title, group in picks:
        if group.done:
            panels.append((title, *_predict_examples(sweep_dir / group.done[0]["cell"], count, checkpoint)))
    if not panels:
        return b""
    n = len(panels[0][1])
    masks = panels[0][2]
    fig, axes = plt.subplots(n, 2 + len(panels), figsize=(2 * (2 + len(panels)), 2 * n), squeeze=False)
    vmax = max(1, max(int(max(m.max(), p.max())) for _, _, ms, ps in panels for m, p in zip(ms, ps) if m.size))
    for i in range(n):
        axes[i][0].imshow(panels[0][1][i])
        axes[i][1].imshow(np.where(masks[i] == 255, 0, masks[i]), vmin=0, vmax=vmax, cmap="viridis",
                          interpolation="nearest")
        for j, (title, _, _, preds) in enumerate(panels):
            axes[i][2 + j].imshow(preds[i], vmin=0, vmax=vmax, cmap="viridis", interpolation="nearest")
            if i == 0:
                axes[0][2 + j].set_title(f"{title}: predicted", fontsize=8)
    axes[0][1].set_title("true mask", fontsize=8)
    axes[0][0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return figure_png(fig)


def _md_table(header: list[str], body: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in [header] + body]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines)


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


class _Doc:
    """Accumulates one report as Markdown and HTML side by side."""

    def __init__(self, files_dir: Path) -> None:
        self.md: list[str] = []
        self.html: list[str] = []
        self.files_dir = files_dir
        self.images = 0

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def warning(self, text: str) -> None:
        self.md.append(f"> **{text}**\n")
        self.html.append(f'<p class="warning"><strong>{html.escape(text)}</strong></p>')

    def table(self, header: list[str], body: list[list[str]]) -> None:
        self.md.append(_md_table(header, body) + "\n")
        self.html.append(_html_table(header, body))

    def image(self, png: bytes, name: str, alt: str) -> None:
        if not png:
            return
        self.images += 1
        runfolder.atomic_write_bytes(self.files_dir / name, png)
        self.md.append(f"![{alt}]({self.files_dir.name}/{name})\n")
        data = base64.b64encode(png).decode()
        self.html.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(alt)}</figcaption></figure>")


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f0f0f0}img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#555}
.warning{background:#fff3cd;border:2px solid #d39e00;padding:8px 12px}"""


def _data_section(doc: _Doc, sweep_dir: Path, setup: DocumentSetup, n: int) -> None:
    first = next((s for g in setup.groups for s in _summaries(sweep_dir, g)), None)
    if first is None:
        return
    split = SPLIT_NAMES.get(setup.eval_split, setup.eval_split)
    doc.heading("Data", 3)
    val = _val_counts(first) or ["–"] * len(first["class_names"])
    doc.table(["class", "train", split], [
        [name, str(t), str(v)] for name, t, v in zip(first["class_names"], first["class_counts"], val)
    ])
    doc.image(plot_class_counts(first, f"{setup.document}: class counts", split), f"{n}-class-counts.png",
              f"{setup.document}: class counts per split")


def _tables_section(doc: _Doc, sweep_dir: Path, setup: DocumentSetup) -> None:
    adjusted = posthoc_groups(sweep_dir, setup) if setup.posthoc_la else []
    comparisons = compare(setup, {f"{g.label} + post-hoc LA": values for g, values, _ in adjusted})
    doc.para(method_sentence(setup, comparisons))
    if setup.best_on_test:
        doc.warning("Warning: each run's best epoch was selected on the test split (data.eval_split: test with "
                    "report.epoch: best), so every figure below is optimistically biased: the epoch was chosen on "
                    "the data it is measured on. Set report.epoch: final and run `lossbench report` again.")
    doc.heading(f"Metrics ({setup.epoch} epoch{', selected on the test split' if setup.best_on_test else ''})", 3)
    doc.table(*metric_table(setup))
    doc.heading(f"Against the baseline ({setup.baseline.label}) on {setup.metric}", 3)
    doc.table(*comparison_table(setup, comparisons))
    if setup.posthoc_la:
        _posthoc_section(doc, setup, adjusted)
    fails = failures(setup.groups)
    if fails:
        doc.heading("Failed cells", 3)
        doc.table(["cell", "status", "error"], fails)


def is_plain_ce(sweep_dir: Path, row: dict[str, str]) -> bool:
    """Whether a cell trained with plain ``ce`` (no parameters, no deferred re-weighting), per its config."""
    path = sweep_dir / row["cell"] / "config.yaml"
    try:
        config = read_documents(path)[0]
    except (UserError, IndexError):
        return False
    return str(config.get("loss")).replace(" ", "") in ("ce", "ce()") and config.get("drw_epoch") is None


def posthoc_groups(sweep_dir: Path, setup: DocumentSetup
                   ) -> list[tuple[SeedGroup, dict[int, float], list[Any]]]:
    """Each plain-CE configuration with its runs' ``setup.metric`` under post-hoc logit adjustment (seed ->
    value) and each run's :class:`PosthocResult`, at the report's epoch (``final``: last.pt; ``best``: best.pt)."""
    from lossbench.engine.inference.logit_adjustment import run_posthoc

    checkpoint = "last" if setup.epoch == "final" else "best"
    out = []
    for group in setup.groups:
        if not group.done or not all(is_plain_ce(sweep_dir, r) for r in group.done):
            continue
        results = {int(r["seed"]): run_posthoc(sweep_dir / r["cell"], checkpoint) for r in group.done}
        values = {seed: float(res.metrics.get(setup.metric, math.nan)) for seed, res in results.items()}
        out.append((group, values, list(results.values())))
    return out


def _posthoc_section(doc: _Doc, setup: DocumentSetup, adjusted: list[tuple[SeedGroup, dict[int, float], list[Any]]]
                     ) -> None:
    """How each '+ post-hoc LA' row was made: tau per seed and the split it was chosen on."""
    doc.heading("Post-hoc logit adjustment", 3)
    if not adjusted:
        doc.para("report.posthoc_la is set, but no finished configuration trained with plain ce.")
        return
    doc.para(f"Rows marked '+ post-hoc LA' score the same runs with logits − τ·log(training prior) (Menon et al. "
             f"2021), at the {setup.epoch} epoch; τ is chosen by balanced accuracy on a split the figures are not "
             "measured on (the held-out split of data.holdout: true), else fixed at the paper's τ = 1.")
    body = []
    for group, values, results in adjusted:
        taus = ", ".join(f"{r.tau:g}" for r in results)
        where = sorted({r.chosen_on or "fixed (no held-out split)" for r in results})
        mean, low, high = mean_and_interval(list(values.values()), setup.metric)
        body.append([f"{group.label} + post-hoc LA", str(len(values)), taus, ", ".join(where),
                     _fmt_mean(mean, low, high)])
    doc.table(["configuration", "seeds", "τ per seed", "τ chosen on", setup.metric], body)


def _segmentation_examples(doc: _Doc, sweep_dir: Path, setup: DocumentSetup, n: int) -> None:
    sign = -1 if setup.metric in LOWER_IS_BETTER else 1
    scored = [(sign * mean_and_interval(list(values_by_seed(g, setup.metric, setup.epoch).values()),
                                        setup.metric)[0], g) for g in setup.groups if g.done]
    scored = [(score, g) for score, g in scored if math.isfinite(score)]
    best = max(scored, key=lambda t: t[0])[1] if scored else setup.baseline
    base = setup.baseline
    picks = [("best " + best.label, best)] + ([("baseline " + base.label, base)] if best is not base else [])
    doc.heading(f"{SPLIT_NAMES.get(setup.eval_split, setup.eval_split).capitalize()} examples", 3)
    doc.image(plot_segmentation_examples(sweep_dir, picks, setup.epoch), f"{n}-examples.png",
              f"{setup.document}: evaluated images with true and predicted masks ({setup.epoch} epoch; best "
              "configuration and baseline)")


def _figures_section(doc: _Doc, sweep_dir: Path, setup: DocumentSetup, n: int) -> None:
    curves = plot_curves(sweep_dir, setup.groups, setup.metric)
    if curves:
        doc.heading("Training curves", 3)
        doc.image(curves, f"{n}-curves.png", f"{setup.document}: loss and {setup.metric} per epoch")
    confusions = plot_confusions(sweep_dir, setup.groups, setup.epoch)  # none for sigmoid outputs
    if confusions:
        doc.heading(f"Normalized confusion matrices of the {setup.epoch} epoch (rows: true class; summed over "
                    "seeds)", 3)
        doc.image(confusions, f"{n}-confusion.png", f"{setup.document}: confusion matrices")
    elif setup.task == "classification" and any(g.done for g in setup.groups):
        doc.para(f"No confusion matrices: the runs recorded none of their {setup.epoch} epoch (runs trained "
                 "before lossbench kept the final epoch's matrix).")
    per_class = plot_per_class(sweep_dir, setup.groups, setup.epoch)
    if per_class:
        doc.heading(f"Per class ({setup.epoch} epoch)", 3)
        doc.image(per_class, f"{n}-per-class.png",
                  f"{setup.document}: per-class {'recall' if setup.task == 'classification' else 'IoU'}")
    if setup.task == "segmentation":
        _segmentation_examples(doc, sweep_dir, setup, n)


def _tuning_section(doc: _Doc, sweep_dir: Path, setup: DocumentSetup, setups: list[DocumentSetup]) -> None:
    """A tuned document's studies and trial history, and the untuned comparison beside the tuned one
    (experiments/tuning_report.py); nothing for a document that was not tuned."""
    from lossbench.experiments.tuning_report import tuning_blocks

    by_doc = {s.document: s.groups for s in setups}

    def table(groups: list[SeedGroup], base: SeedGroup) -> tuple[list[str], list[list[str]]]:
        other = replace(setup, document=groups[0].document, groups=groups, baseline=base)
        return comparison_table(other, compare(other))

    for kind, *args in tuning_blocks(sweep_dir, setup.document, by_doc, setup.baseline, table):
        getattr(doc, kind)(*args)


def build_report(sweep_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html and report.md for a sweep folder; returns their paths."""
    sweep_dir = Path(sweep_dir)
    meta, rows = load_sweep(sweep_dir)
    groups = group_by_seed(meta, rows)
    setups = [setup_document(sweep_dir, meta, [g for g in groups if g.document == d])
              for d in dict.fromkeys(g.document for g in groups)]
    doc = _Doc(sweep_dir / "report_files")
    doc.heading(f"lossbench report: {sweep_dir.name}", 1)
    done = sum(r["status"] == "done" for r in rows)
    doc.para(f"{len(rows)} cells, {done} finished, {len(rows) - done} failed or pending. Each document below says "
             "which split and epoch its figures are of, and how its configurations are compared with the baseline.")
    for n, setup in enumerate(setups):
        doc.heading(f"{setup.document} ({setup.task})")
        _data_section(doc, sweep_dir, setup, n)
        _tables_section(doc, sweep_dir, setup)
        _tuning_section(doc, sweep_dir, setup, setups)
        _figures_section(doc, sweep_dir, setup, n)
    md_path, html_path = sweep_dir / "report.md", sweep_dir / "report.html"
    runfolder.atomic_write_text(md_path, "\n".join(doc.md))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>lossbench report: "
            f"{html.escape(sweep_dir.name)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(doc.html) + "</body></html>\n")
    runfolder.atomic_write_text(html_path, page)
    return html_path, md_path
