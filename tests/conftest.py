import atexit
import os
import shutil
import tempfile

# Under pytest-xdist (`make test` runs one worker per core) each worker, and every
# `lossbench` subprocess a test starts, gets one thread: on 2 cores two single-thread
# workers finish the suite sooner than one worker with two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
# Data caches written by tests (and by the sweeps they run) stay out of ~/.cache.
if "LOSSBENCH_CACHE" not in os.environ:
    os.environ["LOSSBENCH_CACHE"] = tempfile.mkdtemp(prefix="lossbench-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LOSSBENCH_CACHE"], True)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

#: modules whose tests share an expensive module-scoped fixture (trained runs, a sweep, a torchrun job): under
#: xdist (``--dist loadgroup``) each module runs on one worker, so the fixture is made once, not once per worker
SHARED_FIXTURE_MODULES = {"test_inference.py", "test_engine_ddp.py", "test_sweep_faults.py"}
#: the modules of the slow end-to-end tests, slowest first: they start first, so that at the end no worker
#: idles while the other finishes one of them
SLOW_FIRST = ["test_sweep_report.py", "test_recipe_fashion_mnist_lt.py", "test_recipes.py", "test_sweep_faults.py",
              "test_api.py", "test_report_browser.py", "test_engine_resume.py", "test_train_e2e.py",
              "test_tracking.py", "test_engine_ddp.py", "test_kill_resume.py", "test_inference.py"]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in SHARED_FIXTURE_MODULES:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def tiny_config(tmp_path):
    """Write a config file into tmp_path and return its path; runs land in tmp_path/runs."""

    def write(text: str, name: str = "exp.yaml"):
        path = tmp_path / name
        path.write_text(text.replace("OUT", str(tmp_path / "runs")))
        return path

    return write
