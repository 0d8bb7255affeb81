"""Shared test settings."""

import os
import tempfile

# Ray 2.60 turns token authentication on for new local clusters; tests opt out explicitly
# (and subprocesses they start inherit this).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Two cores: keep torch from oversubscribing them in every test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The oracle search's cache (esper-rllib signal / evaluate): one for the session, not the
# user's ~/.cache (subprocesses inherit it too).
os.environ.setdefault("ESPER_CACHE_DIR", tempfile.mkdtemp(prefix="esper-test-cache-"))
