"""Helpers for chaos tests: skip reasons and the node timers every test uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from zkv.chaos import netns

# Failures noticed in about a second; t_remove well above t_fail plus gossip spread.
FAST_TIMERS = ("--gossip-interval", "0.1", "--t-fail", "1", "--t-remove", "4")

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str,
               interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def lab_support() -> None:
    """Skip unless nodes can run as hosts in network namespaces here."""
    reason = netns.support()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
