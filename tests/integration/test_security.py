"""CurveZMQ: a secured cluster serves authorized clients only, and keeps serving them;
peers are peers by key; versions from the far future are refused; oversized frames
are dropped unread; ``zkv cluster up --curve`` runs such a cluster for the CLI."""

from __future__ import annotations

import os
import socket
import stat
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from zkv.client import Client
from zkv.core.messages import (
    Gossip,
    MemberState,
    Message,
    Prepare,
    RingInfo,
    RingQuery,
    WriteRequest,
    decode,
    encode,
)
from zkv.errors import Unavailable
from zkv.keys import CurveKeys, generate, load_public
from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.net.runtime import PEER_MARK

from .harness import HOST, Cluster, NodeHandle, clusters_under, read_record, wait_until

MAX = (1 << 64) - 1


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cluster and alice are authorized; mallory has a key pair nobody listed."""
    root = tmp_path_factory.mktemp("keys")
    for name in ("cluster", "alice"):
        public, _ = generate(root / "private", name)
        (root / "authorized").mkdir(exist_ok=True)
        (root / "authorized" / public.name).write_bytes(public.read_bytes())
    generate(root / "private", "mallory")
    return root


def curve_of(keys: Path, name: str) -> CurveKeys:
    return CurveKeys.from_files(keys / "private" / f"{name}.key_secret",
                                keys / "authorized" / "cluster.key")


@pytest.fixture(scope="module")
def cluster(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with clusters_under(tmp_path_factory.mktemp("curve")) as make:
        cluster = make(3, wait=False, curve=True,
                       secret_key=keys / "private" / "cluster.key_secret",
                       authorized_keys=keys / "authorized")
        alice = Client([h.address for h in cluster.nodes.values()], timeout=1.0,
                       curve=curve_of(keys, "alice"))
        cluster.clients.append(alice)

        def ready() -> bool:
            try:
                alice.put("ready", b"1", consistency="all")
                return len(alice.ring()) == 3
            except Unavailable:
                return False

        wait_until(ready, 30.0, "the secured cluster to serve with all three nodes")
        yield cluster


def test_an_authorized_client_reads_and_writes(cluster: Cluster, keys: Path) -> None:
    kv = cluster.client(curve=curve_of(keys, "alice"))
    kv.put("secret", b"42", consistency="all")  # needs node-to-node traffic over CURVE
    assert kv.get("secret", consistency="all") == b"42"
    kv.delete("secret")
    assert kv.get("secret") is None


def test_a_client_with_an_unknown_key_is_refused(cluster: Cluster, keys: Path) -> None:
    mallory = cluster.client(curve=curve_of(keys, "mallory"), timeout=1.0)
    with pytest.raises(Unavailable):
        mallory.put("k", b"stolen")
    with pytest.raises(Unavailable):
        mallory.get("ready")


def test_a_client_without_encryption_is_refused(cluster: Cluster) -> None:
    plain = cluster.client(timeout=1.0)
    with pytest.raises(Unavailable):
        plain.get("ready")
    # A raw socket gets nothing back either, not even a ring.
    sock = cluster.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cluster.nodes["n1"].address)
    try:
        sock.send(encode(RingQuery(1)), zmq.NOBLOCK)
    except zmq.Again:
        pass
    assert not sock.poll(500)
    sock.close()


def test_the_cluster_keeps_serving_authorized_clients_after_refusals(
        cluster: Cluster, keys: Path) -> None:
    for _ in range(3):
        intruder = cluster.client(curve=curve_of(keys, "mallory"), timeout=0.3)
        with pytest.raises(Unavailable):
            intruder.get("x")
    kv = cluster.client(curve=curve_of(keys, "alice"))
    kv.put("after", b"ok")
    assert kv.get("after") == b"ok"
    assert all(h.running for h in cluster.nodes.values())
    raw = cluster.ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    curve_of(keys, "alice").client(raw)
    raw.connect(cluster.nodes["n2"].address)
    raw.send(encode(RingQuery(9)))
    assert raw.poll(5000)
    assert isinstance(decode(raw.recv()), RingInfo)
    raw.close()


def test_the_command_line_client_takes_its_keys_from_the_environment(
        cluster: Cluster, keys: Path) -> None:
    from .harness import zkv

    seeds = ",".join(h.address for h in cluster.nodes.values())
    env = {"ZKV_CURVE_KEY": str(keys / "private" / "alice.key_secret"),
           "ZKV_SERVER_KEY": str(keys / "authorized" / "cluster.key")}
    assert zkv("put", "--seeds", seeds, "cli-key", "cli-value", env=env).returncode == 0
    got = zkv("get", "--seeds", seeds, "cli-key", env=env)
    assert got.returncode == 0 and got.stdout.strip() == b"cli-value"
    refused = zkv("get", "--seeds", seeds, "--timeout", "0.5", "cli-key")
    assert refused.returncode == 3
    half = zkv("get", "--seeds", seeds, "cli-key", env={"ZKV_CURVE_KEY": env["ZKV_CURVE_KEY"]})
    assert half.returncode == 2 and b"ZKV_SERVER_KEY" in half.stderr


# --------------------------------------------------------------------------- peers by key


def _now_ms() -> int:
    return int(time.time() * 1000)


def _socket_with_key(cluster: Cluster, keys: Path, key_name: str, target: str,
                     identity: bytes | None = None) -> zmq.Socket:
    """A DEALER holding ``key_name``'s key pair, connected to ``target`` (under a chosen
    routing identity, if given)."""
    sock = cluster.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    secret = keys / "private" / f"{key_name}.key_secret"
    CurveKeys.from_files(secret, keys / "authorized" / "cluster.key").client(sock)
    sock.connect(cluster.nodes[target].address)
    return sock


def _peer_batch(node_id: str, *messages: Message) -> list[bytes]:
    """What a node sends a peer: a frame naming it, then one frame per message."""
    return [PEER_MARK + node_id.encode(), *(encode(m) for m in messages)]


def _keep_sending(sock: zmq.Socket, batches: list[list[bytes]], done: Callable[[], Any],
                  what: str, timeout: float = 20.0) -> Any:
    """Send ``batches`` every half second until ``done()`` is truthy (a message may be
    lost while the connection is still being made)."""
    deadline = time.monotonic() + timeout
    while True:
        for batch in batches:
            try:
                sock.send_multipart(batch, zmq.NOBLOCK)
            except zmq.Again:
                pass
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            result = done()
            if result:
                return result
            time.sleep(0.05)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def _events(handle: NodeHandle, kind: str, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in handle.events(kind)
            if all(e["fields"].get(k) == v for k, v in fields.items())]


def _epoch(handle: NodeHandle) -> int:
    """The node's cluster map epoch: replica requests built on an older one are refused."""
    return max(e["fields"]["epoch"] for e in handle.events("map_adopted"))


def _metric(handle: NodeHandle, line_start: str) -> float:
    text = urllib.request.urlopen(handle.metrics_url, timeout=5).read().decode()
    values = [float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
              if ln.startswith(line_start + " ")]
    return values[0] if values else 0.0


def _key_led_by(kv: Client, node_id: str) -> str:
    return next(k for i in range(1000) if kv.locate(k := f"led-by-{node_id}-{i}")[0] == node_id)


def test_a_client_key_posing_as_a_node_changes_no_membership_and_writes_no_version(
        cluster: Cluster, keys: Path) -> None:
    n1, n3 = cluster.nodes["n1"], cluster.nodes["n3"]
    alice = load_public(keys / "authorized" / "alice.key").decode()
    # "n3 has left", as n2 would say it, fresher than anything n1 knows of n3; and a
    # replica write at an honest version (the version bound is not what stops it).
    gossip = Gossip("n2", [MemberState("n3", n3.address, 1 << 40, 0, "left")])
    write = WriteRequest(1, b"posed-key", Record(Version(_now_ms(), 0, "n2"), False, b"posed"),
                         _epoch(n1))
    refused_before = _metric(n1, 'zkv_events_total{kind="peer_message_refused"}')

    def outcome() -> str | None:
        if _events(n1, "member_status", node="n3", new="left") or \
                _events(n1, "replica_write", key="posed-key"):
            return "taken as a peer's"
        kinds = [e["fields"]["message"] for e in _events(n1, "peer_message_refused", key=alice)]
        # Each message twice: sent alone and in a batch.
        return "refused" if all(kinds.count(k) >= 2 for k in ("Gossip", "WriteRequest")) \
            else None

    # Both ways of claiming to be n2: as the routing identity (how nodes used to), and
    # in the first frame of a batch (how they do now).
    impostor = _socket_with_key(cluster, keys, "alice", "n1", identity=b"n2")
    try:
        batches = [[encode(gossip)], [encode(write)], _peer_batch("n2", gossip, write)]
        assert _keep_sending(impostor, batches, outcome,
                             "n1 to refuse or take the posed messages") == "refused"
        # The impostor, still connected under n2's name, has not cut the real n2 off:
        # n1 coordinates a write that needs n2's answers.
        kv = cluster.client(curve=curve_of(keys, "alice"))
        key = _key_led_by(kv, "n1")
        kv.put(key, b"n2 still answers", consistency="all")
        assert kv.get(key, consistency="all") == b"n2 still answers"
    finally:
        impostor.close()
    refusals = _events(n1, "peer_message_refused", key=alice)
    assert {e["fields"]["claimed"] for e in refusals} == {"n2"}
    assert not _events(n1, "member_status", node="n3", new="left")
    assert not _events(n1, "replica_write", key="posed-key")
    assert read_record(n1.data_dir, b"posed-key") is None
    assert _metric(n1, 'zkv_events_total{kind="peer_message_refused"}') >= \
        refused_before + len(refusals) > refused_before
    assert set(kv.ring()) == {"n1", "n2", "n3"}  # n1 still counts n3 in


def test_the_cluster_key_is_a_peer(cluster: Cluster, keys: Path) -> None:
    """The control for the test above: the same batch with the cluster's key pair is
    taken as n2's, so what stopped alice was her key, not the way the test sends."""
    n1 = cluster.nodes["n1"]
    write = WriteRequest(1, b"peer-key", Record(Version(_now_ms(), 0, "n2"), False, b"ok"),
                         _epoch(n1))
    peer = _socket_with_key(cluster, keys, "cluster", "n1")
    try:
        _keep_sending(peer, [_peer_batch("n2", write)],
                      lambda: _events(n1, "replica_write", key="peer-key"),
                      "n1 to store the peer's write")
    finally:
        peer.close()


def test_an_operators_command_needs_the_cluster_key(cluster: Cluster, keys: Path) -> None:
    """A client key reads and writes, and asks for a node's status, but does not take
    a node out of the ring; the cluster key does (the node then judges the command
    itself: here it refuses it, as three nodes must remain)."""
    n1 = cluster.nodes["n1"]
    rejected = _metric(n1, "zkv_rejected_frames_total")
    alice = cluster.client(curve=curve_of(keys, "alice"), timeout=5.0)
    assert alice.admin("status", address=n1.address).status == "ok"
    reply = alice.admin("decommission", "n3", address=n1.address)
    assert reply.status == "refused" and "cluster key" in reply.detail, reply
    refusals = wait_until(lambda: _events(n1, "command_refused", action="decommission",
                                          node="n3"), 10.0, "n1 to log the refusal")
    assert refusals[-1]["fields"]["key"], refusals
    assert _metric(n1, "zkv_rejected_frames_total") >= rejected + 1
    operator = cluster.client(curve=curve_of(keys, "cluster"), timeout=5.0)
    reply = operator.admin("decommission", "n3", address=n1.address)
    assert reply.status == "refused" and "fewer than the 3 replicas" in reply.detail, reply
    assert len(alice.ring()) == 3


def test_a_far_future_version_is_refused_and_counted_and_the_key_stays_writable(
        cluster: Cluster, keys: Path) -> None:
    n1 = cluster.nodes["n1"]
    hour_ahead = Version(_now_ms() + 3_600_000, 0, "n2")
    epoch = _epoch(n1)
    forged = [WriteRequest(1, b"future-key", Record(Version(MAX, MAX, "n2"), False, b"x"), epoch),
              Prepare(2, b"future-key", hour_ahead, epoch)]
    before = _metric(n1, 'zkv_events_total{kind="future_version_refused"}')

    def outcome() -> str | None:
        if _events(n1, "replica_write", key="future-key") or \
                _events(n1, "replica_prepare", key="future-key"):
            return "accepted"
        kinds = {e["fields"]["message"] for e in n1.events("future_version_refused")}
        return "refused" if {"WriteRequest", "Prepare"} <= kinds else None

    peer = _socket_with_key(cluster, keys, "cluster", "n1")  # a real peer's key
    try:
        assert _keep_sending(peer, [_peer_batch("n2", *forged)], outcome,
                             "n1 to judge the versions") == "refused"
    finally:
        peer.close()
    refused = n1.events("future_version_refused")
    assert all(e["fields"]["ahead_ms"] > 3_500_000 for e in refused)
    assert _metric(n1, 'zkv_events_total{kind="future_version_refused"}') >= \
        before + len(refused) > before
    assert _metric(n1, "zkv_rejected_frames_total") >= len(refused)
    kv = cluster.client(curve=curve_of(keys, "alice"))
    kv.put("future-key", b"still mine", consistency="all")
    assert kv.get("future-key", consistency="all") == b"still mine"
    kv.update("future-key", b"and again")  # a Paxos round: no ballot is pinned either
    assert kv.get("future-key") == b"and again"
    stored = read_record(n1.data_dir, b"future-key")
    assert stored is not None and stored.version.wall_ms < _now_ms() + 60_000


# --------------------------------------------------------------------------- frame caps


def _zmtp_null_dealer(port: int) -> socket.socket:
    """A raw TCP connection that speaks ZMTP 3.0 (NULL security) as a DEALER, so a
    test can announce a frame of any size and stream it without holding it."""
    sock = socket.create_connection((HOST, port), timeout=10)
    greeting = (b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\0")
                + b"\0" + bytes(31))
    sock.sendall(greeting)
    got = b""
    while len(got) < 64:
        chunk = sock.recv(64 - len(got))
        assert chunk, "the node closed the connection during the greeting"
        got += chunk
    prop = b"\x0bSocket-Type" + (6).to_bytes(4, "big") + b"DEALER"
    body = b"\x05READY" + prop
    sock.sendall(bytes([0x04, len(body)]) + body)
    head = sock.recv(2)  # the node's READY command: flags, size, body
    assert head[:1] == b"\x04", head
    remaining = head[1]
    while remaining:
        remaining -= len(sock.recv(remaining))
    return sock


def test_an_oversized_frame_is_dropped_unread_and_the_node_keeps_serving(
        cluster_factory: Callable[..., Cluster]) -> None:
    plain = cluster_factory(1, replicas=1, max_value="64KiB")
    node = plain.nodes["n1"]
    process = psutil.Process(node.proc.pid)
    kv = plain.client()
    kv.put("before", b"1")
    rss_before = process.memory_info().rss
    announced, streamed, chunk = 1 << 30, 192 << 20, b"\0" * (1 << 20)
    sock = _zmtp_null_dealer(node.port)
    sent = 0
    try:
        # One frame of 1 GiB, last and only: flags 0x02 (long size), then its length.
        sock.sendall(b"\x02" + announced.to_bytes(8, "big"))
        while sent < streamed:
            sock.sendall(chunk)
            sent += len(chunk)
        grown = process.memory_info().rss - rss_before  # all of it, had the node kept it
    except (TimeoutError, BrokenPipeError, ConnectionResetError):
        grown = process.memory_info().rss - rss_before
    finally:
        sock.close()
    # The node hung up at the frame's header: only what the kernel's socket buffers
    # took in before that got through, and none of it was kept.
    assert sent < 32 << 20, f"the node read {sent >> 20} MiB of an oversized frame"
    assert grown < 32 << 20, f"the node grew by {grown >> 20} MiB"
    assert node.running
    kv.put("after", b"2")
    assert kv.get("before") == b"1" and kv.get("after") == b"2"


# --------------------------------------------------------------------------- cluster up --curve


def test_cluster_up_curve_runs_an_encrypted_cluster_that_the_cli_finds_keys_for(
        tmp_path: Path) -> None:
    from .harness import cluster_up, zkv

    data_dir = tmp_path / "secured"
    local, result = cluster_up(data_dir, 3, "--curve")
    try:
        # --detach returns once the supervisor's probes (client requests, made with
        # the cluster's client key) saw every node serve the whole ring.
        assert result.returncode == 0, result.stderr.decode()
        info = local.info()
        assert info["curve"] == {"client_key": str(data_dir.resolve() / "keys/client.key_secret"),
                                 "server_key": str(data_dir.resolve() / "keys/cluster.key"),
                                 "admin_key": str(data_dir.resolve() / "keys/cluster.key_secret")}
        keys = data_dir / "keys"
        for name in ("cluster.key_secret", "client.key_secret"):
            assert stat.S_IMODE(os.stat(keys / name).st_mode) == 0o600
        assert sorted(p.name for p in (keys / "authorized").iterdir()) == \
            ["client.key", "cluster.key"]
        assert "--curve" in info["node_flags"]

        # The CLI finds the client key through --data-dir (and only for this cluster).
        assert local.run("put", "k", "encrypted").returncode == 0
        got = local.run("get", "k", "--consistency", "all")
        assert (got.returncode, got.stdout) == (0, b"encrypted")
        assert local.run("cas", "k", "again", "--expect", "encrypted").returncode == 0
        seeds = ",".join(n["address"] for n in info["nodes"])
        assert local.run("get", "k", "--seeds", seeds).stdout == b"again"
        refused = zkv("get", "k", "--seeds", seeds, "--timeout", "0.5",
                      "--data-dir", str(tmp_path / "elsewhere"))
        assert refused.returncode == 3  # no keys: the nodes do not answer

        # So does the library.
        with Client.from_cluster_dir(data_dir, timeout=5.0) as kv:
            assert kv.get("k") == b"again"
            answer = kv.admin("decommission", "node-3")  # with the client key
            assert answer.status == "refused" and "cluster key" in answer.detail, answer
        # The node commands use the cluster's key: node-3 is judged, and stays (three
        # nodes must remain for three replicas).
        kept = local.run("node", "decommission", "node-3", "--timeout", "10")
        assert kept.returncode == 2 and b"fewer than the 3 replicas" in kept.stderr, kept

        # A node the supervisor restarts comes back encrypted and rejoins.
        assert local.run("node", "kill", "node-2").returncode == 0
        wait_until(lambda: local.node("node-2")["restarts"] == 1, 30.0, "node-2's restart")
        wait_until(lambda: local.run("get", "k", "--consistency", "all").stdout == b"again",
                 30.0, "node-2 to serve again")
        assert not any(_events_in(Path(n["data_dir"]), "peer_message_refused")
                       for n in info["nodes"])
    finally:
        try:
            local.run("cluster", "down", timeout=60)
        finally:
            local.kill_everything()


def _events_in(data_dir: Path, kind: str) -> list[dict[str, Any]]:
    from zkv.net.eventlog import read_events

    return [e for e in read_events(data_dir) if e["kind"] == kind]
