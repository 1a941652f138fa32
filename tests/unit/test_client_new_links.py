"""Requests a pipelining client submits while its link to the key's primary is still
connecting wait for that link, for a while, rather than go to another replica
(whose writes would race the primary's). Driven through fake links, no nodes."""

from __future__ import annotations

import time

import pytest

import zkv.client as client_module
from zkv.client import CONNECT_PATIENCE, SYN_PATIENCE, Client
from zkv.core.messages import RingInfo, decode_batch
from zkv.core.ring import Ring

A, B, C = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"
MEMBERS = [["a", A], ["b", B], ["c", C]]


class FakeLinks:
    """Every link connected at once, except the primary's, which connects after
    ``connect_after`` receive calls; ``born`` says when each link began."""

    def __init__(self, slow: str, born_ago: float, connect_after: int,
                 in_tcp_connect: bool = False) -> None:
        self.slow = slow
        self.in_tcp_connect = in_tcp_connect  # the slow link's SYN not answered yet
        self.connect_after = connect_after
        self.receives = 0
        self._born = time.monotonic() - born_ago
        self.sent: list[tuple[str, bytes]] = []
        self.opened: set[str] = set()

    def _ready(self, address: str) -> bool:
        return address != self.slow or self.receives >= self.connect_after

    def open(self, address: str) -> None:
        self.opened.add(address)

    def addresses(self) -> set[str]:
        return set(self.opened)

    def born(self, address: str) -> float:
        return self._born

    def connecting(self, address: str) -> bool:
        return self.in_tcp_connect and not self._ready(address)

    def drop(self, address: str) -> None:
        self.opened.discard(address)

    def close(self) -> None:
        pass

    def send(self, address: str, frames: list[bytes]) -> bool:
        if not self._ready(address):
            return False
        self.sent.extend((address, frame) for frame in frames)
        return True

    def ready(self, addresses: list[str]) -> bool:
        return any(self._ready(a) for a in addresses)

    def wait_ready(self, addresses: list[str], seconds: float) -> bool:
        return self.ready(addresses)

    def receive(self, seconds: float) -> list[tuple[str, bytes]]:
        self.receives += 1
        return []

    def trouble(self, addresses: list[str]) -> str:
        return ""


def client_with(links: FakeLinks, monkeypatch: pytest.MonkeyPatch, **kwargs) -> Client:
    monkeypatch.setattr(client_module, "client_links", lambda *args: links)
    kv = Client([A, B, C], timeout=5.0, **kwargs)
    kv._router.learn(RingInfo(1, MEMBERS, 3, 64), time.monotonic())  # as if asked
    return kv


def put_keys(primary: str) -> list[str]:
    ring = Ring({"a": A, "b": B, "c": C}, 3, 64)
    ids = {A: "a", B: "b", C: "c"}
    return [k for k in (f"k{i}" for i in range(100)) if ring.locate(k)[0] == ids[primary]][:3]


def where(links: FakeLinks) -> set[str]:
    """The addresses the client sent put requests to."""
    return {address for address, frame in links.sent
            if any(getattr(m, "op", None) == "put" for m in decode_batch(frame, 256))}


def test_requests_wait_for_a_new_link_to_their_primary(monkeypatch) -> None:
    links = FakeLinks(slow=A, born_ago=0.0, connect_after=3)
    kv = client_with(links, monkeypatch)
    for key in put_keys(A):
        kv.submit("put", key, b"v")
    kv.poll(0)
    assert where(links) == set()  # held for the primary's link, not sent elsewhere
    for _ in range(3):
        kv.poll(0)
    assert where(links) == {A}
    assert kv.in_flight == 3


def test_after_the_patience_they_go_to_the_next_replica(monkeypatch) -> None:
    links = FakeLinks(slow=A, born_ago=CONNECT_PATIENCE + 0.1, connect_after=10**9)
    kv = client_with(links, monkeypatch)
    for key in put_keys(A):
        kv.submit("put", key, b"v")
    kv.poll(0)
    assert where(links) and A not in where(links)


def test_a_link_still_in_its_tcp_connect_is_waited_for_longer(monkeypatch) -> None:
    """A lost SYN is sent again after a second: the link may connect well after the
    usual patience, and its node is fine."""
    links = FakeLinks(slow=A, born_ago=CONNECT_PATIENCE + 0.1, connect_after=3,
                      in_tcp_connect=True)
    kv = client_with(links, monkeypatch)
    for key in put_keys(A):
        kv.submit("put", key, b"v")
    kv.poll(0)
    assert where(links) == set()
    for _ in range(3):
        kv.poll(0)
    assert where(links) == {A}
    late = FakeLinks(slow=A, born_ago=SYN_PATIENCE + 0.1, connect_after=10**9,
                     in_tcp_connect=True)
    kv = client_with(late, monkeypatch)
    for key in put_keys(A):
        kv.submit("put", key, b"v")
    kv.poll(0)
    assert where(late) and A not in where(late)
