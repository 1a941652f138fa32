"""README promises checked in the simulator: tombstones, consistency levels under
failure, minority and restarted coordinators, read repair and anti-entropy, the
skewed-clocks scenario, and "commit before anything leaves the node"."""

from __future__ import annotations

from typing import ClassVar

import pytest

import zkv.sim.cluster as sim_cluster
from tests.sim.conftest import formed, holders, replicas
from zkv.core.messages import ClientReply, WriteReply
from zkv.core.ring import key_bytes
from zkv.core.turn import BEFORE_COMMIT
from zkv.sim.scenarios import run_scenario
from zkv.storage.memory import MemoryStore

KEY = "account:42"

# Short grace and collection interval, so a test sees collection happen.
FAST_TOMBSTONES = {"tombstone_grace": 30.0, "tombstone_gc_interval": 2.0}


def tombstone_at(c, node: str, key: str) -> bool:
    record = c.store(node).get(key_bytes(key))
    return record is not None and record.tombstone


def other_than(c, nodes) -> str:
    return next(n for n in c.running() if n not in nodes)


# ------------------------------------------------------------------ tombstones


def test_collection_drops_only_tombstones_past_the_grace_and_never_a_live_record():
    c = formed(5, seed=21, config_overrides=FAST_TOMBSTONES)  # grace 30 s, collection every 2 s
    assert c.put("n0", "live", "stays").status == "ok"
    assert c.put("n0", "old", "x").status == "ok"
    assert c.delete("n0", "old").status == "ok"
    deleted_old = c.now
    old_replicas = replicas(c, "old")
    c.run_for(20.0)  # ten collections, all within "old"'s grace
    assert all(tombstone_at(c, n, "old") for n in old_replicas), (
        "a tombstone within its grace was collected"
    )

    assert c.put("n0", "young", "y").status == "ok"
    assert c.delete("n0", "young").status == "ok"
    deleted_young = c.now
    young_replicas = replicas(c, "young")
    assert c.run_until_condition(
        lambda: all(c.store(n).get(key_bytes("old")) is None for n in old_replicas),
        deleted_old + 40,
    ), "a tombstone past its grace was never collected"
    assert c.now >= deleted_old + 30
    assert c.events.of_kind("tombstones_collected")
    c.run_until(deleted_young + 25)  # more collections, "young" still within its grace
    assert all(tombstone_at(c, n, "young") for n in young_replicas), (
        "a tombstone within its grace was collected"
    )
    assert set(holders(c, "live")) == set(replicas(c, "live"))
    assert all(r.value == b"stays" and not r.tombstone for r in holders(c, "live").values())

    c.run_for(60.0)  # many collections later: the live record is still there
    assert set(holders(c, "live")) == set(replicas(c, "live"))
    assert c.get("n0", "live").value == b"stays"
    assert c.get("n0", "old").status == "not_found"
    assert c.get("n0", "young").status == "not_found"


def test_a_deleted_key_stays_deleted_when_a_replica_that_missed_the_delete_returns_within_the_grace():
    """README: a node down for less than ``tombstone_grace`` may rejoin as it is; the
    delete it missed must reach it before the tombstone is collected anywhere."""
    c = formed(5, seed=22, config_overrides=FAST_TOMBSTONES)
    assert c.put("n0", KEY, "doomed").status == "ok"
    owners = replicas(c, KEY)
    assert c.run_until_condition(lambda: set(holders(c, KEY)) == set(owners), c.now + 5)
    missed = owners[2]
    c.crash(missed)
    assert c.delete(owners[0], KEY).status == "ok"
    c.run_for(5.0)  # longer than a collection interval; within t_remove and the grace
    c.restart(missed)
    assert c.store(missed).get(key_bytes(KEY)).value == b"doomed"  # it missed the delete

    # Past the grace and several collections: the tombstone is gone everywhere.
    assert c.run_until_condition(
        lambda: all(c.store(n).get(key_bytes(KEY)) is None for n in c.running()), c.now + 120
    ), "the record or its tombstone outlived the grace somewhere"
    c.run_for(30.0)  # anti-entropy rounds after the collection
    assert not holders(c, KEY), "the deleted value came back"
    for node in c.running():
        assert c.get(node, KEY).status == "not_found"
        assert c.get(node, KEY, consistency="one").status == "not_found"


# --------------------------------------------------- consistency levels


def test_all_is_unavailable_with_one_replica_down():
    c = formed(5, seed=23)
    assert c.put("n0", KEY, "v1").status == "ok"
    owners = replicas(c, KEY)
    c.crash(owners[1])
    coord = other_than(c, owners)
    assert c.put(coord, KEY, "v2", consistency="all").status == "unavailable"
    assert c.get(coord, KEY, consistency="all").status == "unavailable"
    assert c.get(coord, KEY, consistency="quorum").ok  # the same cluster, a weaker level


def test_one_writes_succeed_with_two_replicas_down():
    c = formed(5, seed=24)
    owners = replicas(c, KEY)
    c.crash(owners[0])
    c.crash(owners[1])
    coord = other_than(c, owners)
    assert c.put(coord, KEY, "v1", consistency="one").status == "ok"
    assert c.put(coord, KEY, "v1", consistency="quorum").status == "unavailable"
    assert c.store(owners[2]).get(key_bytes(KEY)).value == b"v1"


# ------------------------------------------------- coordinators that must refuse


def test_a_minority_side_coordinator_answers_unavailable_at_once():
    c = formed(5, seed=25)
    cfg = c.node("n0").config
    minority = ["n3", "n4"]
    c.partition(["n0", "n1", "n2"], minority)
    assert c.run_until_condition(lambda: c.events.of_kind("majority_lost"), c.now + 3 * cfg.t_fail)
    c.run_for(cfg.gossip_interval)
    for op, value in (("get", None), ("put", "v")):
        result = c.request("n3", op, KEY, value, timeout=5.0)
        assert result.status == "unavailable", result
        assert result.latency < 0.1, f"{op} took {result.latency:.3f} s to be refused"


def test_a_restarted_node_coordinates_nothing_until_a_majority_confirms_its_map():
    c = formed(5, seed=26)
    assert c.put("n0", KEY, "v").ok
    c.crash("n2")
    c.run_for(0.5)
    c.restart("n2")
    booted = c.now
    early = c.request("n2", "get", KEY, timeout=5.0)
    confirmed = [
        e for e in c.events.of_kind("map_confirmed") if e.node_id == "n2" and e.time >= booted
    ]
    assert early.status == "unavailable", early
    assert not confirmed or confirmed[0].time > early.end, (
        "answered 'unavailable' although its map was already confirmed"
    )
    assert c.run_until_condition(
        lambda: any(
            e.node_id == "n2" and e.time >= booted for e in c.events.of_kind("map_confirmed")
        ),
        c.now + 10,
    ), "its map was never confirmed"
    assert c.get("n2", KEY).value == b"v"


# ------------------------------------------------------------ repair


def write_missing_one_replica(c):
    """Put KEY through a non-replica coordinator whose link to one replica drops
    everything; return (coordinator, the replica that missed it, the others)."""
    owners = replicas(c, KEY)
    coord = other_than(c, owners)
    missed = owners[2]
    c.set_link(coord, missed, drop=1.0)
    assert c.put(coord, KEY, "fresh").ok
    c.run_for(0.5)
    assert c.store(missed).get(key_bytes(KEY)) is None
    return coord, missed, [o for o in owners if o != missed]


def test_read_repair_fixes_a_write_dropped_at_a_live_replica():
    c = formed(5, seed=27, config_overrides={"anti_entropy_interval": 1000.0})
    _, missed, others = write_missing_one_replica(c)
    assert c.get(others[0], KEY, consistency="all").value == b"fresh"
    assert c.run_until_condition(
        lambda: (r := c.store(missed).get(key_bytes(KEY))) is not None and r.value == b"fresh",
        c.now + 2,
    ), "the read did not repair the stale replica"
    assert any(missed in e.fields["stale"] for e in c.events.of_kind("read_repair"))


def test_anti_entropy_alone_fixes_a_write_dropped_at_a_live_replica():
    c = formed(5, seed=28, config_overrides={"anti_entropy_interval": 1.0})
    _, missed, _ = write_missing_one_replica(c)  # the link stays down: no resend gets through
    assert c.run_until_condition(
        lambda: (r := c.store(missed).get(key_bytes(KEY))) is not None and r.value == b"fresh",
        c.now + 60,
    ), "anti-entropy never repaired the stale replica"
    assert not c.events.of_kind("read_repair")
    assert any(
        e.node_id == missed or missed in str(e.fields) for e in c.events.of_kind("anti_entropy")
    )


# ------------------------------------------------------------ scenarios


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_skewed_clocks_scenario_loses_nothing_and_stays_linearizable(seed):
    report = run_scenario("skewed-clocks", seed)
    assert report.error is None, report.error
    assert not report.lost_writes, report.lost_writes
    assert report.linearizable is True, report.linearizability


# ------------------------------------------------------------ durability


class RecordingStore(MemoryStore):
    """A MemoryStore that notes into one shared log each write and each commit."""

    log: ClassVar[list[tuple[str, object, object]]] = []

    def put(self, key, record):
        super().put(key, record)
        RecordingStore.log.append(("write", id(self), key))

    def remove(self, key):
        super().remove(key)
        RecordingStore.log.append(("write", id(self), key))

    def put_promise(self, key, ballot):
        super().put_promise(key, ballot)
        RecordingStore.log.append(("write", id(self), key))

    def commit(self):
        super().commit()
        RecordingStore.log.append(("commit", id(self), None))


def test_every_write_is_committed_before_any_message_but_a_replica_request_leaves(
        monkeypatch):
    """With sync, an acknowledgement is sent only after the write it acknowledges
    is durable: a node's store has nothing uncommitted when it sends anything but a
    request to replicas (``zkv.core.turn.BEFORE_COMMIT``), which acknowledges nothing."""
    RecordingStore.log = []
    monkeypatch.setattr(sim_cluster, "MemoryStore", RecordingStore)
    c = formed(5, seed=29)  # the simulator's store is always synced: commit() is the fsync
    store_of = {id(c.store(n)): n for n in c.node_ids}
    original_multicast = c.network.multicast

    def recording_multicast(src, src_address, dst_addresses, message, channel):
        RecordingStore.log.append(("send", src, message))
        return original_multicast(src, src_address, dst_addresses, message, channel)

    monkeypatch.setattr(c.network, "multicast", recording_multicast)
    RecordingStore.log.clear()
    for i in range(20):
        assert c.put(f"n{i % 5}", f"k{i}", f"v{i}").ok
    assert c.delete("n1", "k3").ok

    dirty: dict[str, int] = {n: 0 for n in c.node_ids}
    acks = client_acks = 0
    for kind, who, what in RecordingStore.log:
        if kind == "write":
            dirty[store_of[who]] += 1
        elif kind == "commit":
            dirty[store_of[who]] = 0
        elif who in dirty and not isinstance(what, BEFORE_COMMIT):  # clients have no store
            assert dirty[who] == 0, (
                f"{who} sent {what!r} with {dirty[who]} writes not yet committed"
            )
            acks += isinstance(what, WriteReply)
            client_acks += isinstance(what, ClientReply) and what.status == "ok"
    assert acks >= 2 * 21 and client_acks >= 21  # the check saw the acknowledgements
