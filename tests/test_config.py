import pytest
from cli_helper import run_cli

from lossbench.config import load_experiment, load_experiments
from lossbench.errors import UserError


def test_defaults_and_overrides(tiny_config):
    path = tiny_config("task: classification\noptimizer: {lr: 0.1}\n")
    exp = load_experiment(path, ["optimizer.lr=0.05", "data.num_classes=7", "loss=focal(gamma=1)"])
    assert exp.optimizer.lr == 0.05
    assert exp.data.num_classes == 7
    assert exp.loss == "focal(gamma=1)"
    assert exp.name == "exp"


def test_multi_document_file(tiny_config):
    path = tiny_config("task: classification\n---\ntask: segmentation\nmodel: {name: unet}\n")
    exps = load_experiments(path)
    assert [e.task for e in exps] == ["classification", "segmentation"]
    assert [e.name for e in exps] == ["exp-0", "exp-1"]


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        ("optimizer: {lr: -0.1}\n", [], "optimizer.lr: Input should be greater than 0"),
        ("epochs: 0\n", [], "epochs: Input should be greater than 0"),
        ("epochs: three\n", [], "epochs: Input should be a valid integer"),
        ("optimiser: {lr: 0.1}\n", [], "optimiser: unknown key; valid keys here:"),
        ("data: {sauce: synthetic}\n", [], "data.sauce: unknown key; valid keys here:"),
        ("task: detection\n", [], "task: Input should be 'classification' or 'segmentation'"),
        ("epochs: 1\n", ["batch_size=-3"], "batch_size: Input should be greater than 0"),
        ("epochs: [1\n", [], "YAML syntax error"),
        ("- 1\n- 2\n", [], "must be a mapping"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tiny_config, text, overrides, expected):
    path = tiny_config(text)
    with pytest.raises(UserError) as err:
        load_experiment(path, overrides)
    assert expected in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_bad_config_exit_2_no_traceback(tiny_config):
    path = tiny_config("optimizer: {lr: -1}\n")
    res = run_cli(["train", str(path)], process=True)  # a real `python -m lossbench`: its exit code and stderr
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "optimizer.lr" in lines[0]
    assert "Traceback" not in res.err


def test_cli_missing_file_and_bad_set(tmp_path):
    res = run_cli(["train", str(tmp_path / "nope.yaml")])
    assert res.code == 2 and "nope.yaml: no such config file" in res.err
    (tmp_path / "ok.yaml").write_text("epochs: 1\n")
    res = run_cli(["train", str(tmp_path / "ok.yaml"), "--set", "novalue"])
    assert res.code == 2 and "expected KEY=VALUE" in res.err


def test_help_lists_only_existing_commands():
    res = run_cli(["--help"])
    assert res.code == 0
    from lossbench.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        assert name in res.out
        assert run_cli([name, "--help"]).code == 0


def test_every_recipe_validates():
    """Each file in recipes/ is a valid experiment (or sweep) config as shipped."""
    from pathlib import Path

    from lossbench.config import load_experiments, read_documents
    from lossbench.experiments.plan import plan_sweep

    recipes = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
    assert recipes
    for path in recipes:
        if any("grid" in doc for doc in read_documents(path)):
            assert plan_sweep(path).cells, path
        else:
            assert load_experiments(path), path
