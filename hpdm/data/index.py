"""The dataset index: per-file frame count, fps and size, probed once and cached.

Probing a video means opening it with OpenCV, which costs milliseconds per file; a 10k-video
dataset would take minutes at every start. The index is therefore cached as JSON next to the data
(``<root>/.hpdm_index.json``) or, when the data directory is read-only, in a cache directory
(``cache_dir``, else ``$HPDM_CACHE_DIR``, else ``~/.cache/hpdm``). Entries are keyed by relative path
and reused while the file's size and modification time are unchanged, so adding files re-probes
only the new ones. Failed probes are cached too (a corrupt file stays skipped without re-reading it).
A damaged cache (not JSON, wrong shape, malformed entries) is rebuilt with a warning.

Listing follows symlinked directories, but not one that leads back to its own folder or an
ancestor (a loop would list the same files at every depth); such links and unreadable
directories are counted skips, logged with the other skips of the source.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

from absl import logging

from hpdm.video.files import MediaInfo, UnreadableMedia
from hpdm.video.skips import SkipReport

INDEX_NAME = ".hpdm_index.json"
_VERSION = 1

Probe = Callable[[str], MediaInfo]


def list_files(root: str, extensions: Sequence[str], report: Optional[SkipReport] = None) -> list[str]:
    """Relative paths (``/``-separated, sorted) of files under ``root`` with one of ``extensions``.

    Unreadable directories and symlink loops are added to ``report`` (a new one, logged, when None).
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root!r} is not a directory")
    own_report = report is None
    report = SkipReport("directories", root) if own_report else report
    exts = tuple(e.lower() for e in extensions)

    def unreadable(err: OSError) -> None:
        if err.filename == root:
            raise OSError(f"cannot list the data root {root!r} ({err.strerror or err}); check its permissions") from err
        report.add(_relative(err.filename, root), "unreadable directory", err.strerror or str(err))

    found = []
    chains = {root: frozenset([_dir_key(root)])}  # each folder to walk -> its own and its ancestors' identities
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        dirnames[:] = _subfolders(root, dirpath, dirnames, chains, report)
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.lower().endswith(exts) and not name.startswith("."):
                found.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
    if own_report:
        report.log()
    return sorted(found)


def _dir_key(path: str) -> Tuple[int, int]:
    """What identifies a directory however it is reached (through symlinks or not)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _subfolders(root: str, dirpath: str, names: Sequence[str], chains: dict, report: SkipReport) -> list[str]:
    """The (sorted, non-hidden) subfolders of ``dirpath`` to walk: not one that is ``dirpath`` itself
    or one of its ancestors, which only a symlink can be."""
    chain = chains.pop(dirpath, frozenset())
    kept = []
    for name in sorted(d for d in names if not d.startswith(".")):
        path = os.path.join(dirpath, name)
        try:
            key = _dir_key(path)
        except OSError as e:
            report.add(_relative(path, root), "unreadable directory", e.strerror or str(e))
            continue
        if key in chain:
            target = os.path.relpath(os.path.realpath(path), os.path.realpath(root)).replace(os.sep, "/")
            report.add(_relative(path, root), "symlink loop", f"leads back to {target!r}, listed once")
            continue
        chains[path] = chain | {key}
        kept.append(name)
    return kept


def _cache_path(root: str, cache_dir: Optional[str]) -> str:
    if cache_dir is None and os.access(root, os.W_OK):
        return os.path.join(root, INDEX_NAME)
    base = cache_dir or os.environ.get("HPDM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "hpdm")
    key = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:16]
    return os.path.join(base, f"index-{key}.json")


def _load_cache(path: str) -> Tuple[dict, bool]:
    """The cache's valid entries, and whether the file is sound (a damaged one is rebuilt, with a
    warning; a missing or older-version one is simply built)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}, True
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        logging.warning("The dataset index cache %s is unreadable (%s); rebuilding it", path, e)
        return {}, False
    if not isinstance(data, dict):
        kind = type(data).__name__
        logging.warning("The dataset index cache %s is malformed (a JSON %s, not an object); rebuilding it", path, kind)
        return {}, False
    if data.get("version") != _VERSION:
        return {}, True  # another version's layout: probe again
    entries = data.get("entries")
    if not isinstance(entries, dict):
        logging.warning("The dataset index cache %s is malformed (no \"entries\" object); rebuilding it", path)
        return {}, False
    valid = {rel: entry for rel, entry in entries.items() if _valid_entry(entry)}
    if len(valid) < len(entries):
        bad = sorted(set(entries) - set(valid))
        logging.warning(
            "The dataset index cache %s has %d malformed entries (first: %s); probing those files again",
            path, len(bad), ", ".join(bad[:3]),
        )
    return valid, len(valid) == len(entries)


def _valid_entry(entry) -> bool:
    """An entry as ``_probe_entry`` writes it: a ``[size, mtime_ns]`` stamp and an error or the media's sizes."""
    if not isinstance(entry, dict):
        return False
    stamp = entry.get("stamp")
    if not (isinstance(stamp, list) and len(stamp) == 2 and all(isinstance(v, int) for v in stamp)):
        return False
    if "error" in entry:
        return isinstance(entry["error"], str)
    sizes = [entry.get(k) for k in ("frames", "height", "width")]
    return all(isinstance(v, int) for v in sizes) and isinstance(entry.get("fps"), (int, float))


def _save_cache(path: str, entries: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": _VERSION, "entries": entries}, f)
        os.replace(tmp, path)  # atomic: ranks building the same index at once cannot corrupt it
    except OSError as e:
        logging.warning("Could not write the dataset index cache %s: %s", path, e)


def _probe_entry(root: str, rel: str, probe: Probe, stamp: list) -> dict:
    try:
        info = probe(os.path.join(root, rel))
        return dict(stamp=stamp, frames=info.frames, fps=info.fps, height=info.height, width=info.width)
    except UnreadableMedia as e:
        return dict(stamp=stamp, error=str(e))


def build_index(
    root: str,
    relpaths: Sequence[str],
    probe: Probe,
    cache_dir: Optional[str] = None,
    num_threads: int = 8,
) -> Dict[str, dict]:
    """``{relpath: entry}`` for ``relpaths``; an entry has ``frames, fps, height, width`` or ``error``.

    Missing files get ``error``; everything else comes from the cache when still valid, otherwise
    from ``probe`` (run in threads: OpenCV releases the GIL while decoding).
    """
    start = time.perf_counter()
    cache_file = _cache_path(root, cache_dir)
    cached, sound = _load_cache(cache_file)
    index: Dict[str, dict] = {}
    todo = []
    for rel in relpaths:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError:
            index[rel] = dict(stamp=None, error="missing file")
            continue
        stamp = [st.st_size, st.st_mtime_ns]
        entry = cached.get(rel)
        if entry is not None and entry.get("stamp") == stamp:
            index[rel] = entry
        else:
            todo.append((rel, stamp))
    if todo or not sound:
        with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
            for (rel, _), entry in zip(todo, pool.map(lambda a: _probe_entry(root, a[0], probe, a[1]), todo)):
                index[rel] = entry
        merged = dict(cached)
        merged.update({rel: e for rel, e in index.items() if e.get("stamp") is not None})
        _save_cache(cache_file, merged)
    logging.info(
        "Indexed %d files under %s in %.2fs (%d probed, %d from %s)",
        len(relpaths), root, time.perf_counter() - start, len(todo), len(relpaths) - len(todo), cache_file,
    )
    return index
