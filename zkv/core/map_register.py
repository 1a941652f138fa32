"""Deciding the next cluster map: one single-decree Paxos per epoch.

Why not the per-key CASPaxos of the data path: its acceptors are a key's three
replicas, while a ring change must be a decision of the whole cluster, and the
acceptors of the ring register are themselves what it changes. A log of
instances solves that without joint consensus: the instance that decides epoch
n+1 has as acceptors the voters of epoch n (a value every participant already
agrees on), so each instance has a fixed acceptor set and plain Paxos safety;
a node that is behind adopts the proposer's base map first (it travels in the
prepare). This is Cassandra's metadata log (CEP-21) and etcd's "one member
change at a time" in their simplest form; with at most 50 members and changes
minutes apart, no leader lease or batching is needed.

Acceptor state (the slot voted on, the promise, the accepted ballot and map) is
persisted in the store's metadata within the step's group commit, before the
answer leaves, like the data path's promises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cbor2

from zkv.core.cluster_map import ClusterMap
from zkv.core.messages import MapAccept, MapAccepted, MapPrepare, MapPromise
from zkv.core.outbox import Outbox
from zkv.storage.base import Store

Ballot = tuple[int, str]
NO_BALLOT: Ballot = (0, "")


@dataclass(slots=True)
class AcceptorState:
    slot: int = 0
    promised: Ballot = NO_BALLOT
    accepted: Ballot = NO_BALLOT
    value: ClusterMap | None = None


class MapAcceptor:
    """One node's vote in the instance deciding the epoch after its current map."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.state = self._load()

    def on_prepare(self, msg: MapPrepare, current: ClusterMap) -> MapPromise:
        st = self._for_slot(msg.slot)
        ballot = _ballot(msg.ballot)
        if msg.slot != current.epoch + 1 or st is None or ballot <= st.promised:
            return MapPromise(msg.slot, msg.ballot, False, list(st.promised if st else NO_BALLOT),
                              None, current.epoch)
        st.promised = ballot
        self._save()
        return MapPromise(msg.slot, msg.ballot, True, list(st.accepted),
                          st.value.encode() if st.value else None, current.epoch)

    def on_accept(self, msg: MapAccept, value: ClusterMap, current: ClusterMap) -> MapAccepted:
        st = self._for_slot(msg.slot)
        ballot = _ballot(msg.ballot)
        if msg.slot <= current.epoch or st is None or ballot < st.promised:
            return MapAccepted(msg.slot, msg.ballot, False, current.epoch)
        st.promised = st.accepted = ballot
        st.value = value
        self._save()
        return MapAccepted(msg.slot, msg.ballot, True, current.epoch)

    def _for_slot(self, slot: int) -> AcceptorState | None:
        """The state of instance ``slot``; a later slot starts afresh, an earlier is over."""
        if slot < self.state.slot:
            return None
        if slot > self.state.slot:
            self.state = AcceptorState(slot)
        return self.state

    def _load(self) -> AcceptorState:
        raw = self.store.get_meta("map_vote")
        if not raw:
            return AcceptorState()
        try:
            slot, promised, accepted, value = cbor2.loads(raw)
            return AcceptorState(slot, _ballot(promised), _ballot(accepted),
                                 ClusterMap.decode(value) if value is not None else None)
        except Exception:  # noqa: BLE001 - checksummed: unreadable is a bug, not a disk error
            return AcceptorState()

    def _save(self) -> None:
        st = self.state
        self.store.put_meta("map_vote", cbor2.dumps(
            [st.slot, list(st.promised), list(st.accepted),
             st.value.encode() if st.value else None]))


@dataclass(slots=True)
class Proposal:
    base: ClusterMap
    change: Callable[[ClusterMap], ClusterMap]
    why: str
    ballot: Ballot
    deadline: float
    phase: str = "prepare"
    sent_at: float = 0.0
    promised: dict[str, tuple[Ballot, ClusterMap | None]] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    value: ClusterMap | None = None


class MapProposer:
    """Runs at most one proposal at a time; the node asks again while its
    reason (a joiner waiting, a gainer done, a dead member) still holds."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.proposal: Proposal | None = None
        self.top = 0  # the highest ballot round seen
        self.decided: ClusterMap | None = None  # set when a proposal wins; the node adopts it

    def propose(self, base: ClusterMap, change: Callable[[ClusterMap], ClusterMap], why: str,
                now: float, timeout: float, out: Outbox) -> None:
        if self.proposal is not None:
            return
        self.top += 1
        self.proposal = p = Proposal(base, change, why, (self.top, self.node_id), now + timeout)
        out.event("map_propose", epoch=base.epoch + 1, why=why)
        self._send(p, now, out)

    def on_promise(self, sender: str, msg: MapPromise, out: Outbox, now: float) -> None:
        p = self._current(msg.slot, msg.ballot, sender)
        if p is None or p.phase != "prepare":
            return
        self.top = max(self.top, msg.accepted[0] if msg.accepted else 0)
        if not msg.ok:
            self._refuse(p, sender, msg.accepted, msg.epoch, now)
            return
        try:
            value = ClusterMap.decode(msg.value) if msg.value is not None else None
        except ValueError:
            return
        p.promised[sender] = (_ballot(msg.accepted), value)
        if len(p.promised) >= p.base.majority():
            # Paxos: a value some acceptor accepted may be chosen; carry the newest one.
            ballot, value = max(p.promised.values(), key=lambda bv: bv[0])
            p.value = value if value is not None and ballot != NO_BALLOT else p.change(p.base)
            p.phase = "accept"
            self._send(p, now, out)

    def on_accepted(self, sender: str, msg: MapAccepted, out: Outbox, now: float) -> None:
        p = self._current(msg.slot, msg.ballot, sender)
        if p is None or p.phase != "accept":
            return
        if not msg.ok:
            self._refuse(p, sender, [], msg.epoch, now)
            return
        p.accepted.add(sender)
        if len(p.accepted) >= p.base.majority():
            assert p.value is not None
            self.decided = p.value
            self.proposal = None
            out.event("map_decided", epoch=p.value.epoch, why=p.why)

    def tick(self, current: ClusterMap, now: float, resend: float, out: Outbox) -> None:
        p = self.proposal
        if p is None:
            return
        if current.epoch >= p.base.epoch + 1 or now >= p.deadline:
            if current.epoch < p.base.epoch + 1:
                out.event("map_proposal_failed", epoch=p.base.epoch + 1, why=p.why)
            self.proposal = None
        elif now >= p.sent_at + resend:
            self._send(p, now, out)

    def _current(self, slot: int, ballot: list, sender: str) -> Proposal | None:
        p = self.proposal
        if p is None or slot != p.base.epoch + 1 or _ballot(ballot) != p.ballot \
                or sender not in p.base.voters:
            return None
        return p

    def _refuse(self, p: Proposal, sender: str, promised: list, epoch: int, now: float) -> None:
        p.refused.add(sender)
        if promised:
            self.top = max(self.top, promised[0])
        if len(p.refused) > len(p.base.voters) - p.base.majority() or epoch > p.base.epoch:
            self.proposal = None  # lost this round; the node proposes again if still needed

    def _send(self, p: Proposal, now: float, out: Outbox) -> None:
        p.sent_at = now
        for voter in sorted(p.base.voters):
            if p.phase == "prepare" and voter not in p.promised:
                out.send(voter, MapPrepare(p.base.epoch + 1, list(p.ballot), p.base.encode()))
            elif p.phase == "accept" and voter not in p.accepted:
                assert p.value is not None
                out.send(voter, MapAccept(p.base.epoch + 1, list(p.ballot), p.value.encode()))


def _ballot(v: list | tuple) -> Ballot:
    return (int(v[0]), str(v[1])) if v else NO_BALLOT
