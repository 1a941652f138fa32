"""EmulNet's wire: every message is encoded, subjected to faults, and decoded.

Each transmission goes through ``zkv.core.messages.encode`` and ``decode``, so the
codec runs on every message the simulator carries. Faults are decided at send
time from the one seeded generator: loss (drop probability), latency (uniform
between ``delay_min`` and ``delay_max``, which also reorders messages) and
duplication (a second copy with its own latency; never of a client's request,
see ``duplicate_client_requests``). Partitions and isolation are
checked at send time and again on arrival, so a cut also loses what was in
flight. An endpoint that is not attached when a message arrives (a crashed
node) loses it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from zkv.core.messages import Message, decode, encode
from zkv.sim.scheduler import Scheduler

# What a transmission is: a node's point-to-point message, its gossip, a client's
# request to a node, or a node's reply to a client.
PEER, GOSSIP, CLIENT, REPLY = "peer", "gossip", "client", "reply"


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """How one link (or, as the default, every link) misbehaves."""

    drop: float = 0.0  # probability a transmission is lost
    duplicate: float = 0.0  # probability a second copy is delivered too
    delay_min: float = 0.001  # seconds
    delay_max: float = 0.010

    def __post_init__(self) -> None:
        if not (0.0 <= self.drop <= 1.0 and 0.0 <= self.duplicate <= 1.0):
            raise ValueError("drop and duplicate must be probabilities in [0, 1]")
        if not 0.0 <= self.delay_min <= self.delay_max:
            raise ValueError("need 0 <= delay_min <= delay_max")


class Packet(NamedTuple):
    src: str  # endpoint id of the sender (a node id, or a client's address)
    src_address: str
    dst: str
    dst_address: str
    channel: str  # PEER | GOSSIP | CLIENT | REPLY
    frame: bytes


Handler = Callable[[Packet, Message], None]


@dataclass(slots=True)
class NetStats:
    sent: int = 0  # transmissions attempted (a publish counts once per subscriber)
    delivered: int = 0
    dropped: int = 0
    duplicated: int = 0
    bytes_sent: int = 0
    drop_reasons: Counter = field(default_factory=Counter)  # loss|partition|isolated|down|...
    sent_by_type: Counter = field(default_factory=Counter)  # message class name -> count

    def snapshot(self) -> dict:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "duplicated": self.duplicated,
            "bytes_sent": self.bytes_sent,
            "drop_reasons": dict(sorted(self.drop_reasons.items())),
            "sent_by_type": dict(sorted(self.sent_by_type.items())),
        }


class Network:
    """Carries frames between attached endpoints under the configured faults.

    ``partition(groups)`` splits the endpoints it names into groups that cannot
    reach one another; endpoints named in no group (clients, by default) reach
    everyone. ``isolate(id)`` cuts one endpoint off from everybody, clients too.
    """

    def __init__(self, scheduler: Scheduler, rng: random.Random,
                 faults: LinkFaults | None = None) -> None:
        self.scheduler = scheduler
        self.rng = rng
        self.faults = faults or LinkFaults()
        self.stats = NetStats()
        self._links: dict[tuple[str, str], LinkFaults] = {}
        self._ids: dict[str, str] = {}  # address -> endpoint id (kept after detach)
        self._handlers: dict[str, Handler] = {}  # address -> handler, only while attached
        self._group: dict[str, int] = {}  # endpoint id -> partition group
        self._isolated: set[str] = set()
        self.on_deliver: Callable[[float, Packet], None] | None = None  # trace hook
        # A client talks to its node over one connection that never duplicates a
        # request; a duplicated request would be a second request, which no store
        # can keep linearizable without request ids. So by default only node
        # traffic and replies to clients are duplicated; loss and delay hit all.
        self.duplicate_client_requests = False

    # -------------------------------------------------------------- endpoints

    def attach(self, address: str, endpoint: str, handler: Handler) -> None:
        self._ids[address] = endpoint
        self._handlers[address] = handler

    def detach(self, address: str) -> None:
        """Messages arriving from now on at ``address`` are lost (until re-attached)."""
        self._handlers.pop(address, None)

    def is_attached(self, address: str) -> bool:
        return address in self._handlers

    def endpoint_of(self, address: str) -> str | None:
        return self._ids.get(address)

    # ----------------------------------------------------------------- faults

    def set_link(self, a: str, b: str, faults: LinkFaults | None, both_ways: bool = True) -> None:
        """Override the faults of the link a -> b (and b -> a); None restores the default."""
        for link in ((a, b), (b, a)) if both_ways else ((a, b),):
            if faults is None:
                self._links.pop(link, None)
            else:
                self._links[link] = faults

    def clear_links(self) -> None:
        self._links.clear()

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Replace any partition: endpoints in different groups cannot talk."""
        self._group = {}
        for i, group in enumerate(groups):
            for endpoint in group:
                if endpoint in self._group:
                    raise ValueError(f"{endpoint} is in more than one partition group")
                self._group[endpoint] = i

    def isolate(self, endpoint: str) -> None:
        self._isolated.add(endpoint)

    def reconnect(self, endpoint: str) -> None:
        self._isolated.discard(endpoint)

    def heal(self) -> None:
        """End every partition and isolation (loss, delay and duplication stay as set)."""
        self._group = {}
        self._isolated.clear()

    @property
    def isolated(self) -> frozenset[str]:
        return frozenset(self._isolated)

    @property
    def split(self) -> bool:
        """Whether a partition (groups) is in force."""
        return bool(self._group)

    @property
    def partitioned(self) -> bool:
        return bool(self._group) or bool(self._isolated)

    def blocked(self, a: str, b: str) -> str | None:
        """Why a cannot reach b right now ("isolated" / "partition"), or None."""
        if a == b:
            return None
        if a in self._isolated or b in self._isolated:
            return "isolated"
        ga = self._group.get(a)
        gb = self._group.get(b)
        if ga is not None and gb is not None and ga != gb:
            return "partition"
        return None

    # -------------------------------------------------------------- transport

    def send(self, src: str, src_address: str, dst_address: str, message: Message,
             channel: str) -> None:
        self.multicast(src, src_address, (dst_address,), message, channel)

    def multicast(self, src: str, src_address: str, dst_addresses: Iterable[str],
                  message: Message, channel: str) -> None:
        """Encode once, then transmit to each address independently (own faults, own delay)."""
        frame = encode(message)
        kind = type(message).__name__
        stats = self.stats
        rng = self.rng
        now = self.scheduler.now
        for dst_address in dst_addresses:
            stats.sent += 1
            stats.bytes_sent += len(frame)
            stats.sent_by_type[kind] += 1
            dst = self._ids.get(dst_address)
            if dst is None:
                self._drop("unknown_address")
                continue
            reason = self.blocked(src, dst)
            if reason is not None:
                self._drop(reason)
                continue
            faults = self._links.get((src, dst), self.faults)
            if faults.drop and rng.random() < faults.drop:
                self._drop("loss")
                continue
            packet = Packet(src, src_address, dst, dst_address, channel, frame)
            duplicate = faults.duplicate
            if channel == CLIENT and not self.duplicate_client_requests:
                duplicate = 0.0
            copies = 2 if duplicate and rng.random() < duplicate else 1
            if copies == 2:
                stats.duplicated += 1
            for _ in range(copies):
                delay = rng.uniform(faults.delay_min, faults.delay_max)
                self.scheduler.call_at(now + delay, self._arrive, packet)

    def _drop(self, reason: str) -> None:
        self.stats.dropped += 1
        self.stats.drop_reasons[reason] += 1

    def _arrive(self, packet: Packet) -> None:
        handler = self._handlers.get(packet.dst_address)
        if handler is None:
            self._drop("down")
            return
        reason = self.blocked(packet.src, packet.dst)  # a cut also loses what is in flight
        if reason is not None:
            self._drop(reason)
            return
        # A DecodeError here means our own encoder produced a frame the decoder
        # rejects: a codec bug, which must stop the run rather than be hidden.
        message = decode(packet.frame)
        self.stats.delivered += 1
        if self.on_deliver is not None:
            self.on_deliver(self.scheduler.now, packet)
        handler(packet, message)
