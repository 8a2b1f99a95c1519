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


@pytest.fixture
def tiny_config(tmp_path):
    """Write a config file into tmp_path and return its path; runs land in tmp_path/runs."""

    def write(text: str, name: str = "exp.yaml"):
        path = tmp_path / name
        path.write_text(text.replace("OUT", str(tmp_path / "runs")))
        return path

    return write
