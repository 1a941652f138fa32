"""The cluster map (what a transition gains, which successor is legal, the wire form)
and the Paxos instance that decides each epoch."""

import random

import pytest

from zkv.core.cluster_map import ClusterMap, MapMember
from zkv.core.map_register import MapAcceptor, MapProposer
from zkv.core.messages import MapAccept, MapPrepare
from zkv.core.ring import key_bytes
from zkv.model.tokens import token
from zkv.storage.memory import MemoryStore

from ..recording import RecordingOutbox


def member(node_id: str, instance: int = 1) -> MapMember:
    return MapMember(node_id, f"sim://{node_id}", instance)


def cluster(*ids: str, vnodes: int = 16) -> ClusterMap:
    cmap = ClusterMap.founding(member(ids[0]), 3, vnodes)
    if len(ids) > 1:
        cmap = cmap.with_joins([member(i) for i in ids[1:]]).settled()
    return cmap


def test_gained_ranges_are_exactly_where_a_node_is_a_new_replica():
    before = cluster("a", "b", "c", "d")
    during = before.with_joins([member("e")])
    ranges = during.gained_ranges("e")
    old, new = during.rings
    rng = random.Random(7)
    for _ in range(3000):
        key = key_bytes(f"k{rng.random()}")
        gains = "e" in new.locate(key) and "e" not in old.locate(key)
        tok = token(key)
        inside = [r for r in ranges if r[0] <= tok <= r[1]]
        assert bool(inside) == gains
        if inside:
            assert inside[0][2] == old.locate(key)  # streamed from the old replicas
    assert during.gainers == {"e"}
    assert during.replica_sets(b"x") in ([old.locate(b"x")], [old.locate(b"x"),
                                                              new.locate(b"x")])


def test_a_decommission_is_remembered_and_a_removal_is_not():
    cmap = cluster("a", "b", "c", "d", "e")
    out = cmap.with_removal(["b"], dead=False).settled()
    assert "b" not in out.ring and out.decommissioned("b", 1)
    gone = cmap.with_removal(["c"], dead=True)
    assert gone.gone == {"c"} and gone.sources_needed(("a", "c", "d")) == (["a", "d"], 2)
    assert not gone.settled().decommissioned("c", 1)
    # Two of a range's three old replicas removed as dead: the survivor is all there is.
    both = cmap.with_removal(["c", "d"], dead=True)
    assert both.sources_needed(("a", "c", "d")) == (["a"], 1)


def test_only_a_legal_next_step_follows_a_map():
    settled = cluster("a", "b", "c")
    start = settled.with_joins([member("d")])
    assert start.follows(settled) == ""
    assert start.with_joins([member("e")]).follows(start) == ""  # amend
    assert start.settled().follows(start) == ""
    assert "neither starts" in start.settled().follows(settled.with_joins([member("x")]))
    jump = ClusterMap(settled.epoch + 1, settled.members, frozenset("ab"), None, vnodes=16)
    assert "neither starts" in jump.follows(settled)
    swapped = ClusterMap(settled.epoch + 1, (member("a", 9), member("b"), member("c")),
                         settled.ring, frozenset("abc"), vnodes=16)
    assert "changed instance" in swapped.follows(settled)


@pytest.mark.parametrize("broken, reason", [
    (lambda v: v[:7], "8 fields"),
    (lambda v: [v[0], v[1] + [["a", "sim://z", 1]], *v[2:]], "twice"),
    (lambda v: [v[0], v[1], v[2] + ["zz"], *v[3:]], "exactly its ring and target"),
    (lambda v: [v[0], v[1], v[2], v[3], ["a"], *v[5:]], "gone nodes"),
    (lambda v: [0, *v[1:]], "positive"),
])
def test_malformed_maps_are_refused_with_a_reason(broken, reason):
    good = cluster("a", "b", "c").with_removal(["c"], dead=True).encode()
    assert ClusterMap.decode(good).epoch == 4
    with pytest.raises(ValueError, match=reason):
        ClusterMap.decode(broken(good))


def run_instance(base: ClusterMap, proposers: list[MapProposer], drop: set[tuple[str, str]]):
    """Deliver every message between proposers and the voters' acceptors until quiet;
    ``drop`` holds (sender, receiver) links that lose everything."""
    acceptors = {v: MapAcceptor(MemoryStore()) for v in base.voters}
    outs = {p.node_id: RecordingOutbox() for p in proposers}
    for p in proposers:
        p.propose(base, lambda m, who=p.node_id: m.with_joins([member(f"new-{who}")]),
                  f"join by {p.node_id}", 0.0, 10.0, outs[p.node_id])
    for _ in range(10):
        for p in proposers:
            sent, outs[p.node_id].sent = outs[p.node_id].sent, []
            for to, msg in sent:
                if (p.node_id, to) in drop:
                    continue
                acceptor = acceptors[to]
                if isinstance(msg, MapPrepare):
                    reply = acceptor.on_prepare(msg, base)
                    if (to, p.node_id) not in drop:
                        p.on_promise(to, reply, outs[p.node_id], 0.0)
                elif isinstance(msg, MapAccept):
                    reply = acceptor.on_accept(msg, ClusterMap.decode(msg.value), base)
                    if (to, p.node_id) not in drop:
                        p.on_accepted(to, reply, outs[p.node_id], 0.0)
    return acceptors


def test_an_epoch_is_decided_by_a_majority_of_the_previous_voters():
    base = cluster("a", "b", "c")
    proposer = MapProposer("a")
    run_instance(base, [proposer], drop={("a", "c")})  # c never hears: 2 of 3 suffice
    assert proposer.decided is not None and proposer.decided.epoch == base.epoch + 1
    assert "new-a" in proposer.decided.target

    lonely = MapProposer("a")
    run_instance(base, [lonely], drop={("a", "b"), ("a", "c")})  # a minority decides nothing
    assert lonely.decided is None


def test_a_later_proposer_carries_the_value_a_majority_accepted():
    base = cluster("a", "b", "c")
    first = MapProposer("a")
    acceptors = run_instance(base, [first], drop=set())
    assert first.decided is not None
    # A second proposer (higher ballot) that asks the same acceptors must decide the
    # same map, not its own change.
    second = MapProposer("b")
    second.top = 5
    out = RecordingOutbox()
    second.propose(base, lambda m: m.with_joins([member("other")]), "other", 0.0, 10.0, out)
    for _ in range(3):
        sent, out.sent = out.sent, []
        for to, msg in sent:
            if isinstance(msg, MapPrepare):
                second.on_promise(to, acceptors[to].on_prepare(msg, base), out, 0.0)
            elif isinstance(msg, MapAccept):
                second.on_accepted(to, acceptors[to].on_accept(
                    msg, ClusterMap.decode(msg.value), base), out, 0.0)
    assert second.decided == first.decided
