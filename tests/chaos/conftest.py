"""Helpers for chaos tests: skip reasons and the node timers every test uses."""

from __future__ import annotations

import pytest

from tests.integration.clusterproc import wait_until  # noqa: F401 - the chaos tests' poller
from zkv.chaos import netns

# Failures noticed in about a second; t_remove well above t_fail plus gossip spread.
FAST_TIMERS = ("--gossip-interval", "0.1", "--t-fail", "1", "--t-remove", "4")



@pytest.fixture
def lab_support() -> None:
    """Skip unless nodes can run as hosts in network namespaces here."""
    reason = netns.support()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
