"""Concurrent clients doing random operations on a small key space, and a CAS counter.

Each client loops: think, pick an operation, a key and a node, send, wait for
the reply or its timeout, repeat, until the workload's end time. Written values
are unique (``"<process>-<n>"``), so every value read names the one write that
produced it, which is what makes the history checkable. A share of the writes
are conditional (create, update, cas); a cas expects the value some client saw
last, so it often succeeds and sometimes races.

Counter clients increment ``COUNTER_KEY`` in a loop: read it, then
cas(n, n + 1), again on a failed condition. The run's end checks the final
count against the increments acknowledged (and those whose outcome is unknown).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zkv.sim.client import ClientResult, SimClient

if TYPE_CHECKING:
    from zkv.sim.cluster import SimCluster


COUNTER_KEY = b"counter"
CONDITIONAL_KINDS = ("create", "update", "cas")


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
    conditional_ratio: float = 0.0  # share of the writes that are create, update or cas
    counter_clients: int = 0  # clients incrementing COUNTER_KEY by read-then-cas
    # Of ``clients``, how many run the library's routing and retry policy
    # (``zkv.sim.client.RoutedClient``) instead of sending each request to a random node.
    routed_clients: int = 0
    direct_reads: bool = True  # routed clients read quorum gets directly (zkv.core.direct_read)


@dataclass(slots=True)
class CounterTally:
    """What the counter clients were told: increments acknowledged, and unknown."""

    acked: int = 0
    unknown: int = 0

    def explains(self, final: bytes | None) -> bool:
        """Whether a final count can come from these increments."""
        count = int(final) if final is not None and final.isdigit() else -1 if final else 0
        return self.acked <= count <= self.acked + self.unknown


class Workload:
    def __init__(self, cluster: SimCluster, spec: WorkloadSpec) -> None:
        if spec.target not in ("running", "any"):
            raise ValueError("target must be 'running' or 'any'")
        self.cluster = cluster
        self.spec = spec
        self.keys = [key_name(i) for i in range(spec.keys)]
        self.clients: list[SimClient] = [
            cluster.routed_client(direct_reads=spec.direct_reads) if i < spec.routed_clients
            else cluster.client()
            for i in range(spec.clients)]
        self.timeout = cluster.default_timeout if spec.timeout is None else spec.timeout
        self.counters: list[SimClient] = [cluster.client() for _ in range(spec.counter_clients)]
        self.counter = CounterTally()
        self.issued = 0
        self._puts: dict[int, int] = {}
        self._seen: dict[bytes, bytes | None] = {}  # the value some client saw last, per key
        self._until = 0.0

    def start(self, until: float) -> None:
        """Clients issue requests until virtual time ``until`` (the last ones may finish later)."""
        self._until = until
        for client in self.clients:
            self._think(client)
        for client in self.counters:
            self._think_counter(client)

    @property
    def idle(self) -> bool:
        return not any(client.busy for client in self.clients + self.counters)

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
        value = expected = None
        if draw < self.spec.read_ratio:
            op = "get"
        elif draw < self.spec.read_ratio + self.spec.delete_ratio:
            op = "delete"
        else:
            op = "put"
            if rng.random() < self.spec.conditional_ratio:
                op = rng.choice(CONDITIONAL_KINDS)
            value = self._new_value(client)
            if op == "cas":
                expected = self._seen.get(key) if rng.random() < 0.8 else \
                    rng.choice([None, *filter(None, self._seen.values())])
                if rng.random() < 0.1:
                    value = None  # a cas that deletes
        self.issued += 1
        client.call(node_id, op, key, value, self.spec.consistency, self.timeout,
                    on_done=functools.partial(self._done, client), expected=expected)

    def _new_value(self, client: SimClient) -> bytes:
        n = self._puts.get(client.process, 0)
        self._puts[client.process] = n + 1
        return f"{client.process}-{n}".encode()

    def _done(self, client: SimClient, result: ClientResult) -> None:
        if result.op == "get" and result.status in ("ok", "not_found"):
            self._seen[result.key] = result.value
        elif result.status == "ok" and result.op != "delete":
            self._seen[result.key] = result.sent_value
        self._think(client)

    # ----------------------------------------------------------------- the CAS counter

    def _think_counter(self, client: SimClient) -> None:
        lo, hi = self.spec.think
        self.cluster.scheduler.call_later(self.cluster.rng.uniform(lo, hi),
                                          self._read_counter, client)

    def _node(self) -> str | None:
        cluster = self.cluster
        targets = cluster.running() if self.spec.target == "running" else cluster.node_ids
        return cluster.rng.choice(targets) if targets else None

    def _read_counter(self, client: SimClient) -> None:
        node_id = self._node()
        if self.cluster.now >= self._until:
            return
        if node_id is None:
            self.cluster.scheduler.call_later(0.1, self._read_counter, client)
            return
        self.issued += 1
        client.call(node_id, "get", COUNTER_KEY, None, self.spec.consistency, self.timeout,
                    on_done=functools.partial(self._increment, client))

    def _increment(self, client: SimClient, read: ClientResult) -> None:
        node_id = self._node()
        if read.status not in ("ok", "not_found") or node_id is None:
            self._think_counter(client)
            return
        count = int(read.value) if read.value else 0
        self.issued += 1
        client.call(node_id, "cas", COUNTER_KEY, b"%d" % (count + 1), self.spec.consistency,
                    self.timeout, expected=read.value,
                    on_done=functools.partial(self._counted, client))

    def _counted(self, client: SimClient, result: ClientResult) -> None:
        if result.status == "ok":
            self.counter.acked += 1
        elif result.status not in ("condition_failed", "invalid", "unavailable"):
            self.counter.unknown += 1
        self._think_counter(client)
