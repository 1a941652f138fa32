"""Trust at the protocol core: far-future versions are refused, clients carry no versions,
and the node's sockets get frame caps from its limits."""

from __future__ import annotations

import dataclasses

import pytest
import zmq

from zkv.config import ConfigError, load_settings
from zkv.core.actions import Deliver, Event
from zkv.core.config import NodeConfig
from zkv.core.messages import (
    MAX_FRAME,
    ClientRequest,
    Gossip,
    Handoff,
    MemberState,
    Prepare,
    PrepareReply,
    ReadReply,
    RingQuery,
    SyncKeys,
    WriteReply,
    WriteRequest,
    decode,
    encode,
)
from zkv.core.node import Node
from zkv.model.record import Record
from zkv.model.versions import Version, latest_wall_ms
from zkv.storage.memory import MemoryStore

WALL = 1.7e9  # the node's wall clock reads WALL + now seconds
NOW = 100.0
WALL_MS = int((WALL + NOW) * 1000)
MAX = (1 << 64) - 1
ADDRESS = "tcp://127.0.0.1:1"


def node(**config: object) -> Node:
    cfg = NodeConfig("n1", ADDRESS, seeds=(ADDRESS,), wall_offset=WALL, **config)
    return Node(cfg, MemoryStore(), 0.0)


def refusals(actions: list) -> list[dict]:
    return [a.fields for a in actions if isinstance(a, Event)
            and a.kind == "future_version_refused"]


def v(wall_ms: int, counter: int = 0, node_id: str = "n2") -> Version:
    return Version(wall_ms, counter, node_id)


# --------------------------------------------------------------------------- the bound


def test_a_replica_write_at_the_highest_version_is_refused_and_counted() -> None:
    n = node()
    forged = Record(v(MAX, MAX), False, b"mine forever")
    actions = n.step(Deliver("n2", WriteRequest(7, b"k", forged, 1)), NOW)
    assert n.store.get(b"k") is None
    assert n.rejected_frames == 1
    [refused] = refusals(actions)
    assert refused["message"] == "WriteRequest" and refused["sender"] == "n2"
    assert refused["wall_ms"] == MAX
    # The clock did not see it: the node's next version is still about now.
    assert n.clock.next(WALL_MS).wall_ms == WALL_MS
    # And the key can still be written at an ordinary version.
    honest = Record(v(WALL_MS), False, b"v")
    assert not refusals(n.step(Deliver("n2", WriteRequest(8, b"k", honest, 1)), NOW))
    assert n.store.get(b"k") == honest


def test_the_bound_is_the_configured_distance_ahead_of_the_receivers_clock() -> None:
    n = node(max_version_ahead=60.0)
    at_bound = Record(v(WALL_MS + 60_000), False, b"skewed")
    assert not refusals(n.step(Deliver("n2", WriteRequest(1, b"a", at_bound, 1)), NOW))
    assert n.store.get(b"a") == at_bound  # a clock ahead by less than the bound is fine
    beyond = Record(v(WALL_MS + 60_001), False, b"too far")
    assert refusals(n.step(Deliver("n2", WriteRequest(2, b"b", beyond, 1)), NOW))
    assert n.store.get(b"b") is None
    # The bound moves with the receiver's clock, and follows the config.
    assert not refusals(n.step(Deliver("n2", WriteRequest(3, b"b", beyond, 1)), NOW + 1))
    strict = node(max_version_ahead=5.0)
    assert refusals(strict.step(Deliver("n2", WriteRequest(1, b"a", at_bound, 1)), NOW))


@pytest.mark.parametrize("message", [
    Prepare(1, b"k", v(MAX)),
    PrepareReply(1, b"k", False, None, v(MAX)),
    PrepareReply(1, b"k", True, Record(v(MAX), False, b"x"), None),
    WriteReply(1, b"k", False, v(MAX)),
    ReadReply(1, b"k", None, v(MAX)),
    ReadReply(1, b"k", Record(v(MAX), True, b""), None),
    WriteRequest(1, b"k", Record(v(WALL_MS), False, b"x", origin=v(MAX))),
    Handoff(1, [(b"a", Record(v(WALL_MS), False, b"ok")), (b"k", Record(v(MAX), False, b"x"))]),
    SyncKeys(1, WALL_MS, 0, [(b"a", v(WALL_MS)), (b"k", v(MAX))]),
], ids=lambda m: type(m).__name__)
def test_every_peer_message_with_a_far_future_version_is_refused(message: object) -> None:
    n = node()
    actions = n.step(Deliver("n2", message), NOW)
    assert [r["message"] for r in refusals(actions)] == [type(message).__name__]
    assert n.rejected_frames == 1
    assert n.store.get(b"k") is None and n.store.get(b"a") is None
    assert n.store.get_promise(b"k") is None
    assert not n.stabilizer.sync_queue
    assert n.clock.next(WALL_MS).wall_ms == WALL_MS


def test_a_far_future_ballot_leaves_no_promise_behind() -> None:
    n = node()
    n.step(Deliver("n2", Prepare(1, b"k", v(WALL_MS + 3_600_000), 1)), NOW)
    assert n.store.get_promise(b"k") is None
    n.step(Deliver("n2", Prepare(2, b"k", v(WALL_MS + 1_000), 1)), NOW)
    assert n.store.get_promise(b"k") == v(WALL_MS + 1_000)  # an honest one is kept


def test_latest_wall_ms_finds_versions_wherever_a_message_keeps_them() -> None:
    record = Record(v(5), False, b"x", origin=v(9))
    assert latest_wall_ms(record) == 9
    assert latest_wall_ms(WriteRequest(1, b"k", record)) == 9
    assert latest_wall_ms(Handoff(1, [(b"a", Record(v(3), False, b"")), (b"b", record)])) == 9
    assert latest_wall_ms(SyncKeys(1, 10**12, 0, [(b"a", v(4))])) == 4  # not the horizon
    assert latest_wall_ms(ReadReply(1, b"k", None, None)) == 0
    table = [MemberState("n2", ADDRESS, 10**15, 10**15, "alive")]
    assert latest_wall_ms(Gossip("n2", table)) == 0  # counters are not versions


def test_client_requests_carry_no_versions() -> None:
    """The bound is checked on peer messages only: nothing a client sends may carry a
    version or a record, so there is nothing to check there."""
    for cls in (ClientRequest, RingQuery):
        for f in dataclasses.fields(cls):
            assert "Version" not in str(f.type) and "Record" not in str(f.type), f
    request = ClientRequest(1, "put", b"k", b"v", "quorum", 1000, None)
    assert latest_wall_ms(decode(encode(request))) == 0


# --------------------------------------------------------------------------- the setting


def test_max_version_ahead_is_a_checked_setting_with_a_default_of_a_minute() -> None:
    assert load_settings(None, {"id": "n1"}).node.max_version_ahead == 60.0
    assert load_settings(None, {"id": "n1", "max_version_ahead": 5}).node.max_version_ahead == 5
    for bad in (0, 0.5, -1, "soon", True, 10**8):
        with pytest.raises(ConfigError, match="max-version-ahead: must be a number of seconds"):
            load_settings(None, {"id": "n1", "max_version_ahead": bad})
    with pytest.raises(ValueError, match="max_version_ahead"):
        NodeConfig("n1", ADDRESS, max_version_ahead=0).validate()


def test_max_version_ahead_is_read_from_the_limits_section(tmp_path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('id = "n1"\n[limits]\nmax_version_ahead = 30\n')
    assert load_settings(path).node.max_version_ahead == 30.0
    path.write_text('id = "n1"\n[limits]\nmax_version_ahead = "1h"\n')
    with pytest.raises(ConfigError, match="limits.max_version_ahead"):
        load_settings(path)


# --------------------------------------------------------------------------- frame caps


def test_frame_caps_follow_the_limits() -> None:
    from zkv.net.runtime import MESSAGE_OVERHEAD, frame_limits

    small = frame_limits(NodeConfig("n1", ADDRESS, max_key=100, max_value=1000))
    assert small.reply == 100 + 1000 + MESSAGE_OVERHEAD
    assert small.request == MAX_FRAME  # peers' anti-entropy listings may be that long
    big = frame_limits(NodeConfig("n1", ADDRESS, max_key=1024, max_value=32 << 20))
    assert big.request >= 1024 + 2 * (32 << 20)  # a cas carries two values
    assert big.reply >= (32 << 20)


def test_every_node_socket_has_a_frame_cap(tmp_path) -> None:
    from zkv.net.runtime import MESSAGE_OVERHEAD, NodeProcess, frame_limits
    from zkv.supervisor import free_base_port

    port = free_base_port(2)  # request and gossip
    settings = load_settings(None, {"id": "n1", "port": port, "data_dir": str(tmp_path),
                                    "metrics_port": 0, "max_value": 4096,
                                    "seeds": ["tcp://127.0.0.1:9"]})
    process = NodeProcess(settings)
    try:
        limits = frame_limits(settings.node)
        assert process.router.getsockopt(zmq.MAXMSGSIZE) == limits.request
        assert process.sub.getsockopt(zmq.MAXMSGSIZE) == limits.gossip
        assert process.pub.getsockopt(zmq.MAXMSGSIZE) == limits.subscription
        [dealer] = process.dealers.values()  # the seed's
        assert dealer.getsockopt(zmq.MAXMSGSIZE) == limits.reply == 1024 + 4096 + MESSAGE_OVERHEAD
    finally:
        process.close()
