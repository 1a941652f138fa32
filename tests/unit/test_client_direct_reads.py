"""A pipelining client's direct reads (``zkv.core.direct_read``) through fake links:
agreeing replicas settle the get; disagreeing, refusing or silent ones send it to
the key's primary as coordinator, and none of them becomes a suspect."""

from __future__ import annotations

import time

import pytest

from tests.unit.test_client_new_links import MEMBERS, A, B, C, FakeLinks, client_with
from zkv.client import Client
from zkv.core.messages import (
    ClientRequest,
    DirectRead,
    DirectRecord,
    RingInfo,
    decode_batch,
    encode,
)
from zkv.core.ring import Ring
from zkv.model.record import Record
from zkv.model.versions import Version

IDS = {"a": A, "b": B, "c": C}
OLD = Record(Version(1, 0, "a"), False, b"old")
NEW = Record(Version(2, 0, "a"), False, b"new")


class ScriptedLinks(FakeLinks):
    """Every link connected; ``receive`` hands out the replies queued in ``inbox``."""

    def __init__(self) -> None:
        super().__init__(slow="", born_ago=10.0, connect_after=0)
        self.inbox: list[tuple[str, bytes]] = []

    def receive(self, seconds: float) -> list[tuple[str, bytes]]:
        replies, self.inbox = self.inbox, []
        return replies

    def requests(self) -> list[tuple[str, object]]:
        return [(address, m) for address, frame in self.sent
                for m in decode_batch(frame, 64)]


def setup(monkeypatch: pytest.MonkeyPatch) -> tuple[Client, ScriptedLinks, list[str]]:
    links = ScriptedLinks()
    kv = client_with(links, monkeypatch, direct_reads=True)
    kv._router.learn(RingInfo(1, MEMBERS, 3, 64, 7, True), time.monotonic())
    replicas = [IDS[n] for n in Ring(IDS, 3, 64).locate("k")]
    return kv, links, replicas


def direct_reads(links: ScriptedLinks) -> list[tuple[str, DirectRead]]:
    return [(a, m) for a, m in links.requests() if type(m) is DirectRead]


def test_agreeing_replicas_settle_the_get_without_a_coordinator(monkeypatch):
    kv, links, replicas = setup(monkeypatch)
    future = kv.submit("get", "k")
    kv.poll(0)
    asked = direct_reads(links)
    assert asked[0][0] == replicas[0] and len(asked) == 2
    assert all(m.epoch == 7 and m.key == b"k" for _, m in asked)
    links.inbox = [(a, encode(DirectRecord(m.req_id, True, NEW, 7))) for a, m in asked]
    kv.poll(0)
    assert future.result(0) == b"new"
    assert not [m for _, m in links.requests() if type(m) is ClientRequest]


def test_disagreeing_replicas_send_the_get_to_the_primary_and_suspect_nobody(monkeypatch):
    kv, links, replicas = setup(monkeypatch)
    future = kv.submit("get", "k")
    kv.poll(0)
    (first, read), _ = direct_reads(links)
    other = direct_reads(links)[1][0]
    links.inbox = [(other, encode(DirectRecord(read.req_id, True, OLD, 7))),
                   (first, encode(DirectRecord(read.req_id, True, NEW, 7)))]
    kv.poll(0)
    kv.poll(0)  # the coordinator's request leaves
    coordinated = [(a, m) for a, m in links.requests() if type(m) is ClientRequest]
    assert [(a, m.req_id, m.op, m.key, m.consistency) for a, m in coordinated] == [
        (replicas[0], read.req_id, "get", b"k", "quorum")]
    assert not kv._router.suspects and not future.done()


def test_a_replica_at_another_epoch_sends_the_get_to_a_coordinator(monkeypatch):
    kv, links, replicas = setup(monkeypatch)
    kv.submit("get", "k")
    kv.poll(0)
    (first, read), _ = direct_reads(links)
    links.inbox = [(first, encode(DirectRecord(read.req_id, False, None, 8)))]
    kv.poll(0)
    kv.poll(0)
    assert [a for a, m in links.requests() if type(m) is ClientRequest] == [replicas[0]]
    assert kv._router.stale  # it learns the ring again


def test_a_silent_replica_sends_the_get_to_a_coordinator_but_stays_trusted(monkeypatch):
    """Under a pipelining client's load silence is mostly a queue: suspecting the
    replica would send its keys' writes to another coordinator, racing its own."""
    kv, links, replicas = setup(monkeypatch)
    kv.submit("get", "k", timeout=0.06)
    kv.poll(0)
    (first, read), (second, _) = direct_reads(links)
    links.inbox = [(second, encode(DirectRecord(read.req_id, True, NEW, 7)))]
    deadline = time.monotonic() + 5
    while not (coordinated := [a for a, m in links.requests() if type(m) is ClientRequest]):
        assert time.monotonic() < deadline, "the get never went to a coordinator"
        kv.poll(0.005)
    assert first == replicas[0] and coordinated == [replicas[1]]  # not the silent one
    assert not kv._router.suspects
