"""Fixtures for the chart tests: render helm/kdl-server with Helm v4's own SDK (no helm binary)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chart_support import CHART_DIR, load_chart


@pytest.fixture(scope="session")
def chart():
    """The loaded kdl-server chart."""
    loaded = load_chart()
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART_DIR
