"""Stabilization: after a join, a leave and a rejoin every key sits on exactly its replica set."""

from tests.sim.conftest import formed, holders, placement_exact

KEYS = [f"k{i}" for i in range(200)]


def load(c) -> dict[str, bytes]:
    values = {}
    for i, key in enumerate(KEYS):
        value = f"value-{i}".encode()
        assert c.put(c.running()[i % len(c.running())], key, value).status == "ok"
        values[key] = value
    return values


def settle(c, deadline: float = 40.0) -> None:
    assert c.run_until_condition(lambda: placement_exact(c, KEYS), deadline=c.now + deadline), \
        "keys did not settle on exactly their replica sets"


def values_intact(c, values) -> None:
    for key, value in values.items():
        assert all(r.value == value for r in holders(c, key).values())
        assert c.get(c.running()[0], key).value == value


def in_every_ring(c, node: str) -> bool:
    return all(node in c.node(i).ring.nodes for i in c.running())


def test_join_and_decommission_leave_every_key_on_exactly_its_replicas():
    c = formed(8, seed=31)
    values = load(c)
    settle(c)

    joined = c.add_node()
    assert c.run_until_condition(lambda: in_every_ring(c, joined), deadline=c.now + 10)
    settle(c)
    assert any(joined in holders(c, k) for k in KEYS), "the new node took over no keys"
    values_intact(c, values)

    c.decommission("n3")
    assert c.run_until_condition(lambda: c.gone("n3"), deadline=c.now + 10)
    settle(c)
    assert all("n3" not in c.node(i).ring.nodes for i in c.running())
    values_intact(c, values)

    # A decommissioned node restarted with its old directory stays out of the cluster.
    c.restart("n3")
    assert c.run_until_condition(lambda: c.gone("n3"), deadline=c.now + 5)

    streamed = c.events.of_kind("stream_done")
    drops = c.events.of_kind("strays_dropped")
    assert streamed and drops


def test_a_graceful_stop_keeps_the_node_a_member_and_moves_no_data():
    c = formed(6, seed=33)
    values = load(c)
    settle(c)
    epoch = c.node("n0").cluster_map.epoch
    c.stop("n2", grace=0.5)
    assert c.run_until_condition(lambda: c.gone("n2"), deadline=c.now + 2)
    c.restart("n2")
    settle(c)
    values_intact(c, values)
    assert c.node("n0").cluster_map.epoch == epoch  # no ring change either way
    assert not [e for e in c.events.of_kind("stream_start")
                if e.time > 0 and e.fields["epoch"] > epoch]


def test_crashed_node_removed_then_back_keeps_placement_exact():
    c = formed(6, seed=32)
    values = load(c)
    settle(c)
    cfg = c.node("n0").config
    c.crash("n2")
    c.run_for(cfg.t_remove + 1)
    settle(c)
    values_intact(c, values)
    c.restart("n2")
    settle(c)
    values_intact(c, values)
