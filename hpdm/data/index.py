"""The dataset index: per-file frame count, fps and size, probed once and cached.

Probing a video means opening it with OpenCV, which costs milliseconds per file; a 10k-video
dataset would take minutes at every start. The index is therefore cached as JSON next to the data
(``<root>/.hpdm_index.json``) or, when the data directory is read-only, in a cache directory
(``cache_dir``, else ``$HPDM_CACHE_DIR``, else ``~/.cache/hpdm``). Entries are keyed by relative path
and reused while the file's size and modification time are unchanged, so adding files re-probes
only the new ones. Failed probes are cached too (a corrupt file stays skipped without re-reading it).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import time
from typing import Callable, Dict, Optional, Sequence

from absl import logging

from hpdm.data.video_io import MediaInfo, UnreadableMedia

INDEX_NAME = ".hpdm_index.json"
_VERSION = 1

Probe = Callable[[str], MediaInfo]


def list_files(root: str, extensions: Sequence[str]) -> list[str]:
    """Relative paths (``/``-separated, sorted) of files under ``root`` with one of ``extensions``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data root {root!r} is not a directory")
    exts = tuple(e.lower() for e in extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if name.lower().endswith(exts) and not name.startswith("."):
                found.append(name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}")
    return sorted(found)


def _cache_path(root: str, cache_dir: Optional[str]) -> str:
    if cache_dir is None and os.access(root, os.W_OK):
        return os.path.join(root, INDEX_NAME)
    base = cache_dir or os.environ.get("HPDM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "hpdm")
    key = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:16]
    return os.path.join(base, f"index-{key}.json")


def _load_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data["entries"] if data.get("version") == _VERSION else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a missing or damaged cache only costs a re-probe


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
    cached = _load_cache(cache_file)
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
    if todo:
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
