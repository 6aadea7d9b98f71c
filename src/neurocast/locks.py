"""Exclusive ownership of a folder or file by one process: an OS file lock plus who holds it.

A :class:`FileLock` is an ``fcntl.flock`` on a small lock file, held until the process
releases it or exits (the kernel drops it when the process dies, however it dies). The
file records the holder's host, pid, start time and command line, so a second process
that cannot get the lock can say exactly who has it. Used for run directories (one
writer per run), simulated dataset folders (one simulation at a time; others wait) and
store writers (one writer per store).

* Re-entrant within a process: acquiring a lock this process already holds returns it.
* A lock whose recorded holder is a dead process on this host (the lock kept alive by an
  orphaned child that inherited the file) is taken over: the lock file is replaced.
* After taking the OS lock the holder checks that the lock file on disk is still the one
  it locked (another process may have replaced a stale one meanwhile) and retries if not,
  so releasing may safely delete the file.
* File systems without ``flock`` (some network mounts) fall back to the recorded pid.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from neurocast.errors import LockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid record alone
    fcntl = None  # type: ignore[assignment]

_HELD: dict[str, "FileLock"] = {}
_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _key(path: Path) -> str:
    return os.path.realpath(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return True
    return True


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stale(info: dict[str, Any] | None) -> bool:
    """The recorded holder is a process on this host that no longer exists."""
    if not info or info.get("host") != socket.gethostname():
        return False
    try:
        pid = int(info["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    return pid != os.getpid() and not pid_alive(pid)


def describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    cmd = info.get("command")
    since = f" (since {info['started']})" if info.get("started") else ""
    return f"pid {info.get('pid')} on {info.get('host')}{since}" + (f": {cmd}" if cmd else "")


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: held elsewhere; None: this file system has no flock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in _UNSUPPORTED:
            return None
        raise


class FileLock:
    """An exclusive lock on ``path`` (the lock file itself) for ``what`` (used in messages)."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.what = what
        self.fd: int | None = None
        self.took_over: dict[str, Any] | None = None

    # ------------------------------------------------------------------ acquire / release
    def acquire(self, wait: float = 1.0, on_wait=None) -> "FileLock":
        """Take the lock, polling for up to ``wait`` seconds (None: forever); else LockedError.

        ``on_wait(holder_info)`` is called once when the lock is busy and we start waiting.
        """
        held = _HELD.get(_key(self.path))
        if held is not None:
            if held.fd is not None and held._same_file(held.fd):
                return held
            held.release(remove=False)  # its file was replaced (the folder removed and made again)
        deadline = None if wait is None else time.monotonic() + wait
        announced = False
        while True:
            got, info = self._attempt()
            if got:
                _HELD[_key(self.path)] = self
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise LockedError(f"{self.what} is in use by {describe(info)}; wait for it to finish or stop "
                                  f"that process first (lock file {self.path})")
            if not announced and on_wait is not None:
                on_wait(info)
                announced = True
            time.sleep(0.05 if wait is not None and wait <= 2 else 0.5)

    def _attempt(self) -> tuple[bool, dict[str, Any] | None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            ok = _try_flock(fd)
            if ok is False:
                info = _read_holder(self.path)
                if _stale(info) and self._same_file(fd):
                    # held by an orphan of a dead process: replace the file, try again
                    os.unlink(self.path)
                    self.took_over = info
                return False, info
            if ok is None:  # no flock here: trust the pid record
                info = _read_holder(self.path)
                if info and (info.get("host"), info.get("pid")) != (socket.gethostname(), os.getpid()) \
                        and not _stale(info):
                    return False, info
            if not self._same_file(fd):  # replaced by someone else meanwhile
                return False, _read_holder(self.path)
            previous = _read_holder(self.path)
            if previous and _stale(previous):
                self.took_over = previous
            self._write_holder(fd)
            self.fd, fd = fd, None
            return True, None
        finally:
            if fd is not None:
                os.close(fd)

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    @staticmethod
    def _write_holder(fd: int) -> None:
        prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        prog = "neurocast" if prog in ("__main__.py", "neurocast") else prog
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": " ".join([prog, *sys.argv[1:]])[:300]}
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def release(self, remove: bool = True) -> None:
        if self.fd is None:
            return
        if _HELD.get(_key(self.path)) is self:
            del _HELD[_key(self.path)]
        try:
            if remove and self._same_file(self.fd):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the lock file ``path`` now (None: nobody, or only a dead process).

    A process's own locks count as held (its own info is returned)."""
    path = Path(path)
    if _key(path) in _HELD:
        return _read_holder(path) or {"pid": os.getpid(), "host": socket.gethostname()}
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        ok = _try_flock(fd)
        if ok is True:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        info = _read_holder(path)
        if ok is None:
            return None if (not info or _stale(info)) else info
        return None if _stale(info) else (info or {})
    finally:
        os.close(fd)


def held_locks_under(folder: str | os.PathLike) -> list[FileLock]:
    root = _key(Path(folder))
    return [lk for k, lk in _HELD.items() if k == root or k.startswith(root + os.sep)]


def release_under(folder: str | os.PathLike) -> None:
    """Release every lock this process holds on ``folder`` or below it."""
    for lk in held_locks_under(folder):
        lk.release()
