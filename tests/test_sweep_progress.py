"""A sweep says when it will finish: each finished cell's line gives the elapsed time and an estimate of what is
left (a tqdm bar on a terminal), and ``lossbench sweep --dry-run`` prints the plan and an estimate from
finished cells, training nothing."""

import io

from cli_helper import run_cli

from lossbench.experiments.progress import Progress, clock_text

SWEEP = """\
name: tiny
output_dir: OUT
data: {source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 2}
model: {name: resnet20}
batch_size: 8
device: cpu
grid: {seed: SEEDS}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_give_elapsed_time_and_what_is_left_from_finished_items():
    lines, clock = [], Clock()
    progress = Progress(4, "cell", lines.append, bar=False, clock=clock)
    clock.now += 30
    progress.done("[1/4] done a")
    clock.now += 10
    progress.done("[2/4] done b")
    clock.now += 80
    progress.done("[3/4] done c")
    progress.done("[4/4] done d")
    assert lines == ["[1/4] done a; elapsed 0:30, about 1:30 left", "[2/4] done b; elapsed 0:40, about 0:40 left",
                     "[3/4] done c; elapsed 2:00, about 0:40 left", "[4/4] done d; elapsed 2:00"]
    assert clock_text(3725) == "1:02:05" and clock_text(59.6) == "1:00"


def test_with_each_items_seconds_what_is_left_is_their_mean_over_the_items_run_at_a_time():
    lines, clock = [], Clock()
    progress = Progress(5, "cell", lines.append, jobs=2, bar=False, clock=clock)
    clock.now += 40  # two cells ran side by side, 40 s each
    progress.done("[1/5] done a (40.0s) ok", 40.0)
    progress.done("[2/5] done b (40.0s) ok", 40.0)
    clock.now += 20
    progress.done("[3/5] done c (10.0s) ok", 10.0)
    progress.done("[4/5] done d (30.0s) ok", 30.0)
    assert lines == ["[1/5] done a (40.0s) ok; elapsed 0:40, about 1:20 left",  # 4 left x 40 s / 2 at a time
                     "[2/5] done b (40.0s) ok; elapsed 0:40, about 1:00 left",
                     "[3/5] done c (10.0s) ok; elapsed 1:00, about 0:30 left",
                     "[4/5] done d (30.0s) ok; elapsed 1:00, about 0:30 left"]  # the last one runs alone


def test_on_a_terminal_a_bar_counts_the_items():
    stream, printed = io.StringIO(), []
    progress = Progress(3, "trial", printed.append, bar=True, stream=stream)
    progress.done("trial 0 ok")
    progress.done("trial 1 ok")
    progress.close()
    assert "2/3 trials" in stream.getvalue() and "left]" in stream.getvalue()
    assert printed == []  # the lines went through tqdm to stdout, not through the plain log with figures


def test_dry_run_prints_the_plan_and_estimates_from_finished_cells(tmp_path, forked_cells):
    one = tmp_path / "one.yaml"
    one.write_text(SWEEP.replace("OUT", str(tmp_path / "runs")).replace("SEEDS", "[0]"))
    three = tmp_path / "three.yaml"
    three.write_text(SWEEP.replace("OUT", str(tmp_path / "runs")).replace("SEEDS", "[0, 1, 2]"))
    out = tmp_path / "runs" / "tiny"
    res = run_cli(["sweep", str(three), "--out", str(out), "--dry-run"])
    assert res.code == 0, res.err
    assert "3 cells, 0 done, 3 to run, 1 at a time" in res.out
    assert "estimate: none yet" in res.out and "tiny: 3 cells left, none finished yet" in res.out
    assert not out.exists()  # nothing written

    res = run_cli(["sweep", str(one), "--out", str(out)])
    assert res.code == 0, res.err
    assert "[1/1] done tiny" in res.out and "; elapsed " in res.out
    before = sorted(p.name for p in out.iterdir())
    res = run_cli(["sweep", str(three), "--out", str(out), "--dry-run", "--jobs", "2"])
    assert res.code == 0, res.err
    assert "3 cells, 1 done, 2 to run, 2 at a time" in res.out
    lines = res.out.splitlines()
    assert sum(ln.strip().startswith("done") for ln in lines) == 1
    assert sum(ln.strip().startswith("pending") for ln in lines) == 2
    assert "estimate: about " in res.out and "tiny: 2 cells left x " in res.out
    assert sorted(p.name for p in out.iterdir()) == before  # still nothing written
