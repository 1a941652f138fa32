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


def test_join_leave_and_rejoin_leave_every_key_on_exactly_its_replicas():
    c = formed(8, seed=31)
    values = load(c)
    settle(c)

    joined = c.add_node()
    settle(c)
    assert any(joined in holders(c, k) for k in KEYS), "the new node took over no keys"
    values_intact(c, values)

    c.stop("n3")  # graceful leave
    assert c.run_until_condition(lambda: c.gone("n3"), deadline=c.now + 10)
    settle(c)
    assert all("n3" not in holders(c, k) for k in KEYS)
    values_intact(c, values)

    c.restart("n3")  # comes back with its old data and a higher incarnation
    settle(c)
    assert any("n3" in holders(c, k) for k in KEYS)
    values_intact(c, values)

    moves = c.events.of_kind("stabilize_push")
    drops = c.events.of_kind("strays_dropped")
    assert moves and drops


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
