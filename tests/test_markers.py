"""The `ray` marker holds: a test that starts Ray without it fails (tests/conftest.py), so
`pytest -m "not ray"` starts no Ray. Checked on a throwaway test file run under this conftest,
where "starting Ray" is a new session directory under RAY_TMPDIR, as Ray makes one (no real Ray)."""

import shutil
import subprocess
import sys

from tests.helpers import REPO

CASES = '''
import os
from pathlib import Path

import pytest


def start(name):
    (Path(os.environ["RAY_TMPDIR"]) / "ray" / f"session_{name}").mkdir(parents=True)


def test_unmarked_starts_ray():
    start("unmarked")


@pytest.mark.ray
def test_marked_starts_ray():
    start("marked")


def test_unmarked_starts_nothing():
    pass


@pytest.fixture(scope="module")
def ray_for_the_module():
    start("module_fixture")


def test_unmarked_with_a_module_fixture_that_starts_ray(ray_for_the_module):
    pass
'''


def pytest_under_our_conftest(tmp_path, cases, *args):
    """pytest on ``cases`` (one test file) in ``tmp_path``, with this suite's conftest."""
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmarkers =\n    ray: starts Ray\n    slow: slow\n"
        "addopts = --strict-markers -p no:cacheprovider\n")
    (tmp_path / "test_cases.py").write_text(cases)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", *args, str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_a_test_that_starts_ray_without_the_marker_fails(tmp_path):
    proc = pytest_under_our_conftest(tmp_path, CASES, "-rA")
    out = proc.stdout
    assert proc.returncode == 1, out
    # The calls pass; each unmarked test that started Ray errors at its teardown, naming it.
    assert "4 passed, 2 errors" in out, out
    for name, session in (("test_unmarked_starts_ray", "session_unmarked"),
                          ("test_unmarked_with_a_module_fixture_that_starts_ray",
                           "session_module_fixture")):
        assert f"ERROR at teardown of {name}" in out, out
        assert f"{name} started Ray ({session}) but is not marked `ray`" in out, out
    assert "ERROR at teardown of test_marked_starts_ray" not in out, out
    assert "ERROR at teardown of test_unmarked_starts_nothing" not in out, out


def test_not_ray_leaves_out_ray_and_slow_tests_and_m_slow_runs_slow_ones(tmp_path):
    cases = ("import pytest\n\n\ndef test_plain():\n    pass\n\n\n@pytest.mark.ray\n"
             "def test_ray():\n    pass\n\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n")

    def summary(*args):
        return pytest_under_our_conftest(tmp_path, cases, *args).stdout.strip().splitlines()[-1]

    assert summary().startswith("2 passed, 1 deselected")  # make test: all but the slow one
    assert summary("-m", "not ray").startswith("1 passed, 2 deselected")
    assert summary("-m", "slow").startswith("1 passed, 2 deselected")
