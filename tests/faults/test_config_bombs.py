"""Configs that expand far beyond their size (YAML anchors and aliases, loss terms, nesting) are refused in one line,
in well under a second (issue 27, item 2). A 1 KB config used to hang ``train`` in the loss-spec parser."""

from __future__ import annotations

import time

import pytest

import lossbench

from .helpers import TALLY, assert_refused_in_one_line, run_cli

HEAD = """\
name: bomb
output_dir: {runs}
data: {{source: synthetic, num_classes: 3, image_size: 8, train_per_class: 4, val_per_class: 2}}
model: {{name: resnet20}}
epochs: 1
device: cpu
"""


def alias_bomb(key: str, levels: int = 9, indent: str = "") -> str:
    """``key:`` as a list of lists of aliases standing for 10^levels values (under 1 KB of YAML)."""
    lines = [f"{indent}{key}:", f"{indent}  - &l0 [ce, ce, ce, ce, ce, ce, ce, ce, ce, ce]"]
    lines += [f"{indent}  - &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


#: ten grid keys of ten values each: 10^10 cells from 400 bytes
TEN_KEYS = ("seed", "batch_size", "epochs", "data.train_per_class", "data.val_per_class", "data.image_size",
            "drw_epoch", "optimizer.warmup_epochs", "data.num_workers", "grad_accumulation")


def nested(depth: int) -> str:
    return "loss: " + "[" * depth + "ce" + "]" * depth + "\n"


CASES = {
    # name: (config body after HEAD, command, fragments of the line)
    "loss-alias-bomb-10^9": (alias_bomb("loss"), "train", ["loss: expands to more than 100000 values"]),
    "grid-alias-bomb-10^9": ("grid:\n" + alias_bomb("loss", indent="  "), "sweep",
                             ["grid: expands to more than 100000 values"]),
    "grid-of-10^10-cells": ("grid:\n" + "".join(f"  {key}: [{', '.join(map(str, range(1, 11)))}]\n"
                                              for key in TEN_KEYS), "sweep",
                            ["grid: 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 = 10000000000 cells", "split it"]),
    "loss-list-of-200-terms": ("loss: [" + ", ".join(["ce"] * 200) + "]\n", "train", ["sums more than 64 losses"]),
    "loss-spec-of-100-terms": ("loss: " + " + ".join(["ce"] * 100) + "\n", "train", ["sums more than 64 losses"]),
    "nested-40-levels": (nested(40), "train", ["bomb.yaml:7: nested more than 32 levels deep"]),
    "nested-100000-levels": (nested(100_000), "train", ["bomb.yaml:7: nested more than 32 levels deep"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_config_that_expands_too_far_is_refused_fast(name, tmp_path):
    body, command, fragments = CASES[name]
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(HEAD.format(runs=tmp_path / "runs") + body)
    assert cfg.stat().st_size < 400_000
    (tmp_path / "empty.yaml").write_text("")
    run_cli([command, str(tmp_path / "empty.yaml")], cwd=tmp_path)  # the command's imports: not what is timed
    started = time.perf_counter()
    res = run_cli([command, str(cfg)], cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert_refused_in_one_line(res, [str(cfg), *fragments])
    assert seconds < 1.0, f"refused after {seconds:.2f} s"
    assert not (tmp_path / "runs").exists()
    TALLY["config bombs refused in under a second"] += 1


def shared_lists(levels: int = 9) -> list:
    """A Python list standing for 10^levels loss names, built from ten-fold shared references."""
    spec: list = ["ce"] * 10
    for _ in range(levels - 1):
        spec = [spec] * 10
    return spec


def test_api_refuses_shared_lists_fast(tmp_path):
    """The Python API reads no YAML, but a mapping can share its parts the same way."""
    lossbench.build_loss("ce", 3)  # imports first: the clock is for the refusals
    for call, fragment in ((lambda: lossbench.build_loss(shared_lists(), 3), "sums more than 64 losses"),
                           (lambda: lossbench.train({"loss": shared_lists(), "output_dir": str(tmp_path)}),
                            "loss: expands to more than 100000 values")):
        started = time.perf_counter()
        with pytest.raises(lossbench.UserError, match=fragment):
            call()
        assert time.perf_counter() - started < 1.0
    TALLY["config bombs refused in under a second"] += 1


def test_jobs_0_is_refused_on_the_command_line(tmp_path):
    """As it is in the API (it used to run one cell at a time)."""
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(HEAD.format(runs=tmp_path / "runs") + "grid: {seed: [0]}\n")
    res = run_cli(["sweep", str(cfg), "--jobs", "0"], cwd=tmp_path)
    assert_refused_in_one_line(res, ["--jobs 0: run at least one cell at a time"])
    assert not list((tmp_path / "runs").rglob("*.pt"))
    TALLY["defects refused (in-process)"] += 1
