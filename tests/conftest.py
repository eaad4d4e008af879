"""Shared pytest setup: a clean gin config around every test, one torch thread, the ``slow`` marker.

``pytest -m "not slow" tests`` runs the in-process tests alone (a few minutes); the ``slow`` ones
start processes (training, torchrun, installs) or load the shipped weights.

The test models are tiny: with two cores, torch's intra-op threads cost more in synchronisation
than they gain, and they fight with the subprocesses some tests start.
"""

import gin
import pytest
import torch

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: starts processes (train, torchrun, pip) or loads the shipped weights; deselect with -m 'not slow'"
    )


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


@pytest.fixture
def warnings(monkeypatch):
    """Every absl warning of the data package (skips and the index cache log through one module)."""
    from hpdm.video import skips as skips_module

    logged = []
    monkeypatch.setattr(skips_module.logging, "warning", lambda fmt, *a: logged.append(fmt % a))
    return logged


@pytest.fixture
def tree(tmp_path):
    """A tiny UCF-like video tree (tests/data_fixtures.py): ``(root, description)``."""
    from data_fixtures import make_video_tree

    root = str(tmp_path / "videos")
    return root, make_video_tree(root)
