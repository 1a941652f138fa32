"""A node's part in ring changes: its cluster map, its vote, its proposals, its streaming.

Who proposes: the first voter (by id) this node believes alive, so proposals
rarely duel; Paxos keeps them safe when they do (a partition, a stale view).
What it proposes, one change at a time, from what it knows:

- during a transition: remove a target member dead longer than ``t_remove``
  (under the ``auto`` policy), else settle once every gainer has reported its
  ranges streamed (gossip carries each node's ``streamed`` epoch);
- when settled: remove the ring members dead longer than ``t_remove``
  (``auto``), admit the nodes asking to join, and carry out operators'
  decommissions and removals.

Operators' commands are proposed by the node that received them; join requests
that reach another member are forwarded to the proposer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cbor2

from zkv.core.cluster_map import ClusterMap, MapMember
from zkv.core.map_register import MapAcceptor, MapProposer
from zkv.core.messages import (
    MapAccept,
    MapAccepted,
    MapLearn,
    MapPrepare,
    MapPromise,
    MapQuery,
    StreamChunk,
    StreamPull,
)
from zkv.core.outbox import Outbox
from zkv.core.streaming import Streamer, page
from zkv.storage.base import Store


@dataclass(frozen=True, slots=True)
class Command:
    """An operator's membership command, kept until it is proposed and decided."""

    action: str  # decommission | remove
    node_id: str


class RingChanges:
    def __init__(self, node_id: str, instance: int, store: Store, pull_base: int,
                 removal: str = "auto") -> None:
        self.node_id = node_id
        self.instance = instance
        self.store = store
        self.removal = removal
        self.map: ClusterMap | None = self._load_map()
        self._asked: dict[str, float] = {}  # peer -> when this node last asked it for its map
        self.acceptor = MapAcceptor(store)
        self.proposer = MapProposer(node_id)
        self.streamer = Streamer(node_id, pull_base)
        self.peer_epoch: dict[str, int] = {}
        self.peer_streamed: dict[str, int] = {}
        self.peer_instance: dict[str, int] = {}
        # Nodes asking to join: (member, first asked, last asked).
        self.joiners: dict[str, tuple[MapMember, float, float]] = {}
        self.commands: list[Command] = []
        self.refused = 0  # bad map messages and commands (a counter for metrics)
        self.degraded_ranges = 0  # ranges streamed from fewer than a read quorum
        self._resume = self.map is not None  # a restart mid-transition streams again

    # ----------------------------------------------------------------- views

    @property
    def epoch(self) -> int:
        return self.map.epoch if self.map else 0

    def member(self) -> bool:
        """Whether this node (this data directory) is in the ring or the target."""
        return self.map is not None and self.map.holds(self.node_id, self.instance)

    def voter(self) -> bool:
        return self.member() and self.node_id in self.map.voters  # type: ignore[union-attr]

    def streamed(self) -> int:
        """The transition epoch whose gained ranges this node has all streamed."""
        s = self.streamer
        return s.epoch if s.epoch == self.epoch and s.complete else 0

    # ----------------------------------------------------------------- the map

    def found(self, address: str, replicas: int, vnodes: int, out: Outbox) -> ClusterMap:
        """Epoch 1: a cluster of this node alone."""
        cmap = ClusterMap.founding(MapMember(self.node_id, address, self.instance), replicas,
                                   vnodes)
        self._adopt(cmap, out)
        return cmap

    def adopt(self, cmap: ClusterMap, out: Outbox, sender: str | None = None) -> bool:
        """Take ``cmap`` if it is newer; True when it was. A map from a peer (``sender``)
        must come from a member of it or of this node's map, and be a legal next step
        when it is the next epoch; else it is refused and counted."""
        prev = self.map
        if prev is not None and cmap.epoch <= prev.epoch:
            return False
        reason = ""
        if prev is not None and (cmap.replicas, cmap.vnodes) != (prev.replicas, prev.vnodes):
            reason = "replicas or vnodes differ"
        elif prev is not None:
            reason = cmap.follows(prev)
        if not reason and sender is not None and cmap.member(sender) is None \
                and (prev is None or prev.member(sender) is None):
            reason = f"{sender} is a member of neither map"
        if reason:
            self.refused += 1
            out.event("map_refused", epoch=cmap.epoch, sender=sender, reason=reason)
            return False
        self._adopt(cmap, out)
        return True

    def _adopt(self, cmap: ClusterMap, out: Outbox) -> None:
        self.map = cmap
        self.store.put_meta("cluster_map", cbor2.dumps(cmap.encode()))
        self.joiners = {i: j for i, j in self.joiners.items()
                        if not cmap.holds(i, j[0].instance)}
        out.event("map_adopted", epoch=cmap.epoch, ring=sorted(cmap.ring),
                  target=sorted(cmap.target) if cmap.target is not None else None,
                  gone=sorted(cmap.gone))
        self._plan_streaming(out)

    def _plan_streaming(self, out: Outbox) -> None:
        """Stream what this node gains in the current transition (after a restart, the
        ranges it had not finished: ``streaming``)."""
        cmap = self.map
        assert cmap is not None
        if cmap.target is not None and self.member() and self.node_id in cmap.gainers:
            self.streamer.plan(cmap, self.store, out)
            self.degraded_ranges = sum(1 for r in self.streamer.ranges if r.degraded)
            if self.degraded_ranges:
                out.event("ranges_degraded", epoch=cmap.epoch, ranges=self.degraded_ranges)
        else:
            self.streamer.plan_nothing(cmap.epoch)

    def behind(self, sender: str, epoch: int, now: float, resend: float, out: Outbox) -> bool:
        """Whether ``epoch`` (a peer's request's) is newer than this node's map; if so,
        ask the peer for its map (at most once per ``resend``), and the request waits
        for its resend. A replica never fences on an epoch it holds no map of, so a
        wrong or forged epoch changes nothing here."""
        if epoch <= self.epoch:
            return False
        if now >= self._asked.get(sender, -1e18) + resend:
            self._asked[sender] = now
            out.send(sender, MapQuery(self.epoch))
        return True

    def _load_map(self) -> ClusterMap | None:
        raw = self.store.get_meta("cluster_map")
        if not raw:
            return None
        try:
            return ClusterMap.decode(cbor2.loads(raw))
        except Exception:  # noqa: BLE001 - checksummed; unreadable costs a rejoin, not the node
            return None

    def decode_map(self, value: Any, sender: str, out: Outbox) -> ClusterMap | None:
        try:
            return ClusterMap.decode(value)
        except ValueError as exc:
            self.refused += 1
            out.event("map_refused", sender=sender, reason=str(exc))
            return None

    # ----------------------------------------------------------------- messages

    def on_prepare(self, sender: str, msg: MapPrepare, base: ClusterMap, out: Outbox) -> None:
        """Vote in the instance after ``base`` (which the node adopted first, if newer)."""
        if self.map is None or not self.voter_in(base):
            return  # not one of this instance's acceptors (e.g. a wiped node under an old id)
        out.send(sender, self.acceptor.on_prepare(msg, self.map))
        if self.map.epoch >= msg.slot:
            out.send(sender, MapLearn(self.map.encode()))

    def on_accept(self, sender: str, msg: MapAccept, out: Outbox) -> None:
        value = self.decode_map(msg.value, sender, out)
        if value is None or value.epoch != msg.slot or self.map is None:
            return
        if self.map.epoch == msg.slot - 1 and not self.voter_in(self.map):
            return
        out.send(sender, self.acceptor.on_accept(msg, value, self.map))
        if self.map.epoch >= msg.slot:
            out.send(sender, MapLearn(self.map.encode()))

    def voter_in(self, cmap: ClusterMap) -> bool:
        return self.node_id in cmap.voters and cmap.holds(self.node_id, self.instance)

    def on_promise(self, sender: str, msg: MapPromise, now: float, out: Outbox) -> None:
        self.proposer.on_promise(sender, msg, out, now)

    def on_accepted(self, sender: str, msg: MapAccepted, now: float,
                    out: Outbox) -> ClusterMap | None:
        """The map this node's proposal got decided, if this answer completed it
        (the node adopts it, then ``announce``s it)."""
        self.proposer.on_accepted(sender, msg, out, now)
        decided, self.proposer.decided = self.proposer.decided, None
        return decided

    def announce(self, cmap: ClusterMap, out: Outbox) -> None:
        """Tell every member and every peer heard from about a decided map."""
        learn = MapLearn(cmap.encode())
        for node in sorted({m.node_id for m in cmap.members} | set(self.peer_epoch)):
            if node != self.node_id:
                out.send(node, learn)

    def on_query(self, sender: str, msg: MapQuery, out: Outbox) -> None:
        if self.map is not None and self.map.epoch > msg.epoch:
            out.send(sender, MapLearn(self.map.encode()))

    def on_gossip(self, sender: str, epoch: int, streamed: int, instance: int,
                  out: Outbox) -> None:
        self.peer_epoch[sender] = epoch
        self.peer_streamed[sender] = streamed
        self.peer_instance[sender] = instance
        if epoch > self.epoch:
            out.send(sender, MapQuery(self.epoch))
        elif self.map is not None and epoch < self.epoch:
            out.send(sender, MapLearn(self.map.encode()))

    def on_pull(self, sender: str, msg: StreamPull, now: float, resend: float,
                out: Outbox) -> None:
        """Serve a gainer one page, once this node holds the transition's map (so it
        refuses requests of older epochs: see ``streaming``)."""
        if self.behind(sender, msg.epoch, now, resend, out):
            return
        records, nxt = page(self.store, msg.first, msg.last)
        out.send(sender, StreamChunk(msg.pull_id, records, nxt))

    # ----------------------------------------------------------------- proposals

    def proposer_id(self, alive: Callable[[str], bool]) -> str | None:
        """The first voter alive as the instance the map names (a node restarted on an
        empty directory under a voter's id is not that voter)."""
        cmap = self.map
        if cmap is None:
            return None
        for node in sorted(cmap.voters):
            if node == self.node_id and self.voter():
                return node
            member = cmap.member(node)
            if alive(node) and member is not None \
                    and self.peer_instance.get(node) == member.instance:
                return node
        return None

    def plan(self, now: float, alive: Callable[[str], bool], dead: Callable[[str], bool],
             majority: bool, timeout: float, join_window: float, out: Outbox) -> None:
        """Propose the next change this node should, if any (see the module docstring).
        Joins wait ``join_window`` after the first request, so nodes started together
        join in one change; a joiner that stopped asking for ``timeout`` is forgotten."""
        self.joiners = {i: j for i, j in self.joiners.items() if j[2] >= now - timeout}
        cmap = self.map
        if cmap is None or self.proposer.proposal is not None or not self.voter() or not majority:
            return
        change, why = self._command_change(cmap)
        if change is None and self.proposer_id(alive) == self.node_id:
            change, why = self._automatic_change(cmap, dead, now - join_window)
        if change is not None:
            self.proposer.propose(cmap, change, why, now, timeout, out)

    def _automatic_change(self, cmap: ClusterMap, dead: Callable[[str], bool],
                          joins_before: float
                          ) -> tuple[Callable[[ClusterMap], ClusterMap] | None, str]:
        auto = self.removal == "auto"
        if cmap.target is not None:
            lost = sorted(n for n in cmap.target if n != self.node_id and dead(n))
            if auto and lost and len(cmap.target) - len(lost) >= min(cmap.replicas,
                                                                      len(cmap.target)):
                return (lambda m: m.with_removal(lost, dead=True)), f"remove dead {lost}"
            waiting = [g for g in cmap.gainers if (self.streamed() if g == self.node_id
                                                      else self.peer_streamed.get(g, 0))
                       != cmap.epoch]
            if not waiting:
                return (lambda m: m.settled()), "settle"
            return None, ""
        lost = sorted(n for n in cmap.ring if n != self.node_id and dead(n))
        # (Removing a node below ``replicas`` members would re-replicate nothing.)
        if auto and lost and len(cmap.ring) - len(lost) >= min(cmap.replicas, len(cmap.ring)):
            return (lambda m: m.with_removal(lost, dead=True)), f"remove dead {lost}"
        joiners = [j for j, _, _ in self.joiners.values()]
        stale = sorted(j.node_id for j in joiners if cmap.member(j.node_id) is not None)
        if stale:  # an old id back with an empty directory: its old self goes first
            return (lambda m: m.with_removal(stale, dead=True)), f"replace {stale}"
        if joiners and min(first for _, first, _ in self.joiners.values()) <= joins_before:
            ids = sorted(j.node_id for j in joiners)
            return (lambda m: m.with_joins(joiners)), f"join {ids}"
        return None, ""

    def _command_change(self, cmap: ClusterMap
                        ) -> tuple[Callable[[ClusterMap], ClusterMap] | None, str]:
        self.commands = [c for c in self.commands if c.node_id in cmap.ring]
        if not self.commands or cmap.target is not None:
            return None, ""
        c = self.commands[0]
        return (lambda m: m.with_removal([c.node_id], dead=c.action == "remove")), \
            f"{c.action} {c.node_id}"

    def on_join(self, member: MapMember, now: float, out: Outbox,
                forward: Callable[[str], None]) -> str:
        """Note a node asking to join; '' when noted, else why it is refused."""
        cmap = self.map
        if cmap is None:
            return "this node has no cluster map yet"
        if cmap.holds(member.node_id, member.instance):
            return ""  # already in; it learns the map from gossip
        taken = next((m for m in cmap.members if m.address == member.address
                      and m.node_id != member.node_id), None)
        if taken is not None:
            self.refused += 1
            out.event("join_refused", node=member.node_id, reason=f"address {member.address} "
                      f"is {taken.node_id}'s")
            return f"address {member.address} belongs to {taken.node_id}"
        known = self.joiners.get(member.node_id)
        first = known[1] if known is not None and known[0] == member else now
        self.joiners[member.node_id] = (member, first, now)
        forward(member.node_id)
        return ""

    def command(self, action: str, node_id: str, alive: Callable[[str], bool]) -> str:
        """Queue an operator's ``decommission`` or ``remove``; '' or why it is refused."""
        cmap = self.map
        if cmap is None or not self.voter():
            return "this node is not a voting member of the cluster"
        if node_id not in cmap.ring:
            return f"{node_id} is not in the ring (members: {', '.join(sorted(cmap.ring))})"
        staying = len(cmap.destination - {node_id})
        if staying < cmap.replicas:
            return (f"{action} of {node_id} would leave {staying} nodes, fewer than the "
                    f"{cmap.replicas} replicas of every key")
        if action == "remove" and alive(node_id):
            return f"{node_id} is alive: decommission it instead (remove is for dead nodes)"
        if Command(action, node_id) not in self.commands:
            self.commands.append(Command(action, node_id))
        return ""

    def tick(self, now: float, retry_interval: float, out: Outbox) -> None:
        if self._resume:
            self._resume = False
            self._plan_streaming(out)
        if self.map is not None:
            self.proposer.tick(self.map, now, retry_interval * 5, out)
        self.streamer.tick(now, retry_interval, out)
