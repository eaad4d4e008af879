"""Shared pytest setup: a clean gin config around every test."""

import gin
import pytest


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()
