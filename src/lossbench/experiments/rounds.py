"""Sequential seeds: which configuration gets another seed after a round, and why each one stopped.

A sweep with ``seed: {min, max}`` in its grid runs every configuration's first
``min`` seeds, then works in rounds: it computes the verdicts of the declared
contrasts (:func:`lossbench.experiments.contrasts.compare_contrasts` under the
sequential design) and adds the next seed to the configurations an undecided
contrast still needs, until every contrast is decided or has ``max`` seeds. A
contrast needs the configuration that is behind (both when they have run as
many seeds), so each added seed makes a new pair. Everything here is a
function of the finished runs' results: a resumed sweep, or one on another
backend, makes the same choices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from lossbench.experiments.contrasts import ContrastResult, compare_contrasts
from lossbench.experiments.sequential import Design


def next_seeds(results: Sequence[ContrastResult], ran: Mapping[str, int], max_seeds: int) -> dict[str, int]:
    """Configuration -> the seed it runs next (its count of seeds run so far), for every configuration an
    undecided contrast still needs; empty when the study is over. ``ran``: seeds each configuration has run
    (finished or failed)."""
    out: dict[str, int] = {}
    for r in results:
        if r.decided:
            continue
        behind = min(ran[r.a], ran[r.b])
        for label in (r.a, r.b):
            if ran[label] == behind and ran[label] < max_seeds:
                out[label] = ran[label]
    return out


def stop_reasons(results: Sequence[ContrastResult], ran: Mapping[str, int], max_seeds: int) -> dict[str, str]:
    """Configuration -> why it got no further seed, in words for the report and results.csv."""
    reasons = {}
    for label, count in ran.items():
        mine = [r for r in results if label in (r.a, r.b)]
        if not mine:
            reasons[label] = "in no declared contrast"
        elif all(r.decided for r in mine):
            reasons[label] = "all its contrasts decided"
        elif count >= max_seeds:
            reasons[label] = f"max seeds ({max_seeds}) reached"
        else:
            reasons[label] = "still running"
    return reasons


@dataclass
class StudyState:
    """Where a sequential study stands, replayed from its cells' outcomes."""

    ran: dict[str, int]  # seeds each configuration has been given (seed values 0 .. ran - 1)
    results: list[ContrastResult]  # the verdicts on the finished seeds so far
    waiting: bool  # some given seed has not finished: run those cells, then replay again
    reasons: dict[str, str] = field(default_factory=dict)  # why each configuration has no further seed

    @property
    def over(self) -> bool:
        return not self.waiting and not any(reason == "still running" for reason in self.reasons.values())


def replay_study(outcomes: Mapping[str, Sequence[float | None]], pairs: Sequence[tuple[str, str]],
                 design: Design, higher_is_better: bool = True) -> StudyState:
    """The rounds of a sequential study, replayed from what its cells hold, so a resumed or re-run sweep (on any
    backend) makes the choices an uninterrupted one made.

    ``outcomes[label][s]``: the metric of configuration ``label``'s seed ``s`` when that cell finished, NaN when
    it failed, None when it has not finished (missing entries: not finished). Every configuration starts with
    ``design.min_seeds`` seeds; while all given seeds have finished, the verdicts are computed and
    :func:`next_seeds` gives the next ones.
    """
    ran = {label: design.min_seeds for label in outcomes}
    while True:
        values = {label: {s: v for s, v in enumerate(outcomes[label][:count]) if v is not None}
                  for label, count in ran.items()}
        results = compare_contrasts(values, pairs, sequential=design, higher_is_better=higher_is_better)
        if any(len(values[label]) < count for label, count in ran.items()):
            return StudyState(dict(ran), results, True, stop_reasons(results, ran, design.max_seeds))
        add = next_seeds(results, ran, design.max_seeds)
        if not add:
            return StudyState(dict(ran), results, False, stop_reasons(results, ran, design.max_seeds))
        ran.update({label: seed + 1 for label, seed in add.items()})
