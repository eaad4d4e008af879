"""setup.py's requirements (extras included), each pinned to its floor: ``name>=X[,<Y]`` -> ``name==X``.

Read from setup.py's ``INSTALL_REQUIRES`` and ``EXTRAS_REQUIRE`` without running it, with the
standard library only (it runs before anything is installed). ``scripts/test_minimum_versions.sh``
installs what it prints; ``tests/test_dependencies.py`` checks the same declarations.

  python scripts/minimum_versions.py > requirements-min.txt
"""

from __future__ import annotations

import ast
import os
import re
import sys

SETUP_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")

# The one form a requirement may take: a name, a floor and at most an exclusive upper bound.
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)>=(?P<floor>[0-9]+(?:\.[0-9]+)*)(?:,<(?P<below>[0-9]+(?:\.[0-9]+)*))?$")


def declared(setup_py: str = SETUP_PY) -> dict[str, list[str]]:
    """``{"install": [...], extra: [...], ...}``: the requirement strings of setup.py."""
    with open(setup_py, encoding="utf-8") as f:
        tree = ast.parse(f.read(), setup_py)
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE"):
                values[node.targets[0].id] = ast.literal_eval(node.value)
    missing = {"INSTALL_REQUIRES", "EXTRAS_REQUIRE"} - set(values)
    if missing:
        raise ValueError(f"{setup_py} assigns no {', '.join(sorted(missing))}")
    return {"install": list(values["INSTALL_REQUIRES"]), **{k: list(v) for k, v in values["EXTRAS_REQUIRE"].items()}}


def parse(requirement: str) -> tuple[str, str, str | None]:
    """``"name>=X,<Y"`` -> ``("name", "X", "Y")`` (``None`` without an upper bound)."""
    match = REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"{requirement!r}: a requirement must read 'name>=FLOOR' or 'name>=FLOOR,<BOUND'")
    return match["name"], match["floor"], match["below"]


def pins(setup_py: str = SETUP_PY) -> list[str]:
    """Every requirement of setup.py, extras included, as ``name==floor``."""
    out = []
    for requirements in declared(setup_py).values():
        for requirement in requirements:
            name, floor, _ = parse(requirement)
            out.append(f"{name}=={floor}")
    return out


if __name__ == "__main__":
    print("\n".join(pins(*sys.argv[1:])))
