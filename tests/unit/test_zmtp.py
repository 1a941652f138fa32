"""The client's plain-socket links against real ZeroMQ ROUTER sockets on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import zmq

from zkv.keys import CurveKeys
from zkv.net.links import client_links
from zkv.net.zmtp import ZmtpLinks, encode_message

DEADLINE = 10.0
CURVE_GREETING = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"CURVE".ljust(20, b"\0") + bytes(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def router(ctx: zmq.Context, port: int, **options: int) -> zmq.Socket:
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.bind(f"tcp://127.0.0.1:{port}")
    return sock


@contextmanager
def connected(ctx: zmq.Context, max_frame: int = 1024, host: str = "127.0.0.1",
              **options: int) -> Iterator[tuple[zmq.Socket, ZmtpLinks, str]]:
    """A ROUTER on a free port, and links with one connected link to it at ``host``."""
    port = free_port()
    address = f"tcp://{host}:{port}"
    node = router(ctx, port, **options)
    links = ZmtpLinks(max_frame=max_frame)
    try:
        links.open(address)
        assert links.wait_ready([address], DEADLINE), links._links[address].error
        yield node, links, address
    finally:
        links.close()


def arrives(node: zmq.Socket, frames: list[bytes]) -> bytes:
    """Wait for the next message at ``node``, check its frames, return its sender."""
    assert node.poll(int(DEADLINE * 1000))
    identity, *got = node.recv_multipart()
    assert got == frames
    return identity


def receive_until(links: ZmtpLinks, count: int) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    end = time.monotonic() + DEADLINE
    while len(got) < count and time.monotonic() < end:
        got.extend(links.receive(end - time.monotonic()))
    return got


def test_messages_both_ways_short_long_and_multipart(ctx: zmq.Context) -> None:
    with connected(ctx, max_frame=8 * 1024 * 1024) as (node, links, address):
        big = bytes(range(256)) * 8192  # 2 MiB: more than one write and one read
        assert links.send(address, [b"a", b"bc"])
        assert links.send(address, [big])
        identity = arrives(node, [b"a", b"bc"])
        while not node.poll(0):  # the big one may still be leaving: keep writing it
            links.receive(0.01)
        assert node.recv_multipart()[1:] == [big]
        node.send_multipart([identity, b"x" * 300])
        node.send_multipart([identity, b"y", b"z"])
        node.send_multipart([identity, big])
        got = receive_until(links, 4)
        assert got == [(address, b"x" * 300), (address, b"y"), (address, b"z"),
                       (address, big)]


def test_a_host_name_is_resolved_to_ipv4_as_zeromq_does(ctx: zmq.Context) -> None:
    # the ROUTER is on 127.0.0.1 only: "localhost" must not become ::1
    with connected(ctx, host="localhost") as (node, links, address):
        assert links.send(address, [b"by name"])
        arrives(node, [b"by name"])


def test_a_link_waits_for_its_node_and_reconnects_after_a_restart(ctx: zmq.Context) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    links = ZmtpLinks(max_frame=1024)
    try:
        links.open(address)
        assert not links.send(address, [b"nobody there"])
        assert not links.wait_ready([address], 0.3)
        assert "cannot connect" in links._links[address].error
        node = router(ctx, port)
        assert links.wait_ready([address], DEADLINE)  # it kept trying
        assert links.send(address, [b"one"])
        arrives(node, [b"one"])
        node.close(0)  # the node restarts
        end = time.monotonic() + DEADLINE
        while links._links[address].ready and time.monotonic() < end:
            links.receive(0.05)
        assert not links._links[address].ready
        node = router(ctx, port)
        assert links.wait_ready([address], DEADLINE)
        assert links.send(address, [b"two"])
        arrives(node, [b"two"])
    finally:
        links.close()


def test_a_frame_over_the_cap_drops_the_connection_not_the_client(ctx: zmq.Context) -> None:
    with connected(ctx, max_frame=1000) as (node, links, address):
        assert links.send(address, [b"hello"])
        identity = arrives(node, [b"hello"])
        node.send_multipart([identity, b"x" * 1001])
        assert links.receive(0.5) == []
        assert "1001 bytes" in links._links[address].error
        assert links.wait_ready([address], DEADLINE)  # and it connects again


def listener(greeting: bytes) -> tuple[socket.socket, str]:
    """A server that sends ``greeting`` to whoever connects, then reads until closed."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(greeting)
            while conn.recv(1024):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return server, f"tcp://127.0.0.1:{server.getsockname()[1]}"


def test_a_curve_node_or_a_stranger_is_refused_with_a_reason() -> None:
    curve_server, curve_address = listener(CURVE_GREETING)
    http_server, http_address = listener(b"HTTP/1.1 400 Bad Request\r\n" + bytes(64))
    links = ZmtpLinks(max_frame=1024)
    try:
        links.open(curve_address)
        links.open(http_address)
        assert not links.wait_ready([curve_address, http_address], 0.5)
        assert "CURVE mechanism" in links._links[curve_address].error
        assert "does not speak ZMTP 3" in links._links[http_address].error
        # what a call that timed out adds to its message
        assert links.trouble([curve_address]).startswith(f"{curve_address}: ")
        assert "CurveZMQ cluster needs the client's key" in links.trouble([curve_address])
    finally:
        links.close()
        curve_server.close()
        http_server.close()


def test_a_ping_is_answered_so_a_node_with_heartbeats_keeps_the_link(ctx: zmq.Context) -> None:
    with connected(ctx, HEARTBEAT_IVL=50, HEARTBEAT_TIMEOUT=300) as (node, links, address):
        end = time.monotonic() + 1.0  # several heartbeat timeouts
        while time.monotonic() < end:
            links.receive(0.05)
        assert links._links[address].ready, links._links[address].error
        assert links.send(address, [b"still here"])
        arrives(node, [b"still here"])


def test_encode_message_marks_more_and_long_frames() -> None:
    assert encode_message([b"ab"]) == b"\x00\x02ab"
    assert encode_message([b"a", b""]) == b"\x01\x01a\x00\x00"
    assert encode_message([b"x" * 256]) == b"\x02" + (256).to_bytes(8, "big") + b"x" * 256


def test_the_transport_is_chosen_by_curve_and_checked() -> None:
    keys = CurveKeys(*zmq.curve_keypair(), zmq.curve_keypair()[0])
    assert type(client_links(None, None, 1024)).__name__ == "ZmtpLinks"
    curve_links = client_links(None, keys, 1024)
    assert type(curve_links).__name__ == "ZmqLinks"
    curve_links.close()
    with pytest.raises(ValueError, match="CurveZMQ client needs the zeromq transport"):
        client_links("zmtp", keys, 1024)
    with pytest.raises(ValueError, match="transport must be one of"):
        client_links("carrier-pigeon", None, 1024)


def test_a_send_looks_first_so_a_closed_connection_refuses_and_replies_wait(
        ctx: zmq.Context) -> None:
    with connected(ctx) as (node, links, address):
        assert links.send(address, [b"first"])
        identity = arrives(node, [b"first"])
        node.send_multipart([identity, b"reply"])
        link = links._links[address]
        end = time.monotonic() + DEADLINE
        while not link.watch.poll(0) and time.monotonic() < end:
            time.sleep(0.01)
        assert links.send(address, [b"second"])  # it read the reply first...
        assert links.receive(0) == [(address, b"reply")]  # ...and kept it for receive
        node.close(0)  # the node goes away
        end = time.monotonic() + DEADLINE
        while not link.watch.poll(0) and time.monotonic() < end:
            time.sleep(0.01)
        assert not links.send(address, [b"into the void"])
        assert "closed the connection" in link.error


def test_a_call_that_times_out_says_why_its_links_failed() -> None:
    from zkv.client import Client
    from zkv.errors import Unavailable

    server, address = listener(CURVE_GREETING)
    try:
        with Client([address], timeout=0.5) as kv, pytest.raises(
                Unavailable, match="wants the CURVE mechanism"):
            kv.get("k")
    finally:
        server.close()
