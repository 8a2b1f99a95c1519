"""The documentation site: every registered entry has its generated page, and the pages' examples run.

The strict Sphinx build (``make docs``, run by ``.ci/run``) renders the
pages; these tests check, without Sphinx, what the pages are generated from:
every loss's docstring declares its formula, paper, official code and the
tests that check it (and those tests exist), every data source draws its
layout, every recipe says what it runs, every config key has a description.
"""

import re
import runpy
import sys
from pathlib import Path

import pytest
from torch import nn

from cli_helper import run_cli

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import lossbench_docgen as docgen  # noqa: E402

from lossbench.data.registry import SOURCES  # noqa: E402
from lossbench.losses import LOSSES  # noqa: E402
from lossbench.models import MODELS  # noqa: E402


def test_nothing_registered_lacks_a_part_of_its_page():
    assert docgen.page_problems() == []


def test_every_registered_entry_and_recipe_has_a_page_in_the_reference():
    pages = docgen.generated_pages()
    expected = ({f"loss-{n}.rst" for n in LOSSES} | {f"model-{docgen.slug(n)}.rst" for n in MODELS}
                | {f"source-{n}.rst" for n in SOURCES} | {f"recipe-{p.stem}.rst" for p in docgen.recipe_paths()})
    assert expected <= set(pages)
    for index, prefix in [("losses.rst", "loss-"), ("models.rst", "model-"), ("sources.rst", "source-"),
                          ("recipes.rst", "recipe-")]:
        listed = set(re.findall(rf"^   ({prefix}\S+)$", pages[index], re.M))
        assert listed == {p[:-4] for p in expected if p.startswith(prefix)}, index


def test_a_loss_without_its_sections_or_with_a_missing_test_is_reported():
    class Undocumented(nn.Module):
        """A loss somebody registered without saying where it comes from (Someone et al. 2024)."""

    class WrongTest(nn.Module):
        """Toy loss.

        Formula:
            L = 0

        Paper:
            None.

        Official code:
            None.

        Checked by:
            tests/test_losses.py::test_that_does_not_exist
        """

    assert docgen.loss_doc_problems(Undocumented) == [
        "no 'Formula' section", "no 'Paper' section", "no 'Official code' section", "no 'Checked by' section"]
    assert docgen.loss_doc_problems(WrongTest) == [
        "'Checked by' names tests/test_losses.py::test_that_does_not_exist, which does not exist"]


def test_the_ldam_page_shows_formula_paper_official_code_defaults_and_tests():
    page = docgen.loss_page("ldam")
    for part in ["Formula", "-log softmax(s (z - m_y e_y))_y", "Paper", "NeurIPS 2019", "Official code",
                 "kaidic/LDAM-DRW", "``max_margin``", "``0.5``", "``s``", "``30.0``",
                 "tests/test_losses_official.py::test_ldam_is_cross_entropy_of_shifted_scaled_logits"]:
        assert part in page, part


def test_the_config_reference_lists_every_key_with_type_default_and_description():
    page = docgen.config_page()
    keys = docgen.config_keys()
    assert {"data.root", "data.csv.id_column", "model.head", "optimizer.lr", "stages.train", "seed"} <= {
        k for k, *_ in keys}
    for key, type_, default, description in keys:
        assert f"``{key}``" in page and type_ and default and description, key
    assert ("data.image_size", "int", "32", "square side images are resized (or generated) to") in keys
    sweep = docgen.sweep_keys()
    assert {"report.baseline", "report.metric", "tune.trials", "tune.space.<key>.low"} <= {k for k, *_ in sweep}
    for key, _, _, description in sweep:
        assert f"``{key}``" in page and description, key


def test_source_pages_draw_the_layout_as_a_tree():
    page = docgen.source_page("folder")
    assert "├── train/" in page and "ants/*.jpg" in page


def test_recipe_pages_give_the_command_and_link_benchmark_results():
    facts = docgen.recipe_facts(REPO / "recipes" / "fashion_mnist_scenes.yaml")
    assert any(c.startswith("taskset -c 1 lossbench sweep recipes/fashion_mnist_scenes.yaml") for c in facts["commands"])
    assert "Quality: segmentation losses on Fashion-MNIST scenes (CPU)" in [h for h, _ in facts["benchmarks"]]
    assert facts["cost"]


def test_the_cli_reference_is_generated_from_the_parser():
    text = (DOCS / "reference" / "cli.rst").read_text()
    module, func = re.search(r":module: (\S+)", text)[1], re.search(r":func: (\S+)", text)[1]
    parser = getattr(__import__(module, fromlist=[func]), func)()
    assert parser.prog == "lossbench"


def test_the_getting_started_folder_sweep_runs_on_a_tiny_folder(tmp_path, forked_cells):
    from PIL import Image

    for split, count in [("train", 6), ("val", 2)]:
        for k, name in enumerate(["cats", "dogs"]):
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count if k == 0 else count // 2):
                Image.new("RGB", (12, 12), (40 * i, 200 * k, 90)).save(folder / f"{i}.png")
    stats = run_cli(["data", "stats", str(DOCS / "examples" / "my_folder.yaml"), "--set",
                     f"data.root={tmp_path / 'images'}", "--out", str(tmp_path / "stats")], cwd=tmp_path)
    assert stats.code == 0 and "cats" in stats.out, stats.err
    result = run_cli(["sweep", str(DOCS / "examples" / "my_folder.yaml"), "--out", str(tmp_path / "sweep"),
                      "--set", f"data.root={tmp_path / 'images'}", "--set", "epochs=1", "--set", "data.image_size=8",
                      "--set", "grid.seed=[0]", "--set", "grid.loss=[ce, focal(gamma=2)]", "--set", "model.name=resnet20",
                      "--set", "batch_size=4"],
                     cwd=tmp_path)
    assert result.code == 0, result.err
    assert (tmp_path / "sweep" / "report.html").is_file()


def test_the_own_loss_example_registers_and_computes_its_formula():
    import subprocess

    from cli_helper import ENV

    code = (f"import runpy, torch, torch.nn.functional as F; import lossbench; "
            f"ns = runpy.run_path({str(DOCS / 'examples' / 'my_loss.py')!r}, run_name='__main__'); "
            f"import sys; sys.path.insert(0, {str(DOCS / '_ext')!r}); import lossbench_docgen; "
            "assert lossbench_docgen.loss_doc_problems(ns['Poly1CrossEntropy']) == []; "
            "z, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 255]); "
            "ce = F.cross_entropy(z[:5], y[:5], reduction='none'); "
            "want = (ce + 2 * (1 - torch.exp(-ce))).mean(); "
            "got = lossbench.build_loss('poly1(epsilon=2)', num_classes=3)(z, y); "
            "assert torch.allclose(got, want), (got, want); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed, checked = done.stdout.splitlines()
    assert printed.startswith("poly1(epsilon=2) + 0.5 * ce = ") and checked == "ok"


#: top-level keys a sweep file adds to an experiment's (the sweep's own schema, experiments/); plugins: issue 23
SWEEP_KEYS = {"grid", "report", "tune", "plugins"}


def doc_blocks(language: str) -> list[tuple[str, str]]:
    """(page, text) of every fenced ``language`` block in the written pages."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        if "_build" in page.parts:
            continue
        for block in re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.M | re.S):
            found.append((str(page.relative_to(DOCS)), block))
    return found


def test_every_yaml_example_in_the_pages_is_a_valid_config_section():
    import yaml

    from lossbench.config import validate_experiment
    from lossbench.losses import check_spec

    blocks = doc_blocks("yaml")
    assert len(blocks) >= 6
    for page, text in blocks:
        doc = yaml.safe_load(text)
        assert isinstance(doc, dict), (page, text)
        validate_experiment({k: v for k, v in doc.items() if k not in SWEEP_KEYS}, page)
        for key, values in (doc.get("grid") or {}).items():  # loss specs in a grid, zipped or not
            column = [k.strip() for k in key.split(",")].index("loss") if "loss" in key.split(", ") else None
            for value in values if column is not None else []:
                check_spec(value[column] if "," in key else value, f"{page}: grid.{key}")


def test_every_lossbench_command_in_the_pages_parses():
    import shlex

    from lossbench.cli import build_parser

    commands = []
    for page, text in doc_blocks("bash"):
        for line in text.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if re.search(r"(^|\s|/)lossbench (\w)", line):
                commands.append((page, shlex.split(re.split(r"(?:^|\s|/)lossbench ", line, maxsplit=1)[1])))
    assert len(commands) >= 15
    parser = build_parser()
    for page, argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # --version and --help exit 0
            if exc.code != 0:
                pytest.fail(f"{page}: lossbench {' '.join(argv)} does not parse")


def makefile_targets() -> dict[str, list[str]]:
    """Each Makefile target and its recipe lines."""
    targets: dict[str, list[str]] = {}
    current = None
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("\t") and current:
            targets[current].append(line.strip())
        elif (match := re.match(r"^([\w-]+):", line)):
            current = match[1]
            targets[current] = []
        else:
            current = None
    return targets


def test_the_readme_two_commands_are_the_makefile_targets_ci_and_the_demo_run():
    import shlex

    from lossbench.cli import build_parser
    from lossbench.config import read_documents, validate_experiment

    block = re.search(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)[1]
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.strip()]
    assert [c[:1] for c in commands] == [["make"], ["make"]] and {c[1] for c in commands} == {"demo", "test"}
    targets = makefile_targets()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "make docs" in ci
    assert targets["test"] == ["$(BIN)/python -m pytest -n auto"]
    demo = shlex.split(targets["demo"][0])
    assert demo[0] == "$(BIN)/lossbench" and build_parser().parse_args(demo[1:]).command == "sweep"
    documents = read_documents(REPO / demo[2])
    assert len(documents) == 2 and all("grid" in doc for doc in documents)
    for doc in documents:
        validate_experiment({k: v for k, v in doc.items() if k not in SWEEP_KEYS}, demo[2])
