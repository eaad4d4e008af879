"""The README's examples run: the Python snippet executes, and every file its commands name exists."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


@pytest.mark.slow
def test_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no Python example"
    # The examples name repo paths (pretrained/quickstart) and write files: run them in a scratch
    # directory that sees the shipped model, so nothing lands in the checkout.
    os.symlink(os.path.join(ROOT, "pretrained"), tmp_path / "pretrained")
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_named_repo_files_exist():
    names = set(re.findall(r"(?:gin|scripts)/[\w/]+\.(?:gin|sh|py)", README))
    names |= set(re.findall(r"(?:docs|pretrained)/[\w/]+\.\w+", README))  # the GIF, the shipped model
    assert {"scripts/quickstart.sh", "scripts/test.sh", "docs/quickstart.gif"} <= names
    missing = sorted(n for n in names if not os.path.exists(os.path.join(ROOT, n)))
    assert not missing, f"README names missing files: {missing}"


def test_opens_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1).strip().splitlines()
    assert [line.split()[:2] for line in first_block] == [["bash", "scripts/quickstart.sh"], ["bash", "scripts/test.sh"]]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "bash scripts/test.sh" in ci
