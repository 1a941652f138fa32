"""CurveZMQ: a secured cluster serves authorized clients only, and keeps serving them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from zkv.client import Client
from zkv.core.messages import RingInfo, RingQuery, decode, encode
from zkv.errors import Unavailable
from zkv.net.security import CurveKeys, generate

from .conftest import Cluster, clusters_under, wait_for


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

        wait_for(ready, 30.0, "the secured cluster to serve with all three nodes")
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
    from .clusterproc import zkv

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
