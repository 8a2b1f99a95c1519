"""experiments/rounds.py: which configuration gets the next seed of a sequential study, and why each stopped."""

from lossbench.experiments.contrasts import compare_contrasts, verdict_legend
from lossbench.experiments.rounds import next_seeds, stop_reasons
from lossbench.experiments.sequential import Design

DESIGN = Design(3, 5, margin=1.0)
PAIRS = [("focal", "ce"), ("noisy", "ce")]


def values(seeds):
    return {"ce": {s: 70.0 + s for s in range(seeds["ce"])},
            "focal": {s: 90.0 + s + 0.01 * (-1) ** s for s in range(seeds["focal"])},  # decided at once
            "noisy": {s: 70.0 + s + (3.0 if s % 2 else -2.5) for s in range(seeds["noisy"])},
            "extra": {s: 50.0 for s in range(seeds["extra"])}}


def test_a_study_adds_seeds_only_where_a_contrast_is_undecided_and_stops_at_max():
    ran = {"ce": 3, "focal": 3, "noisy": 3, "extra": 3}
    history = []
    while True:
        results = compare_contrasts(values(ran), PAIRS, sequential=DESIGN)
        add = next_seeds(results, ran, DESIGN.max_seeds)
        if not add:
            break
        history.append(add)
        ran.update({label: seed + 1 for label, seed in add.items()})
    assert history == [{"noisy": 3, "ce": 3}, {"noisy": 4, "ce": 4}]
    assert ran == {"ce": 5, "focal": 3, "noisy": 5, "extra": 3}
    assert [r.verdict for r in results] == ["better", "inconclusive"]
    assert stop_reasons(results, ran, 5) == {"ce": "max seeds (5) reached", "focal": "all its contrasts decided",
                                             "noisy": "max seeds (5) reached", "extra": "in no declared contrast"}


def test_the_configuration_behind_catches_up_first():
    ran = {"ce": 5, "focal": 3, "noisy": 3, "extra": 3}
    results = compare_contrasts(values(ran), [("noisy", "ce")], sequential=Design(3, 10, margin=1.0))
    assert next_seeds(results, ran, 10) == {"noisy": 3}


def test_legend_is_two_sentences_and_names_the_design():
    for margin in (None, 1.0):
        for sequential in (False, True):
            text = verdict_legend(margin, sequential)
            assert text.count(". ") + text.endswith(".") == 2, text
            assert ("equivalent" in text) == (margin is not None)
            assert ("O'Brien-Fleming" in text) == sequential
