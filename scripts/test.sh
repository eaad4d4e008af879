#!/usr/bin/env bash
# Set up a virtual environment (CPU torch first, then hpdm with its test, text and hub extras) and run
# the test suite. The core tests on setup.py's minimum versions: scripts/test_minimum_versions.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q "torch==2.13.0"
pip install -q -e ".[test,text,hub]"
# Test-only oracle for the Heun sampler; its sampling module is loaded alone, so no dependencies.
pip install -q --no-deps k-diffusion || echo "k-diffusion not installable: its oracle test will be skipped"
python -m pytest -q tests "$@"
