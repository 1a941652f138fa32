"""The coordinator: turns a client request into replica reads, writes and Paxos rounds.

Two paths share one register per key (the replica rules are in ``zkv.core.replica``):

- **Plain get and put** are ABD quorum operations. A put reads a quorum (records
  and open promises), then writes a version above everything it saw; a get reads
  a quorum and, when the replicas disagree, writes the newest record back to a
  quorum before it answers. A key's primary skips a put's read when it remembers
  the version the key's last operation there ended with (``_fast_put``): the
  replicas' refusal rule, not the read, is what orders a write after every
  completed one; the read only makes refusals rare.
- **Conditional operations** (delete, create, update, cas) are CASPaxos changes
  (Rystsov 2018) with the record's version as the ballot: prepare ``b`` on a
  quorum, evaluate the condition once on the newest record the quorum reported,
  then accept the new record at version ``b``. A failed condition answers after
  the prepare when the quorum agreed on one version; otherwise it first makes
  that newest state chosen (the same state re-stamped at ``b``), so no answer is
  ever based on a write that could still vanish.

Why the two paths may mix on one key. Versions and ballots are one total order,
and a replica acknowledges a write only by storing it (never below its stored
version or its promise), so every acknowledged write is on a quorum. A prepare
at ``b`` fences everything below ``b`` on its quorum, and a put's version lies
above every promise its read quorum reported (a fast put's is refused below one), so:
(1) a write acknowledged before a prepare started lies on a quorum that
intersects the prepare's, and the proposer sees it (or something newer);
(2) a write below ``b`` that was not seen can no longer reach a quorum, so it is
never acknowledged, and no read returns it (a read returns only a state that a
quorum holds, writing it back first when needed, which the fence refuses);
(3) a write above ``b`` that lands first makes the accept at ``b`` fail there.
So the order of versions of acknowledged or visible states is a linearization:
each change was evaluated on the state just below its version. The checker
(``zkv.check``) tests this on mixed histories in the simulator (160 seeds in the
suite) and under ``zkv chaos``. The price: two puts racing on one key can
refuse each other, and the loser answers ``unknown`` (see ``_refused``).

Unknown outcomes. A refused prepare changed nothing and is retried with a higher
ballot after a jittered back-off (the loser learns the winner's ballot from the
refusal). A refused accept may have landed, even when every replica refused it
(a replica may have stored it, lost the acknowledgement and taken a newer state
built on it before it refused a resend), so the next round only looks: when its
own record is still the newest state it finishes it, else it answers
``unknown``: retrying the change could apply it twice. A put whose write cannot
reach its quorum answers ``unknown`` for the same reason. ``unavailable`` is
kept for requests that certainly changed nothing, which clients may retry
elsewhere.

One node runs one Paxos round per key at a time; ops for a key that arrive
meanwhile wait, and the next round decides all of them at once (folding): each
is evaluated in turn on the state the ones before it left, and one accept
stores the result. Clients send a key's requests to its primary, so rounds on a
hot key do not duel there, and a crowd of compare-and-sets costs two rounds,
not one each.

A read phase first asks only as many replicas as the level needs (this node
first when it is one), like Cassandra; when they have not all answered after a
speculative delay (a few times the recent read-phase time, at most
``retry_interval``) it asks every replica. Writes, prepares and accepts go to
every replica. During a ring transition (joint quorums) every phase asks every
replica of both sets and needs a quorum of each.

Epochs. Every replica request carries the epoch of the cluster map its replica
sets came from; a replica that has seen a newer epoch refuses it and sends its
map (``EpochRefused``). The operation then goes on under the new map: a read,
prepare or write phase is asked again of the new sets (a write keeps its
version: it was chosen above everything a quorum of the older sets held, which
every newer write also had to pass); a refused accept counts as a refusal, and
the next round prepares on the new sets. So no phase completes on an epoch a
quorum of its replicas has left behind, which is what ``cluster_map`` needs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from hashlib import blake2b

from zkv.core.backoff import backoff
from zkv.core.messages import (
    ClientReply,
    ClientRequest,
    EpochRefused,
    Prepare,
    PrepareReply,
    ReadReply,
    ReadRequest,
    WriteReply,
    WriteRequest,
)
from zkv.core.outbox import Outbox
from zkv.core.quorum import QuorumTracker
from zkv.model.record import Record
from zkv.model.versions import HybridClock, Version


class Phase(enum.StrEnum):
    """Where an operation is. Its value names the phase in a timeout's detail."""

    NEW = "new"  # made, not yet started
    READ = "read"  # the ABD path: read a quorum ...
    REPAIR = "repair"  # ... write the newest back where replicas disagreed ...
    WRITE = "write"  # ... or write a put's record
    PREPARE = "prepare"  # the Paxos path: a ballot ...
    ACCEPT = "accept"  # ... then the chosen state
    BACKOFF = "backoff"  # refused: a pause before the next round
    QUEUED = "queued"  # waiting for this node's round on the same key to end
    FOLLOWING = "following"  # evaluated within another op's round (see ``_prepare``)


NEW, READ, REPAIR, WRITE = Phase.NEW, Phase.READ, Phase.REPAIR, Phase.WRITE
PREPARE, ACCEPT, BACKOFF = Phase.PREPARE, Phase.ACCEPT, Phase.BACKOFF
QUEUED, FOLLOWING = Phase.QUEUED, Phase.FOLLOWING

# Every phase change an operation may make (``_move`` checks each). A phase entered
# again (READ, REPAIR, WRITE) is the same phase under a new op id, on a newer map
# (a refused put is never written again: see ``_refused``). An operation ends
# (``_finish``) in any phase; FOLLOWING ends only so, when its leader's round is
# decided.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    NEW: frozenset({READ, WRITE, PREPARE, QUEUED}),  # WRITE: a fast put
    READ: frozenset({READ, REPAIR, WRITE}),
    REPAIR: frozenset({REPAIR, BACKOFF}),
    WRITE: frozenset({WRITE}),
    PREPARE: frozenset({ACCEPT, BACKOFF}),
    ACCEPT: frozenset({BACKOFF}),
    BACKOFF: frozenset({PREPARE, QUEUED}),
    QUEUED: frozenset({PREPARE, FOLLOWING}),
    FOLLOWING: frozenset(),
}

MAX_FOLD = 64  # operations one round decides at most
KNOWN_KEYS = 16384  # keys whose last version a coordinator remembers, for fast puts
MIN_SPECULATION = 0.002  # seconds: a narrow read waits at least this before asking all


@dataclass(slots=True)
class Placement:
    """Where an operation on a key runs: the map epoch, the replica sets (one, or
    two during a transition) and the replicas not known to be down. The node keeps
    one per ring segment until the map or a member's status changes, so it also
    keeps the quorum trackers built on it (they never change)."""

    epoch: int
    sets: list[tuple[str, ...]]
    reachable: set[str]
    _trackers: dict[str, QuorumTracker] = field(default_factory=dict, repr=False,
                                                compare=False)

    def tracker(self, level: str) -> QuorumTracker:
        found = self._trackers.get(level)
        if found is None:
            found = self._trackers[level] = QuorumTracker(self.sets, level)
        return found


@dataclass(slots=True)
class Operation:
    op_id: int
    client: Hashable
    request: ClientRequest
    tracker: QuorumTracker
    started: float
    deadline: float
    phase: Phase = NEW  # changed only by ``_move``
    reads: dict[str, Record | None] = field(default_factory=dict)  # also prepare promises
    acks: set[str] = field(default_factory=set)
    rejects: set[str] = field(default_factory=set)
    record: Record | None = None  # what the repair, write or accept phase stores
    outcome: tuple[str, bytes | None] = ("ok", None)
    sent_at: float = 0.0
    resends: int = 0  # of the current phase; each waits twice as long as the last
    narrow: bool = False  # the read phase asked only the replicas it needs
    above: Version | None = None  # the highest version or promise a refusal named
    attempts: int = 0  # Paxos rounds begun
    change: bool = False  # the accept carries a change (this op's or a folded op's)
    mine: set[Version] = field(default_factory=set)  # ballots of records with this op's change
    recovering: bool = False  # the change may have landed: only finish it, never redo it
    wrote: bool = False  # this op's own evaluation changed the state (in its round)
    followers: list[Operation] = field(default_factory=list)  # ops folded into its round
    leader: Operation | None = None  # the op whose round decides this one
    epoch: int = 0  # of the map its replica sets came from
    fast: bool = False  # a put written without a read phase (``Coordinator._fast_put``)


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
        self.repairs = 0  # repair rounds in flight (see ``repair``)
        # One Paxos round per key at a time from this node: the op holding each key,
        # and the ops waiting for it (clients send a key's requests to its primary,
        # so this is where rounds on one key would otherwise duel).
        self._rounds: dict[bytes, Operation] = {}
        self._waiting: dict[bytes, list[Operation]] = {}
        self.epoch = 0  # the node's map epoch
        # Fast puts (see ``_fast_put``): the newest version this node saw an op on
        # each key end with, while nothing suggests another node wrote it since.
        self.fast_puts = True
        self.fast_everywhere = False  # a test's setting: every put, on every node, is fast
        self._known: dict[bytes, Version | None] = {}
        self.fast_writes = 0  # puts that skipped the read phase
        self.fast_refused = 0  # ... that a competing write made unknown
        self.placement: Callable[[bytes], Placement] = lambda key: Placement(0, [], set())

    # ----------------------------------------------------------------- entry

    def start(self, client: Hashable, request: ClientRequest, placement: Placement,
              now: float, timeout: float, out: Outbox) -> None:
        """Begin ``request`` on ``placement``."""
        tracker = placement.tracker(request.consistency)
        reachable = placement.reachable
        if not tracker.targets or not tracker.possible(reachable):
            self._answer_now(client, request, "unavailable",
                             f"{len(reachable & set(tracker.targets))} of "
                             f"{len(tracker.targets)} replicas reachable", out)
            return
        self._next += 1
        op = Operation(self._next, client, request, tracker, now, now + timeout,
                       epoch=placement.epoch)
        self.ops[op.op_id] = op
        if request.op == "put" and self._fast_put(op, placement, now, out):
            return
        if request.op in ("get", "put"):
            asked = self._narrow_targets(tracker, placement.reachable)
            op.narrow = bool(asked)
            _move(op, READ)
            self._send_phase(op, now, out, asked)  # [] asks every replica
        else:
            self._prepare(op, now, out)

    def _fast_put(self, op: Operation, placement: Placement, now: float,
                  out: Outbox) -> bool:
        """Write a put at once, without the read phase, when this node is the key's
        primary and remembers the version the key's last op here ended with.

        Safe without the read for the same reason a write phase is: a replica
        acknowledges a record only at or above what it stores and promised, so an
        acknowledging quorum, which meets the quorum of every write or read that
        ended before this put began, put it above all of them. What the read buys
        is a version that no replica refuses; the remembered one is that, unless
        another node wrote the key since (clients send a key's ops to its primary,
        and the memory is dropped when the map or a member's status changes). A
        put refused that way answers ``unknown``, as any refused write phase does
        (``_refused``), so the memory must be right nearly always."""
        key = op.request.key
        if not self.fast_puts:
            return False
        if not self.fast_everywhere and (key not in self._known or len(placement.sets) != 1
                                         or placement.sets[0][0] != self.node_id):
            return False
        self.fast_writes += 1
        op.fast = True
        version = self.clock.next(self._wall_ms(now), self._known.get(key))
        self._enter(op, WRITE, Record(version, False, op.request.value or b""), now, out)
        return True

    def _remember(self, key: bytes, version: Version | None) -> None:
        known = self._known
        known.pop(key, None)
        known[key] = version
        if len(known) > KNOWN_KEYS:
            del known[next(iter(known))]

    def forget_versions(self) -> None:
        """The map or a member's status changed: other nodes may write keys whose
        primary this node is, so no remembered version is trusted for fast puts."""
        self._known.clear()

    def repair(self, key: bytes, above: Version | None, placement: Placement, now: float,
               timeout: float, out: Outbox) -> None:
        """A Paxos round that only makes ``key``'s newest state chosen, above ``above``
        (a promise that fenced a newer record here): no client waits for it."""
        tracker = placement.tracker("quorum")
        if not tracker.targets or not tracker.possible(placement.reachable):
            return
        self._next += 1
        request = ClientRequest(0, "get", key, None, "quorum", 0)
        op = Operation(self._next, None, request, tracker, now, now + timeout, above=above,
                       epoch=placement.epoch)
        self.ops[op.op_id] = op
        self.repairs += 1
        self._prepare(op, now, out)

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
        op.above = _max_version(op.above, msg.promise)
        if op.tracker.met(op.reads):
            if op.resends == 0:
                took = now - op.sent_at
                self._read_time = took if not self._read_time else \
                    0.9 * self._read_time + 0.1 * took
            self._after_read(op, now, out)

    def on_prepare_reply(self, sender: str, msg: PrepareReply, now: float, out: Outbox) -> None:
        op = self.ops.get(msg.op_id)
        if (op is None or op.phase != PREPARE or sender not in op.tracker.targets
                or msg.key != op.request.key):
            return
        if msg.record is not None:
            self.clock.observe(msg.record.version)
        if msg.promised:
            op.reads[sender] = msg.record
            if op.tracker.met(op.reads):
                self._after_prepare(op, now, out)
        else:
            op.rejects.add(sender)
            op.above = _max_version(op.above, msg.conflict)
            if not op.tracker.possible(set(op.tracker.targets) - op.rejects):
                self._back_off(op, now)

    def on_write_reply(self, sender: str, msg: WriteReply, now: float, out: Outbox) -> None:
        op = self.ops.get(msg.op_id)
        if op is None or op.phase not in (REPAIR, WRITE, ACCEPT) \
                or sender not in op.tracker.targets:
            return
        if msg.accepted:
            op.acks.add(sender)
            if op.phase == ACCEPT and op.change and op.record:
                op.mine.add(op.record.change)
        else:
            op.rejects.add(sender)
            op.above = _max_version(op.above, msg.conflict)
        if op.tracker.met(op.acks):
            self._finish(op, *op.outcome, now, out)
        elif op.rejects and not op.tracker.possible(set(op.tracker.targets) - op.rejects):
            self._refused(op, now, out)  # (with no refusal, every target may still answer)

    def on_epoch_refused(self, sender: str, msg: EpochRefused, now: float,
                         out: Outbox) -> None:
        """A replica has seen a newer map than this op's (the node adopted the map
        the refusal carried): go on under the new one (see the module docstring)."""
        op = self.ops.get(msg.op_id)
        if op is None or sender not in op.tracker.targets or msg.key != op.request.key:
            return
        if op.phase == ACCEPT:
            op.rejects.add(sender)
            if not op.tracker.possible(set(op.tracker.targets) - op.rejects):
                self._refused(op, now, out)
            return
        if not self._rebase(op):
            return  # the node has no newer map yet; the resend asks again
        if op.phase == PREPARE:
            self._back_off(op, now)
        elif op.phase in (READ, REPAIR, WRITE):
            if op.phase == READ:
                op.reads = {}
            self._enter(op, op.phase, op.record, now, out)

    def _rebase(self, op: Operation) -> bool:
        """Move ``op`` to the node's newer map, if it has one; True when it moved."""
        if self.epoch <= op.epoch:
            return False
        placement = self.placement(op.request.key)
        op.tracker = placement.tracker(op.request.consistency)
        op.epoch = placement.epoch
        return True

    def tick(self, now: float, retry_interval: float, out: Outbox) -> None:
        for op in list(self.ops.values()):
            if self.ops.get(op.op_id) is not op:
                continue  # finished meanwhile, with the round it was folded into
            if now >= op.deadline:
                got = len(op.acks) if op.phase in (REPAIR, WRITE, ACCEPT) else len(op.reads)
                self._finish(op, self._timeout_status(op), None, now, out,
                             detail=f"{op.request.consistency} not reached in time "
                                    f"({got} of {len(op.tracker.targets)} answered "
                                    f"the {op.phase} phase)")
            elif op.phase == QUEUED or op.phase == FOLLOWING:
                continue
            elif op.phase == BACKOFF:
                if now >= op.sent_at:
                    self._prepare(op, now, out)
            elif now >= op.sent_at + self._resend_after(op, retry_interval):
                op.resends += 1
                op.narrow = False
                self._send_phase(op, now, out)

    def next_wakeup(self, retry_interval: float) -> float | None:
        """When the next deadline expires or the next resend or retry is due."""
        if not self.ops:
            return None
        return min(op.deadline if op.phase == QUEUED or op.phase == FOLLOWING else
                   min(op.deadline, op.sent_at if op.phase == BACKOFF else
                       op.sent_at + self._resend_after(op, retry_interval))
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
        epoch = op.epoch
        if op.phase == READ:
            for target in targets or op.tracker.targets:
                if target not in op.reads:
                    out.send(target, ReadRequest(op.op_id, key, epoch))
            return
        if op.phase == PREPARE:
            assert op.record is not None  # the ballot travels as the record's version
            for target in op.tracker.targets:
                if target not in op.reads and target not in op.rejects:
                    out.send(target, Prepare(op.op_id, key, op.record.version, epoch))
            return
        assert op.record is not None
        for target in op.tracker.targets:
            if target not in op.acks and target not in op.rejects:
                out.send(target, WriteRequest(op.op_id, key, op.record, epoch))

    def _after_read(self, op: Operation, now: float, out: Outbox) -> None:
        newest = _newest(op.reads.values())
        if op.request.op == "get":
            if op.request.consistency != "one":  # (a put remembers its own write)
                self._remember(op.request.key, newest.version if newest else None)
            present = newest is not None and not newest.tombstone
            self._read_outcome(op, newest, ("ok", newest.value) if present and newest else
                               ("not_found", None), now, out)
            return
        # put: a version above every record and promise the read quorum reported
        above = _max_version(newest.version if newest else None, op.above)
        version = self.clock.next(self._wall_ms(now), above)
        self._enter(op, WRITE, Record(version, False, op.request.value or b""), now, out)

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
        op.outcome = outcome
        op.acks = {n for n, r in op.reads.items() if _version(r) == newest.version}
        out.event("read_repair", key=op.request.key, stale=sorted(stale))
        if op.request.consistency == "one":
            self._enter(op, REPAIR, newest, now, out)  # repair in the background
            self._finish(op, *outcome, now, out)
            return
        self._enter(op, REPAIR, newest, now, out)

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
            out.send(sender, WriteRequest(0, msg.key, newest, self.epoch))
            out.event("read_repair", key=msg.key, stale=[sender])

    # ----------------------------------------------------------------- Paxos rounds

    def _prepare(self, op: Operation, now: float, out: Outbox) -> None:
        """Begin a round: a fresh ballot above everything a refusal named."""
        key = op.request.key
        holder = self._rounds.setdefault(key, op)
        if holder is not op:
            _move(op, QUEUED)
            self._waiting.setdefault(key, []).append(op)
            return
        self._rebase(op)
        if not op.recovering and op.client is not None:
            self._fold(op)
        op.attempts += 1
        op.reads = {}
        ballot = self.clock.next(self._wall_ms(now), op.above)
        # The record is a placeholder that carries the ballot until the accept phase.
        self._enter(op, PREPARE, Record.tomb(ballot), now, out)

    def _fold(self, op: Operation) -> None:
        """Take the ops waiting for ``op``'s key into its round: one prepare and one
        accept decide them all, each evaluated in turn on the state the ones before
        it left (they are concurrent, so that order is a valid linearization)."""
        waiting = self._waiting.get(op.request.key)
        if not waiting:
            return
        keep = []
        for other in waiting:
            if (len(op.followers) < MAX_FOLD and not other.recovering
                    and other.client is not None and other.tracker.sets == op.tracker.sets
                    and other.tracker.need == op.tracker.need):
                _move(other, FOLLOWING)
                other.leader = op
                op.followers.append(other)
            else:
                keep.append(other)
        if keep:
            waiting[:] = keep
        else:
            del self._waiting[op.request.key]

    def _after_prepare(self, op: Operation, now: float, out: Outbox) -> None:
        assert op.record is not None
        ballot = op.record.version
        newest = _newest(op.reads.values())
        agreed = len({_version(r) for r in op.reads.values()}) == 1
        change = None
        if op.recovering:
            # An earlier accept of this change may have landed. If it is still the
            # newest state (perhaps re-stamped by another round: ``Record.change``),
            # finish it. If another state is newer, the change may have been chosen
            # and overwritten, or never chosen; no state tells which, so the answer
            # is "unknown". Redoing it could apply it twice. (An earlier attempt
            # concluded "never chosen" once a newer state was chosen; the CAS
            # counter of the ``mixed`` scenario, seed 0, showed it wrong.)
            if newest is None or newest.change not in op.mine:
                self._finish(op, "unknown" if op.wrote else "unavailable", None, now, out,
                             detail="a competing write intervened; the outcome is unknown")
                return
        else:
            state = newest
            for member in (op, *op.followers):
                member.outcome, changed = _evaluate(member.request, state)
                member.wrote = changed is not None
                if changed is not None:
                    state = change = changed
        if change is not None:
            op.change = True
            record = Record(ballot, change.tombstone, change.value)
        elif agreed:
            self._finish(op, *op.outcome, now, out)  # the quorum agrees: already chosen
            return
        else:
            # Make the state the answer rests on chosen: the newest, re-stamped.
            op.change = False
            origin = newest.change if newest is not None else None
            record = Record(ballot, True, b"", origin) if newest is None or newest.tombstone \
                else Record(ballot, False, newest.value, origin)
        self._enter(op, ACCEPT, record, now, out)

    def _refused(self, op: Operation, now: float, out: Outbox) -> None:
        """A write phase can no longer reach its quorum: say what is known, or let
        another round settle it."""
        if op.phase == WRITE:
            # Even a refusal by every replica does not prove that the put never landed:
            # a replica may have stored it, lost the acknowledgement, and taken a newer
            # state that read it (a delete, say) before it refused a resend or a
            # duplicate. Writing it again above would make it appear twice, after that
            # state (the checker found it so: the ``mixed`` run, seed 355, with every
            # put fast).
            if op.fast:
                self.fast_refused += 1
            self._finish(op, "unknown", None, now, out,
                         detail="a competing write intervened; the outcome is unknown")
        else:
            # An accept, or a write-back fenced by a promise: another round settles
            # it. Writing back or re-stamping a state changes no outcome; only a
            # change of this op's own must never be redone: it may have landed, even
            # if every replica refused (see the WRITE case above).
            if op.phase == ACCEPT and op.change and op.record is not None:
                op.recovering = True
                op.mine.add(op.record.change)
            self._back_off(op, now)

    def _back_off(self, op: Operation, now: float) -> None:
        """Wait a jittered, growing delay before the next round, so duelling
        proposers stop refusing each other."""
        _move(op, BACKOFF)
        jitter = blake2b(b"%d:%d" % (op.op_id, op.attempts), digest_size=2).digest()
        spread = 0.5 + int.from_bytes(jitter, "big") / 65535  # 0.5 .. 1.5
        op.sent_at = now + 0.001 * (1 << min(op.attempts, 6)) * spread

    def _enter(self, op: Operation, phase: Phase, record: Record | None, now: float,
               out: Outbox) -> None:
        """Start a phase under a new op id, so no late answer to an earlier phase
        or round can count toward this one's quorum."""
        del self.ops[op.op_id]
        self._next += 1
        op.op_id = self._next
        self.ops[op.op_id] = op
        _move(op, phase)
        op.record = record
        op.resends = 0
        op.narrow = False
        if phase != REPAIR:
            op.acks = set()
        op.rejects = set()
        if phase == PREPARE:
            op.reads = {}
        self._send_phase(op, now, out)

    def _timeout_status(self, op: Operation) -> str:
        """``unknown`` when this op's write may have landed somewhere."""
        if op.leader is not None:
            return "unknown" if op.wrote and _in_flight(op.leader) else "unavailable"
        if op.phase == WRITE or _in_flight(op):
            return "unknown"
        return "unavailable"

    def _release(self, op: Operation, now: float, out: Outbox) -> None:
        """``op`` is done: hand its key's round to the next op waiting for it."""
        key = op.request.key
        if op.leader is not None:
            if op in op.leader.followers:
                op.leader.followers.remove(op)
            return
        if op.phase == QUEUED:
            waiting = self._waiting.get(key, [])
            if op in waiting:
                waiting.remove(op)
            if not waiting:
                self._waiting.pop(key, None)
            return
        if self._rounds.get(key) is not op:
            return
        del self._rounds[key]
        waiting = self._waiting.get(key, [])
        if waiting:
            following = waiting.pop(0)
            if not waiting:
                del self._waiting[key]
            self._prepare(following, now, out)

    def _finish(self, op: Operation, status: str, value: bytes | None, now: float, out: Outbox,
                detail: str = "") -> None:
        self.ops.pop(op.op_id, None)
        if status == "unknown" or status == "unavailable":
            self._known.pop(op.request.key, None)
        elif op.record is not None and op.phase in (WRITE, ACCEPT, REPAIR) \
                and op.request.consistency != "one":
            self._remember(op.request.key, op.record.version)
        if op.followers:
            # The round decided (the op got its evaluated answer): so did every op
            # folded into it. Otherwise each says what it can: "unknown" if its own
            # change may have landed, else "unavailable" (it changed nothing).
            decided = (status, value) == op.outcome
            followers, op.followers = op.followers, []
            for f in followers:
                f.leader = None
                if decided:
                    self._finish(f, *f.outcome, now, out)
                else:
                    self._finish(f, "unknown" if f.wrote and _in_flight(op) else "unavailable",
                                 None, now, out, detail=detail)
        self._release(op, now, out)
        if op.client is None:  # a repair round
            self.repairs -= 1
            out.event("fenced_repair", key=op.request.key, status=status, rounds=op.attempts)
            return
        out.reply(op.client, ClientReply(op.request.req_id, status, value, detail))
        version = op.record.version if op.record and op.phase not in (PREPARE, BACKOFF) \
            else None
        out.event("coordinator_done", op=op.request.op, key=op.request.key, status=status,
                  consistency=op.request.consistency, latency=round(now - op.started, 6),
                  version=list(version) if version else None, rounds=op.attempts)

    # ----------------------------------------------------------------- helpers

    def _wall_ms(self, now: float) -> int:
        return int((now + self.wall_offset) * 1000)


def _move(op: Operation, phase: Phase) -> None:
    """Change ``op``'s phase; a change ``TRANSITIONS`` does not list is a bug."""
    assert phase in TRANSITIONS[op.phase], (
        f"operation {op.op_id} ({op.request.op}): {op.phase} -> {phase} is not a phase change")
    op.phase = phase


def _in_flight(op: Operation) -> bool:
    """Whether a change of ``op``'s round may have landed on some replica."""
    return op.recovering or (op.phase == ACCEPT and op.change)


def _evaluate(request: ClientRequest, newest: Record | None
              ) -> tuple[tuple[str, bytes | None], Record | None]:
    """The answer a conditional op gives on state ``newest``, and the new state it
    writes (a record whose version is replaced by the ballot), or None."""
    present = newest is not None and not newest.tombstone
    kind = request.op
    if kind == "get":
        return (("ok", newest.value) if present and newest else ("not_found", None)), None
    if kind == "delete":
        return (("ok", None), _TOMB) if present else (("not_found", None), None)
    if kind == "create":
        if present:
            return ("exists", None), None
        return ("ok", None), Record(_TOMB.version, False, request.value or b"")
    if kind == "update":
        if not present:
            return ("not_found", None), None
        return ("ok", None), Record(_TOMB.version, False, request.value or b"")
    if kind == "cas":
        current = newest.value if present and newest else None
        if current != request.expected:
            return ("condition_failed", None), None
        if request.value is None:
            return ("ok", None), _TOMB
        return ("ok", None), Record(_TOMB.version, False, request.value)
    raise ValueError(f"not a conditional operation: {kind!r}")


_TOMB = Record.tomb(Version(0, 0, ""))


def _newest(records: Iterable[Record | None]) -> Record | None:
    newest: Record | None = None
    for record in records:
        if record is not None and (newest is None or record.version > newest.version):
            newest = record
    return newest


def _max_version(a: Version | None, b: Version | None) -> Version | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _version(record: Record | None) -> tuple:
    return record.version if record is not None else ()
