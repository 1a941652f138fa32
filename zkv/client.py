"""The zkv client library: a blocking API over the cluster's request sockets.

    from zkv.client import Client

    with Client(["tcp://127.0.0.1:7000"]) as kv:
        kv.put("user:1", b"ada")
        kv.get("user:1")            # b"ada"; None when the key holds no value
        kv.create("user:1", b"x")   # raises KeyExists
        kv.delete("user:2")         # raises KeyNotFound
        kv.cas("user:1", b"ada", b"grace")  # True; False (nothing changed) if it held another
        kv.locate("user:1")         # ["n3", "n1", "n4"]: replica ids, primary first
        kv.admin("decommission", "n2")  # AdminReply: "pending" (the cluster moves its data)
        kv.node_status("tcp://127.0.0.1:7000")  # that node's view: epoch, members, streaming

Guarantees:

- A call returns or raises within its ``timeout`` (plus scheduling noise). A
  returned write was acknowledged at the requested consistency level, so it was
  durable on that many replicas; ``Unavailable`` means the level was not reached
  in time and a write's outcome is unknown.
- With ``quorum`` (the default) or ``all``, every operation is linearizable per
  key. The conditional ones (create, update, delete, cas) are decided by
  per-key Paxos: a failed condition never takes effect, and ``Unavailable``
  from one of them means its outcome is unknown unless the message says the
  request was refused.
- A quorum get reads a quorum of the key's replicas directly (``direct_reads``,
  on by default), without a coordinator between
  (``zkv.core.direct_read``), when the ring is settled: if
  they all hold the same version, that is the answer; otherwise (they differ, a
  replica is at another epoch or stays silent for a third of the timeout) the
  get goes to a coordinator, which reads and repairs as before.
- Requests go straight to a replica of the key (primary first), from the ring
  the client learns from any node and refreshes every few seconds and whenever a
  node does not answer. A read whose coordinator stays silent for a third of
  the timeout gets a second one beside it (the next replica, then any node),
  with the same deadline; the first answer wins. A write is never sent to a
  second coordinator while one holds it (that one could still apply it after
  the other had answered, overwriting later writes): it waits for an answer
  or its deadline, and moves on only after a refusal. A node that stayed
  silent or is not connected is asked last for a couple of seconds.
- Quick refusals (a coordinator that is joining, or sees too few replicas) are
  retried on other nodes, and then again after short pauses, until the
  deadline: the cluster may recover within it.

A Client is not thread-safe: give each thread its own. It holds one link per node
(``zkv.net.links``): a plain TCP connection speaking ZeroMQ's wire as a DEALER, or,
for a CurveZMQ cluster, a ZeroMQ DEALER socket.

Pipelining: ``submit(op, key, value)`` queues a request and returns a
``concurrent.futures.Future`` at once; the requests queued for one node leave
together, as one ZeroMQ message that the node reads as a batch, at the next
``poll`` (or once ``SUBMIT_BATCH`` are queued). ``poll(timeout)`` sends them,
takes the replies that have arrived and settles their futures (with the value, or the error the
blocking call would raise). Many requests may be in flight on one client; they
are matched to replies by request id. A submitted request goes to one
coordinator (a replica of the key) and is not retried elsewhere: a refusal or
a deadline settles it with ``Unavailable``. With direct reads on, a submitted
quorum get reads directly first, as a blocking one does, and goes to the key's
primary as coordinator when the replicas cannot decide. Blocking calls made meanwhile also
settle whatever async replies they receive.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Self

from zkv.core.client_policy import (
    CONNECT_WAIT,
    MAX_ROUND_PAUSE,
    RING_QUERY_RETRY,
    RING_REFRESH,
    TIMEOUT,
    Call,
    Outcome,
    Pause,
    ReadDirect,
    Router,
    SendTo,
    Wait,
    put_last,
)
from zkv.core.config import MAX_KEY, MAX_VALUE
from zkv.core.direct_read import FALLBACK, DirectQuorum
from zkv.core.messages import (
    ADMIN_ACTIONS,
    JOIN_BYTES,
    MAX_BATCH,
    MAX_FRAME,
    OPS,
    AdminReply,
    AdminRequest,
    ClientReply,
    ClientRequest,
    DecodeError,
    DirectRead,
    DirectRecord,
    ErrorReply,
    RingInfo,
    RingQuery,
    decode_batch,
    encode,
    in_batches,
    join,
)
from zkv.core.quorum import LEVELS
from zkv.errors import InvalidRequest, Unavailable, error_for
from zkv.keys import CurveKeys
from zkv.net.links import client_links

CONNECT_GRACE = 0.1  # how long a new link may take to connect before its node is skipped
CONNECT_PATIENCE = 1.0  # how long submitted requests wait for a new link to connect
SYN_PATIENCE = 4.5  # ... while its TCP connect is still under way (a SYN lost, sent again)
FIRST_RING_WAIT = 1.0  # seconds a new client waits at most for the ring before a request
SUBMIT_BATCH = 64  # submitted requests to one node that leave as one message at the latest

def _address(seed: str) -> str:
    seed = seed.strip()
    return seed if "://" in seed else f"tcp://{seed}"


def shown_key(key: bytes) -> str:
    """A key as its user typed it, for messages: UTF-8, undecodable bytes as ``\\xNN``."""
    return key.decode("utf-8", "backslashreplace")


class _Pending:
    """A submitted request waiting for its reply; a get reading directly also keeps
    its quorum of replicas and what the coordinator's request would need."""

    __slots__ = ("future", "op", "key", "deadline", "direct", "level", "budget_ms")

    def __init__(self, future: Future, op: str, key: bytes, deadline: float) -> None:
        self.future = future
        self.op = op
        self.key = key
        self.deadline = deadline
        self.direct: DirectQuorum | None = None
        self.level = ""
        self.budget_ms = 0


class Client:
    """A connection to a zkv cluster; see the module docstring for the guarantees."""

    def __init__(
        self,
        seeds: list[str] | str,
        timeout: float = 2.0,
        consistency: str = "quorum",
        *,
        max_key: int = MAX_KEY,
        max_value: int = MAX_VALUE,
        ring_refresh: float = RING_REFRESH,
        curve: CurveKeys | None = None,
        transport: str | None = None,
        direct_reads: bool = True,
    ) -> None:
        """``curve``: this client's key pair and the cluster public key, for a cluster
        that runs CurveZMQ (see ``zkv.net.security``). ``transport``: ``zmtp`` (the
        default without CurveZMQ: ZeroMQ's wire on plain sockets, see
        ``zkv.net.zmtp``) or ``zeromq`` (ZeroMQ's sockets; the default, and the only
        choice, with CurveZMQ). ``direct_reads=False``: every get goes through a
        coordinator, as writes do."""
        if isinstance(seeds, str):
            seeds = seeds.split(",")
        self.seeds = [_address(s) for s in seeds if s.strip()]
        if not self.seeds:
            raise InvalidRequest("seeds: give at least one node address")
        if not timeout > 0:
            raise InvalidRequest("timeout: must be positive")
        self.timeout = float(timeout)
        self.consistency = self._level(consistency)
        self.max_key = max_key
        self.max_value = max_value
        self.curve = curve
        try:
            self._links = client_links(transport, curve, MAX_FRAME)  # one per node
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        # Routes, suspects, the ring; ``direct_reads``: quorum gets read the replicas
        # themselves (zkv.core.direct_read).
        self._router = Router(self.seeds, ring_refresh, direct_reads)
        self._ring_awaited = False  # whether the first request waited for the ring
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}  # submitted requests by req_id
        # Submitted requests not sent yet, by coordinator: (req_id, frame, other nodes to
        # try); they leave as one message at the next poll, or once SUBMIT_BATCH queue.
        self._queued: dict[str, list[tuple[int, bytes, list[str] | None]]] = {}
        self._expired_at = 0.0  # when poll last looked for overdue requests
        self._closed = False
        for address in self.seeds:
            self._links.open(address)

    @classmethod
    def from_cluster_dir(cls, data_dir: str | os.PathLike, **kwargs: object) -> Client:
        """A client of the local cluster in ``data_dir`` (``zkv cluster up``): its nodes'
        addresses and, for a ``--curve`` cluster, its client key, from ``cluster.json``.
        Other arguments as for ``Client``."""
        from zkv.cluster_dir import ControlError, cluster_connection

        try:
            addresses, curve = cluster_connection(Path(data_dir))
        except ControlError as exc:
            raise InvalidRequest(str(exc)) from None
        kwargs.setdefault("curve", curve)
        return cls(addresses, **kwargs)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- public API

    def get(self, key: str | bytes, *, consistency: str | None = None,
            timeout: float | None = None) -> bytes | None:
        """The key's value, or None when it holds none."""
        status, value = self._call("get", key, None, consistency, timeout)
        return value if status == "ok" else None

    def put(self, key: str | bytes, value: bytes | str, *, consistency: str | None = None,
            timeout: float | None = None) -> None:
        """Store ``value`` under ``key``; returns once the consistency level acknowledged it."""
        self._call("put", key, value, consistency, timeout)

    def delete(self, key: str | bytes, *, consistency: str | None = None,
               timeout: float | None = None) -> None:
        """Remove the key's value; raises KeyNotFound when it holds none."""
        self._call("delete", key, None, consistency, timeout)

    def create(self, key: str | bytes, value: bytes | str, *, consistency: str | None = None,
               timeout: float | None = None) -> None:
        """Store ``value`` only if the key holds none; raises KeyExists otherwise."""
        self._call("create", key, value, consistency, timeout)

    def update(self, key: str | bytes, value: bytes | str, *, consistency: str | None = None,
               timeout: float | None = None) -> None:
        """Replace the key's value only if it holds one; raises KeyNotFound otherwise."""
        self._call("update", key, value, consistency, timeout)

    def cas(self, key: str | bytes, expected: bytes | str | None, value: bytes | str | None,
            *, consistency: str | None = None, timeout: float | None = None) -> bool:
        """Compare-and-set: store ``value`` (None deletes) only if the key holds
        ``expected`` (None: holds no value). True if it did; False, with nothing
        changed, if it held something else."""
        status, _ = self._call("cas", key, value, consistency, timeout, expected)
        return status == "ok"

    def locate(self, key: str | bytes) -> list[str]:
        """The ids of the key's replicas, primary first (from a freshly learned ring)."""
        kb = self._key(key)
        self._fetch_ring(time.monotonic() + self.timeout)
        ring = self._router.ring
        if ring is None:
            raise Unavailable("the cluster reported an empty ring")
        return list(ring.locate(kb))

    def ring(self) -> dict[str, str]:
        """The ring's members as {node id: address}, freshly learned from a node."""
        self._fetch_ring(time.monotonic() + self.timeout)
        return dict(self._router.node_address)

    # ----------------------------------------------------------------- membership

    def admin(self, action: str, node_id: str = "", address: str | None = None,
              timeout: float | None = None) -> AdminReply:
        """Send an operator's command to one node and return its ``AdminReply``:
        ``decommission`` or ``remove`` of ``node_id``, or ``status``.

        It goes to ``address``, else to the seeds in order (then the ring's other
        nodes): one that is not connected is skipped, and one silent for a third of
        the timeout gets the next one asked beside it (the first answer wins; a
        command accepted twice is still one change). ``pending`` means the node
        accepted the command and proposes it to the cluster; the ring changes later.
        Raises Unavailable when no node answers within ``timeout``, InvalidRequest
        when a node cannot take the request at all.
        """
        if self._closed:
            raise InvalidRequest("the client is closed")
        if action not in ADMIN_ACTIONS:
            raise InvalidRequest(f"action must be one of {', '.join(ADMIN_ACTIONS)}, "
                                 f"not {action!r}")
        limit = self.timeout if timeout is None else float(timeout)
        if not limit > 0:
            raise InvalidRequest("timeout: must be positive")
        now = time.monotonic()
        deadline = now + limit
        if address is not None:
            order = [_address(address)]
        else:
            order = self._router.suspects_last(list(dict.fromkeys(
                [*self.seeds, *sorted(self._router.node_address.values())])), now)
        patience = limit / 3 if len(order) > 1 else limit
        req_id = next(self._ids)
        frame = encode(AdminRequest(req_id, action, node_id))
        what = f"{action} {node_id}".rstrip()
        tried = waiting = rounds = 0
        ask_next_at = now
        while (remaining := deadline - time.monotonic()) > 0:
            now = time.monotonic()
            if now >= ask_next_at and tried < len(order):
                target = order[tried]
                tried += 1
                if self._send(target, frame):
                    waiting += 1
                    ask_next_at = now + patience
                else:
                    self._router.suspect(target, now)
                continue
            if waiting == 0:  # nobody connected: wait for one to be, then go round again
                self._pause(order, min(CONNECT_WAIT * 2 ** rounds, MAX_ROUND_PAUSE, remaining))
                rounds += 1
                tried = 0
                continue
            until = ask_next_at if tried < len(order) else deadline
            for _, message in self._receive(min(until, deadline) - now):
                if type(message) is AdminReply and message.req_id == req_id:
                    return message
                if type(message) is ErrorReply:
                    raise InvalidRequest(f"{what}: a node refused the request: "
                                         f"{message.reason}")
        who = f"no answer from {order[0]}" if address is not None else "no node answered"
        raise Unavailable(f"{what}: {who} within {limit:g}s")

    def node_status(self, address: str, timeout: float | None = None) -> dict | None:
        """The node at ``address``'s view of the cluster (its ``AdminReply`` info: epoch,
        map members and their states, streaming progress), or None if it does not
        answer within ``timeout`` (or refuses the request)."""
        try:
            reply = self.admin("status", address=address, timeout=timeout)
        except (Unavailable, InvalidRequest):
            return None
        return reply.info if reply.status == "ok" else None

    # ----------------------------------------------------------------- pipelining

    def submit(self, op: str, key: str | bytes, value: bytes | str | None = None, *,
               expected: bytes | str | None = None, consistency: str | None = None,
               timeout: float | None = None) -> Future:
        """Send one request without waiting; ``poll`` settles the returned future.

        The future's result is what the blocking call returns (the value for a get,
        True/False for a cas, None otherwise); its exception is what that call
        would raise.
        """
        if self._closed:
            raise InvalidRequest("the client is closed")
        if op not in OPS:
            raise InvalidRequest(f"unknown operation {op!r}")
        kb = self._key(key)
        vb, eb = self._values(op, value, expected)
        level = self.consistency if consistency is None else self._level(consistency)
        limit = self.timeout if timeout is None else float(timeout)
        if not limit > 0:
            raise InvalidRequest("timeout: must be positive")
        now, limit = self._routable(limit)
        future: Future = Future()
        req_id = next(self._ids)
        budget_ms = max(1, int(limit * 900))  # the coordinator answers before we give up
        router = self._router
        targets = router.direct_targets(kb, level, now) if op == "get" else None
        if targets is not None:
            pending = self._pending[req_id] = _Pending(future, op, kb, now + limit)
            pending.direct = DirectQuorum(targets, router.epoch, now + limit / 3)
            pending.level, pending.budget_ms = level, budget_ms
            frame = encode(DirectRead(req_id, kb, router.epoch))
            for address in targets:
                self._enqueue(address, req_id, frame, None)
            return future
        frame = encode(ClientRequest(req_id, op, kb, vb, level, budget_ms, eb))
        order = router.route(kb, now)
        if not order:
            future.set_exception(Unavailable(f"{op} {shown_key(kb)}: no node is known"))
            return future
        self._pending[req_id] = _Pending(future, op, kb, now + limit)
        self._enqueue(order[0], req_id, frame, order[1:])
        return future

    def _enqueue(self, address: str, req_id: int, frame: bytes,
                 fallbacks: list[str] | None) -> None:
        """Queue a submitted request's frame for ``address``; ``fallbacks``: the nodes
        to try if it cannot go there (None for a direct read: then a coordinator)."""
        queue = self._queued.setdefault(address, [])
        queue.append((req_id, frame, fallbacks))
        if len(queue) >= SUBMIT_BATCH:
            self._flush(address)

    def _coordinate(self, req_id: int, pending: _Pending, now: float,
                    silent: list[str] | None = None) -> None:
        """A direct read that cannot decide: the get goes to a coordinator, the key's
        first replica that did not stay ``silent``. None of them becomes a
        suspect: under a pipelining client's load silence is mostly a queue, and the
        key's writes must keep going to its primary (a write sent elsewhere races
        the primary's, and one of them answers ``unknown``); only a link that
        cannot send makes one (``_flush``)."""
        direct, pending.direct = pending.direct, None
        if direct is None:
            return
        order = self._router.route(pending.key, now)
        if silent:
            order = put_last(order, silent)
        if not order:
            del self._pending[req_id]
            pending.future.set_exception(Unavailable(f"get {shown_key(pending.key)}: no node "
                                                     f"is known"))
            return
        frame = encode(ClientRequest(req_id, "get", pending.key, None, pending.level,
                                     pending.budget_ms, None))
        self._enqueue(order[0], req_id, frame, order[1:])

    def _flush(self, address: str) -> None:
        """Send the requests submitted for ``address`` as one ZeroMQ message (the node
        reads it as a batch); those it cannot take wait while the link is new (up to
        ``CONNECT_PATIENCE``), then go to the next node of their route, one by one, or
        fail when no node is connected."""
        pending = self._pending
        queue = [entry for entry in self._queued.pop(address, []) if entry[0] in pending]
        if not queue or self._send_many(address, [frame for _, frame, _ in queue]):
            return
        now = time.monotonic()
        age = now - self._links.born(address)
        if age < CONNECT_PATIENCE or (age < SYN_PATIENCE and self._links.connecting(address)):
            # A new link still connecting (its handshake moves only while this client
            # polls; a lost SYN is sent again only after a second): keep them for it.
            # Sent to another replica instead, writes would race those of clients
            # already connected to the key's primary.
            self._queued[address] = queue
            return
        self._router.suspect(address, now)
        for req_id, frame, fallbacks in queue:
            if fallbacks is None:
                direct = pending.get(req_id)
                if direct is not None:
                    self._coordinate(req_id, direct, now)
                continue
            for other in fallbacks:
                if self._send(other, frame):
                    break
                self._router.suspect(other, now)
            else:
                failed = pending.pop(req_id, None)
                if failed is not None:
                    failed.future.set_exception(Unavailable(
                        f"{failed.op} {shown_key(failed.key)}: no node is connected"))

    def poll(self, timeout: float = 0.0) -> int:
        """Wait up to ``timeout`` seconds for replies to submitted requests and settle
        their futures (and those past their deadline); returns how many settled."""
        before = len(self._pending)
        if before == 0:
            return 0
        self._receive(timeout)
        now = time.monotonic()
        if self._pending and (now - self._expired_at >= 0.01):
            self._expired_at = now
            for req_id, pending in list(self._pending.items()):
                if now >= pending.deadline:
                    del self._pending[req_id]
                    pending.future.set_exception(Unavailable(
                        f"{pending.op} {shown_key(pending.key)}: no answer in time"))
                elif pending.direct is not None and now >= pending.direct.until:
                    self._coordinate(req_id, pending, now, pending.direct.silent())
        return before - len(self._pending)

    @property
    def in_flight(self) -> int:
        """Submitted requests whose futures are not settled yet."""
        return len(self._pending)

    def _settle(self, pending: _Pending, status: str, value: bytes | None,
                detail: str) -> None:
        future = pending.future
        error = error_for(pending.op, shown_key(pending.key), status, detail)
        if error is not None:
            if isinstance(error, Unavailable):
                self._router.stale = True
            future.set_exception(error)
        elif status == "ok":
            future.set_result(value if pending.op == "get" else
                              True if pending.op == "cas" else None)
        else:  # a failed cas condition, a get of a missing key
            future.set_result(False if status == "condition_failed" else None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queued.clear()
        for pending in self._pending.values():
            pending.future.set_exception(Unavailable("the client was closed"))
        self._pending.clear()
        self._links.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit, zmq may be gone first
            self.close()

    # ----------------------------------------------------------------- validation

    def _key(self, key: str | bytes) -> bytes:
        if isinstance(key, str):
            kb = key.encode()
        elif isinstance(key, (bytes, bytearray, memoryview)):
            kb = bytes(key)
        else:
            raise InvalidRequest(f"key must be str or bytes, not {type(key).__name__}")
        if not kb:
            raise InvalidRequest("key must not be empty")
        if len(kb) > self.max_key:
            raise InvalidRequest(f"key of {len(kb)} bytes exceeds the {self.max_key}-byte limit")
        return kb

    def _values(self, op: str, value: bytes | str | None, expected: bytes | str | None
                ) -> tuple[bytes | None, bytes | None]:
        """The request's value and expected value, checked against the limits."""
        if op == "cas":
            return (None if value is None else self._value(value),
                    None if expected is None else self._value(expected, "expected value"))
        if expected is not None:
            raise InvalidRequest(f"{op} takes no expected value")
        if op in ("put", "create", "update"):
            if value is None:
                raise InvalidRequest(f"{op} needs a value")
            return self._value(value), None
        return None, None

    def _value(self, value: bytes | str, name: str = "value") -> bytes:
        if isinstance(value, str):
            vb = value.encode()
        elif isinstance(value, (bytes, bytearray, memoryview)):
            vb = bytes(value)
        else:
            raise InvalidRequest(f"{name} must be bytes or str, not {type(value).__name__}")
        if len(vb) > self.max_value:
            raise InvalidRequest(f"{name} of {len(vb)} bytes exceeds the "
                                 f"{self.max_value}-byte limit")
        return vb

    @staticmethod
    def _level(consistency: str) -> str:
        if consistency not in LEVELS:
            raise InvalidRequest(f"consistency must be one of {', '.join(LEVELS)}, "
                                 f"not {consistency!r}")
        return consistency

    # ----------------------------------------------------------------- requests

    def _call(self, op: str, key: str | bytes, value: bytes | str | None,
              consistency: str | None, timeout: float | None,
              expected: bytes | str | None = None) -> tuple[str, bytes | None]:
        if self._closed:
            raise InvalidRequest("the client is closed")
        kb = self._key(key)
        vb, eb = self._values(op, value, expected)
        level = self.consistency if consistency is None else self._level(consistency)
        limit = self.timeout if timeout is None else float(timeout)
        if not limit > 0:
            raise InvalidRequest("timeout: must be positive")
        now, limit = self._routable(limit)
        call = Call(op, kb, level, limit, now, self._router)
        req_id = next(self._ids)
        while True:
            step = call.next(now)
            if type(step) is SendTo:
                frame = encode(ClientRequest(req_id, op, kb, vb, level, step.budget_ms, eb))
                call.sent(step.address, self._send(step.address, frame), now)
            elif type(step) is ReadDirect:
                frame = encode(DirectRead(req_id, kb, step.epoch))
                for address in step.addresses:
                    call.direct_sent(address, self._send(address, frame), now)
            elif type(step) is Pause:
                self._maybe_refresh_ring(now)
                self._pause(call.order, step.seconds)
            elif type(step) is Outcome:
                detail = step.detail
                if step.status == TIMEOUT and (trouble := self._links.trouble(call.order)):
                    detail = f"{detail}; {trouble}"
                error = error_for(op, shown_key(kb), step.status, detail)
                if error is not None:
                    raise error
                return step.status, step.value
            else:
                assert type(step) is Wait
                for address, message in self._receive(step.until - now):
                    if (type(message) in (ClientReply, DirectRecord)
                            and message.req_id == req_id or type(message) is ErrorReply):
                        call.on_reply(message, time.monotonic(), address)
            now = time.monotonic()

    # ----------------------------------------------------------------- the ring

    def _maybe_refresh_ring(self, now: float) -> None:
        if self._router.ring_query_due(now):
            self._ask_ring(now)

    def _ask_ring(self, now: float) -> bool:
        """Send a RingQuery to the next reachable node; the answer is taken whenever it comes."""
        for address in self._router.query_targets():
            req_id = next(self._ids)
            if self._send(address, encode(RingQuery(req_id))):
                self._router.asked(req_id, now)
                return True
        return False

    def _fetch_ring(self, deadline: float) -> None:
        """Learn the ring now (for locate/ring); raises Unavailable if no node answers."""
        self._router.forget_ring()
        if not self._await_ring(deadline):
            raise Unavailable("no node answered a ring query in time")

    def _routable(self, limit: float) -> tuple[float, float]:
        """Before a request: the ring learned or asked for (``_first_ring``,
        ``_maybe_refresh_ring``); returns the time then and what is left of ``limit``."""
        start = time.monotonic()
        self._first_ring(start, limit)
        now = time.monotonic()
        self._maybe_refresh_ring(now)
        return now, max(limit - (now - start), 0.001)

    def _first_ring(self, now: float, limit: float) -> None:
        """Before a client's first request: learn the ring, for a while at most, so the
        request goes to its key's primary. Without the ring every request would go to
        one node, which would coordinate writes beside the keys' primaries, where other
        clients' writes go: racing coordinators make writes refuse each other (answered
        ``unknown``), and they make the primaries' fast puts refused. Once per client,
        and only while no request is pending: the wait reads no replies."""
        if self._router.ring is None and not self._ring_awaited and not self._pending:
            self._ring_awaited = True
            self._await_ring(now + min(limit / 3, FIRST_RING_WAIT))

    def _await_ring(self, deadline: float) -> bool:
        """Ask for the ring until an answer arrives (True) or ``deadline`` passes."""
        router = self._router
        while True:
            now = time.monotonic()
            if now >= deadline:
                return False
            if ((router.query is None or now - router.query_at >= RING_QUERY_RETRY)
                    and not self._ask_ring(now)):
                self._links.wait_ready(router.everyone(()), min(CONNECT_WAIT, deadline - now))
                continue
            for _ in self._receive(min(deadline, router.query_at + RING_QUERY_RETRY) - now):
                pass
            if router.ring_at > now:
                return True

    def _learn_ring(self, info: RingInfo) -> None:
        if not self._router.learn(info, time.monotonic()):
            return
        keep = set(self._router.node_address.values()) | set(self.seeds)
        for address in keep:
            self._links.open(address)
        for address in self._links.addresses() - keep:
            self._links.drop(address)

    # ----------------------------------------------------------------- links

    def _send(self, address: str, frame: bytes) -> bool:
        """Queue ``frame`` to the node at ``address``; False if it is not connected. A
        link opened moments ago gets a short wait for its first connection."""
        return self._send_many(address, [frame])

    def _send_many(self, address: str, frames: list[bytes]) -> bool:
        """``_send`` for several requests at once: one frame (``join``) for each batch
        of them, and one ZeroMQ message for all."""
        links = self._links
        joined = frames if len(frames) == 1 else [  # a node reads a lone message as is
            join(batch) for batch in in_batches(frames, SUBMIT_BATCH, JOIN_BYTES)]
        if links.send(address, joined):
            return True
        young = links.born(address) + CONNECT_GRACE - time.monotonic()
        return young > 0 and links.wait_ready([address], young) and links.send(address, joined)

    def _pause(self, addresses: list[str], seconds: float) -> None:
        """Wait ``seconds`` (taking any ring update that arrives), or, when no node in
        ``addresses`` is connected, only until one connects."""
        if not self._links.ready(addresses):
            self._links.wait_ready(addresses, seconds)
            return
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._receive(left)

    def _direct_reply(self, address: str, message: DirectRecord) -> None:
        """A replica's answer to a submitted get's direct read."""
        req_id = message.req_id
        pending = self._pending[req_id]
        direct = pending.direct
        if direct is None:
            return  # late: the get went to a coordinator meanwhile
        result = self._router.direct_reply(direct, address, message)
        if result == FALLBACK:
            self._coordinate(req_id, pending, time.monotonic())
        elif type(result) is tuple:
            del self._pending[req_id]
            self._settle(pending, result[0], result[1], "")

    def _receive(self, seconds: float) -> list:
        """(address, message) for the messages that arrive within ``seconds`` (all
        already queued ones at least) and settle no submitted request; submitted
        requests still queued leave first."""
        for address in list(self._queued):
            self._flush(address)
        messages = []
        ring_info = None
        for address, frame in self._links.receive(seconds):
            if self._router.suspects:  # it answers again
                self._router.heard_from(address)
            try:
                batch = decode_batch(frame, MAX_BATCH)
            except DecodeError:
                continue
            for message in batch:
                if type(message) is RingInfo:
                    if message.req_id == self._router.query:
                        ring_info = message
                    continue
                if type(message) is ClientReply and message.req_id in self._pending:
                    self._settle(self._pending.pop(message.req_id), message.status,
                                 message.value, message.detail)
                    continue
                if type(message) is DirectRecord and message.req_id in self._pending:
                    self._direct_reply(address, message)
                    continue
                if not isinstance(message, DecodeError):
                    messages.append((address, message))
        if ring_info is not None:  # after the loop: learning may drop links
            self._learn_ring(ring_info)
        return messages
