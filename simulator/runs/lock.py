"""One writer per directory: an exclusive lock on a run directory or a sweep directory.

`attnsim run` and `attnsim resume` lock their run directory, `attnsim sweep` its `--out`, for as
long as they write there. The lock is `fcntl.flock` on `DIR/.attnsim.lock`, a file that also
records the holder (`pid`, `host`, `since`, `command`) so a second writer is refused with a
message naming it. The kernel drops a flock when its holder dies, so a killed process never
leaves a directory locked (a stale file is simply locked again); the file is removed on release.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows: there the lock is not taken (see DirectoryLock)
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".attnsim.lock"


class DirectoryLocked(RuntimeError):
    """Another process holds the directory's lock; `holder` is what it recorded (may be empty)."""

    def __init__(self, directory: Path, holder: dict[str, Any]):
        self.directory = directory
        self.holder = holder
        pid = holder.get("pid")
        who = f"process {pid}" if pid is not None else "another process"
        if holder.get("host"):
            who += f" on {holder['host']}"
        if holder.get("command"):
            who += f" ({holder['command']})"
        since = f" since {holder['since']}" if holder.get("since") else ""
        super().__init__(f"{directory} is being written by {who}{since}; wait for it to finish or stop it first (one writer at a time)")


class DirectoryLock:
    """The exclusive lock of `directory` (which must exist); `acquire()` raises DirectoryLocked."""

    def __init__(self, directory: str | Path, command: str = ""):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        if fcntl is None or self._fd is not None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise DirectoryLocked(self.directory, holder) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed this file while we waited on it: lock the new one
        record = {"pid": os.getpid(), "host": platform.node(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still held, so nobody can lock the removed file unnoticed
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        opened, named = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
