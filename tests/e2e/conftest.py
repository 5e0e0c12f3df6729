"""Markers of the end-to-end tests (registered here so pyproject.toml stays untouched)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register ``e2e``."""
    config.addinivalue_line("markers", "e2e: boots kernels under QEMU (needs VMCOREPACK_E2E=1)")
