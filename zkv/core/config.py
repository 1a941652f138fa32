"""Settings of one node's protocol: identity, timers, replication, limits."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    max_key: int = 1024
    max_value: int = 1024 * 1024
    default_timeout: float = 2.0
    wall_offset: float = 0.0  # added to ``now`` to get wall-clock seconds for versions
    # A peer message carrying a version whose wall time is further ahead of this
    # node's clock than this (seconds) is refused: see ``Node.step`` and docs/security.md.
    max_version_ahead: float = 60.0
    extra: dict = field(default_factory=dict)  # settings of experimental or test nodes

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        if not self.node_id:
            raise ValueError("node_id: must not be empty")
        if self.replicas < 1:
            raise ValueError("replicas: must be at least 1")
        if self.vnodes < 1:
            raise ValueError("vnodes: must be at least 1")
        if self.consistency not in ("one", "quorum", "all"):
            raise ValueError("consistency: must be one, quorum or all")
        if not 0 < self.gossip_interval < self.t_fail < self.t_remove:
            raise ValueError("timers: need 0 < gossip_interval < t_fail < t_remove")
        if self.removal not in ("auto", "manual"):
            raise ValueError("removal: must be auto or manual")
        if self.max_key < 1 or self.max_value < 0:
            raise ValueError("max_key/max_value: must be positive")
        if not self.max_version_ahead > 0:
            raise ValueError("max_version_ahead: must be greater than 0 seconds")
