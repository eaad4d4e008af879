"""gin helpers shared by every binary: search paths, strict parsing, the operative config.

Config files live in the repository's ``gin/`` tree. ``include`` lines are resolved against the
including file's own directory and against that tree, so experiment files can be parsed from any
working directory. Parsing is strict (``skip_unknown=False``): a misspelt binding fails at start-up
with gin's message naming it.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Sequence

import gin

GIN_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")

OPERATIVE_CONFIG = "config.gin"


def add_search_paths(files: Iterable[str] = ()) -> None:
    """Make ``include`` work from any cwd: the repo gin tree and each file's directory."""
    paths = [GIN_ROOT, os.path.dirname(GIN_ROOT)]
    paths += [os.path.dirname(os.path.abspath(f)) for f in files]
    for path in paths:
        if os.path.isdir(path) and path not in _added:
            gin.add_config_file_search_path(path)
            _added.add(path)


_added: set[str] = set()


class _QuietPackageLookup(logging.Filter):
    """gin probes each include as a Python package path first and logs a false "Path not found"
    ERROR before finding the file on the search path; drop exactly that record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.module == "resource_reader" and record.msg == "Path not found: %s")


logging.getLogger().addFilter(_QuietPackageLookup())


def resolve_config_file(path: str) -> str:
    """Find ``path`` as given, or relative to the repository (``gin/quickstart.gin`` from anywhere)."""
    for candidate in (path, os.path.join(os.path.dirname(GIN_ROOT), path), os.path.join(GIN_ROOT, path)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"gin file {path!r} not found (looked here and under {GIN_ROOT})")


def parse(files: Sequence[str] = (), bindings: Sequence[str] = (), skip_unknown: bool = False) -> None:
    """Parse gin files and bindings strictly; unknown configurables raise naming the binding."""
    files = [resolve_config_file(f) for f in files]
    add_search_paths(files)
    gin.parse_config_files_and_bindings(list(files), list(bindings), skip_unknown=skip_unknown)


def parse_text(text: str, skip_unknown: bool = False) -> None:
    """Parse a saved (operative) config text."""
    add_search_paths()
    gin.parse_config(text, skip_unknown=skip_unknown)
