"""One writer per workdir: an advisory lock that ``hpdm-train`` holds for the whole run.

Two runs on one workdir would write the same ``step_N.tmp``, prune each other's checkpoints and
interleave their histories. Rank 0 therefore takes ``fcntl.flock`` on ``WORKDIR/train.lock`` before
it reads or writes anything there, and writes its host and pid into the file so that a second run
can say who holds it. The kernel drops a flock when its process dies, however it dies, so a run that
was killed never blocks the next one: a lock file that names a holder but is not locked is stale,
and is taken over with a warning naming the process it came from (dead, or a copy of the workdir
made while it ran). A run that ends releases the lock and empties the file.

On file systems without ``flock`` (some network mounts refuse it), the pid in the file is all there
is: a live process of this host named there blocks, anything else is taken over with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from typing import Optional

from absl import logging

LOCK_FILE = "train.lock"
# What flock raises on file systems that do not support it.
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class WorkdirLockedError(RuntimeError):
    """Another run holds the workdir."""


def _pid(holder: dict) -> int:
    """The holder's pid, 0 when the file names none (hand-edited or from another tool)."""
    pid = holder.get("pid")
    return pid if isinstance(pid, int) and pid > 0 else 0


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (pid 0: none was named)."""
    if pid <= 0:  # os.kill(0, ...) would address this process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on host {holder.get('host')}"


class WorkdirLock:
    """``acquire()`` or WorkdirLockedError naming the holder; ``release()`` when the run ends."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = self._flock(fd)
            previous = self._read(fd)
            if not locked and self._held_by_live_local(previous):
                raise self._locked_error(previous)
            if previous:
                self._warn_taking_over(previous, locked)
            self._write(fd, {"host": socket.gethostname(), "pid": os.getpid()})
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Empty the file (a copy of a finished workdir names no holder) and unlock."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:  # unlocking cannot fail in a way that matters: closing drops the lock
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ helpers

    def _flock(self, fd: int) -> bool:
        """True when the flock is ours; False when the file system has no locking. Raises
        WorkdirLockedError when another process holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            raise self._locked_error(self._read(fd)) from None
        except OSError as e:
            if e.errno not in _NO_LOCKING:
                raise
            logging.warning(
                "%s: this file system does not support flock (%s); only the pid in the lock file guards "
                "the workdir against a second run",
                self.path,
                e.strerror,
            )
            return False

    def _locked_error(self, holder: dict) -> WorkdirLockedError:
        who = _describe(holder) if holder else "a process that has not written its name yet"
        return WorkdirLockedError(
            f"{self.workdir} is in use by another run ({who}; lock file {self.path}). Two runs on one "
            "workdir overwrite each other's checkpoints: wait for that run to end or stop it, or train "
            "in another --workdir."
        )

    @staticmethod
    def _held_by_live_local(holder: dict) -> bool:
        pid = _pid(holder)
        return holder.get("host") == socket.gethostname() and pid != os.getpid() and _alive(pid)

    def _warn_taking_over(self, previous: dict, locked: bool) -> None:
        local = previous.get("host") == socket.gethostname()
        if local and not _alive(_pid(previous)):
            why = "which is no longer running (it was killed or crashed before releasing it)"
        elif locked:
            why = "which does not hold it (a copied workdir, or a pid reused since)"
        else:
            why = "on another host, which this file system cannot check"
        logging.warning("Taking over the stale lock %s of %s, %s", self.path, _describe(previous), why)

    @staticmethod
    def _read(fd: int) -> dict:
        """The holder recorded in the file, ``{}`` if none (empty, or not what this module writes)."""
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        try:
            holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    @staticmethod
    def _write(fd: int, holder: dict) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
        os.fsync(fd)
