"""The coordinator: turns a client request into replica reads and writes.

Quorum operations are linearizable per key (ABD):
- every operation first reads a quorum and takes the newest record;
- a write then stores a version above it on a quorum;
- an answer that only reads (get, or a failed condition) first writes the
  newest record back to a quorum when the replicas disagreed, so no later read
  can see anything older.
An operation that cannot meet its level before its deadline answers
``unavailable``; for a write that means "unknown": it may have reached some
replicas and may still become visible.

A read phase first asks only as many replicas as the level needs (this node
first when it is one), like Cassandra: for a quorum get that is one message
out and one back instead of two each. When they have not all answered after
a speculative delay (a few times the recent read-phase time, at most
``retry_interval``) it asks every replica. Writes always go to every replica,
so all three copies stay current without waiting for anti-entropy. During a
ring change (joint quorums) every phase asks every replica.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Hashable

from zkv.core.backoff import backoff
from zkv.core.messages import (
    ClientReply,
    ClientRequest,
    ReadReply,
    ReadRequest,
    WriteReply,
    WriteRequest,
)
from zkv.core.outbox import Outbox
from zkv.core.quorum import QuorumTracker
from zkv.core.versions import HybridClock
from zkv.storage.record import Record

READ, REPAIR, WRITE = "read", "repair", "write"
MIN_SPECULATION = 0.002  # seconds: a narrow read waits at least this before asking all
_CONDITION = {"create": "absent", "update": "present"}
_REJECTED = {"create": "exists", "update": "not_found"}


@dataclass(slots=True)
class Operation:
    op_id: int
    client: Hashable
    request: ClientRequest
    tracker: QuorumTracker
    started: float
    deadline: float
    phase: str = READ
    reads: dict[str, Record | None] = field(default_factory=dict)
    acks: set[str] = field(default_factory=set)
    rejects: set[str] = field(default_factory=set)
    record: Record | None = None  # what the repair or write phase stores
    outcome: tuple[str, bytes | None] = ("ok", None)
    sent_at: float = 0.0
    resends: int = 0  # of the current phase; each waits twice as long as the last
    narrow: bool = False  # the read phase asked only the replicas it needs


class Coordinator:
    def __init__(self, node_id: str, clock: HybridClock, op_base: int,
                 wall_offset: float = 0.0) -> None:
        self.node_id = node_id
        self.clock = clock
        self.wall_offset = wall_offset
        self.ops: dict[int, Operation] = {}
        self._next = op_base
        self._recent_reads: dict[int, tuple[bytes, Record | None]] = {}  # for late read repair
        self._read_time = 0.0  # moving average of read-phase durations; 0: none seen yet
        self._spread = 0  # rotates the replicas a narrow read asks

    # ----------------------------------------------------------------- entry

    def start(
        self,
        client: Hashable,
        request: ClientRequest,
        replica_sets: list[tuple[str, ...]],
        reachable: set[str],
        now: float,
        timeout: float,
        out: Outbox,
    ) -> None:
        """Begin ``request``; ``reachable`` are the targets not known to be down."""
        tracker = QuorumTracker(replica_sets, request.consistency)
        if not tracker.targets or not tracker.possible(reachable):
            self._answer_now(client, request, "unavailable",
                             f"{len(reachable & set(tracker.targets))} of "
                             f"{len(tracker.targets)} replicas reachable", out)
            return
        self._next += 1
        op = Operation(self._next, client, request, tracker, now, now + timeout)
        self.ops[op.op_id] = op
        asked = self._narrow_targets(tracker, reachable)
        op.narrow = bool(asked)
        self._send_phase(op, now, out, asked)  # [] asks every replica

    def _narrow_targets(self, tracker: QuorumTracker, reachable: set[str]) -> list[str]:
        """The fewest replicas whose answers meet the level (this node first, then
        the others in turn), or [] when every replica should be asked."""
        if len(tracker.sets) != 1 or tracker.need[0] >= len(tracker.targets):
            return []
        need = tracker.need[0]
        asked = [self.node_id] if self.node_id in reachable and self.node_id in \
            tracker.targets else []
        others = [n for n in tracker.targets if n in reachable and n != self.node_id]
        if len(asked) + len(others) < need:
            return []
        self._spread += 1
        start = self._spread % len(others) if others else 0
        asked.extend((others[start:] + others[:start])[:need - len(asked)])
        return asked

    def _answer_now(self, client: Hashable, request: ClientRequest, status: str, detail: str,
                    out: Outbox) -> None:
        out.reply(client, ClientReply(request.req_id, status, None, detail))
        out.event("coordinator_done", op=request.op, key=request.key, status=status,
                  consistency=request.consistency, latency=0.0)

    # ----------------------------------------------------------------- replies

    def on_read_reply(self, sender: str, msg: ReadReply, now: float, out: Outbox) -> None:
        self.clock.observe(msg.record.version if msg.record else None)
        op = self.ops.get(msg.op_id)
        if op is None or op.phase != READ:
            self._late_read(sender, msg, op, out)
            return
        if sender not in op.tracker.targets or msg.key != op.request.key:
            return
        op.reads[sender] = msg.record
        if op.tracker.met(op.reads):
            if op.resends == 0:
                took = now - op.sent_at
                self._read_time = took if not self._read_time else \
                    0.9 * self._read_time + 0.1 * took
            self._after_read(op, now, out)

    def on_write_reply(self, sender: str, msg: WriteReply, now: float, out: Outbox) -> None:
        op = self.ops.get(msg.op_id)
        if op is None or op.phase == READ or sender not in op.tracker.targets:
            return
        if msg.accepted:
            op.acks.add(sender)
        else:
            op.rejects.add(sender)
        if op.tracker.met(op.acks):
            self._finish(op, *op.outcome, now, out)
        elif not op.tracker.possible(set(op.tracker.targets) - op.rejects):
            status = _REJECTED.get(op.request.op, "unavailable")
            self._finish(op, status, None, now, out, detail="replicas refused the condition")

    def tick(self, now: float, retry_interval: float, out: Outbox) -> None:
        for op in list(self.ops.values()):
            if now >= op.deadline:
                got = len(op.reads) if op.phase == READ else len(op.acks)
                self._finish(op, "unavailable", None, now, out,
                             detail=f"{op.request.consistency} not reached in time "
                                    f"({got} of {len(op.tracker.targets)} answered)")
            elif now >= op.sent_at + self._resend_after(op, retry_interval):
                op.resends += 1
                op.narrow = False
                self._send_phase(op, now, out)

    def next_wakeup(self, retry_interval: float) -> float | None:
        """When the next deadline expires or the next resend is due."""
        if not self.ops:
            return None
        return min(min(op.deadline, op.sent_at + self._resend_after(op, retry_interval))
                   for op in self.ops.values())

    def _resend_after(self, op: Operation, retry_interval: float) -> float:
        if op.narrow:  # speculate: ask the other replicas when these seem slow
            if not self._read_time:
                return retry_interval
            return min(retry_interval, max(MIN_SPECULATION, 4 * self._read_time))
        return backoff(retry_interval, op.resends)

    # ----------------------------------------------------------------- phases

    def _send_phase(self, op: Operation, now: float, out: Outbox,
                    targets: Iterable[str] | None = None) -> None:
        """Send the phase's requests to ``targets`` (all) that have not answered."""
        op.sent_at = now
        key = op.request.key
        if op.phase == READ:
            for target in targets or op.tracker.targets:
                if target not in op.reads:
                    out.send(target, ReadRequest(op.op_id, key))
            return
        condition = _CONDITION.get(op.request.op, "") if op.phase == WRITE else ""
        assert op.record is not None
        for target in op.tracker.targets:
            if target not in op.acks and target not in op.rejects:
                out.send(target, WriteRequest(op.op_id, key, op.record, condition))

    def _after_read(self, op: Operation, now: float, out: Outbox) -> None:
        newest: Record | None = None
        for record in op.reads.values():
            if record is not None and (newest is None or record.version > newest.version):
                newest = record
        kind = op.request.op
        present = newest is not None and not newest.tombstone
        if kind == "get":
            self._read_outcome(op, newest, ("ok", newest.value) if present else
                               ("not_found", None), now, out)
        elif kind in ("delete", "update") and not present:
            self._read_outcome(op, newest, ("not_found", None), now, out)
        elif kind == "create" and present:
            self._read_outcome(op, newest, ("exists", None), now, out)
        else:
            version = self.clock.next(self._wall_ms(now), newest.version if newest else None)
            if kind == "delete":
                op.record = Record.tomb(version)
            else:
                op.record = Record(version, False, op.request.value or b"")
            op.phase = WRITE
            op.outcome = ("ok", None)
            op.resends = 0
            self._send_phase(op, now, out)

    def _read_outcome(self, op: Operation, newest: Record | None,
                      outcome: tuple[str, bytes | None], now: float, out: Outbox) -> None:
        """Answer a read, after writing ``newest`` back when the replicas disagreed."""
        stale = [n for n, r in op.reads.items() if _version(r) != _version(newest)]
        self._recent_reads[op.op_id] = (op.request.key, newest)
        if len(self._recent_reads) > 4096:
            del self._recent_reads[next(iter(self._recent_reads))]
        if not stale or newest is None:
            self._finish(op, *outcome, now, out)
            return
        op.phase = REPAIR
        op.resends = 0
        op.record = newest
        op.outcome = outcome
        op.acks = {n for n, r in op.reads.items() if _version(r) == newest.version}
        out.event("read_repair", key=op.request.key, stale=sorted(stale))
        if op.request.consistency == "one":
            self._send_phase(op, now, out)  # repair in the background
            self._finish(op, *outcome, now, out)
            return
        self._send_phase(op, now, out)

    def _late_read(self, sender: str, msg: ReadReply, op: Operation | None, out: Outbox) -> None:
        """A replica answered after the read was decided: repair it if it is behind."""
        if op is not None:
            if op.phase != REPAIR:
                return  # a write phase already sends its record to every target
            newest = op.record
        else:
            recent = self._recent_reads.get(msg.op_id)
            if recent is None or recent[0] != msg.key:
                return
            newest = recent[1]
        if newest is not None and _version(msg.record) < newest.version:
            out.send(sender, WriteRequest(0, msg.key, newest, ""))
            out.event("read_repair", key=msg.key, stale=[sender])

    def _finish(self, op: Operation, status: str, value: bytes | None, now: float, out: Outbox,
                detail: str = "") -> None:
        self.ops.pop(op.op_id, None)
        out.reply(op.client, ClientReply(op.request.req_id, status, value, detail))
        out.event("coordinator_done", op=op.request.op, key=op.request.key, status=status,
                  consistency=op.request.consistency, latency=round(now - op.started, 6),
                  version=list(op.record.version) if op.record else None)

    # ----------------------------------------------------------------- helpers

    def _wall_ms(self, now: float) -> int:
        return int((now + self.wall_offset) * 1000)


def _version(record: Record | None) -> tuple:
    return record.version if record is not None else ()
