"""Where a sweep's results go (a local folder or any URI Tune's storage accepts), and how a
result file is written: whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StorageError(ValueError):
    """The storage location cannot hold a sweep (one clear line)."""


def check_storage(storage: str) -> str:
    """Validate ``storage``, leaving nothing behind; return it in the form Tune wants.

    Local paths become absolute (Tune requires it) and must lie under a folder where folders can
    be created (tried with an empty one, removed at once); a URI must name a filesystem that
    pyarrow (Tune's storage layer) can open.
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
    # os.access says yes to root everywhere, also under /proc or on a read-only mount: try it.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".esper-probe-", dir=existing))
    except OSError as err:
        raise StorageError(f"--storage {storage}: cannot create folders in {existing} "
                           f"({err.strerror}); allowed: a writable local folder or a "
                           "storage URI") from None
    return str(path)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary name beside ``path`` (``<name>.tmp``) to write the file under, renamed onto
    ``path`` when the block ends and removed when it raises: a reader sees the old file or the
    whole new one, never a half-written one (a killed writer leaves only the ``.tmp``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
