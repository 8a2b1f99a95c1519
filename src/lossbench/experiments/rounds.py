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

from lossbench.experiments.contrasts import ContrastResult


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
