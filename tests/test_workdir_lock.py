"""One writer per workdir (hpdm/trainers/lock.py): a held lock refuses a second run and names its
holder; a lock left by a dead process, by another host, or copied with the workdir does not block."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from hpdm.trainers.lock import LOCK_FILE, WorkdirLock, WorkdirLockedError


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_holder(workdir, host, pid):
    with open(os.path.join(str(workdir), LOCK_FILE), "w") as f:
        json.dump({"host": host, "pid": pid}, f)


def test_second_holder_is_refused_with_the_holders_name(tmp_path):
    with WorkdirLock(str(tmp_path)):
        # Another open file description conflicts like another process would.
        with pytest.raises(WorkdirLockedError) as e:
            WorkdirLock(str(tmp_path)).acquire()
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(e.value)
        assert str(tmp_path) in str(e.value)
    # Released: the file names nobody, and the next run takes it without a warning.
    assert open(os.path.join(str(tmp_path), LOCK_FILE)).read() == ""
    with WorkdirLock(str(tmp_path)):
        pass


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    pid = _dead_pid()
    _write_holder(tmp_path, socket.gethostname(), pid)
    with WorkdirLock(str(tmp_path)):
        with open(os.path.join(str(tmp_path), LOCK_FILE)) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert f"pid {pid}" in caplog.text and "no longer running" in caplog.text


@pytest.mark.parametrize("holder", ["foreign_host", "live_local_pid"])
def test_copied_lock_file_does_not_block(tmp_path, caplog, holder):
    """shutil.copytree of a workdir copies the file, never the flock: the copy is free to train."""
    src = tmp_path / "run"
    src.mkdir()
    if holder == "foreign_host":
        _write_holder(src, "some-other-node", 4242)
        lock = None
    else:
        lock = WorkdirLock(str(src))
        lock.acquire()  # a live run on this host, copied mid-run
    try:
        shutil.copytree(src, tmp_path / "copy")
        with WorkdirLock(str(tmp_path / "copy")):
            pass
    finally:
        if lock is not None:
            lock.release()
    assert "Taking over the stale lock" in caplog.text
