"""Where a sweep's results go (a local folder or any URI Tune's storage accepts), how a result
file is written (whole or not at all), and who may write into a run folder (one process at a
time: ``claim_folder``)."""

from __future__ import annotations

import atexit
import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StorageError(ValueError):
    """The storage location cannot hold a sweep (one clear line)."""


class FolderTaken(StorageError):
    """A run folder that another process holds, or that already holds another run."""


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


class FolderLock:
    """An exclusive lock on a run folder, held until ``release`` or the process ends (the kernel
    drops a dead holder's lock: a killed run never leaves a stale one). The lock file lies beside
    the folder (``.<name>.lock``), so the folder holds nothing but the run's own files."""

    def __init__(self, path: Path, fd: int, created: bool) -> None:
        self.path, self._fd, self.created = path, fd, created
        atexit.register(self.release)  # its lock file goes with the process, if not before

    @property
    def lock_file(self) -> Path:
        return _lock_file(self.path)

    def release(self, remove_if_empty: bool = False) -> None:
        """Unlock (idempotent); ``remove_if_empty``: also remove the folder if this claim
        created it and nothing was written into it (a run refused after its claim)."""
        if self._fd < 0:
            return
        if remove_if_empty and self.created and self.path.is_dir() and \
                not any(self.path.iterdir()):
            self.path.rmdir()
        # Unlinked while still held: a process that opened the old file retries on a new one
        # (see _lock), so no two processes ever hold the lock of one folder.
        self.lock_file.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1


def _lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


def _lock(path: Path, what: str) -> int:
    lock_file = _lock_file(path)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FolderTaken(f"{what}: {path} is in use by another esper-rllib process "
                               f"(pid {holder}); wait for it to end, or choose another "
                               "folder") from None
        try:
            current = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # its last holder removed it after we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim_folder(path: str | os.PathLike, what: str, fresh: bool = True,
                 taken: str = "already holds files") -> FolderLock:
    """Lock the folder ``path`` for this process (creating it, and its parents, if needed), or
    StorageError, one line starting with ``what`` (the option that named it): another process
    holds it, or ``fresh`` and the folder already holds files (``taken`` says what, and what to
    do instead). A resumed run claims its folder with ``fresh=False``."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(path, what)
    if fresh and path.is_dir() and any(path.iterdir()):
        FolderLock(path, fd, created=False).release()
        raise FolderTaken(f"{what}: {path} {taken}")
    created = not path.exists()
    try:
        path.mkdir(exist_ok=True)
    except OSError as err:
        FolderLock(path, fd, created=False).release()
        raise StorageError(f"{what}: cannot create {path} ({err.strerror})") from None
    return FolderLock(path, fd, created)


def claim_new_folder(parent: str | os.PathLike, base: str, option: str = "--name") -> FolderLock:
    """A new folder under ``parent`` named ``base``, or ``base-2``, ``base-3``, ... when that
    one is taken or in use: two runs started in the same second get folders of their own."""
    for n in range(1, 1000):
        try:
            return claim_folder(Path(parent, base if n == 1 else f"{base}-{n}"), option)
        except FolderTaken:
            continue
    raise StorageError(f"{parent}: {base} and 998 more names are taken; pass {option}")
