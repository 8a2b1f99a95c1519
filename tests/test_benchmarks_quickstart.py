"""benchmarks/quickstart.py: the old recipe comes from git, and a cell's time outside training is read right."""

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("quickstart_bench", ROOT / "benchmarks" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cells_share_outside_training_and_the_sweeps_own_seconds_from_its_lines():
    out = ("sweep runs/q: 2 cells, 0 already done, 2 to run, 2 at a time\n"
           "[1/2] done clf--loss-ce_seed-0-a4 (10.0s) ok; elapsed 0:10, about 0:10 left\n"
           "[2/2] done clf--loss-la_seed-0-b5 (30.0s) ok; elapsed 0:31\n"
           "sweep finished in 33s: 2 done, 0 failed -> runs/q/results.csv\n")
    median, whole, seconds = _module().overheads(out, {"clf--loss-ce_seed-0-a4": 9.0, "clf--loss-la_seed-0-b5": 24.0})
    assert abs(median - (0.1 + 0.2) / 2) < 1e-9 and abs(whole - 7.0 / 40.0) < 1e-9 and seconds == 33.0


def test_old_recipe_is_the_one_before_issue_25(tmp_path):
    path = _module().old_recipe(tmp_path)
    if path is None:  # not a git checkout (an sdist): the benchmark says so and times the new recipe alone
        return
    documents = list(yaml.safe_load_all(path.read_text()))
    assert [d["name"] for d in documents] == ["clf", "seg"]
    assert documents[0]["model"]["name"] == "resnet18" and documents[0]["grid"]["seed"] == [0, 1]


def test_median_share_outside_training_for_each_document():
    out = "\n".join(["[1/4] done clf--loss-ce_seed-0-aa (10.00s) ok", "[2/4] done clf--loss-ce_seed-1-bb (2.00s) ok",
                     "[3/4] done seg--loss-ce_seed-0-cc (4.00s) ok", "[4/4] done seg--loss-ce_seed-1-dd (5.00s) ok"])
    training = {"clf--loss-ce_seed-0-aa": 1.8, "clf--loss-ce_seed-1-bb": 1.8, "seg--loss-ce_seed-0-cc": 3.6,
                "seg--loss-ce_seed-1-dd": 4.0}
    # shares outside training: clf 0.82 (its cell waited for the fork server) and 0.10, seg 0.10 and 0.20
    by_document = _module().median_share_by_document(out, training)
    assert by_document.keys() == {"clf", "seg"}
    assert abs(by_document["clf"] - 0.46) < 1e-9 and abs(by_document["seg"] - 0.15) < 1e-9
