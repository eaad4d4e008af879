"""The import arrows between hpdm's packages are those docs/design.md allows ("Layering")."""

import os
import textwrap

import import_graph


def test_the_package_draws_only_allowed_arrows():
    problems = import_graph.violations(import_graph.graph())
    assert not problems, "\n".join(problems)


def test_every_package_has_a_layer():
    packages = {import_graph.package_of(module) for module, _ in import_graph.source_files()} - {"hpdm"}
    placed = {p for layer in import_graph.LAYERS for p in layer}
    assert packages <= placed, sorted(packages - placed)


def _tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))


def test_a_forbidden_import_is_reported(tmp_path):
    _tree(tmp_path, {
        "hpdm/__init__.py": "",
        "hpdm/core/__init__.py": "from hpdm.pyramid import Pyramid\n",
        "hpdm/pyramid/__init__.py": "Pyramid = object\n",
        "hpdm/metrics/__init__.py": "",
        # deferred, relative and from-imports all count
        "hpdm/metrics/fid.py": "def f():\n    from ..core import HPDM\n",
        "hpdm/samplers/__init__.py": "from absl import flags\nfrom hpdm import cli\n",
        "hpdm/cli/__init__.py": "from absl import app, flags\nimport hpdm.samplers\n",
        "hpdm/data/__init__.py": "import hpdm.core.model\n",
    })
    problems = import_graph.violations(import_graph.graph(str(tmp_path)))
    text = "\n".join(problems)
    assert "hpdm.metrics must not import hpdm.core: hpdm/metrics/fid.py" in text
    assert "hpdm.samplers imports absl.flags (only hpdm.cli may)" in text
    assert "hpdm.samplers imports hpdm.cli, a layer above it" in text
    assert "hpdm.data must not import hpdm.core" in text
    assert not any(p.startswith("hpdm.cli ") for p in problems)  # the binaries may import anything
    assert len(problems) == 4, text


def test_a_package_outside_the_layers_is_reported(tmp_path):
    _tree(tmp_path, {"hpdm/__init__.py": "", "hpdm/extras/__init__.py": "import hpdm.core\n", "hpdm/core/__init__.py": ""})
    problems = import_graph.violations(import_graph.graph(str(tmp_path)))
    assert problems == ["hpdm.extras is in no layer of LAYERS (hpdm.extras -> hpdm.core): hpdm/extras/__init__.py"]


def test_every_design_section_the_code_cites_exists():
    import re

    with open(os.path.join(import_graph.ROOT, "docs", "design.md"), encoding="utf-8") as f:
        headings = {line.lstrip("#").strip() for line in f if line.startswith("#")}
    cited = {}
    for _, path in import_graph.source_files():
        with open(path, encoding="utf-8") as f:
            for name in re.findall(r'docs/design\.md,? "([^"]+)"', f.read()):
                cited.setdefault(name, path)
    assert cited, "no citation found: the pattern no longer matches how docstrings cite the design"
    missing = {name: path for name, path in cited.items() if name not in headings}
    assert not missing, missing
