"""Everything one node process needs to start: the protocol config plus where it lives.

Port layout (one number to configure per node): the request ROUTER listens on
``port``, the gossip PUB on ``port + 1`` and the Prometheus metrics on
``port + 2``, unless ``metrics_port`` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zkv.core.config import NodeConfig


def node_address(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"


def gossip_address(address: str) -> str:
    """The PUB endpoint that belongs to a node's request address (port + 1)."""
    head, _, port = address.rpartition(":")
    return f"{head}:{int(port) + 1}"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    node: NodeConfig
    host: str
    port: int
    data_dir: Path
    metrics_port: int | None = None  # None: port + 2; 0: no metrics server
    sync: bool = True  # fsync each group commit
    map_size: int = 64 * 1024 * 1024
    max_map_size: int = 64 * 1024 * 1024 * 1024
    event_log_max_bytes: int = 64 * 1024 * 1024
    shutdown_grace: float = 2.0  # seconds to finish in-flight work after SIGTERM
    extra: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        return node_address(self.host, self.port)

    @property
    def gossip_port(self) -> int:
        return self.port + 1

    @property
    def effective_metrics_port(self) -> int | None:
        if self.metrics_port == 0:
            return None
        return self.metrics_port if self.metrics_port is not None else self.port + 2
