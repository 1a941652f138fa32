"""Membership: joining, failure detection within a stated bound, no false removals."""

from tests.sim.conftest import formed, rings_agree

# Stated bound: a crashed node is marked down by every live node within
# t_fail + 3 gossip intervals (one interval for the last heartbeat to spread,
# one for the check timer, one of slack for message delay), and removed within
# t_remove + 3 gossip intervals.
SLACK_INTERVALS = 3


def status_events(cluster, node: str, new: str, since: float):
    return {e.node_id: e.time for e in cluster.events.of_kind("member_status")
            if e.fields["node"] == node and e.fields["new"] == new and e.time >= since}


def test_all_nodes_join_through_the_seed():
    c = formed(10, seed=21)
    assert all(c.node(i).ring.nodes == set(c.node_ids) for i in c.node_ids)


def test_a_late_node_joins_a_running_cluster():
    c = formed(5, seed=22)
    new = c.add_node()
    assert c.run_until_condition(
        lambda: all(new in c.node(i).ring.nodes for i in c.running()), deadline=c.now + 5)


def detection_within_bound(c, crashed: list[str]) -> None:
    cfg = c.node("n0").config
    t0 = c.now
    for n in crashed:
        c.crash(n)
    c.run_for(cfg.t_remove + (SLACK_INTERVALS + 1) * cfg.gossip_interval)
    live = set(c.running())
    for n in crashed:
        down = status_events(c, n, "down", t0)
        removed = status_events(c, n, "removed", t0)
        assert set(down) == live, f"{n} not seen down by {live - set(down)}"
        assert set(removed) == live, f"{n} not removed by {live - set(removed)}"
        assert max(down.values()) - t0 <= cfg.t_fail + SLACK_INTERVALS * cfg.gossip_interval
        assert max(removed.values()) - t0 <= cfg.t_remove + SLACK_INTERVALS * cfg.gossip_interval
    # Then a majority decides the removal, the gainers stream, and the ring settles.
    assert c.run_until_condition(
        lambda: all(n not in c.node(i).ring.nodes for i in live for n in crashed)
        and rings_agree(c), deadline=c.now + 3.0)


def test_single_failure_is_detected_by_every_live_node_within_the_bound():
    detection_within_bound(formed(10, seed=23), ["n4"])


def test_multiple_failures_are_detected_by_every_live_node_within_the_bound():
    detection_within_bound(formed(10, seed=24), ["n2", "n5", "n8"])


def test_no_false_detection_with_ten_percent_message_loss():
    c = formed(10, seed=25)
    t0 = c.now
    c.set_faults(drop=0.10)
    c.run_for(120.0)
    suspicious = [e for e in c.events.of_kind("member_status")
                  if e.time >= t0 and e.fields["new"] in ("down", "removed")]
    assert suspicious == []
    assert c.network.stats.dropped > 1000  # the loss really happened


def test_restarted_node_returns_with_a_higher_incarnation():
    c = formed(5, seed=26)
    before = c.node("n3").incarnation
    c.crash("n3")
    c.run_for(1.0)
    c.restart("n3")
    assert c.node("n3").incarnation == before + 1
    assert c.run_until_condition(
        lambda: all(c.node(i).membership.members["n3"].state.incarnation == before + 1
                    for i in c.running() if i != "n3"), deadline=c.now + 5)
