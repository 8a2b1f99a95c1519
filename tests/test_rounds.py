"""experiments/rounds.py: which configuration gets the next seed of a sequential study, and why each stopped."""

from lossbench.experiments.contrasts import compare_contrasts, verdict_legend
from lossbench.experiments.rounds import next_seeds, replay_study, stop_reasons
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


def test_replay_from_the_cells_outcomes_gives_the_same_rounds():
    full = values({"ce": 5, "focal": 5, "noisy": 5, "extra": 5})
    outcomes = {label: [v[s] for s in range(5)] for label, v in full.items()}
    state = replay_study(outcomes, PAIRS, DESIGN)
    assert state.ran == {"ce": 5, "focal": 3, "noisy": 5, "extra": 3} and state.over
    assert [r.verdict for r in state.results] == ["better", "inconclusive"]
    assert state.reasons["focal"] == "all its contrasts decided"
    # a sweep killed while seed 3 of noisy ran: only that cell is waited for, nothing further is given
    partial = {label: list(v) for label, v in outcomes.items()}
    partial["noisy"][3:] = [None, None]
    partial["ce"][4:] = [None]
    state = replay_study(partial, PAIRS, DESIGN)
    assert state.waiting and not state.over and state.ran == {"ce": 4, "focal": 3, "noisy": 4, "extra": 3}
    # a failed cell (NaN) counts as run: the study goes on without that pair
    failed = {label: list(v) for label, v in outcomes.items()}
    failed["noisy"][3] = float("nan")
    state = replay_study(failed, PAIRS, DESIGN)
    assert state.over and state.ran["noisy"] == 5 and state.results[1].n == 4


def test_the_reports_seed_table_replays_the_rounds_without_post_hoc_contrasts():
    """A declared contrast on a '+ post-hoc LA' row is scored by the report after training; the rounds decided
    without it, and replaying them for the report's seeds table must too (it raised KeyError on the
    long-tailed recipe's folder)."""
    from lossbench.experiments.study import Study, study_state
    from lossbench.experiments.study_design import posthoc_label

    cells = [({"loss": loss, "seed": seed}, {"status": "done", "final_balanced_accuracy": 0.7 + 0.01 * seed + bonus})
             for loss, bonus in (("ce", 0.0), ("la", 0.05)) for seed in range(3)]
    ce, la = "loss=ce", "loss=la"
    study = Study(((la, ce), (posthoc_label(ce), ce)), "balanced_accuracy", "final", 1.0, (3, 5))
    state = study_state(cells, study, "doc")
    assert [r.label for r in state.results] == [f"{la} vs {ce}"]
    assert state.ran == {ce: 4, la: 4} and state.waiting  # undecided after 3: the next seed is given
