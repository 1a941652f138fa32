"""CRUD on 10 nodes: outcomes at the coordinator and at every replica."""

from tests.sim.conftest import formed, replicas

KEYS = [f"user:{i}" for i in range(120)]


def replica_writes(cluster, key: bytes, version: list) -> set[str]:
    return {e.node_id for e in cluster.events.of_kind("replica_write")
            if e.fields["key"] == key and e.fields["version"] == version and e.fields["accepted"]}


def coordinator_version(cluster, key: bytes, op: str) -> list:
    done = [e for e in cluster.events.of_kind("coordinator_done")
            if e.fields["key"] == key and e.fields["op"] == op and e.fields["status"] == "ok"]
    return done[-1].fields["version"]


def test_crud_succeeds_at_the_coordinator_and_all_three_replicas(cluster10):
    c = cluster10
    nodes = c.node_ids
    for i, key in enumerate(KEYS):
        k = key.encode()
        coord = nodes[i % len(nodes)]
        other = nodes[(i + 3) % len(nodes)]
        owners = set(replicas(c, key))

        assert c.request(coord, "create", key, f"v1-{i}").status == "ok"
        c.run_for(0.1)
        assert replica_writes(c, k, coordinator_version(c, k, "create")) == owners
        assert c.get(other, key).value == f"v1-{i}".encode()

        assert c.request(other, "update", key, f"v2-{i}").status == "ok"
        c.run_for(0.1)
        assert replica_writes(c, k, coordinator_version(c, k, "update")) == owners
        assert c.get(coord, key).value == f"v2-{i}".encode()

        assert c.request(coord, "create", key, "again").status == "exists"

        assert c.delete(other, key).status == "ok"
        c.run_for(0.1)
        assert replica_writes(c, k, coordinator_version(c, k, "delete")) == owners
        assert c.get(coord, key).status == "not_found"
        assert c.request(coord, "update", key, "nope").status == "not_found"
        assert c.delete(other, key).status == "not_found"
        assert c.request(other, "create", key, f"v3-{i}").status == "ok"
        assert c.get(coord, key).value == f"v3-{i}".encode()

    statuses = [e.fields["status"] for e in c.events.of_kind("coordinator_done")]
    assert set(statuses) <= {"ok", "exists", "not_found"}


def test_bad_requests_are_refused_cleanly():
    c = formed(3, seed=1)
    assert c.request("n0", "put", "", "v").status == "invalid"
    assert c.request("n0", "put", "k" * 2000, "v").status == "invalid"
    assert c.request("n1", "put", "k", b"x" * (1024 * 1024 + 1)).status == "invalid"
    assert c.put("n2", "k", "fine").status == "ok"
    assert c.get("n0", "k").value == b"fine"
