"""Helpers for simulator scenarios: form a cluster, inspect where keys live."""

from __future__ import annotations

import pytest

from zkv.core.ring import key_bytes
from zkv.sim.cluster import SimCluster


def formed(n: int, seed: int = 0, **kw) -> SimCluster:
    """A cluster of ``n`` nodes whose rings all agree and which coordinate requests."""
    cluster = SimCluster(seed=seed, n_nodes=n, **kw)
    ids = set(cluster.node_ids)
    assert cluster.run_until_condition(
        lambda: all(cluster.node(i).joined and cluster.node(i).ring.nodes == ids
                    for i in cluster.running()) and rings_agree(cluster),
        deadline=30.0,
    ), "the cluster did not form"
    cfg = cluster.node("n0").config
    cluster.run_for(cfg.t_fail + cfg.gossip_interval)  # past the join hold
    return cluster


def holders(cluster: SimCluster, key: str | bytes) -> dict[str, object]:
    """Live nodes holding a record for ``key``, with that record."""
    k = key_bytes(key)
    return {i: r for i in cluster.running() if (r := cluster.store(i).get(k)) is not None}


def replicas(cluster: SimCluster, key: str | bytes, via: str | None = None) -> tuple[str, ...]:
    return cluster.node(via or cluster.running()[0]).locate(key_bytes(key))


def rings_agree(cluster: SimCluster) -> bool:
    rings = {cluster.node(i).ring.nodes for i in cluster.running()}
    return len(rings) == 1 and all(not cluster.node(i).in_transition for i in cluster.running())


def placement_exact(cluster: SimCluster, keys) -> bool:
    """Every key on exactly its replica set, all copies identical."""
    if not rings_agree(cluster):
        return False
    for key in keys:
        held = holders(cluster, key)
        if set(held) != set(replicas(cluster, key)) or len({r.version for r in held.values()}) != 1:
            return False
    return True


@pytest.fixture
def cluster10() -> SimCluster:
    return formed(10, seed=7)
