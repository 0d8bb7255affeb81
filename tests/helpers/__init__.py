"""Helpers shared by the tests (imported as ``tests.helpers.<module>``, from any test folder)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
