"""The client library against real node processes: CRUD, limits, routing, bad frames."""

from __future__ import annotations

import threading
import urllib.request

import pytest
import zmq

from zkv.client import Client
from zkv.core.messages import (
    ClientReply,
    ClientRequest,
    ErrorReply,
    ReadRequest,
    decode,
    encode,
)
from zkv.core.ring import Ring
from zkv.errors import InvalidRequest, KeyExists, KeyNotFound

from .harness import Cluster, frame_messages


def check_crud(kv: Client, prefix: str = "") -> None:
    """``prefix``: for another run on the same cluster."""
    fruit, veg, nothing, empty = (prefix + k for k in ("fruit", "veg", "nothing-here", "empty"))
    assert kv.get(fruit) is None
    kv.put(fruit, b"apple")
    assert kv.get(fruit) == b"apple"
    kv.put(fruit.encode(), "pear")  # bytes and str keys name the same key; str values are UTF-8
    assert kv.get(fruit) == b"pear"

    with pytest.raises(KeyExists):
        kv.create(fruit, b"plum")
    assert kv.get(fruit) == b"pear"
    kv.create(veg, b"leek")
    assert kv.get(veg) == b"leek"

    kv.update(veg, b"kale")
    assert kv.get(veg) == b"kale"
    with pytest.raises(KeyNotFound):
        kv.update(nothing, b"x")
    assert kv.get(nothing) is None

    kv.delete(veg)
    assert kv.get(veg) is None
    with pytest.raises(KeyNotFound):
        kv.delete(veg)
    with pytest.raises(KeyNotFound):
        kv.update(veg, b"x")
    kv.create(veg, b"again")  # a deleted key can be created anew
    assert kv.get(veg) == b"again"

    kv.put(empty, b"")
    assert kv.get(empty) == b""


@pytest.mark.parametrize("transport", ["zmtp", "zeromq"])
def test_crud_on_three_nodes(cluster3: Cluster, transport: str) -> None:
    """Both client transports: ZeroMQ's wire on plain sockets (the default without
    CurveZMQ) and ZeroMQ's own sockets."""
    check_crud(cluster3.client(transport=transport), prefix=transport)


def test_crud_on_five_nodes(cluster_factory) -> None:
    cluster = cluster_factory(5)
    with Client(cluster.seeds) as kv:  # one seed is enough to find every node
        check_crud(kv)
        assert set(kv.ring()) == set(cluster.nodes)


def test_cas_blocking_and_pipelined(cluster3: Cluster) -> None:
    kv = cluster3.client()
    assert kv.cas("cas-k", None, b"1") is True
    assert kv.cas("cas-k", None, b"2") is False  # it holds 1: nothing changed
    assert kv.get("cas-k") == b"1"
    futures = [kv.submit("cas", "cas-k", b"2", expected=b"1"),
               kv.submit("cas", "cas-other", b"x", expected=b"nope")]
    while kv.in_flight:
        kv.poll(0.1)
    assert [f.result() for f in futures] == [True, False]
    assert kv.cas("cas-k", b"2", None) is True  # a cas that deletes
    assert kv.get("cas-k") is None
    with pytest.raises(InvalidRequest, match="expected"):
        kv.cas("cas-k", b"v" * (1024 * 1024 + 1), b"x")
    with pytest.raises(InvalidRequest, match="no expected value"):
        kv.submit("put", "cas-k", b"x", expected=b"y")


@pytest.mark.parametrize("write_level,read_level", [("all", "one"), ("quorum", "quorum"),
                                                    ("one", "all")])
def test_a_write_is_read_back_at_every_consistency_level(cluster3: Cluster, write_level: str,
                                                         read_level: str) -> None:
    kv = cluster3.client()
    key = f"level-{write_level}-{read_level}"
    kv.put(key, b"v", consistency=write_level)
    assert kv.get(key, consistency=read_level) == b"v"


def test_client_refuses_invalid_requests(cluster3: Cluster) -> None:
    kv = cluster3.client()
    for bad in (lambda: kv.put("", b"x"),
                lambda: kv.get(b"k" * 1025),
                lambda: kv.put("k", b"v" * (1024 * 1024 + 1)),
                lambda: kv.get("k", consistency="most"),
                lambda: kv.put("k", None),
                lambda: kv.get(42)):
        with pytest.raises(InvalidRequest):
            bad()
    with pytest.raises(InvalidRequest):
        Client(cluster3.seeds, consistency="some")
    kv.put(b"k" * 1024, b"v" * (1024 * 1024))  # exactly at both limits is fine
    assert kv.get(b"k" * 1024) == b"v" * (1024 * 1024)


def test_a_node_refuses_what_its_limits_forbid(cluster3: Cluster) -> None:
    kv = cluster3.client(max_key=4096)  # the client lets it through; the node must not
    with pytest.raises(InvalidRequest, match="exceeds"):
        kv.put(b"k" * 2000, b"v")


def test_requests_go_straight_to_the_keys_primary(cluster3: Cluster) -> None:
    kv = cluster3.client(direct_reads=False)  # every get through a coordinator
    replicas = kv.locate("routed")
    assert len(replicas) == 3 and set(replicas) == set(cluster3.nodes)
    assert replicas == list(Ring(cluster3.nodes, 3, 64).locate("routed"))
    kv.put("routed", b"1", consistency="all")  # on every replica: they cannot differ
    assert kv.get("routed") == b"1"
    direct = cluster3.client()  # the default: quorum gets read the replicas directly
    assert direct.get("routed") == b"1"  # read from two replicas, no coordinator
    for node_id, node in cluster3.nodes.items():
        done = [e["fields"]["op"] for e in node.events("coordinator_done")
                if e["fields"]["key"] == "routed"]
        assert done == (["put", "get"] if node_id == replicas[0] else []), node_id


def test_a_new_clients_first_requests_go_to_the_keys_primary(cluster3: Cluster) -> None:
    """A client that has not learned the ring yet would send everything to its first
    seed, which would coordinate writes beside the keys' primaries (racing writes then
    refuse each other): the first request waits for the ring instead."""
    first_seed = next(iter(cluster3.nodes))  # the clients' seeds are in this order
    ring = Ring(cluster3.nodes, 3, 64)
    keys = [k for k in (f"first-{i}" for i in range(50)) if ring.locate(k)[0] != first_seed]
    blocking_key, pipelined_key = keys[:2]
    cluster3.client().put(blocking_key, b"1")
    fresh = cluster3.client()
    future = fresh.submit("put", pipelined_key, b"2")
    for _ in range(50):  # its timeout (2 s) settles it by then at the latest
        if not fresh.in_flight:
            break
        fresh.poll(0.1)
    assert future.done() and future.exception() is None
    for key in (blocking_key, pipelined_key):
        primary = cluster3.nodes[ring.locate(key)[0]]
        done = [e for e in primary.events("coordinator_done") if e["fields"]["key"] == key]
        assert [e["fields"]["op"] for e in done] == ["put"], (key, primary.node_id)


def test_one_client_per_thread(cluster3: Cluster) -> None:
    errors: list[BaseException] = []
    finished: list[int] = []

    def work(t: int) -> None:
        try:
            with Client(cluster3.seeds) as kv:
                for i in range(40):
                    kv.put(f"thread{t}-{i}", b"%d" % i)
                    assert kv.get(f"thread{t}-{i}") == b"%d" % i
            finished.append(t)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads still running after 60 s (a client blocked): {hung}"
    assert not errors
    assert sorted(finished) == [0, 1, 2, 3]
    kv = cluster3.client()
    assert all(kv.get(f"thread{t}-39") == b"39" for t in range(4))


def test_malformed_frames_get_an_error_reply_and_the_node_keeps_serving(
        cluster3: Cluster) -> None:
    node = cluster3.nodes["n1"]
    sock = cluster3.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(node.address)
    bad_frames = [
        [b"\xff\x00 not cbor"],
        [b"\x83\x01\x02\x03"],  # CBOR, but a ClientRequest with the wrong field count
        [encode(ReadRequest(5, b"k"))],  # a peer message from an anonymous client
    ]
    try:
        for frames in bad_frames:
            sock.send_multipart(frames)
            assert sock.poll(2000), f"no answer to {frames!r}"
            reply = decode(sock.recv())
            assert isinstance(reply, ErrorReply) and reply.reason
        # A batch (what a pipelining client sends): each frame is judged on its own.
        sock.send_multipart([encode(ClientRequest(1, "get", b"k", None, "quorum", 1000)),
                             b"extra frame"])
        replies = []
        while len(replies) < 2:
            assert sock.poll(2000), f"answers to the batch: {replies}"
            replies.extend(frame_messages(sock.recv()))
        assert sorted(type(r).__name__ for r in replies) == ["ClientReply", "ErrorReply"]
        assert next(r for r in replies if isinstance(r, ClientReply)).req_id == 1
        sock.send(encode(ClientRequest(7, "put", b"k", b"v", "quorum", 1000)))
        assert sock.poll(2000)
        reply = decode(sock.recv())
        assert isinstance(reply, ClientReply) and (reply.req_id, reply.status) == (7, "ok")
    finally:
        sock.close()
    assert node.running
    metrics = urllib.request.urlopen(node.metrics_url, timeout=5).read().decode()
    rejected = [line for line in metrics.splitlines()
                if line.startswith("zkv_rejected_frames_total ")]
    assert rejected and float(rejected[0].split()[1]) >= len(bad_frames)
    assert "zkv_requests_total{" in metrics and "zkv_keys_stored " in metrics


def test_a_peer_batch_is_read_frame_by_frame_and_a_bad_frame_spoils_only_itself(
        cluster3: Cluster) -> None:
    node = cluster3.nodes["n1"]
    sock = cluster3.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"batching-peer")  # a named identity: taken as a peer
    sock.connect(node.address)
    try:
        sock.send_multipart([encode(ClientRequest(1, "put", b"bk", b"v1", "quorum", 2000)),
                             b"\xff not cbor",
                             encode(ClientRequest(2, "get", b"bk", None, "quorum", 2000))])
        replies = []
        while len(replies) < 3 and sock.poll(5000):
            replies.extend(frame_messages(sock.recv()))  # a turn's replies come as one frame
    finally:
        sock.close()
    errors = [r for r in replies if isinstance(r, ErrorReply)]
    answers = {r.req_id: r for r in replies if isinstance(r, ClientReply)}
    assert len(errors) == 1 and errors[0].reason
    assert answers[1].status == "ok"
    assert answers[2].status in ("ok", "not_found")  # the get may overtake the put
    assert node.running
