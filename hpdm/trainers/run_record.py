"""Run records: what produced a run directory, beside its ``config.gin``.

``config.gin`` says what a run computes; the record says with what: the hpdm version and, when hpdm
runs from a git checkout, its commit (and whether tracked files differ from it), the installed
versions of the packages the numbers depend on, the Python version, the command line and the world
size. ``hpdm-train`` appends one to ``<workdir>/run_record.json`` at every start (rank 0, right after
``config.gin``), so a resumed run keeps the history of each start next to the first one;
``hpdm-eval`` puts one in its result (``"run_record"``), so the JSON it prints and the
``eval_*.json`` it writes into ``--workdir`` carry it.

Nothing here fails a run for want of git: outside a checkout, without a ``git`` executable, or when
git refuses the repository, the commit is ``None``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any, Dict, List, Optional, Tuple

from absl import logging

import hpdm

RECORD_FILE = "run_record.json"

# Recorded package -> the distributions that provide it (OpenCV's wheels come under several names;
# the first one installed counts).
PACKAGES = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "torchdata": ("torchdata",),
    "gin-config": ("gin-config",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless", "opencv-contrib-python"),
    "numpy": ("numpy",),
}

_GIT_TIMEOUT_S = 10


def package_versions() -> Dict[str, Optional[str]]:
    """``{package: installed version}`` of ``PACKAGES``; ``None`` for one that is not installed."""
    versions: Dict[str, Optional[str]] = {}
    for package, distributions in PACKAGES.items():
        versions[package] = None
        for name in distributions:
            try:
                versions[package] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def _git(root: str, *args: str) -> Optional[str]:
    """``git -C root args`` -> its stdout; ``None`` when git is missing, fails or hangs."""
    # GIT_DIR / GIT_WORK_TREE of the caller's shell would point git at another repository.
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` must not take the index lock of a checkout in use
    try:
        proc = subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, env=env, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(root: Optional[str] = None) -> Tuple[Optional[str], Optional[bool]]:
    """``(commit, dirty)`` of hpdm's own checkout; ``(None, None)`` when hpdm is not run from one.

    ``root``: the directory above the ``hpdm`` package (default: where this hpdm was imported
    from). Only a repository whose top level is ``root`` counts: an installed hpdm inside some other
    repository (a virtual environment in a project's tree) has no commit. ``dirty``: tracked files
    differ from the commit (untracked files are not counted).
    """
    root = os.path.realpath(root or os.path.dirname(os.path.dirname(os.path.abspath(hpdm.__file__))))
    if not os.path.exists(os.path.join(root, ".git")):
        return None, None
    top = _git(root, "rev-parse", "--show-toplevel")
    commit = _git(root, "rev-parse", "HEAD")
    if top is None or commit is None or os.path.realpath(top.strip()) != root:
        return None, None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return commit.strip(), None if status is None else bool(status.strip())


def _world_size() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def collect(world_size: Optional[int] = None, **fields: Any) -> Dict[str, Any]:
    """One record of this process (see the module docstring); ``fields`` are added to it.

    ``world_size``: default from torch.distributed when initialised, else ``$WORLD_SIZE``, else 1.
    """
    commit, dirty = git_state()
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hpdm_version": hpdm.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "packages": package_versions(),
        "argv": list(sys.argv),
        "world_size": int(_world_size() if world_size is None else world_size),
    }
    record.update(fields)
    return record


def read(directory: str) -> List[Dict[str, Any]]:
    """The records of ``<directory>/run_record.json``, oldest first (``[]`` when there is none)."""
    path = os.path.join(directory, RECORD_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise ValueError(f"{path} holds a {type(records).__name__}, not a list of run records")
    return records


def _set_aside(path: str) -> str:
    """Rename ``path`` to the first free ``path.unreadable[.N]``; returns the new name."""
    target, n = f"{path}.unreadable", 1
    while os.path.exists(target):
        target, n = f"{path}.unreadable.{n}", n + 1
    os.replace(path, target)
    return target


def append(directory: str, record: Dict[str, Any]) -> str:
    """Add ``record`` after the records of ``<directory>/run_record.json``; returns the file's path.

    The file is replaced atomically (temporary file, then rename). One that cannot be read as a
    list of records is never overwritten: it is renamed ``run_record.json.unreadable`` (with a number
    when taken), a warning says so, and a new list starts.
    """
    path = os.path.join(directory, RECORD_FILE)
    try:
        records = read(directory)
    except (OSError, ValueError) as e:  # json's errors are ValueErrors
        kept = _set_aside(path)
        logging.warning("Run record %s is unreadable (%s): kept as %s, starting a new one", path, e, kept)
        records = []
    records.append(record)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write(directory: str, world_size: Optional[int] = None, **fields: Any) -> Dict[str, Any]:
    """``collect`` a record and ``append`` it to ``directory``'s; returns the record."""
    record = collect(world_size, **fields)
    path = append(directory, record)
    logging.info("Run record: %s (hpdm %s, commit %s)", path, record["hpdm_version"], record["git_commit"])
    return record
