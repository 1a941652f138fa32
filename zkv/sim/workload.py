"""Concurrent clients doing random get/put/delete on a small key space.

Each client loops: think, pick an operation, a key and a node, send, wait for
the reply or its timeout, repeat, until the workload's end time. Put values are
unique (``"<process>-<n>"``), so every value read names the one write that
produced it, which is what makes the history checkable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from zkv.sim.client import ClientResult, SimClient

if TYPE_CHECKING:
    from zkv.sim.cluster import SimCluster


def key_name(i: int) -> bytes:
    return b"k%d" % i


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    clients: int = 5
    keys: int = 5
    read_ratio: float = 0.5
    delete_ratio: float = 0.15  # the rest are puts
    think: tuple[float, float] = (0.0, 0.05)  # pause between a reply and the next request
    consistency: str = "quorum"
    timeout: float | None = None  # per request; None: the nodes' default_timeout
    target: str = "running"  # "running": only nodes whose process is up; "any": every node


class Workload:
    def __init__(self, cluster: SimCluster, spec: WorkloadSpec) -> None:
        if spec.target not in ("running", "any"):
            raise ValueError("target must be 'running' or 'any'")
        self.cluster = cluster
        self.spec = spec
        self.keys = [key_name(i) for i in range(spec.keys)]
        self.clients: list[SimClient] = [cluster.client() for _ in range(spec.clients)]
        self.timeout = cluster.default_timeout if spec.timeout is None else spec.timeout
        self.issued = 0
        self._puts: dict[int, int] = {}
        self._until = 0.0

    def start(self, until: float) -> None:
        """Clients issue requests until virtual time ``until`` (the last ones may finish later)."""
        self._until = until
        for client in self.clients:
            self._think(client)

    @property
    def idle(self) -> bool:
        return not any(client.busy for client in self.clients)

    def _think(self, client: SimClient) -> None:
        lo, hi = self.spec.think
        self.cluster.scheduler.call_later(self.cluster.rng.uniform(lo, hi), self._issue, client)

    def _issue(self, client: SimClient) -> None:
        cluster = self.cluster
        if cluster.now >= self._until:
            return
        rng = cluster.rng
        targets = cluster.running() if self.spec.target == "running" else cluster.node_ids
        if not targets:
            cluster.scheduler.call_later(0.1, self._issue, client)
            return
        node_id = rng.choice(targets)
        key = rng.choice(self.keys)
        draw = rng.random()
        value = None
        if draw < self.spec.read_ratio:
            op = "get"
        elif draw < self.spec.read_ratio + self.spec.delete_ratio:
            op = "delete"
        else:
            op = "put"
            n = self._puts.get(client.process, 0)
            self._puts[client.process] = n + 1
            value = f"{client.process}-{n}".encode()
        self.issued += 1
        client.call(node_id, op, key, value, self.spec.consistency, self.timeout,
                    on_done=lambda result, c=client: self._done(c, result))

    def _done(self, client: SimClient, result: ClientResult) -> None:
        self._think(client)
