"""The Python API: the documentation's "From Python" example runs as written, and ``import lossbench`` is cheap."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """docs/examples/use_from_python.py, which the site's "Getting started" page shows."""
    return (ROOT / "docs" / "examples" / "use_from_python.py").read_text(encoding="utf-8")


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys, forked_cells):
    (tmp_path / "recipes").mkdir()
    shutil.copy(ROOT / "recipes" / "example.yaml", tmp_path / "recipes")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "use_from_python.py", "exec"), namespace)
    run, loaded, sweep = namespace["run"], namespace["loaded"], namespace["sweep"]
    assert run.folder == Path("runs/python/my-run") and (run.folder / "best.pt").is_file()
    assert len(run.metrics) == 1 and run.summary["epochs_trained"] == 1
    photo = loaded.predict(["photo.jpg", Image.open("photo.jpg")])  # a file and the same image in memory agree
    assert photo.probabilities.shape == (2, 6) and photo.labels[0] == photo.labels[1]
    assert [row["status"] for row in sweep.results] == ["done", "done"] and sweep.report.is_file()
    assert "tensor(" in capsys.readouterr().out


def test_import_lossbench_loads_no_torch_until_a_function_needs_it():
    code = ("import sys, lossbench; print('torch' in sys.modules, lossbench.__version__); "
            "lossbench.build_loss('ce', 3); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "0.1.0", "True"]
