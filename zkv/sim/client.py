"""Simulated clients: processes that send ClientRequests through the faulty network.

A client has at most one request outstanding. It sends the request to one node
and waits for the matching ClientReply or its own deadline (the request's
timeout plus a margin for the network), whichever comes first; late or
duplicated replies are ignored. The outcome is a ``ClientResult`` whose status
is the node's (ok, not_found, exists, unavailable, invalid) or ``timeout``.

``RoutedClient`` is the library's client instead: it runs the very policy of
``zkv.client.Client`` (``zkv.core.client_policy``: the ring learned from a node,
replicas first, suspects last, quorum gets read from the replicas directly
(direct reads, on by default), reads hedged, writes never sent to a second
coordinator while one holds them, refusals retried until the deadline).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zkv.core.client_policy import (
    OUTCOMES,
    Call,
    Outcome,
    Pause,
    ReadDirect,
    Router,
    SendTo,
    Wait,
)
from zkv.core.messages import (
    ClientReply,
    ClientRequest,
    DirectRead,
    DirectRecord,
    ErrorReply,
    Message,
    RingInfo,
    RingQuery,
)
from zkv.sim.network import CLIENT, Packet
from zkv.sim.scheduler import Timer

if TYPE_CHECKING:
    from zkv.sim.cluster import SimCluster

TIMEOUT = "timeout"  # zkv.core.client_policy.TIMEOUT
STATUSES = OUTCOMES


def as_bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


@dataclass(frozen=True, slots=True)
class ClientResult:
    status: str  # one of STATUSES
    value: bytes | None  # the value read (get), as the node returned it
    detail: str
    op: str
    key: bytes
    sent_value: bytes | None  # the value the request carried (put, create, update, cas)
    node_id: str  # the node the request went to
    process: int
    req_id: int
    start: float
    end: float
    expected: bytes | None = None  # a cas's expected value (None: absent)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class PendingResult:
    """Future of one request: ``result`` is set once the reply or the timeout comes."""

    result: ClientResult | None = None
    callbacks: list[Callable[[ClientResult], None]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.result is not None

    def _resolve(self, result: ClientResult) -> None:
        self.result = result
        for callback in self.callbacks:
            callback(result)


@dataclass(slots=True)
class _Outstanding:
    request: ClientRequest
    node_id: str
    start: float
    deadline: Timer
    pending: PendingResult


class SimClient:
    """Client process ``process``, reachable at ``client://<process>``."""

    def __init__(self, cluster: SimCluster, process: int, margin: float = 0.5) -> None:
        self.cluster = cluster
        self.process = process
        self.address = f"client://{process}"
        self.margin = margin
        self.completed = 0
        self.stale_replies = 0
        self._next_req = 0
        self._outstanding: _Outstanding | None = None
        # The cluster's recorder (what it returns is not used).
        self.on_result: Callable[[ClientResult], object] | None = None
        cluster.network.attach(self.address, self.address, self._on_packet)

    @property
    def busy(self) -> bool:
        return self._outstanding is not None

    def call(self, node_id: str, op: str, key: str | bytes, value: str | bytes | None = None,
             consistency: str = "quorum", timeout: float = 2.0,
             on_done: Callable[[ClientResult], None] | None = None,
             expected: str | bytes | None = None) -> PendingResult:
        """Send one request to ``node_id``; the result arrives via the returned future."""
        cluster = self.cluster
        address = cluster.address_of(node_id)
        if address is None:
            raise KeyError(f"no node {node_id!r} in the cluster")
        request, pending = self._begin(op, key, value, consistency, timeout, on_done, expected)
        now = cluster.scheduler.now
        deadline = cluster.scheduler.call_later(timeout + self.margin, self._on_deadline,
                                                request.req_id)
        self._outstanding = _Outstanding(request, node_id, now, deadline, pending)
        cluster.network.send(self.address, self.address, address, request, CLIENT)
        return pending

    def _begin(self, op: str, key: str | bytes, value: str | bytes | None, consistency: str,
               timeout: float, on_done: Callable[[ClientResult], None] | None,
               expected: str | bytes | None) -> tuple[ClientRequest, PendingResult]:
        """The next request of this client and the future of its result."""
        if self._outstanding is not None:
            raise RuntimeError(f"{self.address} already has a request outstanding")
        self._next_req += 1
        request = ClientRequest(self._next_req, op, as_bytes(key) or b"", as_bytes(value),
                                consistency, max(0, round(timeout * 1000)),
                                as_bytes(expected))
        pending = PendingResult()
        if on_done is not None:
            pending.callbacks.append(on_done)
        return request, pending

    def _on_packet(self, packet: Packet, message: Message) -> None:
        outstanding = self._outstanding
        req_id = getattr(message, "req_id", None)
        if outstanding is None or req_id != outstanding.request.req_id:
            self.stale_replies += 1
            return
        if isinstance(message, ClientReply):
            self._finish(message.status, message.value, message.detail)
        elif isinstance(message, ErrorReply):
            self._finish("invalid", None, message.reason)
        else:
            self.stale_replies += 1

    def _on_deadline(self, req_id: int) -> None:
        outstanding = self._outstanding
        if outstanding is not None and outstanding.request.req_id == req_id:
            self._finish(TIMEOUT, None, "no reply before the client's deadline")

    def _finish(self, status: str, value: bytes | None, detail: str) -> None:
        outstanding = self._outstanding
        assert outstanding is not None
        self._outstanding = None
        outstanding.deadline.cancel()
        request = outstanding.request
        result = ClientResult(status, value, detail, request.op, request.key, request.value,
                              outstanding.node_id, self.process, request.req_id,
                              outstanding.start, self.cluster.scheduler.now, request.expected)
        self.completed += 1
        if self.on_result is not None:
            self.on_result(result)
        outstanding.pending._resolve(result)


class RoutedClient(SimClient):
    """A client process that routes and retries as ``zkv.client.Client`` does."""

    def __init__(self, cluster: SimCluster, process: int, seeds: list[str],
                 direct_reads: bool = True) -> None:
        super().__init__(cluster, process, margin=0.0)
        self.router = Router(seeds, direct_reads=direct_reads)
        self.sent_to: list[str] = []  # node ids this call's request went to, in order
        self._call: Call | None = None
        self._wakeup: Timer | None = None

    def call(self, node_id: str | None, op: str, key: str | bytes,
             value: str | bytes | None = None, consistency: str = "quorum",
             timeout: float = 2.0, on_done: Callable[[ClientResult], None] | None = None,
             expected: str | bytes | None = None) -> PendingResult:
        """Run one operation under the library's policy; ``node_id`` is ignored (the
        policy picks the coordinators)."""
        request, pending = self._begin(op, key, value, consistency, timeout, on_done, expected)
        cluster = self.cluster
        now = cluster.scheduler.now
        # The policy's own deadline ends the call; this timer only wakes the driver.
        self._outstanding = _Outstanding(request, "", now, cluster.scheduler.call_later(
            timeout, self._drive), pending)
        self.sent_to = []
        self._maybe_ask_ring(now)
        self._call = Call(op, request.key, consistency, timeout, now, self.router)
        self._drive()
        return pending

    def _node_at(self, address: str) -> str | None:
        for node_id, host in self.cluster.hosts.items():
            if host.address == address:
                return node_id if host.running else None
        return None

    def _send(self, address: str, message: Message) -> bool:
        """Like a DEALER with ZMQ_IMMEDIATE: refused when no process listens there."""
        if self._node_at(address) is None:
            return False
        self.cluster.network.send(self.address, self.address, address, message, CLIENT)
        return True

    def _maybe_ask_ring(self, now: float) -> None:
        if not self.router.ring_query_due(now):
            return
        for address in self.router.query_targets():
            self._next_req += 1  # one sequence of ids for requests and ring queries
            if self._send(address, RingQuery(self._next_req)):
                self.router.asked(self._next_req, now)
                return

    def _drive(self, *_: object) -> None:
        call, outstanding = self._call, self._outstanding
        if call is None or outstanding is None:
            return
        scheduler = self.cluster.scheduler
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        while True:
            now = scheduler.now
            step = call.next(now)
            if type(step) is SendTo:
                request = dataclasses.replace(outstanding.request, timeout_ms=step.budget_ms)
                ok = self._send(step.address, request)
                if ok:
                    self.sent_to.append(self._node_at(step.address) or step.address)
                call.sent(step.address, ok, now)
            elif type(step) is ReadDirect:
                read = DirectRead(outstanding.request.req_id, outstanding.request.key,
                                  step.epoch)
                for address in step.addresses:
                    ok = self._send(address, read)
                    if ok:
                        self.sent_to.append(self._node_at(address) or address)
                    call.direct_sent(address, ok, now)
            elif type(step) is Pause:
                self._maybe_ask_ring(now)
                self._wakeup = scheduler.call_later(step.seconds, self._drive)
                return
            elif type(step) is Outcome:
                self._call = None
                outstanding.node_id = self.sent_to[-1] if self.sent_to else ""
                self._finish(step.status, step.value, step.detail)
                return
            else:
                assert type(step) is Wait  # the one kind of step left
                self._wakeup = scheduler.call_at(step.until, self._drive)
                return

    def _on_packet(self, packet: Packet, message: Message) -> None:
        now = self.cluster.scheduler.now
        self.router.heard_from(packet.src_address)
        if type(message) is RingInfo:
            if message.req_id == self.router.query:
                self.router.learn(message, now)
            return
        outstanding, call = self._outstanding, self._call
        if outstanding is None or call is None:
            self.stale_replies += 1
            return
        if isinstance(message, ErrorReply) or (
                isinstance(message, (ClientReply, DirectRecord))
                and message.req_id == outstanding.request.req_id):
            call.on_reply(message, now, packet.src_address)
            self._drive()
        else:
            self.stale_replies += 1
