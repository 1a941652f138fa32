"""The ZeroMQ driver: one OS process runs one ``Node`` over real sockets and LMDB.

Sockets (ports from ``zkv.config``):

- ROUTER bound on ``port``: requests from clients and messages from peers. A
  peer sends one turn's messages to this node as one batch (``messages.join``:
  one frame of many messages) after a first frame that names the sender
  (``PEER_MARK`` + node id); replies to a client leave the same way, without
  the mark, and a pipelining client sends its queued requests so too. Frames
  of single messages, and several frames in one ZeroMQ message, are read as
  well. Peers and
  clients alike connect under routing identities ZeroMQ makes up: a chosen
  identity would be a name anyone could take, and with ``ROUTER_HANDOVER`` a
  connection under a taken name is left open but never read again (a zombie),
  so an impostor could cut a peer off for good; handover is off. Senders that
  connect under a chosen identity and no mark (older nodes, tests) are still
  taken as that peer.
  Without CurveZMQ a claimed node id is believed. With it, a frame is a peer's
  only if the cluster key sent it (its authenticated User-Id, see
  ``zkv.net.security``); any other key is a client, whatever it claims. A
  client may send ``ClientRequest``, ``DirectRead``, ``RingQuery`` and an
  ``AdminRequest`` for ``status``; a peer message from a client is dropped and
  counted (``peer_message_refused`` in the event log and in
  ``zkv_events_total``), and an operator's command (decommission, remove) is
  refused unless the cluster key sent it (``command_refused``).
- PUB bound on ``port + 1``: this node's gossip.
- SUB connected to the PUB of every member the node wants gossip from
  (``Node.subscriptions()``), reconciled after every loop turn.
- One DEALER per peer address for point-to-point
  messages. Sends never block: a message to a peer whose queue is full is
  dropped, and the protocol resends what matters.

One loop turn: wait for a frame or the node's next timer; drain every ready
frame (up to a cap) and the due timers through ``Node.step``; commit the store
once (one LMDB transaction, one fsync: group commit); then send. A message
that acknowledges or reveals stored data (a write or hand-off ack, a read
reply, a client reply) therefore never leaves before the write behind it is
durable, and SIGKILL at any moment loses no acknowledged write. Requests that
acknowledge nothing (``ReadRequest``, ``WriteRequest``, ``Prepare``) go out before the
commit, so a coordinator's own fsync overlaps its replicas' work.

SIGTERM or SIGINT: the node announces it is leaving, finishes the operations it
coordinates (up to ``shutdown_grace`` seconds), commits, closes, exits 0.

Every socket has ``ZMQ_MAXMSGSIZE`` (``frame_limits``): ZeroMQ reads a frame's
length before its body and drops the connection when the length is over the
cap, so an oversized frame is never buffered. The cap is per frame (per part of
a multipart message), not per ZeroMQ message; ZeroMQ has no cap on the number
of parts, so it bounds what one frame may cost, and CurveZMQ bounds who may
send at all.

Besides the event log (``events.jsonl``) the node keeps ``node.json`` in its
data directory: id, addresses, pid, incarnation and status (``ready`` once the
sockets are bound and the loop runs, ``stopped`` after a clean exit).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import zmq

from zkv.config import (
    NODE_FILE,
    NodeSettings,
    gossip_address,
    is_node_id,
    node_address,
    store_path,
)
from zkv.core.actions import (
    Action,
    ClientCall,
    Deliver,
    Input,
    Publish,
    Reply,
    Send,
    Shutdown,
    Tick,
)
from zkv.core.config import NodeConfig
from zkv.core.messages import (
    JOIN_BYTES,
    MAX_BATCH,
    MAX_FRAME,
    AdminReply,
    AdminRequest,
    ClientReply,
    ClientRequest,
    DecodeError,
    DirectRead,
    DirectRecord,
    ErrorReply,
    Gossip,
    Message,
    RingInfo,
    RingQuery,
    decode,
    decode_batch,
    encode,
    in_batches,
    join,
)
from zkv.core.node import Node
from zkv.core.stabilizer import BATCH_BYTES
from zkv.core.turn import boot, end_turn
from zkv.exit_codes import EXIT_DECOMMISSIONED, EXIT_HALTED
from zkv.jsonfile import write_json_atomic
from zkv.native import describe
from zkv.net.eventlog import OP_EVENTS, EventLog
from zkv.net.metrics import NodeMetrics
from zkv.net.security import KeyFileError, NodeSecurity
from zkv.storage.base import Store

DRAIN_CAP = 1000  # ZeroMQ messages taken from one socket per loop turn
# A peer batch's first frame: this byte and the sender's node id. No CBOR array (every
# message is one) starts with it, so no single message is mistaken for it.
PEER_MARK = b"\0"
PEER_SNDHWM = 1000  # messages queued to one peer before new ones are dropped
MAX_POLL = 1.0  # seconds; the loop wakes at least this often
SAMPLE_INTERVAL = 0.5  # seconds between metric samples (and dashboard snapshots)
PUB_LINGER_MS = 500  # time to flush the last ("left") gossip at exit

# What may leave before the turn's commit is zkv.core.turn's to say (BEFORE_COMMIT).
_CLIENT_MESSAGES = (ClientRequest, DirectRead, RingQuery, AdminRequest)
# Messages only ever sent to clients: arriving at a node they are forged or misrouted.
_ANSWERS_TO_CLIENTS = (ClientReply, DirectRecord, RingInfo, ErrorReply, AdminReply)


# Frame sizes (ZMQ_MAXMSGSIZE): see ``frame_limits``.
MESSAGE_OVERHEAD = 1024  # CBOR of a message beside its key and values: ids, a version...
RECORD_OVERHEAD = 256  # per record of a hand-off beside its key and value (a record's
                       # version, node id of at most 64 bytes, origin and headers: < 200)
GOSSIP_FRAME = 8 * 1024 * 1024  # a membership table: ~350 bytes a member, >20,000 members
SUBSCRIPTION_FRAME = 1024  # what a PUB ever receives: subscriptions (zkv's are one byte)


@dataclasses.dataclass(frozen=True, slots=True)
class FrameLimits:
    """The largest frame each of a node's sockets accepts (``ZMQ_MAXMSGSIZE``)."""

    request: int  # ROUTER: client requests and peer messages
    reply: int  # DEALERs: nothing is expected back; at most an error or a client reply
    gossip: int  # SUB: one membership table per frame
    subscription: int  # PUB: subscriptions only


def frame_limits(config: NodeConfig) -> FrameLimits:
    """Caps from the node's limits: the largest frame a well-behaved sender ever sends
    each socket. ZeroMQ applies them per frame; a peer's batch is one frame
    (``join``) of at most ``JOIN_BYTES`` unless one message alone is larger, so the
    batch size adds nothing beyond the largest message.

    The ROUTER takes both clients and peers. A client's frame is one request: the
    key and, for a cas, two values. A peer's is one message: the largest bounded by
    the limits is a hand-off (up to ``BATCH_BYTES`` of records, or one record when
    a value is larger); but an anti-entropy listing (``SyncKeys``, ``SyncPull``)
    names every key of one ring segment, which the limits do not bound, so peer
    frames may reach the codec's own limit (``MAX_FRAME``). A peer socket of its
    own, or listings split into bounded pieces, would let clients get the tighter
    cap of their requests (see ``zkv.net.security`` for why peers share the socket).
    """
    record = config.max_key + config.max_value
    client_request = config.max_key + 2 * config.max_value + MESSAGE_OVERHEAD
    handoff = (max(BATCH_BYTES, record) + config.handoff_batch * RECORD_OVERHEAD
               + MESSAGE_OVERHEAD)
    return FrameLimits(
        request=max(client_request, handoff, MAX_FRAME),
        reply=record + MESSAGE_OVERHEAD,
        gossip=GOSSIP_FRAME,
        subscription=SUBSCRIPTION_FRAME,
    )


def open_store(settings: NodeSettings) -> Store:
    from zkv.storage.lmdb_store import LmdbStore

    return LmdbStore(store_path(settings.data_dir), map_size=settings.map_size,
                     max_map_size=settings.max_map_size, sync=settings.sync,
                     cache_entries=settings.record_cache // 1024, cache_bytes=settings.record_cache)


class StartupError(Exception):
    """The node cannot start (a port is taken, the store cannot open); says why."""


class NodeProcess:
    """A node, its sockets, store, event log and metrics; ``run()`` is the loop."""

    def __init__(self, settings: NodeSettings, store: Store | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = dataclasses.replace(settings.node, wall_offset=time.time() - time.monotonic())
        self.node_id = config.node_id
        self.mark = PEER_MARK + config.node_id.encode()  # heads each batch to a peer
        self.events = EventLog(self.data_dir, config.node_id, settings.event_log_max_bytes)
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        self.sub = self.ctx.socket(zmq.SUB)
        self.security: NodeSecurity | None = None
        self.dealers: dict[str, zmq.Socket] = {}
        self.subscribed: set[str] = set()
        self.metrics: NodeMetrics | None = None
        self.store: Store | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.limits = frame_limits(config)
        self.rejected_frames = 0  # frames refused before reaching the node
        self.dropped_messages = 0
        self.step_errors = 0
        self.withheld_messages = 0  # replies and acks not sent: their writes were lost
        self._turn_failed = False
        self.halted = False  # a lost turn and no room to restart the node: the loop ends
        self.stop_requested = False
        try:
            self.security = self._start_security()
            self._bind()
            self.store = store if store is not None else self._open_store()
            try:
                self.node = boot(Node, config, self.store, time.monotonic())
            except Exception as exc:  # a bad config field, an unreadable meta record
                raise StartupError(f"cannot start the node: {exc}") from exc
            self._start_metrics()
        except BaseException:
            self.close()
            raise
        for seed in config.seeds:
            if seed != config.address:
                self._dealer(seed)

    # ----------------------------------------------------------------- setup

    def _start_security(self) -> NodeSecurity | None:
        s = self.settings
        if not s.curve:
            return None
        if s.secret_key is None or s.authorized_keys is None:  # the config requires them
            raise StartupError("CurveZMQ needs secret_key and authorized_keys")
        try:
            return NodeSecurity(self.ctx, s.secret_key, s.authorized_keys)
        except KeyFileError as exc:
            raise StartupError(f"cannot set up CurveZMQ: {exc}") from None

    def _bind(self) -> None:
        s = self.settings
        if self.security is not None:
            self.security.server(self.router)
            self.security.server(self.pub)
            self.security.client(self.sub)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 0)  # see the module docstring
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, self.limits.request)
        self.pub.setsockopt(zmq.LINGER, PUB_LINGER_MS)
        self.pub.setsockopt(zmq.MAXMSGSIZE, self.limits.subscription)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.MAXMSGSIZE, self.limits.gossip)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        for sock, port, what in ((self.router, s.port, "request"),
                                 (self.pub, s.gossip_port, "gossip")):
            try:
                sock.bind(node_address(s.host, port))
            except zmq.ZMQError as exc:
                raise StartupError(f"cannot bind the {what} socket on "
                                   f"{node_address(s.host, port)}: {exc}") from None

    def _open_store(self) -> Store:
        try:
            return open_store(self.settings)
        except Exception as exc:  # noqa: BLE001 - any failure to open is a startup error
            raise StartupError(f"cannot open the store in {store_path(self.data_dir)}: "
                               f"{exc}") from None

    def _start_metrics(self) -> None:
        port = self.settings.effective_metrics_port
        metrics = NodeMetrics(self._counters)
        if port is not None:
            try:
                metrics.serve(self.settings.http_bind, port, self.events.path)
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {self.settings.http_bind}:{port}: "
                                   f"{exc}") from None
        self.metrics = metrics

    def _counters(self) -> dict[str, int]:
        node = self.node
        store = self.store
        cache = getattr(store, "cache", None)  # (an LmdbStore's; other stores have none)
        return {
            "rejected_frames": self.rejected_frames + node.rejected_frames,
            "checksum_failures": store.corrupt_reads if store is not None else 0,
            "handoff_records": node.stabilizer.moved,
            "dropped_messages": self.dropped_messages,
            "step_errors": self.step_errors,
            "withheld_messages": self.withheld_messages,
            "ops_in_flight": len(node.coordinator.ops),
            "membership_refused": node.changes.refused,
            "fast_puts": node.coordinator.fast_writes,
            "fast_put_refused": node.coordinator.fast_refused,
            "record_cache_hits": cache.hits if cache is not None else 0,
            "record_cache_misses": cache.misses if cache is not None else 0,
            "direct_served": node.direct_served,
            "direct_refused": node.direct_refused,
        }

    def _dealer(self, address: str) -> zmq.Socket:
        sock = self.dealers.get(address)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)  # no chosen identity: see the docstring
            sock.setsockopt(zmq.LINGER, 0)
            # Messages queue (up to SNDHWM) while the connection is being made or remade:
            # a JoinRequest sent at start-up must not be lost to connection set-up, as the
            # core sends it only until the first gossip arrives (see Node._ask_to_join). A
            # restarted peer may then get a burst of old messages, which the protocol
            # tolerates (idempotent, versioned) like any delayed message.
            sock.setsockopt(zmq.SNDHWM, PEER_SNDHWM)
            sock.setsockopt(zmq.RCVHWM, 16)  # peers never answer on it; bound the waste
            sock.setsockopt(zmq.MAXMSGSIZE, self.limits.reply)
            if self.security is not None:
                self.security.client(sock)
            sock.connect(address)
            self.dealers[address] = sock
        return sock

    # ----------------------------------------------------------------- the loop

    def run(self) -> int:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        self._reconcile()
        self._write_node_file("ready")
        self._log("ready", {"address": self.settings.address, "pid": os.getpid(),
                            "build": describe(),
                            "incarnation": self.node.incarnation})
        self.events.flush()
        grace_end: float | None = None
        exit_code = 0
        quiet_after = 0.0
        next_sample = 0.0
        router, sub, wake = self.router, self.sub, self._wake_r.fileno()
        while True:
            node = self.node  # replaced when a lost turn forces a reboot
            now = time.monotonic()
            wait = min(max(node.next_wakeup() - now, 0.0), MAX_POLL)
            ready = dict(poller.poll(math.ceil(wait * 1000)))
            actions: list[Action] = []
            if sub in ready:  # gossip first: after a stall, the news before the backlog
                self._drain_sub(actions)
            if router in ready:
                self._drain_router(actions)
            if wake in ready:
                self._drain_wakeups()
            now = time.monotonic()
            if self.stop_requested and grace_end is None:
                grace_end = now + self.settings.shutdown_grace
                # A decommissioned node answers for the whole grace (its clients are
                # still finding out); a stopped one leaves once nothing is in flight.
                quiet_after = grace_end if exit_code else now + min(
                    self.settings.shutdown_grace, 2 * node.config.gossip_interval)
                self._step(Shutdown(), now, actions)
            if now >= node.next_wakeup():
                self._step(Tick(), now, actions)
            self._apply(actions)
            if self.halted:
                return self._finish(EXIT_HALTED)
            if node.left and exit_code == 0:
                # Out of the cluster: finish what it coordinates and, for the shutdown
                # grace, answer new requests "unavailable" (clients try another node)
                # rather than vanish under requests still on their way.
                exit_code = EXIT_DECOMMISSIONED
                self._log("decommissioned", {"epoch": node.changes.epoch})
                print(f"{node.node_id}: decommissioned: its data is on the other nodes and it "
                      f"has left the cluster; to add it again, start it on an empty data "
                      f"directory", file=sys.stderr, flush=True)
                self.stop_requested = True
            self._reconcile()
            if now >= next_sample:
                next_sample = now + SAMPLE_INTERVAL
                self._sample()
            if grace_end is not None and (now >= grace_end or (
                    now >= quiet_after and not node.coordinator.ops)):
                break
        return self._finish(exit_code)

    def _drain_router(self, actions: list[Action]) -> None:
        """Read what waits on the request socket (up to DRAIN_CAP messages) and hand
        it to the node in one step (``Node.step_all``)."""
        events: list[Input] = []
        self._read_router(events)
        if events:
            self._step_all(events, time.monotonic(), actions)

    def _read_router(self, events: list[Input]) -> None:
        router = self.router
        peer_key = self.security.peer_user_id if self.security is not None else None
        key: str | None = None
        for _ in range(DRAIN_CAP):
            try:
                if peer_key is None:
                    frames = router.recv_multipart(zmq.NOBLOCK)
                else:
                    parts = router.recv_multipart(zmq.NOBLOCK, copy=False)
                    key = _user_id(parts[-1])
                    frames = [part.bytes for part in parts]
            except zmq.Again:
                return
            identity = frames[0]
            payloads = frames[1:]
            if payloads and payloads[0][:1] == PEER_MARK:  # a peer's batch, naming its sender
                claimed = _node_id(payloads[0][1:])
                payloads = payloads[1:]
                if claimed is None or not payloads:
                    self._reject(identity, "a peer batch names a node id and holds at "
                                           "least one message")
                    continue
            else:
                claimed = _named_peer(identity)
            # Without CurveZMQ a claim is all there is to go by; with it, only the cluster
            # key speaks as a peer (see docs/security.md).
            sender = claimed if peer_key is None or key == peer_key else None
            if not payloads:
                self._reject(identity, "an empty message")
                continue
            if len(payloads) > MAX_BATCH:
                self._reject(identity, f"a batch of {len(payloads)} frames; "
                                       f"at most {MAX_BATCH} are read")
                continue
            # A peer sends one turn's messages as one batch, a pipelining client its
            # queued requests.
            for payload in payloads:
                try:
                    messages = decode_batch(payload, MAX_BATCH)
                except DecodeError as exc:
                    self._reject(identity, str(exc))
                    continue
                self._take(identity, sender, claimed, key, messages, events,
                           operator=peer_key is None or key == peer_key)

    def _take(self, identity: bytes, sender: str | None, claimed: str | None,
              key: str | None, messages: list[Message | DecodeError],
              events: list[Input], operator: bool) -> None:
        """Turn one frame's messages into the node's inputs, refusing what the sender
        may not send (``operator``: it may change the ring: without CurveZMQ anyone,
        with it the cluster key)."""
        for message in messages:
            if isinstance(message, DecodeError):
                self._reject(identity, str(message))
                continue
            if isinstance(message, _CLIENT_MESSAGES):
                if (not operator and type(message) is AdminRequest
                        and message.action != "status"):
                    self._refuse_command(identity, key, message)
                    continue
                event: Input = ClientCall(identity, message)
            elif isinstance(message, _ANSWERS_TO_CLIENTS):
                self._reject(identity, f"{type(message).__name__} is an answer to a "
                                       "client; no node accepts one")
                continue
            elif sender is None:
                self._refuse_peer_message(identity, claimed, key, message)
                continue
            else:
                event = Deliver(sender, message)
            events.append(event)

    def _drain_sub(self, actions: list[Action]) -> None:
        sub = self.sub
        events: list[Input] = []
        for _ in range(DRAIN_CAP):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                if len(frames) != 1:
                    raise DecodeError(f"gossip must be one frame, got {len(frames)}")
                message = decode(frames[0])
                if not isinstance(message, Gossip):
                    raise DecodeError(f"{type(message).__name__} on the gossip channel")
            except DecodeError as exc:
                self.rejected_frames += 1
                self._log("rejected_frame", {"channel": "gossip", "reason": str(exc)})
                continue
            events.append(Deliver(message.sender, message))
        if events:
            self._step_all(events, time.monotonic(), actions)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _reject(self, identity: bytes, reason: str) -> None:
        self.rejected_frames += 1
        self._log("rejected_frame", {"channel": "request", "reason": reason})
        self._answer_error(identity, reason)

    def _refuse_peer_message(self, identity: bytes, claimed: str | None, key: str | None,
                             message: Any) -> None:
        """A peer message from a client (with CurveZMQ: from any key but the cluster's,
        whatever node it claims to be): dropped, logged and counted."""
        kind = type(message).__name__
        self.rejected_frames += 1
        fields = {"claimed": claimed, "key": key, "message": kind}
        self._log("peer_message_refused", fields)
        if self.metrics is not None:
            self.metrics.observe_event("peer_message_refused", fields)
        self._answer_error(identity, f"{kind} is a peer message; clients may send "
                                     "ClientRequest, DirectRead and RingQuery")

    def _refuse_command(self, identity: bytes, key: str | None, message: AdminRequest) -> None:
        """An operator's command from a client key (with CurveZMQ): a key that may read
        and write must not also be able to take nodes out of the ring."""
        reason = ("an operator's command needs the cluster key; this connection "
                  "authenticated a client key")
        self.rejected_frames += 1
        fields = {"action": message.action, "node": message.node_id, "reason": reason,
                  "key": key}
        self._log("command_refused", fields)
        if self.metrics is not None:
            self.metrics.observe_event("command_refused", fields)
        self._answer(identity, AdminReply(message.req_id, "refused", reason, {}))

    def _answer_error(self, identity: bytes, reason: str) -> None:
        self._answer(identity, ErrorReply(-1, reason))

    def _answer(self, identity: bytes, message: Message) -> None:
        try:
            self.router.send_multipart([identity, encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _step(self, event: Input, now: float, actions: list[Action]) -> None:
        self._step_all([event], now, actions)

    def _step_all(self, events: list[Input], now: float, actions: list[Action]) -> None:
        try:
            actions.extend(self.node.step_all(events, now))
        except Exception as exc:  # noqa: BLE001 - a bug in the core: report it, keep serving
            self.step_errors += 1
            self._turn_failed = True
            kinds = sorted({f"{type(e).__name__}:{type(getattr(e, 'message', None)).__name__}"
                            for e in events})
            self._log("step_error", {"events": len(events), "kinds": kinds,
                                     "error": repr(exc)})
            traceback.print_exc(file=sys.stderr)

    def _apply(self, actions: list[Action]) -> None:
        """End the turn as ``zkv.core.turn.end_turn`` says: requests to replicas leave
        before the commit, everything else after it, or not at all if the turn's writes
        may be lost (then the node restarts from its store, or the process halts).

        Messages to one peer (or replies to one client) from one turn leave as one
        frame (``join``): one ZeroMQ frame instead of many, which is most of what
        the sockets and the kernel cost per message under load (some 7 µs a frame).
        """
        step_failed, self._turn_failed = self._turn_failed, False
        if not actions and not step_failed:
            return
        previous = self.node
        assert self.store is not None  # None only once closed
        commit_start = time.monotonic()
        end = end_turn(previous, self.store, actions, commit_start, step_failed=step_failed,
                       send_early=self._send_early, factory=Node)
        if self.metrics is not None:
            self.metrics.end_turn(time.monotonic() - commit_start)
        ts = time.time()
        log_ops = self.settings.log_ops
        for event in end.events:
            if log_ops or event.kind not in OP_EVENTS:
                self._log(event.kind, event.fields, ts)
            if self.metrics is not None:
                self.metrics.observe_event(event.kind, event.fields)
        self.withheld_messages += end.withheld
        self.events.flush()  # the log shows an outcome before anyone hears of it
        if end.halted:
            self.halted = True
            self.stop_requested = True
            print(f"{self.node_id}: halted: a turn's writes were lost and the store is too "
                  f"full to restart the node on it; free space, then start it again",
                  file=sys.stderr, flush=True)
            return
        self.node = end.node
        peers: dict[str, list[bytes]] = {}
        clients: dict[Hashable, list[bytes]] = {}
        for action in end.outputs:
            if type(action) is Send:
                peers.setdefault(action.address, []).append(encode(action.message))
            elif type(action) is Reply:
                client = action.client
                if isinstance(client, str):
                    client = client.encode()
                clients.setdefault(client, []).append(encode(action.message))
            elif type(action) is Publish:
                try:
                    self.pub.send(encode(action.message), zmq.NOBLOCK)
                except zmq.ZMQError:
                    self.dropped_messages += 1
        self._send_batches(peers)
        self._send_batches(clients, self._to_client)

    def _send_early(self, sends: list[Send]) -> None:
        batches: dict[str, list[bytes]] = {}
        for action in sends:
            batches.setdefault(action.address, []).append(encode(action.message))
        self._send_batches(batches)

    def _send_batches(self, batches: dict, send: Callable[[Any, bytes], None] | None = None
                      ) -> None:
        """Each destination's payloads joined into frames of at most MAX_BATCH messages
        and JOIN_BYTES (``in_batches``), one ZeroMQ message each; to peers (by
        address) unless ``send`` says otherwise. A full queue drops the batch."""
        send = send or self._to_peer
        for destination, payloads in batches.items():
            for batch in in_batches(payloads, MAX_BATCH, JOIN_BYTES):
                try:
                    send(destination, join(batch))
                except zmq.ZMQError:
                    self.dropped_messages += len(batch)

    def _to_peer(self, address: str, frame: bytes) -> None:
        self._dealer(address).send_multipart([self.mark, frame], zmq.NOBLOCK)

    def _to_client(self, client: bytes, frame: bytes) -> None:
        self.router.send_multipart([client, frame], zmq.NOBLOCK)

    def _reconcile(self) -> None:
        """Follow the members' gossip and keep one DEALER per member."""
        wanted = self.node.subscriptions()
        if wanted == self.subscribed:
            return
        for address in wanted - self.subscribed:
            self.sub.connect(gossip_address(address))
            self._dealer(address)
        keep = wanted | set(self.node.config.seeds)
        for address in self.subscribed - wanted:
            try:
                self.sub.disconnect(gossip_address(address))
            except zmq.ZMQError:
                pass
            if address not in keep:
                sock = self.dealers.pop(address, None)
                if sock is not None:
                    sock.close(0)
        self.subscribed = wanted

    def _sample(self) -> None:
        if self.metrics is None:
            return
        assert self.store is not None  # None only once closed
        members: dict[str, int] = {}
        for member in self.node.membership.members.values():
            members[member.status] = members.get(member.status, 0) + 1
        self.metrics.refresh(len(self.store), members, self.node.ring_gauges(),
                             store_path(self.data_dir))
        self.metrics.publish(self.node)  # the dashboard's snapshot (zkv.net.dashboard)

    def _log(self, kind: str, fields: dict[str, Any], ts: float | None = None) -> None:
        self.events.append(kind, fields, time.time() if ts is None else ts)

    def _write_node_file(self, status: str) -> None:
        s = self.settings
        port = s.effective_metrics_port
        info = {
            "id": self.node_id,
            "address": s.address,
            "gossip": gossip_address(s.address),
            "metrics": f"http://{s.host}:{port}/metrics" if port is not None else None,
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "incarnation": self.node.incarnation,
            "status": status,
            "updated": time.time(),
        }
        write_json_atomic(self.data_dir / NODE_FILE, info)

    # ----------------------------------------------------------------- stopping

    def request_stop(self) -> None:
        """Begin a graceful stop (safe from a signal handler)."""
        self.stop_requested = True

    def _finish(self, code: int = 0) -> int:
        assert self.store is not None  # None only once closed
        self.store.commit()
        self._log("stopped", {"pid": os.getpid(), "exit": code})
        self._write_node_file("decommissioned" if code == EXIT_DECOMMISSIONED else "stopped")
        self.close()
        return code

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        for sock in self.dealers.values():
            sock.close(0)
        self.dealers.clear()
        self.router.close(0)
        self.sub.close(0)
        self.pub.close()  # lingers briefly so the last gossip ("left") goes out
        if self.security is not None:
            self.security.close()
        self.ctx.term()
        if self.store is not None:
            self.store.close()
            self.store = None
        self.events.close()
        self._wake_r.close()
        self._wake_w.close()


def _user_id(frame: zmq.Frame) -> str | None:
    """The User-Id the ZAP handler gave the connection a frame came on (with CurveZMQ,
    the sender's public key as Z85 text)."""
    try:
        user_id = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return user_id if isinstance(user_id, str) else None


def _node_id(raw: bytes) -> str | None:
    """The node id a peer batch's first frame names, or None if it is not one."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    return text if is_node_id(text) else None


def _named_peer(identity: bytes) -> str | None:
    """The node id a sender connected under as its routing identity (how older nodes,
    and tests, speak as a peer), or None for one ZeroMQ named (a leading zero byte,
    which no chosen identity may have)."""
    if identity[:1] == b"\0":
        return None
    try:
        return identity.decode()
    except UnicodeDecodeError:
        return None


def serve(settings: NodeSettings) -> int:
    """Run one node until SIGTERM/SIGINT; returns the process exit code (0 on a clean stop)."""
    try:
        process = NodeProcess(settings)
    except StartupError as exc:
        print(f"zkv node {settings.node.node_id}: {exc}", file=sys.stderr)
        return 1
    previous: dict[int, Any] = {}
    old_wakeup = None
    in_main = _in_main_thread()
    if in_main:
        def on_signal(signum: int, frame: Any) -> None:
            process.request_stop()

        process._wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(process._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        _tune_gc()
    try:
        return process.run()
    finally:
        if in_main:
            for number, handler in previous.items():
                signal.signal(number, handler)
            signal.set_wakeup_fd(old_wakeup if old_wakeup is not None else -1)


# Young objects between two collections of the youngest generation (CPython's default
# is 700), and how many of those before each older one (10 and 10). Measured on 3
# nodes, 32 x 32 without fsync: nodes' CPU per put 372/345/323 -> 321/319/273 µs,
# per get 221/205/230 -> 198/184/207 µs (bench/results/ab-gc-20261203.md).
GC_THRESHOLDS = (50_000, 50, 1_000)


def _tune_gc() -> None:
    """Collect cycles less often: a node allocates a few dozen short-lived objects per
    message, nearly all freed by reference counting, yet at the default thresholds the
    collector ran every few messages and took 7-8 % of a node's CPU (perf, 32 x 32
    puts), mostly walking long-lived state. What start-up built is frozen out of every
    collection (``gc.freeze``); the process is the node's alone, so this is its choice."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
