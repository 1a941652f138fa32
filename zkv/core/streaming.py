"""Streaming the ranges a node gains in a ring transition, from a read quorum.

An acknowledged write is on a quorum of its replicas, not on any one of them,
so a gainer reads each gained range from a read quorum of the ring replicas
(``need`` of them, a different few for each range so the load spreads; one
that stays silent has another take its place) and keeps the newest version of
each key, like a quorum read. Each
source fences the older epochs before it answers (the pull carries the
transition's epoch), so no write of an older epoch can complete on a quorum of
the range afterwards; writes of the transition reach the gainer directly
(joint quorums).

Paced: at most ``WINDOW`` pulls in flight, one page each, so the node keeps
gossiping and serving. Resumable: each finished range is recorded in the store
in the same commit as its records, so a restarted gainer streams only the
ranges it had not finished (merging by version makes a repeated page
harmless); a silent source is asked again with growing pauses.

A range is ``STREAMING`` until ``need`` sources have sent it to the end
(``STREAMED``), or was finished before a restart (``RESUMED``), or has no live
source left (``NO_SOURCE``, the degraded case at its worst: nothing to pull).
"""

from __future__ import annotations

import builtins
import enum
from dataclasses import dataclass, field

import cbor2

from zkv.core.backoff import backoff
from zkv.core.cluster_map import ClusterMap
from zkv.core.messages import StreamChunk, StreamPull
from zkv.core.outbox import Outbox
from zkv.core.replica import Merge, merge
from zkv.model.record import Record
from zkv.model.tokens import token
from zkv.storage.base import Store

WINDOW = 8  # pulls in flight
PAGE_RECORDS = 512  # records a source sends per page (all keys of the last token too)
PAGE_BYTES = 1024 * 1024


class RangeState(enum.Enum):
    """Where a gained range is (see the module doc); only ``STREAMING`` pulls."""

    STREAMING = "streaming"
    STREAMED = "streamed"  # ``need`` sources sent it to the end; recorded in the store
    RESUMED = "resumed"  # recorded as streamed before a restart
    NO_SOURCE = "no source"  # every source is gone


# The only change of a range's state; the others are final (a new epoch plans anew).
TRANSITIONS: dict[RangeState, frozenset[RangeState]] = {
    RangeState.STREAMING: frozenset({RangeState.STREAMED}),
    RangeState.STREAMED: frozenset(),
    RangeState.RESUMED: frozenset(),
    RangeState.NO_SOURCE: frozenset(),
}


@dataclass(slots=True)
class RangeStream:
    first: int
    last: int
    need: int
    cursors: dict[str, int | None]  # source -> next token to ask (None: done)
    active: list[str]  # the sources asked: ``need`` of them, more when one is silent
    degraded: bool = False
    state: RangeState = RangeState.STREAMING

    def done(self) -> bool:
        return self.state is not RangeState.STREAMING

    def advance(self, source: str, cursor: int | None) -> bool:
        """``source``'s next token to send (None: it reached the end); True when that
        made the range ``STREAMED``."""
        self.cursors[source] = cursor
        if self.state is RangeState.STREAMING and \
                sum(1 for c in self.cursors.values() if c is None) >= self.need:
            self._move(RangeState.STREAMED)
            return True
        return False

    def _move(self, state: RangeState) -> None:
        assert state in TRANSITIONS[self.state], (
            f"range {self.first}..{self.last}: {self.state.value} -> {state.value} is not "
            "a range state change")
        self.state = state

    def stand_in(self) -> None:
        """A source is silent: ask one more (it streams the range from the start)."""
        spare = next((s for s in self.cursors if s not in self.active), None)
        if spare is not None:
            self.active.append(spare)


@dataclass(slots=True)
class Pull:
    stream: RangeStream
    source: str
    sent_at: float
    resends: int = 0


@dataclass(slots=True)
class Streamer:
    """A gainer's streaming for one transition epoch."""

    node_id: str
    pull_base: int
    epoch: int = 0
    ranges: list[RangeStream] = field(default_factory=list)
    pulls: dict[int, Pull] = field(default_factory=dict)
    keys: int = 0
    bytes: int = 0
    # Keys a promise kept out (to repair); in this class body ``bytes`` is the field above.
    fenced: list[builtins.bytes] = field(default_factory=list)
    _next: int = 0

    def plan(self, cmap: ClusterMap, store: Store, out: Outbox) -> None:
        """Stream what ``node_id`` gains in ``cmap`` (a new epoch starts over; the same
        epoch after a restart goes on with the ranges not yet finished)."""
        self.epoch = cmap.epoch
        self.ranges = []
        self.pulls.clear()
        self.keys = self.bytes = 0
        finished = self._finished(store)
        for i, (first, last, sources) in enumerate(cmap.gained_ranges(self.node_id)):
            live, need = cmap.sources_needed(sources)
            degraded = len(live) < len(sources) // 2 + 1
            turn = live[i % len(live):] + live[:i % len(live)] if live else []
            state = (RangeState.RESUMED if (first, last) in finished else
                     RangeState.NO_SOURCE if need <= 0 else RangeState.STREAMING)
            self.ranges.append(RangeStream(first, last, max(need, 0),
                                           {s: first for s in live}, turn[:need], degraded,
                                           state))
        if self.ranges:
            n_degraded = sum(1 for r in self.ranges if r.degraded)
            resumed = sum(1 for r in self.ranges if r.state is RangeState.RESUMED)
            out.event("stream_start", epoch=cmap.epoch, ranges=len(self.ranges),
                      degraded=n_degraded, resumed=resumed)

    def _finished(self, store: Store) -> set[tuple[int, int]]:
        raw = store.get_meta("streamed_ranges")
        try:
            epoch, ranges = cbor2.loads(raw) if raw else (0, [])
        except Exception:  # noqa: BLE001 - checksummed: unreadable only through a bug; start over
            return set()
        return {(a, b) for a, b in ranges} if epoch == self.epoch else set()

    def _record(self, stream: RangeStream, store: Store) -> None:
        """Note a finished range, in the commit that makes its records durable."""
        done = sorted(self._finished(store) | {(stream.first, stream.last)})
        store.put_meta("streamed_ranges", cbor2.dumps([self.epoch, [list(r) for r in done]]))

    def plan_nothing(self, epoch: int) -> None:
        """Nothing to gain at ``epoch``."""
        self.epoch = epoch
        self.ranges = []
        self.pulls.clear()

    @property
    def complete(self) -> bool:
        return all(r.done() for r in self.ranges)

    @property
    def progress(self) -> tuple[int, int]:
        """(ranges done, ranges)."""
        return sum(1 for r in self.ranges if r.done()), len(self.ranges)

    def tick(self, now: float, resend_after: float, out: Outbox) -> None:
        for pull_id, pull in list(self.pulls.items()):
            if now >= pull.sent_at + backoff(resend_after, pull.resends):
                pull.resends += 1
                pull.sent_at = now
                if pull.resends == 2:
                    pull.stream.stand_in()
                self._send(pull_id, pull, out)
        self._fill(now, out)

    def next_resend(self, resend_after: float) -> float | None:
        if not self.pulls:
            return None
        return min(p.sent_at + backoff(resend_after, p.resends) for p in self.pulls.values())

    def _fill(self, now: float, out: Outbox) -> None:
        """Ask for the next pages, up to WINDOW pulls in flight."""
        for stream in self.ranges:
            if len(self.pulls) >= WINDOW:
                return
            if stream.done():
                continue
            busy = {p.source for p in self.pulls.values() if p.stream is stream}
            for source in stream.active:
                cursor = stream.cursors[source]
                if cursor is not None and source not in busy and len(self.pulls) < WINDOW:
                    self._next += 1
                    pull = Pull(stream, source, now)
                    self.pulls[self.pull_base + self._next] = pull
                    self._send(self.pull_base + self._next, pull, out)

    def on_chunk(self, sender: str, msg: StreamChunk, store: Store, now: float,
                 out: Outbox) -> None:
        pull = self.pulls.pop(msg.pull_id, None)
        if pull is None or pull.source != sender:
            return
        for key, record in msg.records:
            if merge(store, key, record) is Merge.FENCED:
                self.fenced.append(key)
            self.keys += 1
            self.bytes += len(key) + len(record.value)
        stream = pull.stream
        streamed = False
        if stream.cursors.get(sender) is not None:
            streamed = stream.advance(sender, msg.next if msg.next is None
                                      or msg.next <= stream.last else None)
        if streamed:
            self._record(stream, store)
        if streamed and self.complete:
            out.event("stream_done", epoch=self.epoch, keys=self.keys, bytes=self.bytes)
        else:
            self._fill(now, out)

    def _send(self, pull_id: int, pull: Pull, out: Outbox) -> None:
        cursor = pull.stream.cursors.get(pull.source)
        if cursor is None:
            self.pulls.pop(pull_id, None)
            return
        out.send(pull.source, StreamPull(pull_id, self.epoch, cursor, pull.stream.last))


def page(store: Store, first: int, last: int) -> tuple[list[tuple[bytes, Record]], int | None]:
    """A source's answer: records from token ``first`` on, and where the next page starts.

    A page ends at a token boundary (every key of its last token is in it), so
    a cursor that is a token never splits keys that share one."""
    records: list[tuple[bytes, Record]] = []
    size = 0
    cut: int | None = None
    for key, record in store.token_range(first, last):
        tok = token(key)
        if cut is not None and tok != cut:
            return records, tok
        records.append((key, record))
        size += len(key) + len(record.value) + 32
        if cut is None and (len(records) >= PAGE_RECORDS or size >= PAGE_BYTES):
            cut = tok
    return records, None
