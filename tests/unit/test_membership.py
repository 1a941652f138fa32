import pytest

from zkv.core.membership import ALIVE, DOWN, LEFT, REMOVED, Membership, StatusChange
from zkv.core.messages import MemberState


def state(node, inc=1, hb=0, status="alive"):
    return MemberState(node, f"sim://{node}", inc, hb, status)


def table(me="a", others=("b", "c", "d", "e")):
    m = Membership(state(me), t_fail=2.0, t_remove=8.0, now=0.0)
    m.merge([state(o) for o in others], now=0.0)
    return m


def test_merge_keeps_the_freshest_state():
    m = table()
    m.merge([state("b", hb=5)], now=1.0)
    m.merge([state("b", hb=3)], now=2.0)
    assert m.members["b"].state.heartbeat == 5
    assert m.members["b"].fresh_at == 1.0


def test_silent_member_goes_down_then_is_removable():
    m = table()
    for t in (1.0, 2.5, 5.0, 8.5):
        m.merge([state(o, hb=int(t * 10)) for o in "bcd"], now=t)
        changes = m.check(t)
        if t == 2.5:
            assert [(c.node_id, c.new) for c in changes] == [("e", DOWN)]
    assert m.status("e") == REMOVED


def test_minority_side_finds_nobody_removable():
    m = table()  # 5 members; only a and b keep beating
    for t in (3.0, 6.0, 9.0, 12.0):
        m.merge([state("b", hb=int(t))], now=t)
        m.check(t, m.majority_alive(frozenset("abcde")))
    assert not m.majority_alive(frozenset("abcde"))
    assert m.majority_alive(frozenset("ab"))
    assert {m.status(n) for n in "cde"} == {DOWN}


def test_restart_with_higher_incarnation_brings_a_removed_member_back():
    m = table()
    m.check(9.0)
    m.merge([state(o, hb=9) for o in "bcd"], now=9.0)
    m.check(9.0)
    assert m.status("e") == REMOVED
    # A stale heartbeat of the old incarnation does not revive it ...
    m.merge([state("e", inc=1, hb=0)], now=9.5)
    assert m.status("e") == REMOVED
    # ... a restart does.
    changes = m.merge([state("e", inc=2, hb=0)], now=10.0)
    assert [(c.node_id, c.old, c.new) for c in changes] == [("e", REMOVED, ALIVE)]


def test_a_member_that_says_it_left_is_left_at_once():
    m = table()
    m.merge([state("c", hb=1, status="left")], now=1.0)
    assert m.status("c") == LEFT and "sim://c" not in m.subscriptions()


def test_removed_members_are_not_gossiped():
    m = table()
    m.merge([state(o, hb=9) for o in "bcd"], now=9.0)
    m.check(9.0)
    assert "e" not in {s.node_id for s in m.gossip_table()}


def test_node_refutes_a_fresher_record_of_itself():
    m = table()
    m.merge([state("a", inc=1, hb=50)], now=1.0)
    assert m.me.heartbeat > 50


def test_a_status_change_the_table_does_not_list_is_a_bug():
    """Gossip moves members to alive or left, the timers only those in the ring: a
    removed member never turns down, and a departed one never turns removed."""
    with pytest.raises(AssertionError, match="removed -> down"):
        StatusChange("e", REMOVED, DOWN)
    with pytest.raises(AssertionError, match="left -> removed"):
        StatusChange("e", LEFT, REMOVED)
