"""Shared pytest setup: a clean gin config around every test, one torch thread.

The test models are tiny: with two cores, torch's intra-op threads cost more in synchronisation
than they gain, and they fight with the subprocesses some tests start.
"""

import gin
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()
