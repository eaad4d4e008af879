"""Captions files for text-video (and text-image) pairs: JSONL or CSV with a path and a caption.

JSONL: one object per line, ``{"path": "clips/a.mp4", "caption": "a dog runs"}``.
CSV: a header row naming the columns, e.g. ``path,caption``.
Column aliases accepted: path / video / file / image, and caption / text. Paths are relative to
the data root (absolute paths under the root are made relative). A path may appear several
times; each sample then picks one of its captions at random.

A path that leads outside the data root (``../x.avi``, an absolute path elsewhere) is skipped,
counted and logged: a captions file must not make files outside the dataset training items.
Every error in the file names the file and line.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
from typing import Dict, Iterator, List, Optional, Tuple

from hpdm.video.skips import SkipReport

PATH_KEYS = ("path", "video", "file", "image")
TEXT_KEYS = ("caption", "text")


def _pick(row: dict, keys: tuple, what: str, where: str) -> str:
    """The first non-null value of ``keys`` in ``row``, which must be a string (a path: not empty)."""
    present = [key for key in keys if key in row]
    for key in present:
        value = row[key]
        if value is None:
            continue  # a null (or a short CSV row) falls back to the next alias
        if not isinstance(value, str):
            raise ValueError(f"{where}: the {what} ({key!r}) must be a string, got {type(value).__name__} {value!r}")
        if what == "path" and not value.strip():
            raise ValueError(f"{where}: the path ({key!r}) is empty")
        return value
    if present:
        raise ValueError(f"{where}: no {what} in this row (the {' / '.join(present)} value is missing)")
    raise ValueError(f"{where}: no {what} column (expected one of {', '.join(keys)}), got {sorted(map(str, row))}")


def _normalise(path: str, root: str) -> Optional[str]:
    """``path`` relative to ``root`` (``/``-separated, normalised), or None when it leads outside."""
    if os.path.isabs(path):
        rel = os.path.relpath(path, root)
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            # The root may be reached through a symlink that the caption's absolute path resolves.
            rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
        path = rel
    path = posixpath.normpath(path.replace(os.sep, "/"))
    if path in (".", "..") or path.startswith("../") or posixpath.isabs(path):
        return None
    return path


def _lines(captions_file: str) -> Iterator[Tuple[int, str]]:
    """``(line number, text)`` of each line, decoded one at a time so a bad byte names its line."""
    with open(captions_file, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")  # a spreadsheet's BOM is not a column name
            except UnicodeDecodeError as e:
                raise ValueError(f"{captions_file}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            yield n, line


def _json_rows(captions_file: str) -> List[Tuple[str, dict]]:
    rows = []
    for n, line in _lines(captions_file):
        if not line.strip():
            continue
        where = f"{captions_file}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise ValueError(
                f'{where}: expected a JSON object such as {{"path": "clips/a.mp4", "caption": "a dog runs"}}, '
                f"got a {type(row).__name__} (one object per line: JSONL, not a JSON array)"
            )
        rows.append((where, row))
    return rows


def _csv_rows(captions_file: str, delimiter: str) -> List[Tuple[str, dict]]:
    last = [0]  # the line the reader took last: where a row (or a CSV error) ends

    def lines() -> Iterator[str]:
        for n, line in _lines(captions_file):
            last[0] = n
            yield line

    reader = csv.DictReader(lines(), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            rows.append((f"{captions_file}:{last[0]}", row))
    except csv.Error as e:
        raise ValueError(f"{captions_file}:{last[0]}: not valid CSV ({e})") from None
    return rows


def read_captions(captions_file: str, root: str, report: Optional[SkipReport] = None) -> Dict[str, List[str]]:
    """``{relative path: [captions]}`` from a ``.jsonl`` / ``.json`` or ``.csv`` / ``.tsv`` file.

    Rows whose path leads outside ``root`` are added to ``report`` (a new one, logged, when None).
    """
    if not os.path.isabs(captions_file) and not os.path.exists(captions_file):
        captions_file = os.path.join(root, captions_file)
    if not os.path.isfile(captions_file):
        raise FileNotFoundError(f"captions file {captions_file!r} not found")
    ext = os.path.splitext(captions_file)[1].lower()
    if ext in (".jsonl", ".json"):
        rows = _json_rows(captions_file)
    elif ext in (".csv", ".tsv"):
        rows = _csv_rows(captions_file, "\t" if ext == ".tsv" else ",")
    else:
        raise ValueError(f"captions file {captions_file!r}: expected .jsonl or .csv")
    own_report = report is None
    report = SkipReport("caption paths", root) if own_report else report
    skipped = report.count
    captions: Dict[str, List[str]] = {}
    for where, row in rows:
        named = _pick(row, PATH_KEYS, "path", where)
        text = _pick(row, TEXT_KEYS, "caption", where)
        path = _normalise(named, root)
        if path is None:
            report.add(named, "outside data root", where)
            continue
        captions.setdefault(path, []).append(text)
    if own_report:
        report.log(len(rows))
    if not captions:
        detail = f" ({report.count - skipped} rows name paths outside {root!r})" if report.count > skipped else ""
        raise ValueError(f"captions file {captions_file!r} has no entries{detail}")
    return captions
