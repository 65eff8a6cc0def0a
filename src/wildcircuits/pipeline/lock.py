"""RUN_DIR/.lock: one `discover` run writes into a run folder at a time.

The lock is an `fcntl.flock` on the file, held for the whole run; the kernel releases it when the
holder exits or is killed (`kill -9` included), so a lock file left behind is never stale. The
holder writes its pid, host and start time into the file, for the message the next run prints.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path

from wildcircuits.errors import WildcircuitsError

LOCK_NAME = ".lock"


class RunFolderLocked(WildcircuitsError):
    """Another process holds the run folder's lock."""


class RunLock:
    """Context manager: hold RUN_DIR/.lock for the duration, or raise `RunFolderLocked`."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunFolderLocked(
                f"run folder {self.path.parent} is in use by another discover run ({holder}); "
                "wait for it to finish or use another --out folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    """'pid N on host H since T' from the lock file (or a note when it cannot be read)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on host {info['host']} since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its pid"
