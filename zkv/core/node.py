"""A zkv node as a pure state machine: ``step(event, now) -> actions``.

It ties membership, ring, coordinator, replica and stabilizer together and
never touches a socket, a thread or the clock; the simulator and the ZeroMQ
runtime drive the very same object.
"""

from __future__ import annotations

from typing import Any, Hashable

import cbor2

from zkv.core import replica
from zkv.core.actions import (
    Action,
    ClientCall,
    Deliver,
    Event,
    Input,
    Publish,
    Reply,
    Send,
    Shutdown,
    Tick,
)
from zkv.core.config import NodeConfig
from zkv.core.coordinator import Coordinator
from zkv.core.digests import DigestedStore
from zkv.core.membership import LEFT, Membership, StatusChange
from zkv.core.messages import (
    CONDITIONAL_OPS,
    ClientReply,
    ClientRequest,
    ErrorReply,
    Gossip,
    Handoff,
    HandoffAck,
    JoinRequest,
    MemberState,
    Message,
    Prepare,
    PrepareReply,
    ReadReply,
    ReadRequest,
    RingInfo,
    RingQuery,
    SyncDigest,
    SyncKeys,
    SyncPull,
    WriteReply,
    WriteRequest,
)
from zkv.core.ring import Ring
from zkv.core.stabilizer import Stabilizer
from zkv.core.versions import HybridClock, latest_wall_ms
from zkv.storage.base import Store, StoreFull


REPAIRS_IN_FLIGHT = 32  # Paxos rounds this node runs at once to settle fenced keys


class _StepOutbox:
    """Collects one step's actions; messages to this node itself are handled in the step."""

    __slots__ = ("node", "actions", "local")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.actions: list[Action] = []
        self.local: list[Message] = []

    def send(self, to: str, message: Message) -> None:
        if to == self.node.node_id:
            self.local.append(message)
            return
        address = self.node.membership.address(to)
        if address is not None:
            self.actions.append(Send(to, address, message))

    def reply(self, client: Hashable, message: Message) -> None:
        self.actions.append(Reply(client, message))

    def event(self, kind: str, **fields: Any) -> None:
        self.actions.append(Event(kind, fields))


class Node:
    def __init__(self, config: NodeConfig, store: Store, now: float) -> None:
        config.validate()
        self.config = config
        self.node_id = config.node_id
        self.address = config.address
        self.store = store = DigestedStore(store)
        incarnation = int.from_bytes(store.get_meta("incarnation") or b"\0", "big") + 1
        store.put_meta("incarnation", incarnation.to_bytes(8, "big"))
        self.incarnation = incarnation
        self.clock = HybridClock(self.node_id)
        self.membership = Membership(
            MemberState(self.node_id, self.address, incarnation, 0, "alive"),
            config.t_fail, config.t_remove, now,
        )
        known = self._load_members()
        self.membership.merge(known, now)
        # A node that founds the cluster is joined at once; any other waits for a peer's table.
        self.joined = self.address in config.seeds and not known
        self.ring = Ring(self.membership.ring_members(), config.replicas, config.vnodes)
        self.settling: list[tuple[Ring, float]] = []  # earlier rings, until their end time
        op_base = incarnation << 32
        self.coordinator = Coordinator(self.node_id, self.clock, op_base, config.wall_offset)
        self.stabilizer = Stabilizer(self.node_id, store, config.handoff_batch, op_base,
                                     config.wall_offset)
        self.stabilizer.prepare(self.ring, now)
        self.stopping = False
        # Coordinate only once every peer can have heard of us: see _hold_coordination.
        self._coordinate_from = now + config.t_fail if self.joined else float("inf")
        self._isolated = False
        self._gossip_turn = 0
        self._catch_up: list[str] = []  # peers to run anti-entropy with soon
        self.rejected_frames = 0
        self._next_gossip = now
        self._next_check = now + config.gossip_interval
        self._next_anti_entropy = now + config.anti_entropy_interval
        self._next_tombstone_gc = now + config.tombstone_gc_interval
        self._corrupt_seen = 0
        store.commit()

    # ----------------------------------------------------------------- driver interface

    def step(self, event: Input, now: float) -> list[Action]:
        out = _StepOutbox(self)
        if isinstance(event, Deliver):
            if not self._from_the_future(event, now, out):
                self._on_peer(event.sender, event.message, now, out)
        elif isinstance(event, ClientCall):
            self._on_client(event.client, event.message, now, out)
        elif isinstance(event, Tick):
            self._on_tick(now, out)
        elif isinstance(event, Shutdown):
            self._on_shutdown(now, out)
        while out.local:
            self._on_peer(self.node_id, out.local.pop(0), now, out)
        self._report_corruption(out)
        return out.actions

    def next_wakeup(self) -> float:
        times = [self._next_gossip, self._next_check, self._next_anti_entropy,
                 self._next_tombstone_gc]
        due = self.coordinator.next_wakeup(self.config.retry_interval)
        if due is not None:
            times.append(due)
        if self.stabilizer.sync_queue or self.stabilizer.has_work():
            times.append(0.0)  # at the next tick
        resend = self.stabilizer.next_resend(self.config.retry_interval)
        if resend is not None:
            times.append(resend)
        return min(times)

    def subscriptions(self) -> set[str]:
        return self.membership.subscriptions()

    def locate(self, key: bytes | str) -> tuple[str, ...]:
        return self.ring.locate(key)

    # ----------------------------------------------------------------- clients

    def _on_client(self, client: Hashable, msg: Message, now: float, out: _StepOutbox) -> None:
        if isinstance(msg, RingQuery):
            members = sorted((n, self.membership.address(n) or "") for n in self.ring.nodes)
            out.reply(client, RingInfo(msg.req_id, members, self.config.replicas,
                                       self.config.vnodes))
            return
        if not isinstance(msg, ClientRequest):
            self.rejected_frames += 1
            out.reply(client, ErrorReply(-1, f"unexpected {type(msg).__name__} from a client"))
            return
        problem = self._invalid(msg)
        if problem:
            self.rejected_frames += 1
            out.reply(client, ClientReply(msg.req_id, "invalid", None, problem))
            return
        if not self.joined or self.stopping or now < self._coordinate_from:
            out.reply(client, ClientReply(msg.req_id, "unavailable", None,
                                          "node is not coordinating (joining, rejoining "
                                          "or leaving)"))
            return
        if msg.consistency != "one" and not self.membership.has_majority():
            out.reply(client, ClientReply(msg.req_id, "unavailable", None,
                                          "node cannot see a majority of the cluster"))
            return
        sets = [r.locate(msg.key) for r, _ in self.settling] + [self.ring.locate(msg.key)]
        reachable = {n for s in sets for n in s
                     if n == self.node_id or self.membership.alive(n)}
        timeout = msg.timeout_ms / 1000 if msg.timeout_ms else self.config.default_timeout
        self.coordinator.start(client, msg, sets, reachable, now, timeout, out)

    def _invalid(self, msg: ClientRequest) -> str:
        if not msg.key:
            return "key must not be empty"
        if len(msg.key) > self.config.max_key:
            return f"key of {len(msg.key)} bytes exceeds the {self.config.max_key}-byte limit"
        if msg.op in ("put", "create", "update") and msg.value is None:
            return f"{msg.op} needs a value"
        for name, data in (("value", msg.value), ("expected value", msg.expected)):
            if data is not None and len(data) > self.config.max_value:
                return (f"{name} of {len(data)} bytes exceeds the "
                        f"{self.config.max_value}-byte limit")
        if msg.expected is not None and msg.op != "cas":
            return f"{msg.op} takes no expected value"
        if msg.op in CONDITIONAL_OPS and msg.consistency == "one":
            return (f"{msg.op} is decided by consensus and needs consistency quorum or all, "
                    "not one")
        return ""

    # ----------------------------------------------------------------- peers

    def _on_peer(self, sender: str, msg: Message, now: float, out: _StepOutbox) -> None:
        if isinstance(msg, ReadRequest):
            record, promise = replica.read(self.store, msg.key)
            out.event("replica_read", key=msg.key, op_id=msg.op_id,
                      version=list(record.version) if record else None)
            out.send(sender, ReadReply(msg.op_id, msg.key, record, promise))
        elif isinstance(msg, WriteRequest):
            self._replica_write(sender, msg, now, out)
        elif isinstance(msg, Prepare):
            self._replica_prepare(sender, msg, out)
        elif isinstance(msg, ReadReply):
            self.coordinator.on_read_reply(sender, msg, now, out)
        elif isinstance(msg, WriteReply):
            self.coordinator.on_write_reply(sender, msg, now, out)
        elif isinstance(msg, PrepareReply):
            self.coordinator.on_prepare_reply(sender, msg, now, out)
        elif isinstance(msg, Gossip):
            self._on_gossip(msg, now, out)
        elif isinstance(msg, JoinRequest):
            self._on_join(msg.member, now, out)
        elif isinstance(msg, Handoff):
            try:
                self.stabilizer.on_handoff(sender, msg, self.ring, now, out)
            except StoreFull as exc:
                out.event("store_full", detail=str(exc))
        elif isinstance(msg, HandoffAck):
            self.stabilizer.on_handoff_ack(sender, msg, now, out)
        elif isinstance(msg, SyncDigest):
            self.stabilizer.on_sync_digest(sender, msg, self.ring, now, out)
        elif isinstance(msg, SyncKeys):
            self.stabilizer.on_sync_keys(sender, msg)
        elif isinstance(msg, SyncPull):
            self.stabilizer.on_sync_pull(sender, msg, now, out)
        elif isinstance(msg, (ClientRequest, RingQuery)):
            self._on_client(sender, msg, now, out)
        else:
            self.rejected_frames += 1
            out.event("rejected_message", sender=sender, message=type(msg).__name__)

    def _replica_write(self, sender: str, msg: WriteRequest, now: float,
                       out: _StepOutbox) -> None:
        self.clock.observe(msg.record.version)
        try:
            refused_by = replica.accept(self.store, msg.key, msg.record)
        except StoreFull as exc:
            out.event("store_full", detail=str(exc), key=msg.key)
            return  # no acknowledgement: the coordinator counts this replica as silent
        out.event("replica_write", key=msg.key, version=list(msg.record.version),
                  tombstone=msg.record.tombstone, accepted=refused_by is None,
                  op_id=msg.op_id)
        if msg.op_id:
            out.send(sender, WriteReply(msg.op_id, msg.key, refused_by is None, refused_by))
        elif refused_by is not None:
            self.stabilizer.note_fenced(msg.key, now)  # a late read repair that was fenced

    def _replica_prepare(self, sender: str, msg: Prepare, out: _StepOutbox) -> None:
        self.clock.observe(msg.ballot)
        try:
            promised, record, conflict = replica.prepare(self.store, msg.key, msg.ballot)
        except StoreFull as exc:
            out.event("store_full", detail=str(exc), key=msg.key)
            return
        out.event("replica_prepare", key=msg.key, ballot=list(msg.ballot), promised=promised,
                  op_id=msg.op_id)
        out.send(sender, PrepareReply(msg.op_id, msg.key, promised, record, conflict))

    # ----------------------------------------------------------------- membership

    def _on_gossip(self, msg: Gossip, now: float, out: _StepOutbox) -> None:
        changes = self.membership.merge(msg.members, now)
        if not self.joined and msg.sender != self.node_id:
            # The first table a newcomer learns is not a ring change anyone acted on.
            self.joined = True
            self._hold_coordination(now, out)
            out.event("joined", via=msg.sender)
            self._membership_changed(changes, now, out, settle=False)
            return
        self._membership_changed(changes, now, out)

    def _on_join(self, member: MemberState, now: float, out: _StepOutbox) -> None:
        if not self.joined:
            return  # our own table is not complete yet; the newcomer asks again
        changes = self.membership.merge([member], now)
        self._membership_changed(changes, now, out)
        out.actions.append(Send(member.node_id, member.address,
                                Gossip(self.node_id, self.membership.gossip_table())))

    def _membership_changed(self, changes: list[StatusChange], now: float,
                            out: _StepOutbox, settle: bool = True) -> None:
        for change in changes:
            out.event("member_status", node=change.node_id, old=change.old, new=change.new)
        members = self.membership.ring_members()
        if members == self.ring.nodes:
            return
        old = self.ring
        self.ring = Ring(members, self.config.replicas, self.config.vnodes)
        if settle:
            self.settling.append((old, now + self.config.t_transition))
        out.event("ring_changed", members=sorted(members), added=sorted(members - old.nodes),
                  removed=sorted(old.nodes - members))
        self._save_members()
        self.stabilizer.on_ring_change(old, self.ring, now, out)

    def _load_members(self) -> list[MemberState]:
        raw = self.store.get_meta("members")
        if not raw:
            return []
        try:
            return [MemberState(*fields) for fields in cbor2.loads(raw)
                    if fields[0] != self.node_id]
        except Exception:
            return []  # an unreadable table only costs a rejoin through the seeds

    def _save_members(self) -> None:
        table = [[m.node_id, m.address, m.incarnation, 0, "alive"]
                 for m in self.membership.gossip_table() if m.node_id in self.ring.nodes]
        self.store.put_meta("members", cbor2.dumps(table))

    # ----------------------------------------------------------------- timers

    def _on_tick(self, now: float, out: _StepOutbox) -> None:
        cfg = self.config
        self.stabilizer.answer_sync_keys(self.ring, now, out)
        self.stabilizer.work(now, out)
        if now >= self._next_gossip:
            self._next_gossip = now + cfg.gossip_interval
            self.membership.beat()
            gossip = Gossip(self.node_id, self.membership.gossip_table())
            out.actions.append(Publish(gossip))
            self._push_gossip(gossip, out)
            if not self.joined or len(self.ring.nodes) == 1:
                self._ask_to_join(out)
            elif self._catch_up and not self.settling and not self.store.rebuilding:
                peer = self._catch_up.pop()
                if self.membership.alive(peer) and peer in self.ring.nodes:
                    self.stabilizer.start_round(self.ring, set(), now, out, peer=peer)
        if now >= self._next_check:
            self._next_check = now + cfg.gossip_interval
            self._membership_changed(self.membership.check(now), now, out)
            self._watch_majority(now, out)
            self.settling = [(r, t) for r, t in self.settling if t > now]
        self.coordinator.tick(now, cfg.retry_interval, out)
        self._repair_fenced(now, out)
        self.stabilizer.resend(now, cfg.retry_interval, self.ring, out)
        if now >= self._next_anti_entropy:
            self._next_anti_entropy = now + cfg.anti_entropy_interval
            if self.joined and not self.settling:
                self.stabilizer.collect_strays(self.ring)
                alive = {n for n in self.ring.nodes if self.membership.alive(n)}
                self.stabilizer.start_round(self.ring, alive, now, out)
        if now >= self._next_tombstone_gc:
            self._next_tombstone_gc = now + cfg.tombstone_gc_interval
            grace_ms = int((now + cfg.wall_offset - cfg.tombstone_grace) * 1000)
            self.stabilizer.collect_tombstones(self.ring, grace_ms)

    def _repair_fenced(self, now: float, out: _StepOutbox) -> None:
        """Settle keys whose newer records a promise kept out (see ``replica.merge``)
        with a Paxos round of this node's: it writes the newest state above the
        promise. Only once the promise is surely stale (any round that made it has
        long ended), and a few at a time."""
        fenced = self.stabilizer.fenced
        if not fenced or not self.joined or now < self._coordinate_from:
            return
        stale_before = now - 2 * self.config.default_timeout
        budget = REPAIRS_IN_FLIGHT - self.coordinator.repairs
        for key in [k for k, seen in fenced.items() if seen <= stale_before][:max(0, budget)]:
            del fenced[key]
            sets = [r.locate(key) for r, _ in self.settling] + [self.ring.locate(key)]
            if self.node_id not in sets[-1]:
                continue  # no longer ours to hold
            reachable = {n for s in sets for n in s
                         if n == self.node_id or self.membership.alive(n)}
            self.coordinator.repair(key, self.store.get_promise(key), sets, reachable, now,
                                    self.config.default_timeout, out)

    def _watch_majority(self, now: float, out: _StepOutbox) -> None:
        majority = self.membership.has_majority()
        if not majority and not self._isolated:
            self._isolated = True
            out.event("majority_lost")
        elif majority and self._isolated:
            self._isolated = False
            self._hold_coordination(now, out)
            out.event("majority_regained")

    def _hold_coordination(self, now: float, out: _StepOutbox) -> None:
        """Wait t_fail before coordinating after joining or regaining a majority.

        Peers may have removed this node while it was away, or not know it yet;
        its own ring is then larger than theirs, and a quorum taken on it could
        miss theirs. Within t_fail every peer hears its heartbeats and re-adds
        it, entering a transition whose joint quorums cover both rings.
        """
        self._coordinate_from = now + self.config.t_fail
        # Whatever was written meanwhile: catch up with every peer, one per gossip interval.
        self._catch_up = sorted(n for n in self.ring.nodes if n != self.node_id)

    def _push_gossip(self, gossip: Gossip, out: _StepOutbox) -> None:
        """Also send the table straight to one member, in turn.

        PUB/SUB only reaches nodes that already know us; this direct copy makes
        knowledge flow both ways, so two nodes that learned of each other
        unevenly (say, two newcomers that joined each other first) still meet.
        """
        others = sorted(n for n in self.membership.members if n != self.node_id
                        and self.membership.status(n) != LEFT)
        if not others:
            return
        self._gossip_turn = (self._gossip_turn + 1) % len(others)
        target = others[self._gossip_turn]
        address = self.membership.address(target)
        if address:
            out.actions.append(Send(target, address, gossip))

    def _ask_to_join(self, out: _StepOutbox) -> None:
        me = self.membership.me
        targets = set(self.config.seeds) | {
            a for n in self.ring.nodes if (a := self.membership.address(n))
        }
        for address in sorted(targets - {self.address}):
            out.actions.append(Send("", address, JoinRequest(me)))

    def _on_shutdown(self, now: float, out: _StepOutbox) -> None:
        self.stopping = True
        self.membership.leave()
        out.actions.append(Publish(Gossip(self.node_id, self.membership.gossip_table())))
        out.event("leaving")

    # ----------------------------------------------------------------- checks

    def _from_the_future(self, event: Deliver, now: float, out: _StepOutbox) -> bool:
        """Refuse a peer message carrying a version further ahead of this node's wall
        clock than ``max_version_ahead``: every version ever issued after it would
        lie below it, so its key would be unwritable and every clock that saw it
        pinned (see ``zkv.core.versions``). Clients never send versions."""
        cfg = self.config
        wall_ms = latest_wall_ms(event.message)
        limit_ms = int((now + cfg.wall_offset + cfg.max_version_ahead) * 1000)
        if wall_ms <= limit_ms:
            return False
        self.rejected_frames += 1
        out.event("future_version_refused", sender=event.sender,
                  message=type(event.message).__name__, wall_ms=wall_ms,
                  ahead_ms=wall_ms - int((now + cfg.wall_offset) * 1000))
        return True

    def _report_corruption(self, out: _StepOutbox) -> None:
        count = self.store.corrupt_reads
        if count == self._corrupt_seen:
            return
        self._corrupt_seen = count
        keys = list(getattr(self.store, "corrupt_keys", []))[-16:]
        out.event("corrupt_record", count=count, keys=keys)

    @property
    def left(self) -> bool:
        return self.membership.me.status == LEFT
