#!/usr/bin/env bash
# The minimum-versions stage of CI: a second virtual environment (.venv-min) with every requirement of
# setup.py, extras included, at its floor (scripts/minimum_versions.py), and the core tests on it:
# each floor is installed and exercised (model, pyramid, loss, data and torchdata, T5 and sentencepiece,
# metrics and scipy, checkpoints and safetensors, the GIF writer, TensorBoard, the Hub cache, run records).
# torch is the one the main stage uses too: the CPU build at hand is the only one CI can install.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-min
. .venv-min/bin/activate
pip install -q "torch==2.13.0"
python scripts/minimum_versions.py > .venv-min/requirements-min.txt
echo "Minimum versions:" $(cat .venv-min/requirements-min.txt)
pip install -q -r .venv-min/requirements-min.txt
pip install -q --no-deps -e .
# test_data.py comes last: it imports every hpdm module, and binaries' flags clash within one process.
HPDM_EXPECT_FLOORS=1 python -m pytest -q -x \
  tests/test_dependencies.py tests/test_run_record.py tests/test_model.py tests/test_pyramid.py tests/test_loss.py \
  tests/test_text.py tests/test_metrics.py tests/test_checkpoint.py tests/test_sample_cli.py tests/test_pipeline.py \
  tests/test_train.py::test_tensorboard_events_and_gif_samples tests/test_data.py "$@"
