"""The quickstart's wall time as a multiple of the reference workload: the old recipe and today's, in one run.

    PYTHONPATH=src python -m benchmarks quickstart            # both recipes, as `make demo` runs them
    PYTHONPATH=src python benchmarks/quickstart.py --only new # today's recipe alone

Each recipe runs as ``lossbench sweep RECIPE --jobs 2`` (``make demo``'s command) in a fresh folder with a
fresh data cache, started from this process; the old recipe is the one before issue 25
(``git show d1d7a1f:recipes/quickstart.yaml``). The reference workload (benchmarks/calibrate.py) is timed
before and after; the ratio is the sweep's wall time over their mean, so a machine that is 2-4x slower
today gives about the same ratio (issue 25's goal for the new recipe: at most 18).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "d1d7a1f"
RECIPE = "recipes/quickstart.yaml"


def old_recipe(folder: Path) -> Path | None:
    """The recipe before issue 25, from git, written into ``folder``; None outside a git checkout."""
    proc = subprocess.run(["git", "show", f"{OLD_COMMIT}:{RECIPE}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    path = folder / "quickstart-old.yaml"
    path.write_text(proc.stdout)
    return path


CELL_LINE = re.compile(r"\] done (\S+) \(([\d.]+)s\)")
SWEEP_LINE = re.compile(r"sweep finished in (\d+)s")


def cell_seconds(stdout: str, training: dict[str, float]) -> dict[str, float]:
    """Each cell's seconds as the sweep's line gives them, for the cells whose training seconds are known."""
    return {name: float(s) for name, s in CELL_LINE.findall(stdout) if name in training}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2 if ordered else float("nan")


def overheads(stdout: str, training: dict[str, float]) -> tuple[float, float, float]:
    """(the median cell's share of seconds spent outside training, the same over all cells' seconds, the sweep's
    own seconds) from the sweep's lines (each cell's seconds, the sweep's) and the training seconds each cell
    recorded. The first cells also wait for the fork server's imports, once per sweep: the median leaves that out."""
    cells = cell_seconds(stdout, training)
    shares = [(cells[n] - training[n]) / cells[n] for n in cells if cells[n] > 0]
    total = sum(cells.values())
    whole = sum(cells[n] - training[n] for n in cells) / total if total else float("nan")
    return median(shares), whole, float((SWEEP_LINE.findall(stdout) or ["nan"])[-1])


def median_share_by_document(stdout: str, training: dict[str, float]) -> dict[str, float]:
    """The median cell's share of seconds outside training for each document of the recipe (the part of a cell's
    name before ``--``: ``clf``, ``seg``), whose cells differ in length and so in that share."""
    by_doc: dict[str, list[float]] = {}
    for name, seconds in cell_seconds(stdout, training).items():
        if seconds > 0:
            by_doc.setdefault(name.split("--")[0], []).append((seconds - training[name]) / seconds)
    return {doc: median(shares) for doc, shares in by_doc.items()}


def run_sweep(recipe: Path, folder: Path, extra: list[str]
              ) -> tuple[float, float, int, float, float, float, dict[str, float]]:
    """(wall seconds, training seconds its cells recorded, cells, the median cell's and all cells' share outside
    training, the sweep's own seconds, the median cell's share by document) of ``lossbench sweep RECIPE --jobs 2``."""
    out = folder / f"sweep-{recipe.stem}"
    env = dict(os.environ, LOSSBENCH_CACHE=str(folder / f"cache-{recipe.stem}"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "lossbench", "sweep", str(recipe), "--out", str(out), "--jobs", "2", *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{recipe.name}: the sweep failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    training = {p.parent.name: json.loads(p.read_text()).get("wall_seconds", 0.0) for p in out.glob("*/summary.json")}
    middle, whole, sweep_seconds = overheads(proc.stdout, training)
    by_document = median_share_by_document(proc.stdout, training)
    return wall, sum(training.values()), len(training), middle, whole, sweep_seconds, by_document


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Time the reference, the recipes, the reference again; print the table; return {recipe: ratio}."""
    from benchmarks.calibrate import reference_seconds

    parser = argparse.ArgumentParser(prog="python -m benchmarks quickstart")
    parser.add_argument("--only", choices=("old", "new"), default=None, help="one recipe (default: both)")
    parser.add_argument("--quick", action="store_true", help="one epoch per cell (checks the command, not the goal)")
    args = parser.parse_args(argv)
    extra = ["--set", "epochs=1"] if args.quick else []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="lossbench-quickstart-") as tmp:
        folder = Path(tmp)
        recipes = {"old": old_recipe(folder), "new": ROOT / RECIPE}
        if recipes["old"] is None and args.only != "new":
            print(f"old recipe: not in this checkout (git show {OLD_COMMIT}:{RECIPE} failed); timing the new one only")
        chosen = [(k, p) for k, p in recipes.items() if p is not None and args.only in (None, k)]
        before = reference_seconds()
        timed = [(name, *run_sweep(path, folder, extra)) for name, path in chosen]
        after = reference_seconds()
    reference = (before + after) / 2
    print(f"reference workload (s): {before:.2f} before, {after:.2f} after, mean {reference:.2f}")
    print(f"{'recipe':<22}{'cells':>6}{'wall (s)':>10}{'cells train (s)':>16}{'outside training':>18}"
          f"{'report etc. (s)':>16}{'wall / reference':>18}")
    for name, wall, train, cells, middle, whole, sweep_seconds, _ in timed:
        label = f"old ({OLD_COMMIT})" if name == "old" else "new (this checkout)"
        ratios[name] = wall / reference
        print(f"{label:<22}{cells:>6}{wall:>10.1f}{train:>16.1f}{f'{middle:.0%} / {whole:.0%}':>18}"
              f"{wall - sweep_seconds:>16.1f}{ratios[name]:>18.1f}")
    for name, *_, by_document in timed:
        print(f"outside training, median cell of each document ({name}): "
              + ", ".join(f"{doc} {share:.1%}" for doc, share in by_document.items()))
    print("outside training: the share of a cell's seconds (as the sweep timed it) not in the training time its "
          "summary.json records (process start, imports, data and model set-up, the end-of-run files), median cell "
          "/ all cells (the first cells also wait for the fork server's imports, once per sweep); "
          "report etc.: the sweep command's wall time beyond its cells (start-up, planning, the report)")
    print("command: lossbench sweep RECIPE --jobs 2 (make demo), fresh folder and data cache"
          + (", --set epochs=1" if args.quick else ""))
    return ratios


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
