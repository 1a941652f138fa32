"""A zkv node as a pure state machine: ``step(event, now) -> actions``.

It ties membership (who is alive), the cluster map (who is in the ring, see
``ring_changes``), coordinator, replica and stabilizer together and never
touches a socket, a thread or the clock; the simulator and the ZeroMQ runtime
drive the very same object.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from hashlib import blake2b
from typing import Any

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
from zkv.core.cluster_map import ClusterMap, MapMember
from zkv.core.config import NodeConfig
from zkv.core.coordinator import Coordinator, Placement
from zkv.core.digests import DigestedStore
from zkv.core.lifecycle import Lifecycle, advance
from zkv.core.membership import LEFT, REMOVED, Membership, StatusChange
from zkv.core.messages import (
    CONDITIONAL_OPS,
    AdminReply,
    AdminRequest,
    ClientReply,
    ClientRequest,
    DirectRead,
    DirectRecord,
    EpochRefused,
    ErrorReply,
    Gossip,
    Handoff,
    HandoffAck,
    JoinRequest,
    MapAccept,
    MapAccepted,
    MapLearn,
    MapPrepare,
    MapPromise,
    MapQuery,
    MemberState,
    Message,
    Prepare,
    PrepareReply,
    ReadReply,
    ReadRequest,
    RingInfo,
    RingQuery,
    StreamChunk,
    StreamPull,
    SyncDigest,
    SyncKeys,
    SyncPull,
    WriteReply,
    WriteRequest,
)
from zkv.core.ring import Ring
from zkv.core.ring_changes import RingChanges
from zkv.core.stabilizer import Stabilizer
from zkv.model.tokens import token
from zkv.model.versions import HybridClock, latest_wall_ms
from zkv.storage.base import Store, StoreFull

REPAIRS_IN_FLIGHT = 32  # Paxos rounds this node runs at once to settle fenced keys
REPLICA_REQUESTS = (ReadRequest, WriteRequest, Prepare)


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
        address = self.node.address_of(to)
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
        self.instance = self._instance(now)
        self.clock = HybridClock(self.node_id)
        self.membership = Membership(
            MemberState(self.node_id, self.address, incarnation, 0, "alive", config.http_port),
            config.t_fail, config.t_remove, now,
        )
        op_base = incarnation << 32
        self.changes = RingChanges(self.node_id, self.instance, store, op_base,
                                   config.removal)
        cmap = self.changes.map
        # The first seed founds the cluster if its directory was never in one, after
        # t_fail without hearing of one: an empty directory may be a wiped member,
        # which must join the cluster it was in, not found another.
        founder = cmap is None and bool(config.seeds) and config.seeds[0] == self.address
        self._found_at = now + config.t_fail if founder else float("inf")
        if cmap is not None:
            self.membership.merge([MemberState(m.node_id, m.address, 0, 0, "alive")
                                   for m in cmap.members if m.node_id != self.node_id], now)
        self.ring = Ring(cmap.ring if cmap else (), config.replicas, config.vnodes)
        self.coordinator = Coordinator(self.node_id, self.clock, op_base, config.wall_offset)
        self.coordinator.placement = self._placement
        self.coordinator.fast_puts = config.fast_puts
        self.coordinator.fast_everywhere = bool(config.extra.get("fast_puts_everywhere"))
        self.coordinator.epoch = self.changes.epoch
        self.stabilizer = Stabilizer(self.node_id, store, config.handoff_batch, op_base,
                                     config.wall_offset)
        self.stabilizer.prepare(self.ring, now)
        # A restart doubts its map (see ``_doubt``); a decommissioned directory's data
        # moved away and it left the cluster: a restart on it ends at once (a wiped
        # directory may join again, as a new member).
        if store.get_meta("decommissioned"):
            self.lifecycle = Lifecycle.DECOMMISSIONED
        else:
            self.lifecycle = Lifecycle.CONFIRMING if self.joined else Lifecycle.OUTSIDE
        self._was_member = self.changes.member()
        # Voters that gossiped an epoch no newer than this node's since it entered
        # CONFIRMING; it coordinates once they are a majority.
        self._heard: set[str] = set()
        self._gossip_turn = 0
        # Peers to run anti-entropy with soon: after a restart, every one (what was
        # written while this node was down).
        self._catch_up = sorted(n for n in self.ring.nodes if n != self.node_id)
        # ``_placement``'s per-segment placements, for this map and member generation.
        self._placements: dict[Hashable, Placement] = {}
        self._placed_map: ClusterMap | None = None
        self._placed_generation = -1
        self._placed_majority: bool | None = None
        self.rejected_frames = 0
        self.direct_served = 0  # clients' direct reads answered with the record
        self.direct_refused = 0  # ... and not served (another epoch, a ring change)
        self._next_gossip = now
        self._next_check = now + config.gossip_interval
        self._next_anti_entropy = now + config.anti_entropy_interval
        self._next_tombstone_gc = now + config.tombstone_gc_interval
        self._corrupt_seen = 0
        self._last_step = now
        self._wakeup: float | None = None  # next_wakeup's answer until the next step

    def carry_counters(self, previous: Node) -> None:
        """Take over the totals of the node this one replaces after a lost turn
        (``zkv.core.turn``): exported counters never go back."""
        self.rejected_frames += previous.rejected_frames
        self.changes.refused += previous.changes.refused
        self.direct_served += previous.direct_served
        self.direct_refused += previous.direct_refused

    def _instance(self, now: float) -> int:
        """This data directory's instance number, drawn at its first start."""
        raw = self.store.get_meta("instance")
        if raw:
            return int.from_bytes(raw, "big")
        seed = f"{self.node_id}|{self.address}|{now!r}|{self.incarnation}".encode()
        instance = int.from_bytes(blake2b(seed, digest_size=6).digest(), "big")
        self.store.put_meta("instance", instance.to_bytes(8, "big"))
        return instance

    # ----------------------------------------------------------------- driver interface

    @property
    def joined(self) -> bool:
        """In the cluster map (ring or target) as this data directory."""
        return self.changes.member()

    @property
    def coordinating(self) -> bool:
        """Whether client requests are taken (see ``_on_client``)."""
        return self.lifecycle.coordinates

    @property
    def stopping(self) -> bool:
        return self.lifecycle is Lifecycle.STOPPING

    @property
    def decommissioned(self) -> bool:
        return self.lifecycle is Lifecycle.DECOMMISSIONED

    def _become(self, state: Lifecycle) -> None:
        self.lifecycle = advance(self.lifecycle, state)

    @property
    def in_transition(self) -> bool:
        """A ring change is under way: quorums span the old and the new replicas."""
        cmap = self.changes.map
        return cmap is not None and cmap.target is not None

    @property
    def cluster_map(self) -> ClusterMap | None:
        return self.changes.map

    def address_of(self, node_id: str) -> str | None:
        address = self.membership.address(node_id)
        if address is None and self.changes.map is not None:
            address = self.changes.map.address(node_id)
        return address

    def step(self, event: Input, now: float) -> list[Action]:
        return self.step_all((event,), now)

    def step_all(self, events: Sequence[Input], now: float) -> list[Action]:
        """The inputs of one instant (the messages a driver read in one go) in one step:
        each handled in order, as ``step`` would, with one outbox and one end-of-step
        pass for them all."""
        self._wakeup = None
        out = _StepOutbox(self)
        if (now - self._last_step > self.config.t_fail and events
                and not isinstance(events[0], Tick)):
            self._woke(now - self._last_step, now, out)
        self._last_step = now
        for event in events:
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
        self._after_step(now, out)
        self._report_corruption(out)
        return out.actions

    def next_wakeup(self) -> float:
        """When the node next needs a Tick; computed once per step (a driver asks
        several times per loop turn, and with many operations in flight it is a scan)."""
        if self._wakeup is None:
            self._wakeup = self._compute_wakeup()
        return self._wakeup

    def _compute_wakeup(self) -> float:
        times = [self._next_gossip, self._next_check, self._next_anti_entropy,
                 self._next_tombstone_gc, self._found_at]
        due = self.coordinator.next_wakeup(self.config.retry_interval)
        if due is not None:
            times.append(due)
        if self.stabilizer.sync_queue or self.stabilizer.has_work():
            times.append(0.0)  # at the next tick
        resend = self.stabilizer.next_resend(self.config.retry_interval)
        if resend is not None:
            times.append(resend)
        pulls = self.changes.streamer.next_resend(self.config.retry_interval)
        if pulls is not None:
            times.append(pulls)
        return min(times)

    def subscriptions(self) -> set[str]:
        subs = self.membership.subscriptions()
        if self.changes.map is not None:
            subs |= {m.address for m in self.changes.map.members if m.node_id != self.node_id}
        return subs

    def locate(self, key: bytes | str) -> tuple[str, ...]:
        return self.ring.locate(key)

    # ----------------------------------------------------------------- clients

    def _on_client(self, client: Hashable, msg: Message, now: float, out: _StepOutbox) -> None:
        if isinstance(msg, RingQuery):
            members = sorted((n, self.address_of(n) or "") for n in self.ring.nodes)
            out.reply(client, RingInfo(msg.req_id, members, self.config.replicas,
                                       self.config.vnodes, self.changes.epoch,
                                       not self.in_transition))
            return
        if isinstance(msg, AdminRequest):
            self._on_admin(client, msg, out)
            return
        if type(msg) is DirectRead:
            self._direct_read(client, msg, out)
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
        if not self.coordinating:
            out.reply(client, ClientReply(msg.req_id, "unavailable", None,
                                          "node is not coordinating (joining, confirming its "
                                          "cluster map after a restart, a stall or a "
                                          "partition, or stopping)"))
            return
        if msg.consistency != "one" and not self._majority():
            out.reply(client, ClientReply(msg.req_id, "unavailable", None,
                                          "node cannot see a majority of the cluster"))
            return
        timeout = msg.timeout_ms / 1000 if msg.timeout_ms else self.config.default_timeout
        self.coordinator.start(client, msg, self._placement(msg.key), now, timeout, out)

    def _direct_read(self, client: Hashable, msg: DirectRead, out: _StepOutbox) -> None:
        """Serve a client's direct read (``zkv.core.direct_read``): the stored record,
        only at this node's map epoch, with no ring change under way, for a key it is
        a replica of, and while it coordinates (its map confirmed). The answer leaves
        after the turn's commit, as every reply does, so it never shows a write the
        store could still lose."""
        if not msg.key or len(msg.key) > self.config.max_key:
            self.rejected_frames += 1
            out.reply(client, ClientReply(msg.req_id, "invalid", None,
                                          f"key must be 1 to {self.config.max_key} bytes"))
            return
        epoch = self.changes.epoch
        served = msg.epoch == epoch and self.coordinating
        if served:
            sets = self._placement(msg.key).sets
            served = len(sets) == 1 and self.node_id in sets[0]
        record = None
        if served:
            record = replica.read(self.store, msg.key)[0]
            self.direct_served += 1
        else:
            self.direct_refused += 1
        out.reply(client, DirectRecord(msg.req_id, served, record, epoch))

    def _placement(self, key: bytes) -> Placement:
        """The epoch, replica sets and reachable replicas an operation on ``key`` uses:
        the same for every key of a ring segment (of both rings, in a transition), so
        kept per segment until the map or a member's status changes."""
        cmap = self.changes.map
        if cmap is None:
            return Placement(self.changes.epoch, [], set())
        self._check_placed(cmap)
        ring, target = cmap.rings
        tok = token(key)
        segment = ring.segment_at(tok) if target is None else \
            (ring.segment_at(tok), target.segment_at(tok))
        placement = self._placements.get(segment)
        if placement is None:
            sets = cmap.replica_sets(key)
            reachable = {n for s in sets for n in s
                         if n == self.node_id or self.membership.alive(n)}
            placement = self._placements[segment] = Placement(cmap.epoch, sets, reachable)
        return placement

    def _check_placed(self, cmap: ClusterMap) -> None:
        """Forget the placements (and the majority) worked out for another map or
        before a member's status changed."""
        generation = self.membership.generation
        if cmap is not self._placed_map or generation != self._placed_generation:
            self._placements.clear()
            self._placed_majority = None
            self._placed_map, self._placed_generation = cmap, generation

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

    def _on_admin(self, client: Hashable, msg: AdminRequest, out: _StepOutbox) -> None:
        info = self.status()
        if msg.action == "status":
            out.reply(client, AdminReply(msg.req_id, "ok", "", info))
            return
        problem = self.changes.command(msg.action, msg.node_id, self.membership.alive)
        if problem:
            self.rejected_frames += 1
            out.event("command_refused", action=msg.action, node=msg.node_id, reason=problem)
            out.reply(client, AdminReply(msg.req_id, "refused", problem, info))
            return
        out.event("command", action=msg.action, node=msg.node_id)
        out.reply(client, AdminReply(msg.req_id, "pending", "", info))

    def ring_gauges(self) -> dict[str, int]:
        """The ring's metrics (``zkv.net.metrics.RING_GAUGES``)."""
        streamer = self.changes.streamer
        done, ranges = streamer.progress
        return {"epoch": self.changes.epoch, "ring_transition": int(self.in_transition),
                "ranges_degraded": self.changes.degraded_ranges, "stream_keys": streamer.keys,
                "stream_ranges_left": ranges - done}

    def status(self) -> dict[str, Any]:
        """What ``zkv cluster status`` shows of this node's view."""
        cmap = self.changes.map
        streamer = self.changes.streamer
        done, ranges = streamer.progress
        states = {}
        if cmap is not None:
            for m in cmap.members:
                if m.node_id in cmap.gone:
                    state = "removing"
                elif cmap.target is not None and m.node_id not in cmap.target:
                    state = "leaving"
                elif m.node_id not in cmap.ring:
                    state = "joining"
                else:
                    state = "normal"
                states[m.node_id] = {"state": state, "address": m.address,
                                     "status": self.membership.status(m.node_id) or "unknown"}
        return {
            "node": self.node_id, "epoch": self.changes.epoch,
            "member": self.joined, "members": states, "removal": self.config.removal,
            "streaming": {"epoch": streamer.epoch, "ranges_done": done, "ranges": ranges,
                          "keys": streamer.keys, "bytes": streamer.bytes,
                          "degraded_ranges": self.changes.degraded_ranges},
            "decommissioned": self.decommissioned,
            "lifecycle": self.lifecycle.value,
        }

    # ----------------------------------------------------------------- peers

    def _on_peer(self, sender: str, msg: Message, now: float, out: _StepOutbox) -> None:
        # The data path's four messages first, by exact type (the chain below is long).
        if type(msg) is WriteReply:
            self.coordinator.on_write_reply(sender, msg, now, out)
            return
        if type(msg) is ReadReply:
            self.coordinator.on_read_reply(sender, msg, now, out)
            return
        if type(msg) is WriteRequest:
            if self._admit(sender, msg, now, out):
                self._replica_write(sender, msg, now, out)
            return
        if isinstance(msg, REPLICA_REQUESTS) and not self._admit(sender, msg, now, out):
            return
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
        elif isinstance(msg, EpochRefused):
            if msg.cluster_map is not None:
                cmap = self.changes.decode_map(msg.cluster_map, sender, out)
                if cmap is not None:
                    self._adopt(cmap, now, out, sender)
            self.coordinator.on_epoch_refused(sender, msg, now, out)
        elif isinstance(msg, Gossip):
            self._on_gossip(msg, now, out)
        elif isinstance(msg, JoinRequest):
            self._on_join(msg, now, out)
        elif isinstance(msg, MapPrepare):
            base = self.changes.decode_map(msg.base, sender, out)
            if base is not None and msg.slot == base.epoch + 1:
                self._adopt(base, now, out, sender)  # a voter that is behind catches up
                self.changes.on_prepare(sender, msg, base, out)
        elif isinstance(msg, MapAccept):
            self.changes.on_accept(sender, msg, out)
        elif isinstance(msg, MapPromise):
            self.changes.on_promise(sender, msg, now, out)
        elif isinstance(msg, MapAccepted):
            decided = self.changes.on_accepted(sender, msg, now, out)
            if decided is not None:
                self._adopt(decided, now, out)
                self.changes.announce(decided, out)
        elif isinstance(msg, MapLearn):
            cmap = self.changes.decode_map(msg.value, sender, out)
            if cmap is not None:
                self._adopt(cmap, now, out, sender)
        elif isinstance(msg, MapQuery):
            self.changes.on_query(sender, msg, out)
        elif isinstance(msg, StreamPull):
            self.changes.on_pull(sender, msg, now, self.config.retry_interval, out)
        elif isinstance(msg, StreamChunk):
            try:
                self.changes.streamer.on_chunk(sender, msg, self.store, now, out)
            except StoreFull as exc:
                out.event("store_full", detail=str(exc))
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
        elif isinstance(msg, (ClientRequest, DirectRead, RingQuery, AdminRequest)):
            self._on_client(sender, msg, now, out)
        else:
            self.rejected_frames += 1
            out.event("rejected_message", sender=sender, message=type(msg).__name__)

    def _admit(self, sender: str, msg: ReadRequest | WriteRequest | Prepare, now: float,
               out: _StepOutbox) -> bool:
        """Epoch fencing of replica requests: refuse one built on an older map than
        this replica holds (with the map, so the coordinator retries on it); leave
        one built on a newer map for its resend, once this replica has fetched that
        map. A node outside the map (a wiped directory under an old id) answers
        nothing."""
        changes = self.changes
        if not self.joined:
            self.rejected_frames += 1
            return False
        if msg.epoch < changes.epoch:
            cmap = changes.map
            out.send(sender, EpochRefused(msg.op_id, msg.key, changes.epoch,
                                          cmap.encode() if cmap is not None else None))
            return False
        return not changes.behind(sender, msg.epoch, now, self.config.retry_interval, out)

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
        for change in changes:
            self._member_changed(change, out)
        if msg.sender != self.node_id:
            self.changes.on_gossip(msg.sender, msg.epoch, msg.streamed, msg.instance, out)
            self._confirm(msg.sender, msg.epoch, out)

    def _on_join(self, msg: JoinRequest, now: float, out: _StepOutbox) -> None:
        member = msg.member
        self.membership.merge([member], now)
        if not self.joined:
            return  # the newcomer asks again, of others too

        def forward(node_id: str) -> None:
            proposer = self.changes.proposer_id(self.membership.alive)
            if proposer is not None and proposer != self.node_id:
                out.send(proposer, msg)

        self.changes.on_join(MapMember(member.node_id, member.address, msg.instance), now,
                             out, forward)
        cmap = self.changes.map
        if cmap is not None:
            out.actions.append(Send(member.node_id, member.address, MapLearn(cmap.encode())))

    def _adopt(self, cmap: ClusterMap, now: float, out: _StepOutbox,
               sender: str | None = None) -> None:
        old = self.changes.map
        if self.changes.adopt(cmap, out, sender):
            self._adopted(old, cmap, now, out)

    def _adopted(self, old: ClusterMap | None, cmap: ClusterMap, now: float,
                 out: _StepOutbox) -> None:
        self.coordinator.epoch = cmap.epoch
        self.coordinator.forget_versions()
        for m in cmap.members:
            if m.node_id != self.node_id and self.membership.status(m.node_id) is None:
                self.membership.merge([MemberState(m.node_id, m.address, 0, 0, "alive")], now)
        if old is None or old.ring != cmap.ring:
            previous = self.ring
            self.ring = Ring(cmap.ring, self.config.replicas, self.config.vnodes)
            self.stabilizer.on_ring_change(previous, self.ring, now)
        member = self.changes.member()
        if member and not self._was_member:
            self._catch_up = sorted(n for n in self.ring.nodes if n != self.node_id)
            if self.lifecycle is Lifecycle.OUTSIDE:
                self._become(Lifecycle.SERVING)
            out.event("joined", epoch=cmap.epoch)
        elif self._was_member and not member:
            if not cmap.decommissioned(self.node_id, self.instance):
                if not self.stopping:
                    self._become(Lifecycle.OUTSIDE)
                out.event("removed", epoch=cmap.epoch)  # declared dead: ask to join again
            else:
                self._become(Lifecycle.DECOMMISSIONED)
                self.store.put_meta("decommissioned", cmap.epoch.to_bytes(8, "big"))
                self.membership.leave()
                out.actions.append(Publish(Gossip(self.node_id, self.membership.gossip_table(),
                                                  cmap.epoch, 0, self.instance)))
                out.event("decommissioned", epoch=cmap.epoch)
        self._was_member = member

    def _after_step(self, now: float, out: _StepOutbox) -> None:
        """Adopt a map this step's proposal decided; settle fenced stream merges."""
        for key in self.changes.streamer.fenced:
            self.stabilizer.note_fenced(key, now)
        self.changes.streamer.fenced.clear()

    # ----------------------------------------------------------------- timers

    def _on_tick(self, now: float, out: _StepOutbox) -> None:
        cfg = self.config
        self.stabilizer.answer_sync_keys(self.ring, now, out)
        self.stabilizer.work(now, out)
        transition = self.in_transition
        if self.changes.map is None and now >= self._found_at:
            self._found_at = float("inf")
            self._adopted(None, self.changes.found(self.address, cfg.replicas, cfg.vnodes, out),
                          now, out)
        if now >= self._next_gossip:
            self._next_gossip = now + cfg.gossip_interval
            self.membership.beat()
            gossip = Gossip(self.node_id, self.membership.gossip_table(), self.changes.epoch,
                            self.changes.streamed(), self.instance)
            out.actions.append(Publish(gossip))
            self._push_gossip(gossip, out)
            if self.lifecycle is Lifecycle.OUTSIDE:
                self._ask_to_join(out)
            elif self.lifecycle in (Lifecycle.ISOLATED, Lifecycle.CONFIRMING):
                # Cut off, or just restarted: perhaps the others moved to new addresses
                # (or this node did); the seeds' addresses are what the operator says now.
                for address in sorted(set(self.config.seeds) - {self.address}):
                    out.actions.append(Send("", address, gossip))
            elif self._catch_up and not transition and not self.store.rebuilding:
                peer = self._catch_up.pop()
                if self.membership.alive(peer) and peer in self.ring.nodes:
                    self.stabilizer.start_round(self.ring, set(), now, out, peer=peer)
        if now >= self._next_check:
            self._next_check = now + cfg.gossip_interval
            for change in self.membership.check(now, self._majority()):
                self._member_changed(change, out)
            self._watch_majority(now, out)
            self._confirm(None, 0, out)  # a cluster of one confirms itself
            if self.lifecycle not in (Lifecycle.STOPPING, Lifecycle.DECOMMISSIONED):
                self.changes.plan(now, self.membership.alive, self._dead, self._majority(),
                                  cfg.default_timeout, cfg.t_fail / 2, out)
        self.changes.tick(now, cfg.retry_interval, out)
        self.coordinator.tick(now, cfg.retry_interval, out)
        self._repair_fenced(now, out)
        self.stabilizer.resend(now, cfg.retry_interval, self.ring, out)
        if now >= self._next_anti_entropy:
            self._next_anti_entropy = now + cfg.anti_entropy_interval
            if self.joined and not transition:
                self.stabilizer.collect_strays(self.ring)
                alive = {n for n in self.ring.nodes if self.membership.alive(n)}
                self.stabilizer.start_round(self.ring, alive, now, out)
        if now >= self._next_tombstone_gc:
            self._next_tombstone_gc = now + cfg.tombstone_gc_interval
            grace_ms = int((now + cfg.wall_offset - cfg.tombstone_grace) * 1000)
            self.stabilizer.collect_tombstones(self.ring, grace_ms)

    def _woke(self, stalled: float, now: float, out: _StepOutbox) -> None:
        """The process was stalled (no step for longer than t_fail). Timers come
        before the queued event: the failure detector ages everyone it has not
        heard from; and the map is in doubt (``_doubt``)."""
        out.event("stall", seconds=round(stalled, 3))
        self.coordinator.forget_versions()
        if self.joined and self.lifecycle in (Lifecycle.SERVING, Lifecycle.ISOLATED,
                                              Lifecycle.CONFIRMING):
            self._doubt(out, "map_in_doubt")
        self._on_tick(now, out)

    def _member_changed(self, change: StatusChange, out: _StepOutbox) -> None:
        self.coordinator.forget_versions()  # others may write this node's keys now
        out.event("member_status", node=change.node_id, old=change.old, new=change.new)

    def _confirm(self, sender: str | None, epoch: int, out: _StepOutbox) -> None:
        """Count ``sender``'s gossip toward confirming this node's map (see ``_doubt``)."""
        cmap = self.changes.map
        if (self.lifecycle is not Lifecycle.CONFIRMING or cmap is None
                or epoch > self.changes.epoch):
            return
        heard = self._heard
        if sender is not None:
            heard.add(sender)
        voters = cmap.voters
        if 2 * len((heard | {self.node_id}) & voters) > len(voters):
            self._become(Lifecycle.SERVING)
            out.event("map_confirmed", epoch=self.changes.epoch)

    def _dead(self, node_id: str) -> bool:
        """Silent for longer than t_remove: the ``auto`` policy removes it."""
        return self.membership.status(node_id) == REMOVED

    def _majority(self) -> bool:
        cmap = self.changes.map
        if cmap is None:
            return False
        self._check_placed(cmap)  # asked for every request: kept like the placements
        if self._placed_majority is None:
            self._placed_majority = self.membership.majority_alive(cmap.voters)
        return self._placed_majority

    def _repair_fenced(self, now: float, out: _StepOutbox) -> None:
        """Settle keys whose newer records a promise kept out (see ``replica.merge``)
        with a Paxos round of this node's: it writes the newest state above the
        promise. Only once the promise is surely stale (any round that made it has
        long ended), and a few at a time."""
        fenced = self.stabilizer.fenced
        if not fenced or not self.coordinating:
            return
        stale_before = now - 2 * self.config.default_timeout
        budget = REPAIRS_IN_FLIGHT - self.coordinator.repairs
        for key in [k for k, seen in fenced.items() if seen <= stale_before][:max(0, budget)]:
            del fenced[key]
            placement = self._placement(key)
            if not any(self.node_id in s for s in placement.sets):
                continue  # no longer ours to hold
            self.coordinator.repair(key, self.store.get_promise(key), placement, now,
                                    self.config.default_timeout, out)

    def _watch_majority(self, now: float, out: _StepOutbox) -> None:
        if not self.joined:
            return
        majority = self._majority()
        state = self.lifecycle
        if not majority and state in (Lifecycle.SERVING, Lifecycle.CONFIRMING):
            self._become(Lifecycle.ISOLATED)
            out.event("majority_lost")
        elif majority and state is Lifecycle.ISOLATED:
            self._doubt(out, "majority_regained")

    def _doubt(self, out: _StepOutbox, why: str) -> None:
        """This node may hold an outdated map (it was stalled, or cut off from the
        majority): coordinate nothing until a majority of voters has gossiped an epoch
        no newer than its own (it learns any newer map on the way). Fencing alone
        would not do: replicas cut off with it hold the same outdated map, and a
        quorum of them may be all it reaches. Meanwhile, catch up with every peer
        (anti-entropy, one per gossip interval) on what was written."""
        self._become(Lifecycle.CONFIRMING)
        self._heard = set()
        self._catch_up = sorted(n for n in self.ring.nodes if n != self.node_id)
        out.event(why)

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
        targets = set(self.config.seeds)
        if self.changes.map is not None:
            targets |= {m.address for m in self.changes.map.members}
        for address in sorted(targets - {self.address}):
            out.actions.append(Send("", address, JoinRequest(me, self.instance)))

    def _on_shutdown(self, now: float, out: _StepOutbox) -> None:
        """Stop, and stay a member: a restart moves no data. Leaving the cluster is
        an explicit decommission."""
        if self.lifecycle not in (Lifecycle.STOPPING, Lifecycle.DECOMMISSIONED):
            self._become(Lifecycle.STOPPING)
        out.event("stopping")

    # ----------------------------------------------------------------- checks

    def _from_the_future(self, event: Deliver, now: float, out: _StepOutbox) -> bool:
        """Refuse a peer message carrying a version further ahead of this node's wall
        clock than ``max_version_ahead``: every version ever issued after it would
        lie below it, so its key would be unwritable and every clock that saw it
        pinned (see ``zkv.model.versions``). Clients never send versions."""
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
        """Decommissioned: its data is on its successors and it is out of the map."""
        return self.decommissioned
