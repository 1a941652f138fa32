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

A Client is not thread-safe: give each thread its own (they share one ZeroMQ
context, and a client holds one DEALER socket per node).

Pipelining: ``submit(op, key, value)`` sends a request without waiting and
returns a ``concurrent.futures.Future``; ``poll(timeout)`` takes the replies
that have arrived and settles their futures (with the value, or the error the
blocking call would raise). Many requests may be in flight on one client; they
are matched to replies by request id. A submitted request goes to one
coordinator (a replica of the key) and is not retried elsewhere: a refusal or
a deadline settles it with ``Unavailable``. Blocking calls made meanwhile also
settle whatever async replies they receive.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from types import TracebackType

import zmq

from zkv.core.messages import (
    ADMIN_ACTIONS,
    OPS,
    AdminReply,
    AdminRequest,
    ClientReply,
    ClientRequest,
    DecodeError,
    ErrorReply,
    RingInfo,
    RingQuery,
    decode,
    encode,
)
from zkv.core.ring import Ring
from zkv.errors import InvalidRequest, KeyExists, KeyNotFound, Unavailable
from zkv.net.security import CurveKeys

CONSISTENCY_LEVELS = ("one", "quorum", "all")
MAX_KEY = 1024
MAX_VALUE = 1024 * 1024
RING_REFRESH = 5.0  # seconds between background ring refreshes
RING_QUERY_RETRY = 0.5  # seconds before an unanswered ring query is sent elsewhere
CONNECT_WAIT = 0.05  # first pause after every node refused or was unreachable
MAX_ROUND_PAUSE = 0.25  # the longest such pause (they double)
CONNECT_GRACE = 0.1  # how long a new socket may take to connect before its node is skipped
SUSPECT_FOR = 2.0  # seconds a node that stayed silent or unreachable is asked last

_context: zmq.Context | None = None
_context_pid = 0
_context_lock = threading.Lock()


def _shared_context() -> zmq.Context:
    """One ZeroMQ context per process (and a fresh one in a forked child)."""
    global _context, _context_pid
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            _context = zmq.Context()
            _context_pid = os.getpid()
        return _context


def _address(seed: str) -> str:
    seed = seed.strip()
    return seed if "://" in seed else f"tcp://{seed}"


def shown_key(key: bytes) -> str:
    """A key as its user typed it, for messages: UTF-8, undecodable bytes as ``\\xNN``."""
    return key.decode("utf-8", "backslashreplace")


class _Pending:
    """A submitted request waiting for its reply."""

    __slots__ = ("future", "op", "key", "deadline")

    def __init__(self, future: Future, op: str, key: bytes, deadline: float) -> None:
        self.future = future
        self.op = op
        self.key = key
        self.deadline = deadline


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
    ) -> None:
        """``curve``: this client's key pair and the cluster public key, for a cluster
        that runs CurveZMQ (see ``zkv.net.security``)."""
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
        self.ring_refresh = ring_refresh
        self.curve = curve
        self._ctx = _shared_context()
        self._poller = zmq.Poller()
        self._sockets: dict[str, zmq.Socket] = {}
        self._socket_address: dict[zmq.Socket, str] = {}
        self._socket_born: dict[zmq.Socket, float] = {}  # when each socket began connecting
        self._ring: Ring | None = None
        self._ring_info: tuple = ()
        self._node_address: dict[str, str] = {}  # node id -> address, from the ring
        self._routes: dict[tuple[str, ...], list[str]] = {}  # replica ids -> addresses to try
        self._suspects: dict[str, float] = {}  # address -> until when it is asked last
        self._ring_at = -math.inf  # monotonic time the ring was last learned
        self._ring_stale = True
        self._ring_query: int | None = None
        self._ring_query_at = -math.inf
        self._ring_cursor = itertools.count()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}  # submitted requests by req_id
        self._expired_at = 0.0  # when poll last looked for overdue requests
        self._closed = False
        for address in self.seeds:
            self._socket(address)

    @classmethod
    def from_cluster_dir(cls, data_dir: str | os.PathLike, **kwargs: object) -> Client:
        """A client of the local cluster in ``data_dir`` (``zkv cluster up``): its nodes'
        addresses and, for a ``--curve`` cluster, its client key, from ``cluster.json``.
        Other arguments as for ``Client``."""
        from zkv.supervisor import ControlError, cluster_connection

        try:
            addresses, curve = cluster_connection(data_dir)
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
        if self._ring is None:
            raise Unavailable("the cluster reported an empty ring")
        return list(self._ring.locate(kb))

    def ring(self) -> dict[str, str]:
        """The ring's members as {node id: address}, freshly learned from a node."""
        self._fetch_ring(time.monotonic() + self.timeout)
        return dict(self._node_address)

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
            order = self._suspects_last(list(dict.fromkeys(
                [*self.seeds, *sorted(self._node_address.values())])))
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
                    self._suspect(target, now)
                continue
            if waiting == 0:  # nobody connected: wait for one to be, then go round again
                self._pause(order, min(CONNECT_WAIT * 2 ** rounds, MAX_ROUND_PAUSE, remaining))
                rounds += 1
                tried = 0
                continue
            until = ask_next_at if tried < len(order) else deadline
            for message in self._receive(min(until, deadline) - now):
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
        now = time.monotonic()
        self._maybe_refresh_ring(now)
        future: Future = Future()
        req_id = next(self._ids)
        budget_ms = max(1, int(limit * 900))  # the coordinator answers before we give up
        frame = encode(ClientRequest(req_id, op, kb, vb, level, budget_ms, eb))
        for address in self._route(kb):
            if self._send(address, frame):
                self._pending[req_id] = _Pending(future, op, kb, now + limit)
                return future
            self._suspect(address, now)
        future.set_exception(Unavailable(f"{op} {shown_key(kb)}: no node is connected"))
        return future

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
        return before - len(self._pending)

    @property
    def in_flight(self) -> int:
        """Submitted requests whose futures are not settled yet."""
        return len(self._pending)

    def _settle(self, pending: _Pending, message: ClientReply) -> None:
        status, future = message.status, pending.future
        if status == "ok":
            future.set_result(message.value if pending.op == "get" else
                              True if pending.op == "cas" else None)
        elif status == "condition_failed":
            future.set_result(False)
        elif status == "not_found":
            if pending.op == "get":
                future.set_result(None)
            else:
                future.set_exception(KeyNotFound(f"{pending.op} {shown_key(pending.key)}: "
                                                 f"the key "
                                                 "holds no value"))
        elif status == "exists":
            future.set_exception(KeyExists(f"create {shown_key(pending.key)}: the key already "
                                           "holds a value"))
        elif status == "invalid":
            future.set_exception(InvalidRequest(f"{pending.op} {shown_key(pending.key)}: "
                                                f"{message.detail}"))
        else:
            self._ring_stale = True
            future.set_exception(Unavailable(f"{pending.op} {shown_key(pending.key)}: "
                                             f"{message.detail or status}"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pending in self._pending.values():
            pending.future.set_exception(Unavailable("the client was closed"))
        self._pending.clear()
        for sock in self._sockets.values():
            sock.close(0)
        self._sockets.clear()
        self._socket_address.clear()
        self._socket_born.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

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
        if consistency not in CONSISTENCY_LEVELS:
            raise InvalidRequest(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, "
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
        now = time.monotonic()
        deadline = now + limit
        patience = limit / 3  # silence after which another coordinator is asked too
        # The coordinator gives up this much before us, so its "unavailable" reaches us in
        # time; that late answer leaves under patience / 2, which ends the call rather than
        # retrying (a timed-out write may have landed, and a retried create would then
        # report KeyExists). Quick refusals come before any write and are retried.
        margin = min(max(0.1 * limit, 0.15), patience / 2)
        self._maybe_refresh_ring(now)
        order = self._route(kb)
        req_id = next(self._ids)
        tried = 0  # how many of ``order`` have been tried
        waiting = 0  # coordinators holding the request that have not answered
        refused = ""  # the last "unavailable" answer, if any
        rounds = 0  # times every node was tried
        asked = ""  # the node asked last
        ask_next_at = now
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                detail = f"; last answer: {refused}" if refused else ""
                raise Unavailable(f"{op} {shown_key(kb)}: no answer at {level} "
                                  f"within {limit:g}s{detail}")
            if now >= ask_next_at:
                if waiting and asked:
                    self._suspect(asked, now)  # silent for ``patience``: ask it last for a while
                    asked = ""
                if waiting and op != "get":
                    # Never a second coordinator for a write: the silent one may still run
                    # it later (a paused node takes its queued requests when it wakes), with
                    # a version above every write acknowledged meanwhile (found by zkv chaos).
                    ask_next_at = deadline
                elif tried < len(order):
                    address = order[tried]
                    tried += 1
                    budget_ms = max(1, int((remaining - min(margin, remaining / 2)) * 1000))
                    frame = encode(ClientRequest(req_id, op, kb, vb, level, budget_ms, eb))
                    if self._send(address, frame):
                        waiting += 1
                        asked = address
                        ask_next_at = now + patience
                    else:
                        self._suspect(address, now)
                    continue
                if waiting == 0:
                    # Every node refused or is unreachable. That may change before the
                    # deadline (a node finishes joining, a replica restarts): pause, then
                    # go round again with a fresh ring.
                    pause = min(CONNECT_WAIT * 2 ** rounds, MAX_ROUND_PAUSE, remaining)
                    rounds += 1
                    self._maybe_refresh_ring(now)
                    self._pause(order, pause)
                    tried = 0
                    order = self._route(kb)
                    continue
                ask_next_at = deadline
            for message in self._receive(min(ask_next_at, deadline) - now):
                if type(message) is not ClientReply or message.req_id != req_id:
                    if type(message) is ErrorReply and waiting:
                        raise InvalidRequest(f"{op} {shown_key(kb)}: a node refused the request: "
                                             f"{message.reason}")
                    continue
                status = message.status
                if status in ("ok", "condition_failed"):
                    return status, message.value
                if status == "unknown":
                    # The write may have landed: never retried elsewhere as if it had not.
                    raise Unavailable(f"{op} {shown_key(kb)}: outcome unknown: {message.detail}")
                if status == "not_found":
                    if op == "get":
                        return status, None
                    raise KeyNotFound(f"{op} {shown_key(kb)}: the key holds no value")
                if status == "exists":
                    raise KeyExists(f"create {shown_key(kb)}: the key already holds a value")
                if status == "invalid":
                    raise InvalidRequest(f"{op} {shown_key(kb)}: {message.detail}")
                # unavailable: this coordinator could not reach the level; another may
                refused = message.detail or status
                waiting = max(0, waiting - 1)
                self._ring_stale = True
                if deadline - time.monotonic() < patience / 2:
                    raise Unavailable(f"{op} {shown_key(kb)}: {refused}")
                if waiting == 0:
                    ask_next_at = time.monotonic()

    def _route(self, key: bytes) -> list[str]:
        """Addresses to try for ``key``: its replicas (primary first), then every other node."""
        ring = self._ring
        if ring is None:
            return self._suspects_last(self._everyone(()))
        replicas = ring.locate(key)
        order = self._routes.get(replicas)
        if order is None:
            order = self._routes[replicas] = self._everyone(replicas)
        if self._suspects:
            return self._suspects_last(order)
        return order

    def _suspect(self, address: str, now: float) -> None:
        """A node that did not answer or is not connected: ask it last for a while."""
        self._suspects[address] = now + SUSPECT_FOR
        self._ring_stale = True

    def _suspects_last(self, order: list[str]) -> list[str]:
        now = time.monotonic()
        for address, until in list(self._suspects.items()):
            if until <= now:
                del self._suspects[address]
        suspects = self._suspects
        return ([a for a in order if a not in suspects] + [a for a in order if a in suspects])

    def _everyone(self, first: Iterable[str]) -> list[str]:
        order: list[str] = []
        for node_id in first:
            address = self._node_address.get(node_id)
            if address and address not in order:
                order.append(address)
        for address in itertools.chain(sorted(self._node_address.values()), self.seeds):
            if address not in order:
                order.append(address)
        return order

    # ----------------------------------------------------------------- the ring

    def _maybe_refresh_ring(self, now: float) -> None:
        due = self._ring_stale or now - self._ring_at >= self.ring_refresh
        if due and (self._ring_query is None or now - self._ring_query_at >= RING_QUERY_RETRY):
            self._ask_ring(now)

    def _ask_ring(self, now: float) -> bool:
        """Send a RingQuery to the next reachable node; the answer is taken whenever it comes."""
        candidates = self._everyone(())
        start = next(self._ring_cursor)
        for i in range(len(candidates)):
            address = candidates[(start + i) % len(candidates)]
            req_id = next(self._ids)
            if self._send(address, encode(RingQuery(req_id))):
                self._ring_query = req_id
                self._ring_query_at = now
                return True
        return False

    def _fetch_ring(self, deadline: float) -> None:
        """Learn the ring now (for locate/ring); raises Unavailable if no node answers."""
        self._ring_at = -math.inf
        self._ring_query = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise Unavailable("no node answered a ring query in time")
            if self._ring_query is None or now - self._ring_query_at >= RING_QUERY_RETRY:
                if not self._ask_ring(now):
                    self._wait_writable(self._everyone(()), min(CONNECT_WAIT, deadline - now))
                    continue
            for _ in self._receive(min(deadline, self._ring_query_at + RING_QUERY_RETRY) - now):
                pass
            if self._ring_at > now:
                return

    def _learn_ring(self, info: RingInfo) -> None:
        self._ring_query = None
        self._ring_at = time.monotonic()
        self._ring_stale = False
        shape = (tuple(tuple(m) for m in info.members), info.replicas, info.vnodes)
        if shape == self._ring_info or not info.members:
            return
        self._ring_info = shape
        self._node_address = {node_id: address for node_id, address in info.members}
        self._ring = Ring(self._node_address, info.replicas, info.vnodes)
        self._routes.clear()
        keep = set(self._node_address.values()) | set(self.seeds)
        for address in keep:
            self._socket(address)
        for address in set(self._sockets) - keep:
            sock = self._sockets.pop(address)
            self._poller.unregister(sock)
            del self._socket_address[sock]
            del self._socket_born[sock]
            sock.close(0)

    # ----------------------------------------------------------------- sockets

    def _socket(self, address: str) -> zmq.Socket:
        sock = self._sockets.get(address)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a node that is not there
            if self.curve is not None:
                self.curve.client(sock)
            sock.connect(address)
            self._sockets[address] = sock
            self._socket_address[sock] = address
            self._socket_born[sock] = time.monotonic()
            self._poller.register(sock, zmq.POLLIN)
        return sock

    def _send(self, address: str, frame: bytes) -> bool:
        """Queue ``frame`` to the node at ``address``; False if it is not connected. A
        socket created moments ago gets a short wait for its first connection."""
        sock = self._socket(address)
        try:
            sock.send(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            pass
        young = self._socket_born[sock] + CONNECT_GRACE - time.monotonic()
        if young > 0 and sock.poll(math.ceil(young * 1000), zmq.POLLOUT):
            try:
                sock.send(frame, zmq.NOBLOCK)
                return True
            except zmq.Again:
                pass
        return False

    def _pause(self, addresses: list[str], seconds: float) -> None:
        """Wait ``seconds`` (taking any ring update that arrives), or, when no node in
        ``addresses`` is connected, only until one connects."""
        poller = zmq.Poller()
        for address in addresses:
            poller.register(self._socket(address), zmq.POLLOUT)
        if not poller.poll(0):
            poller.poll(max(0, int(seconds * 1000)))
            return
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._receive(left)

    def _wait_writable(self, addresses: list[str], seconds: float) -> None:
        poller = zmq.Poller()
        for address in addresses:
            poller.register(self._socket(address), zmq.POLLOUT)
        poller.poll(max(0, int(seconds * 1000)))

    def _receive(self, seconds: float) -> list:
        """Messages that arrive within ``seconds`` (all already queued ones at least)."""
        ready = self._poller.poll(max(0, math.ceil(seconds * 1000)))
        messages = []
        ring_info = None
        for sock, _ in ready:
            if self._suspects:
                self._suspects.pop(self._socket_address[sock], None)  # it answers again
            while True:
                try:
                    frame = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    message = decode(frame)
                except DecodeError:
                    continue
                if type(message) is RingInfo:
                    if message.req_id == self._ring_query:
                        ring_info = message
                    continue
                if type(message) is ClientReply and message.req_id in self._pending:
                    self._settle(self._pending.pop(message.req_id), message)
                    continue
                messages.append(message)
        if ring_info is not None:  # after the loop: learning may close sockets in ``ready``
            self._learn_ring(ring_info)
        return messages
