"""Replica failures: quorum survives one, refuses two, recovers after removal."""

from tests.sim.conftest import formed, holders, replicas, rings_agree

KEY = "account:42"


def test_one_replica_down_quorum_reads_and_updates_still_work():
    c = formed(10, seed=11)
    assert c.put("n0", KEY, "before").status == "ok"
    primary, secondary, tertiary = replicas(c, KEY)
    c.crash(secondary)
    coord = next(n for n in c.running() if n not in (primary, tertiary))
    assert c.get(coord, KEY).value == b"before"
    assert c.request(coord, "update", KEY, "after").status == "ok"
    assert c.get(primary, KEY).value == b"after"
    c.run_for(c.node(coord).config.t_fail + 1)  # now known down: still fine
    assert c.request(tertiary, "update", KEY, "later").status == "ok"
    assert c.get(coord, KEY).value == b"later"


def test_one_replica_restarts_and_catches_up():
    c = formed(10, seed=12)
    primary, secondary, _ = replicas(c, KEY)
    c.crash(secondary)
    assert c.put(primary, KEY, "while-down").status == "ok"
    c.restart(secondary)
    assert c.run_until_condition(
        lambda: (r := c.store(secondary).get(KEY.encode())) is not None
        and r.value == b"while-down", deadline=c.now + 10), "anti-entropy did not repair it"


def test_two_replicas_down_quorum_unavailable_until_removal_and_stabilization():
    c = formed(10, seed=13)
    cfg = c.node("n0").config
    assert c.put("n0", KEY, "last-acked").status == "ok"
    original = replicas(c, KEY)
    assert c.run_until_condition(lambda: set(holders(c, KEY)) == set(original), c.now + 2)
    survivor, dead = original[0], original[1:]
    for node in dead:
        c.crash(node)
    coord = next(n for n in c.running() if n not in original)

    # Before anyone notices: the coordinator waits for its deadline, then refuses.
    r = c.get(coord, KEY, timeout=1.0)
    assert r.status == "unavailable"
    assert c.request(coord, "update", KEY, "x", timeout=1.0).status == "unavailable"
    assert c.get(coord, KEY, consistency="one").value == b"last-acked"

    # Known down, not yet removed: refused at once.
    c.run_for(cfg.t_fail + 2 * cfg.gossip_interval)
    r = c.get(coord, KEY)
    assert r.status == "unavailable" and r.latency < 0.05
    assert c.get(coord, KEY, consistency="one").value == b"last-acked"

    # Removed, stabilized: three live replicas again, quorum answers the last acked value.
    new_set: set[str] = set()

    def recovered() -> bool:
        nonlocal new_set
        new_set = set(replicas(c, KEY, via=survivor))
        held = holders(c, KEY)
        return (not set(dead) & new_set and len(new_set) == 3 and set(held) >= new_set
                and all(r.value == b"last-acked" for r in held.values()))

    assert c.run_until_condition(recovered, deadline=c.now + cfg.t_remove + 10)
    assert c.run_until_condition(lambda: rings_agree(c), deadline=c.now + 5)
    assert c.get(coord, KEY).value == b"last-acked"
    assert c.request(coord, "update", KEY, "new-era").status == "ok"
    assert c.get(survivor, KEY).value == b"new-era"
