"""Fixtures of the integration tests; the harness behind them is ``harness.py``.

``cluster_factory(n, **options)`` starts ``n`` nodes in the test's temporary
directory and waits until every node serves with the whole ring; ``cluster3`` is
one 3-node cluster shared by a module's tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import Cluster, clusters_under


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    with clusters_under(tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 3-node cluster shared by a module's tests that leave every node running."""
    with clusters_under(tmp_path_factory.mktemp("shared")) as make:
        yield make(3)
