"""Shared test settings, and the guard on the `ray` marker."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Ray 2.60 turns token authentication on for new local clusters; tests opt out explicitly
# (and subprocesses they start inherit this).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Two cores: keep torch from oversubscribing them in every test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The oracle search's cache (esper-rllib signal / evaluate): one for the session, not the
# user's ~/.cache (subprocesses inherit it too).
os.environ.setdefault("ESPER_CACHE_DIR", tempfile.mkdtemp(prefix="esper-test-cache-"))
# Every local Ray the tests start, in this process or in a subprocess (the CLI), keeps its session
# under a temp dir of this run's own (Ray reads RAY_TMPDIR): the guard below sees each new one, and
# the tests never join a Ray someone else started on this machine. Short: Ray's unix sockets live
# under it and are limited to ~107 characters.
RAY_SESSIONS = Path(tempfile.mkdtemp(prefix="esper-ray-", dir=os.environ.get("RAY_TMPDIR", "/tmp")))
os.environ["RAY_TMPDIR"] = str(RAY_SESSIONS)

_BEFORE = pytest.StashKey[tuple]()


def pytest_collection_modifyitems(config: pytest.Config, items: list):
    """`slow` tests run only when -m names them (`-m slow`): `make test` and `-m "not ray"` leave
    them out alike (a -m given on the command line replaces the one in addopts)."""
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)


def ray_sessions() -> set:
    """The Ray sessions started under this run's RAY_TMPDIR so far."""
    root = RAY_SESSIONS / "ray"
    return {p.name for p in root.glob("session_*") if p.name != "session_latest"}


def _ray_initialized() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    # Before the fixtures: a module-scoped fixture that starts Ray counts for its first test.
    item.stash[_BEFORE] = (ray_sessions(), _ray_initialized())
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test without the `ray` marker that starts Ray (a new session under RAY_TMPDIR, or
    ray.init left on) fails at teardown: `-m "not ray"` must start no Ray at all."""
    outcome = yield
    report = outcome.get_result()
    if call.when != "teardown" or item.get_closest_marker("ray") or _BEFORE not in item.stash:
        return
    sessions, initialized = item.stash[_BEFORE]
    started = sorted(ray_sessions() - sessions)
    if started or (_ray_initialized() and not initialized):
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} started Ray ({', '.join(started) or 'ray.init'}) "
                           "but is not marked `ray`: add @pytest.mark.ray (or a module's "
                           "pytestmark), so that `-m \"not ray\"` skips it")
