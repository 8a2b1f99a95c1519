"""The quickstart recipe (issue 25): a decision, quickly: >= 3 paired seeds per comparison, a small model and small
images, a segmentation part; `python -m benchmarks quickstart` times it against the reference workload."""

from collections import defaultdict
from pathlib import Path

from lossbench.experiments.plan import plan_sweep

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"


def test_quickstart_pairs_at_least_three_seeds_per_configuration_and_keeps_a_segmentation_part(tmp_path):
    plan = plan_sweep(RECIPE, [], tmp_path / "q")
    seeds: dict[tuple[str, str], set[int]] = defaultdict(set)
    for cell in plan.cells:
        seeds[(cell.document, str(cell.experiment.loss))].add(cell.experiment.seed)
        assert cell.experiment.data.image_size <= 32 and cell.experiment.epochs <= 8
    assert {doc for doc, _ in seeds} == {"clf", "seg"}
    for document in ("clf", "seg"):
        sets = [s for (doc, _), s in seeds.items() if doc == document]
        assert len(sets) >= 2 and all(s == sets[0] for s in sets) and len(sets[0]) >= 3  # paired, >= 3 seeds
        assert plan.report[document]["baseline"] == {"loss": "ce"}
    assert {c.experiment.model.name for c in plan.cells if c.document == "clf"} == {"resnet20"}
    assert {c.experiment.task for c in plan.cells if c.document == "seg"} == {"segmentation"}
    assert len(plan.cells) <= 14
