"""Shared test settings."""

import os

# Ray 2.60 turns token authentication on for new local clusters; tests opt out explicitly
# (and subprocesses they start inherit this).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Two cores: keep torch from oversubscribing them in every test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
