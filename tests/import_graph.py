"""The package-level import graph of hpdm, read from the source (every import, deferred ones too).

``python tests/import_graph.py`` prints each arrow (importing package -> imported package, with the
number of files that import it) and every arrow ``docs/design.md`` does not allow;
``tests/test_layering.py`` fails on the latter. A package is ``hpdm.X`` for a sub-package or a
top-level module ``hpdm/X.py``; the layer order and the extra rules are ``LAYERS`` and
``FORBIDDEN`` below, the same as the design document's "Layering" section.
"""

from __future__ import annotations

import ast
import os
import sys
from collections import defaultdict
from typing import Iterable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first; a package may import packages of its own layer or of a layer before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("hpdm.progress", "hpdm.gin_utils", "hpdm.video", "hpdm.host_memory"),
    ("hpdm.pyramid",),
    ("hpdm.layers",),
    ("hpdm.core",),
    ("hpdm.data",),
    ("hpdm.metrics",),
    ("hpdm.samplers",),
    ("hpdm.trainers",),
    ("hpdm.evaluation",),
    ("hpdm.benchmarks",),
    ("hpdm.diagnostics",),
    ("hpdm.pipeline",),
    ("hpdm.cli",),
)

# Arrows the layer order would allow but the design rules out.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # Data pipelines produce arrays for any model; the model never reads files.
    "hpdm.data": ("hpdm.core",),
    # Metrics take tensors or arrays: nothing that builds, loads or samples a model.
    "hpdm.metrics": ("hpdm.layers", "hpdm.core", "hpdm.data", "hpdm.gin_utils"),
}

# Modules only the binaries may import: flags and the absl app belong to the command line.
CLI_ONLY = ("absl.flags", "absl.app")
CLI_PACKAGE = "hpdm.cli"


def package_of(module: str) -> str | None:
    """``hpdm.core.model`` -> ``hpdm.core``; ``hpdm.pipeline`` -> ``hpdm.pipeline``; not hpdm -> None."""
    parts = module.split(".")
    if parts[0] != "hpdm":
        return None
    return ".".join(parts[:2]) if len(parts) > 1 else "hpdm"


def source_files(root: str = ROOT) -> Iterator[tuple[str, str]]:
    """(module name, path) of every Python file of the package."""
    base = os.path.join(root, "hpdm")
    for directory, _, files in os.walk(base):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def imports_of(path: str, module: str) -> Iterator[str]:
    """Every module ``path`` imports, at any depth of the file (deferred imports count)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield target
            for alias in node.names:
                # ``from absl import flags`` imports the module absl.flags.
                yield f"{target}.{alias.name}"


def graph(root: str = ROOT) -> dict[tuple[str, str], set[str]]:
    """``{(from package, to package or cli-only module): {files}}``, self-arrows left out."""
    arrows: dict[tuple[str, str], set[str]] = defaultdict(set)
    files = list(source_files(root))
    # ``from hpdm import __version__`` names an attribute, not a package: only real ones count.
    known = {package_of(module) for module, _ in files}
    for module, path in files:
        source = package_of(module)
        rel = os.path.relpath(path, root)
        for target in imports_of(path, module):
            if target in CLI_ONLY:
                arrows[(source, target)].add(rel)
                continue
            dest = package_of(target)
            if dest in known and dest not in (source, "hpdm") and source != "hpdm":
                arrows[(source, dest)].add(rel)
    return dict(arrows)


def layer_index(package: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index
    return None


def violations(arrows: dict[tuple[str, str], set[str]]) -> list[str]:
    """Each arrow the design does not allow, with the files that draw it."""
    problems = []
    for (source, dest), files in sorted(arrows.items()):
        where = ", ".join(sorted(files))
        if dest in CLI_ONLY:
            if source != CLI_PACKAGE:
                problems.append(f"{source} imports {dest} (only {CLI_PACKAGE} may): {where}")
            continue
        low, high = layer_index(dest), layer_index(source)
        if low is None or high is None:
            unknown = source if high is None else dest
            problems.append(f"{unknown} is in no layer of LAYERS ({source} -> {dest}): {where}")
        elif low > high:
            problems.append(f"{source} imports {dest}, a layer above it: {where}")
        elif dest in FORBIDDEN.get(source, ()):
            problems.append(f"{source} must not import {dest}: {where}")
    return problems


def describe(arrows: dict[tuple[str, str], set[str]]) -> Iterable[str]:
    for (source, dest), files in sorted(arrows.items()):
        yield f"{source} -> {dest} ({len(files)} file{'s' if len(files) > 1 else ''})"


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else ROOT
    found = graph(root)
    print("\n".join(describe(found)))
    problems = violations(found)
    print(f"\n{len(problems)} arrow(s) the design does not allow")
    print("\n".join(problems))
    sys.exit(1 if problems else 0)
