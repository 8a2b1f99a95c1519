"""A sweep survives its cells failing: one raises, one diverges (nan), one is SIGKILLed mid-run.

A second ``lossbench sweep`` on the same folder at the same time is refused in
one line. The others finish; results.csv, report.md and report.html mark each
failed cell with its one-line error; a re-run completes only what is missing
(the killed cell ends exactly like an uninterrupted run), leaves finished cells
untouched, and results.csv holds every cell exactly once.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from shared import once_per_session

from .helpers import TALLY, CliResult, forked_cell_process, forked_cli, run_cli, tree_hash

SWEEP = """\
name: ok
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 2}}
model: {{name: resnet20}}
batch_size: 8
device: cpu
grid: {{epochs: [1, 8]}}
---
name: bad
output_dir: {out}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 8, val_per_class: 2}}
model: {{name: resnet20}}
optimizer: {{name: sgd, lr: 1000.0}}
batch_size: 8
device: cpu
grid: {{loss: ["focal(gamma=-1)", ce]}}
"""


def sweep(cfg: Path, out: Path, logs: Path):
    """``lossbench sweep --jobs 2`` as a process forked with lossbench imported, its cells forked processes too
    (cli_helper.forked_cell_process; test_tune_sweep kills a sweep of fresh ones). Output in ``logs``.{out,err}."""
    return forked_cli(["sweep", str(cfg), "--out", str(out), "--jobs", "2"], logs.with_suffix(".out"),
                      err_path=logs.with_suffix(".err"), fork_cells=True)


def ended(proc, logs: Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a forked sweep, once it ends."""
    proc.join(300)
    assert proc.exitcode is not None, "the sweep did not end"
    return proc.exitcode, logs.with_suffix(".out").read_text(), logs.with_suffix(".err").read_text()


def cell_process(sweep_dir: Path, cell: str) -> int | None:
    """pid of the process training ``cell``: the one whose stdout is the cell's log, if any."""
    log = str(sweep_dir / "logs" / f"{cell}.log")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/fd/1") == log:
                return int(entry)
        except OSError:
            continue
    return None


def results(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def faulty_sweep(tmp_path_factory):
    """The sweep of :func:`run_faulty_sweep`, run once for the whole test session."""
    tmp, found = once_per_session(tmp_path_factory, "faulty-sweep", run_faulty_sweep)
    rerun = CliResult(**found["rerun"])
    return {**found, "tmp": tmp, "dir": Path(found["dir"]), "rerun": rerun}


def run_faulty_sweep(tmp: Path) -> dict:
    """Run the sweep (racing a second sweep on its folder), SIGKILL the long cell, then run it again."""
    cfg = tmp / "faulty.yaml"
    cfg.write_text(SWEEP.format(out=tmp / "runs"))
    sweep_dir = tmp / "runs" / "faulty"
    logs = {name: tmp / f"sweep-{name}" for name in ("first", "second")}
    first, second = sweep(cfg, sweep_dir, logs["first"]), sweep(cfg, sweep_dir, logs["second"])
    # whichever takes the lock first runs the sweep; the other must refuse at once
    end = time.monotonic() + 300
    loser = None
    while loser is None and time.monotonic() < end:
        for proc in (first, second):
            if not proc.is_alive():
                loser = proc
        time.sleep(0.05)
    winner = second if loser is first else first
    loser_result = ended(loser, logs["first" if loser is first else "second"])

    cell, killed = None, None
    while time.monotonic() < end and winner.is_alive():
        cell = cell or next((c for c in os.listdir(sweep_dir) if c.startswith("ok--epochs-8")), None)
        if cell and (sweep_dir / cell / "last.pt").exists():
            killed = cell_process(sweep_dir, cell)
            if killed:
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.01)
    winner_result = ended(winner, logs["first" if winner is first else "second"])
    first_rows = results(sweep_dir)
    done_before = {r["cell"]: tree_hash(sweep_dir / r["cell"]) for r in first_rows if r["status"] == "done"}
    report_md = (sweep_dir / "report.md").read_text()
    report_html = (sweep_dir / "report.html").read_text()

    # --jobs 2 again: one thread per cell, as in the first run and the reference (the thread count changes the bits);
    # in-process, its cells forked processes (the first run's were fresh ones)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lossbench.experiments.sweep._run_process", forked_cell_process)
        rerun = run_cli(["sweep", str(cfg), "--out", str(sweep_dir), "--jobs", "2"])
    return {
        "dir": str(sweep_dir), "cell": cell, "killed": killed, "loser": loser_result, "winner": winner_result,
        "first_rows": first_rows, "done_before": done_before, "report_md": report_md, "report_html": report_html,
        "rerun": vars(rerun), "final_rows": results(sweep_dir),
    }


def by_role(rows):
    """The four cells by what they do: finish, get killed, raise, diverge."""
    roles = {("ok", "1"): "good", ("ok", "8"): "long", ("bad", "focal(gamma=-1)"): "raises", ("bad", "ce"): "diverges"}
    return {roles[(r["document"], r.get("epochs") or r.get("loss"))]: r for r in rows}


def test_second_sweep_on_the_folder_is_refused_in_one_line(faulty_sweep):
    code, out, err = faulty_sweep["loser"]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "another lossbench sweep" in lines[0] and str(faulty_sweep["dir"]) in lines[0], lines[0]
    names = [r["cell"] for r in faulty_sweep["first_rows"]]  # the refused sweep added or lost no row
    assert len(names) == len(set(names)) == 4


def test_failed_cells_are_marked_with_their_error_and_the_others_finish(faulty_sweep):
    code, out, err = faulty_sweep["winner"]
    assert code == 1 and "Traceback" not in err, err
    assert faulty_sweep["killed"], "the long cell was never seen running"
    rows = by_role(faulty_sweep["first_rows"])
    assert rows["good"]["status"] == "done"
    assert rows["raises"]["status"] == "failed" and "gamma must be >= 0" in rows["raises"]["error"]
    assert rows["diverges"]["status"] == "failed" and "stopped" in rows["diverges"]["error"]
    assert "non-finite" in rows["diverges"]["error"] or "nan" in rows["diverges"]["error"]
    assert rows["long"]["status"] == "failed" and "killed by signal 9" in rows["long"]["error"]
    for doc in ("raises", "diverges", "long"):
        error = rows[doc]["error"]
        assert "\n" not in error
        assert rows[doc]["cell"] in faulty_sweep["report_md"] and error in faulty_sweep["report_md"]
        assert rows[doc]["cell"] in faulty_sweep["report_html"]
    assert "gamma must be &gt;= 0" in faulty_sweep["report_html"]
    TALLY["sweep cells failed and reported"] += 3


def test_rerun_completes_only_missing_cells_and_loses_no_row(faulty_sweep):
    rerun = faulty_sweep["rerun"]
    assert rerun.code == 1, rerun.err  # the raising and diverging cells fail again, as they must
    for cell, hashes in faulty_sweep["done_before"].items():
        assert tree_hash(faulty_sweep["dir"] / cell) == hashes, f"finished cell {cell} was touched"
    rows = faulty_sweep["final_rows"]
    planned = json.loads((faulty_sweep["dir"] / "sweep.json").read_text())["cells"]
    names = [r["cell"] for r in rows]
    assert sorted(names) == sorted(c["name"] for c in planned) and len(set(names)) == len(names)
    final = by_role(rows)
    assert final["long"]["status"] == "done" and final["good"]["status"] == "done", \
        (final["long"], faulty_sweep["rerun"].err)
    assert final["raises"]["status"] == final["diverges"]["status"] == "failed"
    TALLY["result rows lost or duplicated"] += len(planned) - len(set(names) & {c["name"] for c in planned}) \
        + len(names) - len(set(names))


def test_the_killed_cell_ends_like_an_uninterrupted_run(faulty_sweep, tmp_path):
    sweep_dir, cell = faulty_sweep["dir"], faulty_sweep["cell"]
    config = yaml.safe_load((sweep_dir / "configs" / f"{cell}.yaml").read_text())
    config["output_dir"] = str(tmp_path)
    (tmp_path / "cell.yaml").write_text(yaml.safe_dump(config))
    assert run_cli(["train", str(tmp_path / "cell.yaml")]).code == 0
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    with (sweep_dir / cell / "metrics.csv").open() as a, (tmp_path / cell / "metrics.csv").open() as b:
        assert strip(csv.DictReader(a)) == strip(csv.DictReader(b))
    sa, sb = (json.loads((d / cell / "summary.json").read_text()) for d in (sweep_dir, tmp_path))
    assert sa["best"] == sb["best"] and sa["final"] == sb["final"] and sa["epochs_trained"] == 8
    TALLY["kills survived"] += 1
