"""Helpers for chaos tests: skip reasons, and the node timers every test uses."""

from __future__ import annotations

import pytest

# The chaos tests' timers and poller are the integration harness's.
from tests.integration.harness import FAST_TIMERS, wait_until  # noqa: F401
from zkv.chaos import netns


@pytest.fixture
def lab_support() -> None:
    """Skip unless nodes can run as hosts in network namespaces here."""
    reason = netns.support()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
