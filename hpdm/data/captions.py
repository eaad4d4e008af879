"""Captions files for text-video (and text-image) pairs: JSONL or CSV with a path and a caption.

JSONL: one object per line, ``{"path": "clips/a.mp4", "caption": "a dog runs"}``.
CSV: a header row naming the columns, e.g. ``path,caption``.
Column aliases accepted: path / video / file / image, and caption / text. Paths are relative to
the data root (absolute paths under the root are made relative). A path may appear several
times; each sample then picks one of its captions at random.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Dict, List

PATH_KEYS = ("path", "video", "file", "image")
TEXT_KEYS = ("caption", "text")


def _pick(row: dict, keys: tuple, what: str, where: str) -> str:
    for key in keys:
        if key in row and row[key] is not None:
            return str(row[key])
    raise ValueError(f"{where}: no {what} column (expected one of {', '.join(keys)}), got {sorted(row)}")


def _normalise(path: str, root: str) -> str:
    if os.path.isabs(path):
        path = os.path.relpath(path, root)
    path = path.replace(os.sep, "/")
    return path[2:] if path.startswith("./") else path


def read_captions(captions_file: str, root: str) -> Dict[str, List[str]]:
    """``{relative path: [captions]}`` from a ``.jsonl`` / ``.json`` or ``.csv`` / ``.tsv`` file."""
    if not os.path.isabs(captions_file) and not os.path.exists(captions_file):
        captions_file = os.path.join(root, captions_file)
    if not os.path.isfile(captions_file):
        raise FileNotFoundError(f"captions file {captions_file!r} not found")
    ext = os.path.splitext(captions_file)[1].lower()
    rows = []
    with open(captions_file, encoding="utf-8", newline="") as f:
        if ext in (".jsonl", ".json"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append((f"{captions_file}:{n}", json.loads(line)))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{captions_file}:{n}: not valid JSON ({e})") from None
        elif ext in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
            rows = [(f"{captions_file}:{n}", row) for n, row in enumerate(reader, 2)]
        else:
            raise ValueError(f"captions file {captions_file!r}: expected .jsonl or .csv")
    captions: Dict[str, List[str]] = {}
    for where, row in rows:
        path = _normalise(_pick(row, PATH_KEYS, "path", where), root)
        captions.setdefault(path, []).append(_pick(row, TEXT_KEYS, "caption", where))
    if not captions:
        raise ValueError(f"captions file {captions_file!r} has no entries")
    return captions
