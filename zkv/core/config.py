"""Settings of one node's protocol: identity, timers, replication, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from zkv.core.quorum import LEVELS

# Size limits a node enforces unless configured otherwise (``limits.max_key``,
# ``limits.max_value``); the client checks the same ones before it sends.
MAX_KEY = 1024
MAX_VALUE = 1024 * 1024


class Removal(str, Enum):
    """Who removes a node that stays silent from the ring: ``auto``, its ``t_remove``
    timer (a majority decides, see ``zkv.core.ring_changes``); ``manual``, only an
    operator (``zkv node remove``)."""

    auto = "auto"
    manual = "manual"


REMOVAL_POLICIES: tuple[str, ...] = tuple(policy.value for policy in Removal)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    address: str
    seeds: tuple[str, ...] = ()  # addresses of seed nodes
    replicas: int = 3
    vnodes: int = 64
    consistency: str = "quorum"  # default when a request does not say
    gossip_interval: float = 0.2
    t_fail: float = 2.0  # no fresh heartbeat for this long: down (still in the ring)
    t_remove: float = 8.0  # no fresh heartbeat for this long: removable from the ring
    removal: str = "auto"  # auto: the t_remove timer proposes removals; manual: operators do
    retry_interval: float = 0.1  # resend unanswered replica requests and hand-offs
    anti_entropy_interval: float = 5.0  # one digest message per round; cheap
    handoff_batch: int = 256
    tombstone_grace: float = 86400.0  # a tombstone older than this is dropped (docs/consistency.md)
    tombstone_gc_interval: float = 3600.0  # each collection reads every record (in steps)
    max_key: int = MAX_KEY
    max_value: int = MAX_VALUE
    default_timeout: float = 2.0
    wall_offset: float = 0.0  # added to ``now`` to get wall-clock seconds for versions
    # A peer message carrying a version whose wall time is further ahead of this
    # node's clock than this (seconds) is refused: see ``Node.step`` and docs/security.md.
    max_version_ahead: float = 60.0
    # A key's primary writes a put without reading first when it remembers the key's
    # version (``Coordinator._fast_put``); off: every put reads a quorum first.
    fast_puts: bool = True
    # Where this node serves metrics and the dashboard, gossiped: None for the default
    # (port + 2), 0 for nowhere (``MemberState.http_port``).
    http_port: int | None = None
    extra: dict = field(default_factory=dict)  # settings of experimental or test nodes

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        if not self.node_id:
            raise ValueError("node_id: must not be empty")
        if self.replicas < 1:
            raise ValueError("replicas: must be at least 1")
        if self.vnodes < 1:
            raise ValueError("vnodes: must be at least 1")
        if self.consistency not in LEVELS:
            raise ValueError(f"consistency: must be one of {', '.join(LEVELS)}")
        problem = timer_order(self.gossip_interval, self.t_fail, self.t_remove)
        if problem is not None:
            raise ValueError(": ".join(problem))
        if self.removal not in REMOVAL_POLICIES:
            raise ValueError(f"removal: must be one of {', '.join(REMOVAL_POLICIES)}")
        if self.max_key < 1 or self.max_value < 0:
            raise ValueError("max_key/max_value: must be positive")
        if not self.max_version_ahead > 0:
            raise ValueError("max_version_ahead: must be greater than 0 seconds")


def timer_order(gossip_interval: float, t_fail: float, t_remove: float) -> tuple[str, str] | None:
    """The failure timers must grow: a node gossips more than once before its silence
    counts as a failure (``gossip_interval < t_fail``), and is down before it may be
    removed from the ring (``t_fail < t_remove``). The first timer that breaks this
    and what is wrong with it, or None."""
    if not gossip_interval > 0:
        return "gossip_interval", "must be greater than 0"
    if not gossip_interval < t_fail:
        return "t_fail", f"must be greater than gossip_interval ({gossip_interval})"
    if not t_fail < t_remove:
        return "t_remove", f"must be greater than t_fail ({t_fail})"
    return None
