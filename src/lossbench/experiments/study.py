"""A sweep document as a study: its declared contrasts, its design, and which of its cells run.

A document's report options (sweep.json, :mod:`lossbench.experiments.schema`)
declare the contrasts (pairs of configuration labels, resolved when the sweep
is planned) and ``report.margin``; its grid's ``seed: {min, max}`` makes the
seeds sequential (``sweep.json``'s ``sequential``). :func:`document_study`
turns that into a :class:`Study`; :func:`study_states` replays each sequential
study from the cells' results (:func:`lossbench.experiments.rounds.replay_study`),
which gives the cells the sweep runs now and the columns ``seeds_run`` and
``stopped`` of results.csv.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lossbench.experiments.contrasts import ContrastResult, compare_contrasts
from lossbench.experiments.report_contrasts import points_scale
from lossbench.experiments.report_metrics import lower_is_better, metric_range
from lossbench.experiments.rounds import StudyState, replay_study
from lossbench.experiments.schema import baseline_label
from lossbench.experiments.sequential import ALPHA, Design
from lossbench.experiments.study_design import is_posthoc_label, resolve_contrasts
from lossbench.metrics import MAIN_METRIC


def configuration_label(values: Mapping[str, Any], document: str) -> str:
    """A configuration's label: its grid values but the seed, as ``key=value`` joined by ", " (the document's
    name when the grid varies only the seed)."""
    return ", ".join(f"{k}={v}" for k, v in values.items() if k != "seed") or document


@dataclass(frozen=True)
class Study:
    """What one document's contrasts compare and how they are decided."""

    pairs: tuple[tuple[str, str], ...]
    metric: str
    epoch: str
    margin: float | None  # in the compared units (points for a metric of fractions)
    seeds: tuple[int, int] | None  # (min, max) of sequential seeds; None: a fixed list of seeds

    @property
    def scale(self) -> float:
        return points_scale(metric_range(self.metric))

    @property
    def higher_is_better(self) -> bool:
        return not lower_is_better(self.metric)

    @property
    def design(self) -> Design | None:
        return None if self.seeds is None else Design(*self.seeds, ALPHA, self.margin)

    def compare(self, values: Mapping[str, Mapping[int, float]]) -> list[ContrastResult]:
        """The contrasts' results on ``values`` (configuration label -> seed -> the metric as recorded)."""
        span = metric_range(self.metric)
        scaled = {label: {s: v * self.scale for s, v in per.items()} for label, per in values.items()}
        return compare_contrasts(scaled, self.pairs, sequential=self.design, alpha=ALPHA, margin=self.margin,
                                 higher_is_better=self.higher_is_better,
                                 value_range=(span[0] * self.scale, span[1] * self.scale))


def document_study(options: Mapping[str, Any], task: str, pairs: Sequence[tuple[str, str]],
                   seeds: Mapping[str, int] | None) -> Study:
    """The study of one document from its resolved report options and its pairs."""
    return Study(tuple((a, b) for a, b in pairs), options.get("metric") or MAIN_METRIC[task],
                 options.get("epoch") or "best", options.get("margin"),
                 None if not seeds else (int(seeds["min"]), int(seeds["max"])))


def outcomes(cells: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], study: Study, document: str,
             max_seeds: int) -> dict[str, list[float | None]]:
    """Configuration -> per seed 0..max-1: its metric when done, NaN when failed, None when not finished, from
    the document's ``(grid values, results.csv row)`` pairs."""
    out: dict[str, list[float | None]] = {}
    for values, row in cells:
        per = out.setdefault(configuration_label(values, document), [None] * max_seeds)
        seed = int(values.get("seed", row.get("seed", 0)))
        if seed >= max_seeds:
            continue
        if row.get("status") == "done":
            per[seed] = float(row.get(f"{study.epoch}_{study.metric}", math.nan))
        elif row.get("status") == "failed":
            per[seed] = math.nan
    return out


def trained_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The contrasts the rounds decide on: a '+ post-hoc LA' row is scored by the report, after training, so the
    rounds leave out the contrasts that name one (any stopping rule keeps the report's verdicts valid; those
    contrasts only get the seeds the others ask for)."""
    return [p for p in pairs if not any(is_posthoc_label(label) for label in p)]


def study_state(cells: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], study: Study, document: str
                ) -> StudyState:
    """Where a sequential document stands: :func:`replay_study` on its cells' results, in compared units, over
    the contrasts the rounds decided on (:func:`trained_pairs`)."""
    design = study.design
    assert design is not None, "a fixed list of seeds has no rounds"
    found = outcomes(cells, study, document, design.max_seeds)
    scaled = {label: [None if v is None else v * study.scale for v in per] for label, per in found.items()}
    return replay_study(scaled, trained_pairs(study.pairs), design, study.higher_is_better)


def document_pairs(options: Mapping[str, Any], configurations: dict[str, dict[str, Any]], source: str
                   ) -> list[tuple[str, str]]:
    """The declared contrasts of a document's recorded options as pairs of configuration labels (default: every
    configuration against the baseline); ``configurations``: label -> grid values, seed aside."""
    return resolve_contrasts(options.get("contrasts") or "baseline",
                             baseline_label(options.get("baseline"), configurations), configurations, source,
                             posthoc=bool(options.get("posthoc_la")))


def plan_studies(plan: Any) -> dict[str, Study]:
    """Each document of a sweep plan with sequential seeds, as a :class:`Study`."""
    out = {}
    for document, seeds in plan.sequential.items():
        cells = [c for c in plan.cells if c.document == document]
        if not cells:
            continue
        options = plan.report.get(document) or {}
        configurations = {configuration_label(c.values, document): {k: v for k, v in c.values.items() if k != "seed"}
                          for c in cells}
        pairs = trained_pairs(document_pairs(options, configurations, str(plan.source)))
        out[document] = document_study(options, cells[0].experiment.task, pairs, seeds)
    return out


def given_cells(plan: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results.csv rows of the cells the sweep has given so far: every cell of a fixed document; of a
    sequential one the seeds its replayed rounds gave, each row with ``seeds_run`` and ``stopped`` (why its
    configuration got no more seeds)."""
    studies = plan_studies(plan)
    if not studies:
        return rows
    by_name = {c.name: c for c in plan.cells}
    states = {document: study_state([(by_name[r["cell"]].values, r) for r in rows if r["document"] == document],
                                    study, document) for document, study in studies.items()}
    out = []
    for row in rows:
        state = states.get(row["document"])
        if state is None:
            out.append(row)
            continue
        label = configuration_label(by_name[row["cell"]].values, row["document"])
        if int(row["seed"]) < state.ran[label]:
            out.append({**row, "seeds_run": state.ran[label], "stopped": state.reasons.get(label, "")})
    return out
