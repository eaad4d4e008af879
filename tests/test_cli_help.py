"""Each console script's --help shows its binary's docstring and flags (absl shows those of
``__main__``, which for a console script is a generated wrapper without either)."""

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


@pytest.mark.slow
@pytest.mark.parametrize("script, first_line, flag", [
    ("hpdm-train", "``hpdm-train``", "--gin_file"),
    ("hpdm-sample", "``hpdm-sample``", "--guide_model"),
    ("hpdm-eval", "``hpdm-eval``", "--protocol"),
    ("hpdm-bench", "``hpdm-bench``", "--preset"),
])
def test_console_script_help_shows_the_docstring_and_flags(script, first_line, flag):
    path = os.path.join(BIN, script)
    if not os.path.exists(path):
        pytest.skip(f"{script} is not installed in this environment")
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    text = result.stdout + result.stderr
    assert text.lstrip().startswith(first_line), text[:300]
    assert f"  {flag}" in text, text[-2000:]
