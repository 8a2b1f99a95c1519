"""The sweep report: which configuration is better, and is the difference real?

``build_report(sweep_dir)`` reads ``sweep.json``, ``results.csv`` and each
cell's run folder, and writes ``report.html`` (self-contained: images embedded
as base64) and ``report.md`` (images in ``report_files/``).

Cells that differ only in ``seed`` form one configuration. Each metric is
shown as mean ± sample std over seeds with a 95 % Student-t interval
(mean ± t_{0.975, n-1} · s / sqrt(n)). Each configuration is compared with the
baseline (``report.baseline`` or the first grid value) by a paired t-test over
the seeds both share, on the main metric (``report.metric``, default balanced
accuracy / mean IoU); a difference is called significant
only when p < 0.05 with at least two pairs.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from lossbench.engine import runfolder
from lossbench.errors import UserError
from lossbench.experiments.sweep import read_results
from lossbench.metrics import normalized_confusion
from lossbench.plots import figure_png, plt

TABLE_METRICS = {
    "classification": ["balanced_accuracy", "accuracy", "macro_f1", "quadratic_kappa", "ece",
                       "many_shot_accuracy", "medium_shot_accuracy", "few_shot_accuracy"],
    "segmentation": ["miou", "dice", "pixel_accuracy"],
}
LOWER_IS_BETTER = {"ece"}
EPOCHS = ("best", "final")
ALPHA = 0.05


@dataclass
class Config:
    """Cells of one document that differ only in their seed."""

    document: str
    task: str
    label: str
    values: dict[str, Any]
    rows: list[dict[str, str]] = field(default_factory=list)

    @property
    def done(self) -> list[dict[str, str]]:
        return [r for r in self.rows if r["status"] == "done"]


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the 95 % t-interval); std and interval are NaN for one value."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan, math.nan
    s = float(x.std(ddof=1))
    return float(x.mean()), s, float(stats.t.ppf(0.975, x.size - 1) * s / math.sqrt(x.size))


def paired_comparison(base: dict[int, float], other: dict[int, float]) -> dict[str, Any]:
    """Mean difference other - base over shared seeds, paired t-test p-value, and the verdict."""
    seeds = sorted(set(base) & set(other))
    diffs = np.array([other[s] - base[s] for s in seeds], dtype=float)
    out: dict[str, Any] = {"pairs": len(seeds), "diff": float(diffs.mean()) if seeds else math.nan, "p": math.nan}
    if len(seeds) < 2:
        out["verdict"] = "n/a (needs 2+ shared seeds)"
    elif np.allclose(diffs, diffs[0]):
        out["verdict"] = "identical" if diffs[0] == 0 else "constant difference (no variance to test)"
    else:
        out["p"] = float(stats.ttest_rel([other[s] for s in seeds], [base[s] for s in seeds]).pvalue)
        out["verdict"] = "significant" if out["p"] < ALPHA else "not significant"
    return out


def _num(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except ValueError:
        return math.nan


def _load(sweep_dir: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    meta_path, results_path = sweep_dir / "sweep.json", sweep_dir / "results.csv"
    if not meta_path.is_file() or not results_path.is_file():
        raise UserError(f"{sweep_dir}: not a sweep folder (no sweep.json / results.csv); run `lossbench sweep` first")
    return json.loads(meta_path.read_text(encoding="utf-8")), read_results(results_path)


def group_configs(meta: dict[str, Any], rows: list[dict[str, str]]) -> list[Config]:
    """Configurations in grid order, each with its cells (one per seed)."""
    by_name = {r["cell"]: r for r in rows}
    configs: dict[tuple[str, str], Config] = {}
    for cell in meta["cells"]:
        values = {k: v for k, v in cell["values"].items() if k != "seed"}
        label = ", ".join(f"{k}={v}" for k, v in values.items()) or cell["document"]
        key = (cell["document"], label)
        row = by_name.get(cell["name"])
        if row is None:
            continue
        if key not in configs:
            configs[key] = Config(cell["document"], row["task"], label, values)
        configs[key].rows.append(row)
    return list(configs.values())


def _baseline(configs: list[Config], baseline: dict[str, Any] | None) -> Config:
    if baseline:
        for c in configs:
            if all(str(c.values.get(k)) == str(v) for k, v in baseline.items()):
                return c
        raise UserError(f"report.baseline {baseline}: matches no configuration of the sweep")
    return configs[0]


def _by_seed(config: Config, metric: str, epoch: str = "best") -> dict[int, float]:
    return {int(r["seed"]): _num(r, f"{epoch}_{metric}") for r in config.done}


def _fmt(mean: float, std: float, ci: float) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f} [{mean - ci:.4f}, {mean + ci:.4f}]"


def _main_metric(configs: list[Config], chosen: str | None = None) -> str:
    """The metric compared with the baseline: ``report.metric`` when given, else the task's default."""
    if not chosen:
        return "balanced_accuracy" if configs[0].task == "classification" else "miou"
    name = str(chosen).removeprefix("val_")
    known = {k.removeprefix("best_") for c in configs for r in c.done for k in r
             if k.startswith("best_") and k != "best_epoch"}
    if known and name not in known:
        raise UserError(f"report.metric: {chosen!r} is not a metric of {configs[0].document}; "
                        f"choose one of {', '.join(sorted(known))}")
    return name


def metric_table(configs: list[Config], epoch: str = "best") -> tuple[list[str], list[list[str]]]:
    """Header and rows of mean ± std [95 % CI] per metric; the best mean per column is marked with ★.

    ``epoch`` picks each run's best-epoch or final-epoch values. A metric no
    finished run has (e.g. few-shot accuracy without few-shot classes) gets no column.
    """
    metrics = TABLE_METRICS[configs[0].task]
    means = {m: [mean_ci([_num(r, f"{epoch}_{m}") for r in c.done])[0] for c in configs] for m in metrics}
    metrics = [m for m in metrics if any(not math.isnan(v) for v in means[m]) or m == _main_metric(configs)]
    best = {}
    for m, vals in means.items():
        finite = [v for v in vals if not math.isnan(v)]
        if finite:
            best[m] = (min if m in LOWER_IS_BETTER else max)(finite)
    header = ["configuration", "seeds", "failed"] + metrics
    body = []
    for i, c in enumerate(configs):
        cells = [c.label, str(len(c.done)), str(len(c.rows) - len(c.done))]
        for m in metrics:
            text = _fmt(*mean_ci([_num(r, f"{epoch}_{m}") for r in c.done]))
            cells.append(("★ " + text) if m in best and means[m][i] == best[m] else text)
        body.append(cells)
    return header, body


def comparison_table(configs: list[Config], base: Config, main: str | None = None, epoch: str = "best"
                     ) -> tuple[list[str], list[list[str]]]:
    main = main or _main_metric(configs)
    header = ["configuration", f"Δ {main} vs baseline", "pairs", "p (paired t)", "verdict"]
    body = []
    for c in configs:
        if c is base:
            body.append([c.label, "baseline", str(len(c.done)), "", ""])
            continue
        cmp = paired_comparison(_by_seed(base, main, epoch), _by_seed(c, main, epoch))
        p = "" if math.isnan(cmp["p"]) else f"{cmp['p']:.4f}"
        diff = "–" if math.isnan(cmp["diff"]) else f"{cmp['diff']:+.4f}"
        body.append([c.label, diff, str(cmp["pairs"]), p, cmp["verdict"]])
    return header, body


def failures(configs: list[Config]) -> list[list[str]]:
    return [[r["cell"], r["status"], r.get("error", "")] for c in configs for r in c.rows if r["status"] != "done"]


def _summaries(sweep_dir: Path, config: Config) -> list[dict[str, Any]]:
    out = []
    for r in config.done:
        path = sweep_dir / r["cell"] / "summary.json"
        if path.is_file():
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


def _curves(sweep_dir: Path, config: Config) -> dict[str, np.ndarray]:
    """Per-epoch curves averaged over the configuration's seeds (up to the shortest run)."""
    import csv

    runs = []
    for r in config.done:
        path = sweep_dir / r["cell"] / "metrics.csv"
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                runs.append(list(csv.DictReader(f)))
    if not runs:
        return {}
    n = min(len(run) for run in runs)
    keys = [k for k in runs[0][0] if k not in ("epoch", "lr", "seconds")]
    return {k: np.nanmean([[_num(run[i], k) for i in range(n)] for run in runs], axis=0) for k in keys}


def _val_counts(summary: dict[str, Any]) -> list[int] | None:
    """Validation count per class (row sums of the confusion matrix); None for sigmoid outputs, which have none."""
    cm = summary.get("best_confusion_matrix")
    return None if cm is None else [int(sum(row)) for row in cm]


def plot_class_counts(summary: dict[str, Any], title: str) -> bytes:
    names = summary["class_names"]
    train = summary["class_counts"]
    val = _val_counts(summary)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.2))
    ax.bar(x - 0.2, train, 0.4, label="train")
    if val is not None:
        ax.bar(x + 0.2, val, 0.4, label="validation")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("pixels" if summary["task"] == "segmentation" else "images")
    ax.set_yscale("log" if max(train) > 20 * max(1, min(train)) else "linear")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return figure_png(fig)


def plot_curves(sweep_dir: Path, configs: list[Config], main: str) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, c in enumerate(configs):
        curves = _curves(sweep_dir, c)
        if not curves:
            continue
        colour = f"C{i % 10}"
        epochs = np.arange(1, len(curves["train_loss"]) + 1)
        axes[0].plot(epochs, curves["train_loss"], "--", color=colour)
        axes[0].plot(epochs, curves["val_loss"], "-", color=colour, label=c.label)
        if f"train_{main}" in curves:
            axes[1].plot(epochs, curves[f"train_{main}"], "--", color=colour)
        axes[1].plot(epochs, curves[f"val_{main}"], "-", color=colour, label=c.label)
    axes[0].set_title("loss (dashed: train, solid: validation)")
    axes[1].set_title(f"{main} (dashed: train, solid: validation)")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return figure_png(fig)


def plot_confusions(sweep_dir: Path, configs: list[Config]) -> bytes:
    mats = []
    for c in configs:
        sums = [s for s in _summaries(sweep_dir, c) if s.get("best_confusion_matrix") is not None]
        if sums:
            total = sum(np.asarray(s["best_confusion_matrix"], dtype=float) for s in sums)
            mats.append((c.label, normalized_confusion(torch.tensor(total)).numpy(), sums[0]["class_names"]))
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


def plot_per_class(sweep_dir: Path, configs: list[Config], epoch: str = "best") -> bytes:
    task = configs[0].task
    key = "recall" if task == "classification" else "iou"
    bars = []
    for c in configs:
        sums = _summaries(sweep_dir, c)
        if not sums:
            continue
        names = sums[0]["class_names"]
        vals = [np.nanmean([s[epoch].get(f"val_{key}_{i}", math.nan) for s in sums]) for i in range(len(names))]
        bars.append((c.label, vals, names))
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
    ax.set_ylabel(f"per-class {key}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _predict_examples(run_dir: Path, count: int) -> tuple[list, list, list]:
    """Validation images, true masks and predicted masks of a run's best checkpoint (first ``count``)."""
    from lossbench.data import build_data
    from lossbench.engine.inference import load_run

    run = load_run(run_dir, "best", "cpu")
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


def plot_segmentation_examples(sweep_dir: Path, picks: list[tuple[str, Config]], count: int = 4) -> bytes:
    """Rows of validation image | true mask | each picked configuration's prediction (its first seed)."""
    panels = []
    for title, config in picks:
        if config.done:
            panels.append((title, *_predict_examples(sweep_dir / config.done[0]["cell"], count)))
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
th{background:#f0f0f0}img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#555}"""


def build_report(sweep_dir: str | Path) -> tuple[Path, Path]:
    """Write report.html and report.md for a sweep folder; returns their paths."""
    sweep_dir = Path(sweep_dir)
    meta, rows = _load(sweep_dir)
    configs = group_configs(meta, rows)
    doc = _Doc(sweep_dir / "report_files")
    doc.heading(f"lossbench report: {sweep_dir.name}", 1)
    done = sum(r["status"] == "done" for r in rows)
    doc.para(f"{len(rows)} cells, {done} finished, {len(rows) - done} failed or pending. Metrics are those of each "
             "run's best epoch on the evaluated split (or its final epoch where a section says so), as mean ± std "
             "over seeds [95 % t-interval]; ★ marks the best mean per column. Differences against the baseline use "
             f"a paired t-test over shared seeds (α = {ALPHA}).")
    by_doc: dict[str, list[Config]] = defaultdict(list)
    for c in configs:
        by_doc[c.document].append(c)
    for n, (document, group) in enumerate(by_doc.items()):
        task = group[0].task
        options = (meta.get("report") or {}).get(document, {})
        main = _main_metric(group, options.get("metric"))
        base = _baseline(group, options.get("baseline"))
        epoch = options.get("epoch", "best")
        if epoch not in EPOCHS:
            raise UserError(f"report.epoch: {epoch!r} in {document}; use best or final")
        doc.heading(f"{document} ({task})")
        first = next((s for c in group for s in _summaries(sweep_dir, c)), None)
        if first is not None:
            doc.heading("Data", 3)
            val = _val_counts(first) or ["–"] * len(first["class_names"])
            doc.table(["class", "train", "validation"], [
                [name, str(t), str(v)] for name, t, v in zip(first["class_names"], first["class_counts"], val)
            ])
            doc.image(plot_class_counts(first, f"{document}: class counts"), f"{n}-class-counts.png",
                      f"{document}: class counts per split")
        doc.heading("Metrics" + (" (final epoch)" if epoch == "final" else ""), 3)
        doc.table(*metric_table(group, epoch))
        doc.heading(f"Against the baseline ({base.label})", 3)
        doc.table(*comparison_table(group, base, main, epoch))
        fails = failures(group)
        if fails:
            doc.heading("Failed cells", 3)
            doc.table(["cell", "status", "error"], fails)
        from lossbench.experiments.tuning_report import tuning_blocks  # a tuned sweep's section (tuning_report.py)
        for b in tuning_blocks(sweep_dir, document, by_doc, base, lambda *c: comparison_table(*c, main, epoch)):
            getattr(doc, b[0])(*b[1:])
        doc.heading("Training curves", 3)
        doc.image(plot_curves(sweep_dir, group, main), f"{n}-curves.png", f"{document}: loss and {main} per epoch")
        confusions = plot_confusions(sweep_dir, group)  # none for sigmoid outputs
        if confusions:
            doc.heading("Normalized confusion matrices of the best epoch (rows: true class)", 3)
            doc.image(confusions, f"{n}-confusion.png", f"{document}: confusion matrices")
        doc.heading("Per class", 3)
        doc.image(plot_per_class(sweep_dir, group, epoch), f"{n}-per-class.png",
                  f"{document}: per-class {'recall' if task == 'classification' else 'IoU'}")
        if task == "segmentation":
            sign = -1 if main in LOWER_IS_BETTER or main.endswith("loss") else 1
            scored = [(sign * mean_ci([_num(r, f"best_{main}") for r in c.done])[0], c) for c in group if c.done]
            best = max(scored, key=lambda t: -math.inf if math.isnan(t[0]) else t[0])[1] if scored else base
            picks = [("best " + best.label, best)] + ([("baseline " + base.label, base)] if best is not base else [])
            doc.heading("Validation examples", 3)
            doc.image(plot_segmentation_examples(sweep_dir, picks), f"{n}-examples.png",
                      f"{document}: validation images with true and predicted masks (best and baseline)")
    md_path, html_path = sweep_dir / "report.md", sweep_dir / "report.html"
    runfolder.atomic_write_text(md_path, "\n".join(doc.md))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>lossbench report: "
            f"{html.escape(sweep_dir.name)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(doc.html) + "</body></html>\n")
    runfolder.atomic_write_text(html_path, page)
    return html_path, md_path
