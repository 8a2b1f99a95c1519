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

#: the modules of the slow end-to-end tests, slowest first. Under xdist (``--dist loadgroup`` hands one test at a
#: time to whichever worker is free) they start first, so that at the end no worker idles while the other
#: finishes one of them.
SLOW_FIRST = ["test_tune_sweep.py", "test_sweep_study.py", "test_sweep_faults.py", "test_recipes.py", "test_sweep_report.py",
              "test_engine_ddp.py", "test_recipe_scenes.py", "test_report_browser.py", "test_api.py",
              "test_kill_resume.py", "test_engine_resume.py", "test_train_e2e.py", "test_recipe_fashion_mnist_lt.py",
              "test_tracking.py", "test_inference.py"]
#: modules whose tests share a fixture made once per session (tests/shared.py): their first test starts early,
#: the others after the slow block, by when the fixture is made and no worker has to wait for it
SHARED_FIXTURE_MODULES = {"test_sweep_faults.py", "test_engine_ddp.py", "test_inference.py"}


#: tests that run on one xdist worker (``--dist loadgroup``), by module or node id: MONAI's tests share one import
#: of monai; the Ray tests share the session's Ray (the ``ray_local`` fixture), its worker process and that
#: worker's fork server. Given to xdist's scheduler here, because pytest 9 ignores the node-id suffix with which
#: xdist 3.8 applies ``@pytest.mark.xdist_group`` (the marker silently groups nothing).
WORKER_GROUPS = {
    "tests/test_losses_monai.py": "monai",
    "tests/test_tune_sweep.py::test_tuned_sweep_resumes_after_a_kill_and_runs_the_same_on_ray": "ray",
    "tests/test_sweep_study.py::test_sequential_seeds_stop_where_decided_resume_after_a_kill_and_match_on_ray": "ray",
}


def worker_group(nodeid: str) -> str | None:
    """The :data:`WORKER_GROUPS` group of the test ``nodeid``, or None."""
    return next((group for prefix, group in WORKER_GROUPS.items()
                 if nodeid == prefix or nodeid.startswith(prefix + "::")), None)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist (-p no:xdist) must not reject it
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` with :data:`WORKER_GROUPS`: each group one unit of work, given to one worker."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class GroupedScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid) or super()._split_scope(nodeid)

    return GroupedScheduling(config, log)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    seen: set[str] = set()

    def order(item) -> float:
        name = item.path.name
        if name in SHARED_FIXTURE_MODULES and name in seen:
            return len(rank) - 0.5
        seen.add(name)
        return rank.get(name, len(rank))

    keys = {id(item): order(item) for item in items}
    items.sort(key=lambda item: keys[id(item)])


@pytest.fixture(scope="session", autouse=True)
def one_cpu_share_per_worker():
    """Under xdist a worker's share of the machine is its CPUs over the workers: a sweep run in a worker gives
    its cells that many threads (``usable CPUs // jobs``), not the whole machine's, which the other workers
    use at the same time (oversubscribed OpenMP threads spin and burn CPU on a small machine)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers == 1:
        yield
        return
    from lossbench.experiments import backends

    whole = backends.usable_cpus
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backends, "usable_cpus", lambda: max(1, whole() // workers))
        yield


@pytest.fixture
def forked_cells(monkeypatch):
    """Sweeps run in this process start their cells as ``lossbench train`` processes forked from a server with
    lossbench imported (cli_helper.forked_cell_process), not as fresh interpreters: still one real process per
    cell (its own exit code, stderr, kill), without seconds of imports each. Tests about the sweep's own
    processes (a killed sweep takes its cells along) leave this out."""
    from cli_helper import forked_cell_process

    monkeypatch.setattr("lossbench.experiments.sweep._run_process", forked_cell_process)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with one CPU, started once for the session's Ray tests (list them in :data:`WORKER_GROUPS`
    under "ray", so that under xdist they run in one worker and share it, with its worker process and that
    worker's fork server) and stopped at the end (cli_helper.start_local_ray)."""
    from cli_helper import start_local_ray

    yield from start_local_ray()


@pytest.fixture
def tiny_config(tmp_path):
    """Write a config file into tmp_path and return its path; runs land in tmp_path/runs."""

    def write(text: str, name: str = "exp.yaml"):
        path = tmp_path / name
        path.write_text(text.replace("OUT", str(tmp_path / "runs")))
        return path

    return write
