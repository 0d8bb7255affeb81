"""Before ``--resume``: is an interrupted sweep's saved state whole?

Tune reads the newest ``experiment_state-*.json`` and ``tuner.pkl`` to resume. A file cut short
(a full disk, a copy interrupted, a driver killed mid-write) makes Tune log the error and then
either crash with a traceback or start the sweep over with a broken search space inside the old
folder. This check turns that into one clear error before anything runs or is written.
"""

from __future__ import annotations

import fnmatch
import io
import json
import pickletools

from tuning.plan import PLAN_FILE
from tuning.storage import StorageError

# The file names Tune itself uses (ray/tune/execution/tune_controller.py CKPT_FILE_TMPL and
# ray/tune/impl/tuner_internal.py _TUNER_PKL).
STATE_PATTERN = "experiment_state-*.json"
TUNER_FILE = "tuner.pkl"


def _is_whole_pickle(data: bytes) -> None:
    # Walks the opcode stream to its STOP without unpickling (no code runs); a truncated
    # stream raises ValueError.
    pickletools.dis(data, out=io.StringIO())


def check_saved_state(experiment: str) -> None:
    """StorageError naming the file if the sweep state Tune resumes from is missing, truncated
    or corrupt; ``experiment`` is a local folder or a storage URI."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment)
    names = {info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(root))}
    states = fnmatch.filter(names, STATE_PATTERN)
    if not states or TUNER_FILE not in names:
        raise StorageError(f"--resume: {experiment} has no {STATE_PATTERN} and {TUNER_FILE}: "
                           "not an interrupted sweep")
    # Tune resumes from the newest state file (the largest name: its timestamp).
    checks = [(max(states), json.loads), (TUNER_FILE, _is_whole_pickle)]
    if PLAN_FILE in names:
        checks.append((PLAN_FILE, json.loads))
    for name, parse in checks:
        with fs.open_input_stream(f"{root}/{name}") as f:
            data = f.read()
        try:
            parse(data)
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, truncated pickle
            raise StorageError(f"--resume: {experiment}/{name} is unreadable (truncated or "
                               f"corrupt: {type(err).__name__}); resume from an intact copy "
                               "or start the sweep again under another --name") from None
