"""Where a sweep's results go: a local folder or any URI Tune's storage accepts."""

from __future__ import annotations

import os
from pathlib import Path


class StorageError(ValueError):
    """The storage location cannot hold a sweep (one clear line)."""


def check_storage(storage: str) -> str:
    """Validate ``storage`` without writing anything; return it in the form Tune wants.

    Local paths become absolute (Tune requires it) and must lie under a writable folder; a URI
    must name a filesystem that pyarrow (Tune's storage layer) can open.
    """
    if "://" in storage:
        import pyarrow.fs

        try:
            pyarrow.fs.FileSystem.from_uri(storage)
        except Exception as err:  # pyarrow raises several types; all mean "cannot store here"
            raise StorageError(f"--storage {storage}: cannot open this URI ({err})") from None
        return storage
    path = Path(storage).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StorageError(f"--storage {storage}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"--storage {storage}: {existing} is not writable")
    return str(path)
