"""The client's routing and retry policy, with no sockets and no clock.

FoundationDB simulates its client too; so does zkv: ``zkv.client.Client`` (over
ZeroMQ) and the simulator's client (``zkv.sim.client``) drive the same objects,
feeding them the time, what they could send and what came back.

- ``Router``: where a key's requests go (its replicas, primary first, then every
  other node), from the ring the client learns from any node; nodes that stayed
  silent or were not connected are asked last for ``SUSPECT_FOR`` seconds.
- ``Call``: one operation until its outcome. With direct reads on (the default), a
  quorum get first reads a quorum of the key's replicas itself
  (``zkv.core.direct_read``) and asks a coordinator only when they disagree,
  refuse or stay silent. A read whose coordinator stays
  silent for a third of the timeout gets a second one beside it; a write never
  does (``Call.next``); quick refusals are retried on other nodes, then again
  after short pauses, until the deadline.

The outcome is a status of ``OUTCOMES``; ``zkv.errors.error_for`` turns one into
the error the library raises.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from zkv.core.direct_read import FALLBACK, DirectQuorum
from zkv.core.messages import ClientReply, DirectRecord, ErrorReply, RingInfo
from zkv.core.ring import Ring

RING_REFRESH = 5.0  # seconds between background ring refreshes
RING_QUERY_RETRY = 0.5  # seconds before an unanswered ring query is sent elsewhere
CONNECT_WAIT = 0.05  # first pause after every node refused or was unreachable
MAX_ROUND_PAUSE = 0.25  # the longest such pause (they double)
MIN_PAUSE = 0.001  # less time left than this before the deadline: the call times out
SUSPECT_FOR = 2.0  # seconds a node that stayed silent or unreachable is asked last

TIMEOUT = "timeout"  # no answer before the deadline
REFUSED = "refused"  # a node refused the request outright (ErrorReply)
OUTCOMES = ("ok", "not_found", "exists", "condition_failed", "unavailable", "unknown",
            "invalid", REFUSED, TIMEOUT)


def put_last(order: list[str], these: Container[str]) -> list[str]:
    """``order`` with the addresses in ``these`` moved to its end, both parts in order."""
    return [a for a in order if a not in these] + [a for a in order if a in these]


class Router:
    """The ring as this client knows it, and the nodes it trusts less for now."""

    def __init__(self, seeds: list[str], ring_refresh: float = RING_REFRESH,
                 direct_reads: bool = True) -> None:
        self.seeds = seeds
        self.direct_reads = direct_reads  # quorum gets read the replicas: zkv.core.direct_read
        self.ring_refresh = ring_refresh
        self.ring: Ring | None = None
        self.node_address: dict[str, str] = {}  # node id -> address, from the ring
        self._shape: tuple = ()
        self._routes: dict[tuple[str, ...], list[str]] = {}  # replica ids -> addresses
        self.suspects: dict[str, float] = {}  # address -> until when it is asked last
        self.ring_at = float("-inf")  # when the ring was last learned
        self.stale = True
        self.query: int | None = None  # the req_id of the ring query in flight
        self.query_at = float("-inf")
        self._cursor = 0
        self.epoch = 0  # of the map the ring came from; 0: unknown (no direct reads)
        self.settled = False  # no ring change under way there
        self._turn = 0  # which of a key's replicas the next direct read asks first

    # ----------------------------------------------------------------- routes

    def route(self, key: bytes, now: float) -> list[str]:
        """Addresses to try for ``key``: its replicas (primary first), then every
        other node, suspects last."""
        ring = self.ring
        if ring is None:
            return self.suspects_last(self.everyone(()), now)
        replicas = ring.locate(key)
        order = self._routes.get(replicas)
        if order is None:
            order = self._routes[replicas] = self.everyone(replicas)
        return self.suspects_last(order, now) if self.suspects else order

    def direct_targets(self, key: bytes, level: str, now: float) -> list[str] | None:
        """A read quorum of ``key``'s replicas for a direct read (``zkv.core.direct_read``):
        the primary, which has every write it coordinated (so the read rarely meets a
        replica still behind), and the others taking turns, suspects left out; None
        when a direct read cannot be tried (another level, no settled ring, too few
        replicas trusted). Asking the primary also finds out when it went silent, so
        that writes avoid it."""
        ring = self.ring
        if (not self.direct_reads or level != "quorum" or ring is None or not self.settled
                or self.epoch <= 0):
            return None
        replicas = ring.locate(key)
        need = len(replicas) // 2 + 1
        if self.suspects:
            self.suspects_last([], now)  # forget the suspicions that ran out
        addresses = [a for n in replicas
                     if (a := self.node_address.get(n)) and a not in self.suspects]
        if len(addresses) < need:
            return None
        if need == 1:
            return addresses[:1]
        first, others = addresses[0], addresses[1:]
        self._turn += 1
        start = self._turn % len(others)
        return [first, *(others[start:] + others[:start])[:need - 1]]

    def everyone(self, first: Iterable[str]) -> list[str]:
        order: list[str] = []
        for node_id in first:
            address = self.node_address.get(node_id)
            if address and address not in order:
                order.append(address)
        for address in (*sorted(self.node_address.values()), *self.seeds):
            if address not in order:
                order.append(address)
        return order

    def suspect(self, address: str, now: float) -> None:
        """A node that did not answer or is not connected: ask it last for a while."""
        self.suspects[address] = now + SUSPECT_FOR
        self.stale = True

    def heard_from(self, address: str) -> None:
        self.suspects.pop(address, None)

    def suspects_last(self, order: list[str], now: float) -> list[str]:
        for address, until in list(self.suspects.items()):
            if until <= now:
                del self.suspects[address]
        return put_last(order, self.suspects)

    # ----------------------------------------------------------------- the ring

    def ring_query_due(self, now: float) -> bool:
        """Whether to ask a node for the ring now (it is old or in doubt, and no query
        is waiting for its answer)."""
        due = self.stale or now - self.ring_at >= self.ring_refresh
        return due and (self.query is None or now - self.query_at >= RING_QUERY_RETRY)

    def query_targets(self) -> list[str]:
        """Nodes to send the next ring query to, in order (they take turns)."""
        candidates = self.everyone(())
        self._cursor += 1
        start = self._cursor % max(1, len(candidates))
        return candidates[start:] + candidates[:start]

    def asked(self, req_id: int, now: float) -> None:
        self.query, self.query_at = req_id, now

    def direct_reply(self, direct: DirectQuorum, address: str, reply: DirectRecord
                     ) -> tuple[str, bytes | None] | str | None:
        """Feed a replica's answer to a direct read (``DirectQuorum.on_reply``); one
        refused at another epoch means the ring moved: learn it before the next."""
        result = direct.on_reply(address, reply)
        if result == FALLBACK and reply.epoch != direct.epoch:
            self.stale = True
        return result

    def forget_ring(self) -> None:
        """Learn the ring afresh before the next operation."""
        self.ring_at = float("-inf")
        self.query = None

    def learn(self, info: RingInfo, now: float) -> bool:
        """Take a node's answer to the ring query; True if the ring changed."""
        self.query = None
        self.ring_at = now
        self.stale = False
        self.epoch, self.settled = info.epoch, info.settled and bool(info.members)
        shape = (tuple(tuple(m) for m in info.members), info.replicas, info.vnodes)
        if shape == self._shape or not info.members:
            return False
        self._shape = shape
        self.node_address = {node_id: address for node_id, address in info.members}
        self.ring = Ring(self.node_address, info.replicas, info.vnodes)
        self._routes.clear()
        return True


# ----------------------------------------------------------------------------- calls


@dataclass(frozen=True, slots=True)
class SendTo:
    """Send the request to ``address``, telling the coordinator to answer within
    ``budget_ms``; then report with ``Call.sent``."""

    address: str
    budget_ms: int


@dataclass(frozen=True, slots=True)
class ReadDirect:
    """Send a DirectRead for the call's key at ``epoch`` to each of ``addresses``;
    then report each with ``Call.direct_sent``."""

    addresses: list[str]
    epoch: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait for replies until ``until`` (feed them to ``Call.on_reply``)."""

    until: float


@dataclass(frozen=True, slots=True)
class Pause:
    """Every node refused or was unreachable: refresh the ring and wait ``seconds`` (or
    until a node connects), then ask ``next`` again."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # one of OUTCOMES
    value: bytes | None
    detail: str


Step = SendTo | ReadDirect | Wait | Pause | Outcome


class Call:
    """One client operation's policy, from its first request to its outcome."""

    def __init__(self, op: str, key: bytes, level: str, limit: float, now: float,
                 router: Router) -> None:
        self.op = op
        self.key = key
        self.level = level
        self.limit = limit
        self.router = router
        self.deadline = now + limit
        self.patience = limit / 3  # silence after which another coordinator is asked too
        # The coordinator gives up this much before us, so its "unavailable" reaches us in
        # time; that late answer leaves under patience / 2, which ends the call rather
        # than retrying (a timed-out write may have landed, and a retried create would
        # then report KeyExists). Quick refusals come before any write and are retried.
        self.margin = min(max(0.1 * limit, 0.15), self.patience / 2)
        self.order = router.route(key, now)
        self.tried = 0  # how many of ``order`` have been tried
        # Coordinators holding the request that have not answered, by address: a set, so
        # that a refusal the network duplicated counts once (counted twice, the call
        # took the request for free and sent a write to a second coordinator while
        # the first still held it: the simulator's duplicating links found it).
        self.holders: set[str] = set()
        self.refused = ""  # the last "unavailable" answer, if any
        self.rounds = 0  # times every node was tried
        self.asked = ""  # the node asked last
        self.ask_next_at = now
        self.outcome: Outcome | None = None
        self._reroute = False
        # With direct reads on, a quorum get first reads the key's replicas itself.
        targets = router.direct_targets(key, level, now) if op == "get" else None
        self.direct = None if targets is None else \
            DirectQuorum(targets, router.epoch, now + self.patience)
        self._direct_sent = False

    def next(self, now: float) -> Step:
        """What to do now."""
        if self.outcome is not None:
            return self.outcome
        remaining = self.deadline - now
        if remaining <= 0:
            return self._timed_out()
        direct = self.direct
        if direct is not None:
            if not self._direct_sent:
                self._direct_sent = True
                return ReadDirect(direct.targets, direct.epoch)
            if now < direct.until:
                return Wait(min(direct.until, self.deadline))
            for address in direct.silent():
                self.router.suspect(address, now)
            self.direct = None  # then ask a coordinator
        if self._reroute:
            self._reroute = False
            self.tried = 0
            self.order = self.router.route(self.key, now)
        if now >= self.ask_next_at:
            if self.waiting and self.asked:
                self.router.suspect(self.asked, now)  # silent for ``patience``: ask it last
                self.asked = ""
            if self.waiting and self.op != "get":
                # Never a second coordinator for a write: the silent one may still run it
                # later (a paused node takes its queued requests when it wakes), with a
                # version above every write acknowledged meanwhile (found by zkv chaos;
                # tests/sim/test_client_policy.py).
                self.ask_next_at = self.deadline
            elif self.tried < len(self.order):
                address = self.order[self.tried]
                self.tried += 1
                budget = remaining - min(self.margin, remaining / 2)
                return SendTo(address, max(1, int(budget * 1000)))
            elif self.waiting == 0:
                # Every node refused or is unreachable. That may change before the deadline
                # (a node finishes joining, a replica restarts): pause, then go round
                # again with a fresh ring.
                if remaining < MIN_PAUSE:  # too little left to go round again
                    return self._timed_out()
                pause = min(CONNECT_WAIT * 2 ** min(self.rounds, 8), MAX_ROUND_PAUSE, remaining)
                self.rounds += 1
                self._reroute = True
                self.router.stale = True
                return Pause(pause)
            else:
                self.ask_next_at = self.deadline
        return Wait(min(self.ask_next_at, self.deadline))

    @property
    def waiting(self) -> int:
        return len(self.holders)

    def sent(self, address: str, ok: bool, now: float) -> None:
        """The request went to ``address`` (or could not: not connected)."""
        if ok:
            self.holders.add(address)
            self.asked = address
            self.ask_next_at = now + self.patience
        else:
            self.router.suspect(address, now)

    def direct_sent(self, address: str, ok: bool, now: float) -> None:
        """The DirectRead went to ``address`` (or could not: then a coordinator is asked)."""
        if not ok:
            self.router.suspect(address, now)
            self.direct = None

    def on_reply(self, message: ClientReply | ErrorReply | DirectRecord, now: float,
                 address: str = "") -> None:
        """A reply to this call's request (the driver matches the req_id; ``address``:
        the node it came from, which a DirectRecord needs)."""
        if self.outcome is not None:
            return
        if isinstance(message, DirectRecord):
            direct = self.direct
            if direct is None:
                return  # late: a coordinator has the get now
            result = self.router.direct_reply(direct, address, message)
            if result == FALLBACK:
                self.direct = None
            elif type(result) is tuple:
                self._finish(result[0], result[1], "")
            return
        if isinstance(message, ErrorReply):
            if self.waiting:
                self._finish(REFUSED, None, message.reason)
            return
        status = message.status
        if status != "unavailable":
            self._finish(status, message.value, message.detail)
            return
        # Unavailable: this coordinator could not reach the level; another may.
        if address not in self.holders:
            return  # a duplicate, or the answer to an earlier round: already counted
        self.holders.discard(address)
        self.refused = message.detail or status
        self.router.stale = True
        if self.deadline - now < self.patience / 2:
            self._finish("unavailable", None, self.refused)
        elif self.waiting == 0:
            self.ask_next_at = now

    def _timed_out(self) -> Outcome:
        detail = f"; last answer: {self.refused}" if self.refused else ""
        return self._finish(TIMEOUT, None,
                            f"no answer at {self.level} within {self.limit:g}s{detail}")

    def _finish(self, status: str, value: bytes | None, detail: str) -> Outcome:
        self.outcome = Outcome(status, value, detail)
        return self.outcome
