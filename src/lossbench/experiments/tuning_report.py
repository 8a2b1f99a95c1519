"""The report's tuning section: each configuration's tuned values, its trial history, untuned beside tuned.

A tuned sweep (``tune:``, :mod:`lossbench.experiments.tune`) writes ``tune/studies.json`` and
runs its tuned settings as a document ``<document>-tuned``, which the report shows like any other
(metrics over seeds, the comparison with the baseline). :func:`tuning_blocks` adds, under that
document, what only tuning has: the protocol, a table of each configuration's study (trials
complete / pruned / failed, the best trial and its values), a plot of the metric per trial with
pruned trials marked, and, when the same grid also ran untuned, the report's own comparison of
the untuned and of the tuned configurations side by side. Statistics are not computed here: the
comparison is the report's, passed in as ``compare``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from lossbench.engine import runfolder
from lossbench.experiments.layout import file_slug, studies_path
from lossbench.plots import figure_png, plt

Table = tuple[list[str], list[list[str]]]


def read_studies(sweep_dir: Path) -> dict[str, Any]:
    """Tuned document name -> its tuning settings and studies; empty for a sweep that did not tune."""
    path = studies_path(sweep_dir)
    if not path.is_file():
        return {}
    record = runfolder.read_json_record(path, "run `lossbench sweep` on its config again to rewrite it from "
                                              "tune.db (finished trials are kept)")
    return record.get("tuned_documents", {})


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _counts(study: dict[str, Any]) -> dict[str, int]:
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "interrupted": 0}
    for trial in study["trials"]:
        key = "interrupted" if trial["interrupted"] else trial["state"]
        counts[key] = counts.get(key, 0) + 1
    return counts


def studies_table(info: dict[str, Any]) -> Table:
    """One row per configuration: trials complete / pruned / failed, the best trial, its metric and values."""
    metric = info["metric"]
    header = ["configuration", "trials: complete / pruned / failed", "best trial", f"best {metric}", "tuned values"]
    body = []
    for study in info["studies"]:
        n = _counts(study)
        best = study["best"]
        if not study["space"]:
            values = "nothing to tune (no dimension of the space applies)"
        elif best is None:
            values = "none: no trial completed"
        else:
            values = ", ".join(f"{k}={_shown(v)}" for k, v in best["params"].items())
        body.append([study["label"], f"{n['COMPLETE']} / {n['PRUNED']} / {n['FAIL']}",
                     "–" if best is None else str(best["number"]),
                     "–" if best is None else f"{best['value']:.4f}", values])
    return header, body


def plot_trial_history(info: dict[str, Any]) -> bytes:
    """The metric of every trial in the order they were asked, one panel per configuration: complete trials as
    dots with the best so far as a line, pruned trials as red crosses at their last reported epoch, failed
    trials as grey marks on the bottom edge."""
    studies = [s for s in info["studies"] if s["trials"]]
    if not studies:
        return b""
    minimize = info["direction"] == "minimize"
    fig, axes = plt.subplots(1, len(studies), figsize=(3.4 * len(studies) + 0.6, 3.2), squeeze=False, sharey=True)
    for ax, study in zip(axes[0], studies):
        trials = [t for t in study["trials"] if not t["interrupted"]]
        done = [(t["number"], t["value"]) for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
        pruned = [(t["number"], t["value"]) for t in trials if t["state"] == "PRUNED" and t["value"] is not None]
        failed = [t["number"] for t in trials if t["state"] == "FAIL"]
        if done:
            x, y = zip(*done)
            ax.plot(x, y, "o", color="C0")
            best = [min(y[: i + 1]) if minimize else max(y[: i + 1]) for i in range(len(y))]
            ax.step(x, best, where="post", color="C0", alpha=0.5)
        if pruned:
            x, y = zip(*pruned)
            ax.plot(x, y, "x", color="C3", markersize=8)
        if failed:
            ax.plot(failed, [0] * len(failed), "v", color="0.5", transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set_title(study["label"], fontsize=8)
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel(f"{info['metric']} ({info['epoch']} epoch)")
    handles = [Line2D([], [], marker="o", ls="", color="C0"), Line2D([], [], color="C0", alpha=0.5),
               Line2D([], [], marker="x", ls="", color="C3"), Line2D([], [], marker="v", ls="", color="0.5")]
    fig.legend(handles, ["complete", "best so far", "pruned (at its last reported epoch)", "failed"],
               loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return figure_png(fig)


def side_by_side(untuned: Table, tuned: Table) -> Table:
    """The report's comparison table of the untuned and of the tuned configurations, joined on the configuration."""
    (uh, ub), (th, tb) = untuned, tuned
    rows = {row[0]: row[1:] for row in tb}
    header = [uh[0]] + [f"untuned: {h}" for h in uh[1:]] + [f"tuned: {h}" for h in th[1:]]
    return header, [[row[0], *row[1:], *rows.get(row[0], ["–"] * (len(th) - 1))] for row in ub]


def protocol(info: dict[str, Any]) -> str:
    pruner = {"median": "median pruner", "successive_halving": "successive-halving pruner",
              "none": "no pruning"}[info["pruner"]]
    return (f"Every configuration had the same budget: {info['trials']} trials of an Optuna study "
            f"({info['sampler'].upper()} sampler seeded {info['seed']}, the first {info['startup_trials']} at random; "
            f"{pruner} on the per-epoch {info['metric']} after {info['warmup_epochs']} epoch(s)). Trials train with "
            f"seed {info['seed']} and are judged on the "
            f"{'held-out' if info['metric'].startswith('holdout_') else 'validation'} split by {info['metric']} at their "
            f"{info['epoch']} epoch; each configuration's best trial was then re-run over the grid's seeds, "
            "which the tables above compare (Musgrave et al. 2020, A Metric Learning Reality Check).")


def tuning_blocks(sweep_dir: Path, document: str, by_doc: dict[str, list[Any]], base: Any,
                  compare: Callable[[list[Any], Any], Table]) -> list[tuple[Any, ...]]:
    """The tuning section of ``document`` as report blocks ``(kind, *arguments)``, kind one of heading, para,
    table and image; none unless ``document`` holds a sweep's tuned settings.

    ``by_doc``: the report's configurations per document; ``base``: the baseline configuration of
    ``document``; ``compare(configs, baseline)``: the report's comparison table of a document.
    """
    info = read_studies(sweep_dir).get(document)
    if info is None:
        return []
    blocks: list[tuple[Any, ...]] = [("heading", "Tuning: the same budget for every configuration", 3),
                                     ("para", protocol(info)), ("table", *studies_table(info))]
    slug = file_slug(document)
    blocks.append(("image", plot_trial_history(info), f"{slug}-trials.png",
                   f"{document}: {info['metric']} per trial (red crosses: pruned)"))
    untuned = by_doc.get(info["document"]) or []
    untuned_base = next((c for c in untuned if c.values == base.values), None)
    if untuned_base is not None:
        blocks += [("heading", f"Untuned ({info['document']}) beside tuned", 3),
                   ("para", "The same grid at the config's own values and with each configuration's tuned values, "
                            "each against its own baseline."),
                   ("table", *side_by_side(compare(untuned, untuned_base), compare(by_doc[document], base)))]
    return blocks
