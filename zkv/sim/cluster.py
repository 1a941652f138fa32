"""SimCluster: many zkv nodes in one process, on virtual time, over EmulNet.

Everything random comes from one ``random.Random(seed)`` (``cluster.rng``) and
time only moves in the scheduler, so the same seed gives the same trace: the
same messages delivered at the same virtual instants and the same event log.
``trace_digest()`` fingerprints that trace, to prove it or to compare runs.

Nodes are ``n0``..``n{N-1}`` at ``sim://n0``...; ``n0``'s address is everyone's
seed. Each node has a MemoryStore that plays its disk: it survives ``crash()``
and is handed to the fresh Node that ``restart()`` boots.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from typing import Any

from zkv.core.actions import ClientCall
from zkv.core.config import NodeConfig
from zkv.core.messages import AdminRequest
from zkv.sim.client import ClientResult, PendingResult, RoutedClient, SimClient
from zkv.sim.events import EventLog
from zkv.sim.history import History
from zkv.sim.host import CRASHED, HALTED, LEFT, NodeFactory, NodeHost
from zkv.sim.network import LinkFaults, Network, Packet
from zkv.sim.scheduler import Scheduler
from zkv.storage.memory import FULL_DATA, MemoryStore

WALL_OFFSET = 1.7e9  # virtual t=0 is this many wall-clock seconds: versions look real
SEED_NODE = "n0"  # every node's seed
ADMIN_CLIENT = "admin://operator"  # where operators' commands come from (replies are dropped)


def default_node_factory() -> NodeFactory:
    from zkv.core.node import Node  # imported when first needed

    return Node


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (set, frozenset)):
        return sorted(repr(v) for v in value)
    return repr(value)


def canonical(fields: dict[str, Any]) -> str:
    """A stable text form of event fields (sets sorted) for the trace digest."""
    try:
        return json.dumps(fields, sort_keys=True, default=_jsonable, separators=(",", ":"))
    except TypeError:  # keys that cannot be sorted together
        return repr(sorted(fields.items(), key=lambda kv: repr(kv[0])))


class SimCluster:
    """A simulated cluster: nodes, network, clients, event log and history.

    Drive it with ``run_for`` / ``run_until`` / ``run_until_condition``; inject
    faults with ``crash`` / ``restart`` / ``stop`` / ``partition`` / ``isolate`` /
    ``heal`` / ``set_faults`` / ``set_link``; talk to it with ``request`` (or
    ``get`` / ``put`` / ``delete``, which wait) and ``submit`` (which does not).
    Every client result lands in ``history``; every Event action in ``events``.
    """

    def __init__(
        self,
        seed: int = 0,
        n_nodes: int = 3,
        *,
        config_overrides: dict[str, Any] | None = None,
        node_factory: NodeFactory | None = None,
        drop: float = 0.0,
        duplicate: float = 0.0,
        delay: tuple[float, float] = (0.001, 0.010),
        wall_offset: float = WALL_OFFSET,
        clock_skew: float = 0.0,
        client_margin: float = 0.5,
        leave_grace: float | None = None,
        record_trace: bool = False,
    ) -> None:
        """``clock_skew``: each node's wall clock is off by up to this many seconds."""
        self.seed = seed
        self.rng = random.Random(seed)
        self.scheduler = Scheduler()
        self.baseline = LinkFaults(drop, duplicate, delay[0], delay[1])
        self.network = Network(self.scheduler, self.rng, self.baseline)
        self.network.on_deliver = self._trace_delivery
        self.events = EventLog()
        self.history = History()
        self.hosts: dict[str, NodeHost] = {}
        self.clients: list[SimClient] = []
        self._scenario_clients: list[SimClient] = []
        self.config_overrides = dict(config_overrides or {})
        self.node_factory = node_factory
        self.wall_offset = wall_offset
        self.clock_skew = clock_skew
        self.client_margin = client_margin
        self._next_node = 0
        self._digest = hashlib.blake2b(digest_size=16)
        self.trace: list[tuple] | None = [] if record_trace else None
        sample = self._config("n0")
        self.default_timeout = sample.default_timeout
        self.leave_grace = sample.t_fail if leave_grace is None else leave_grace
        for _ in range(n_nodes):
            self.add_node()

    # ------------------------------------------------------------------ time

    @property
    def now(self) -> float:
        return self.scheduler.now

    def run_until(self, time: float) -> None:
        self.scheduler.run_until(time)

    def run_for(self, duration: float) -> None:
        self.scheduler.run_until(self.scheduler.now + duration)

    def run_until_condition(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Run until ``predicate()`` holds (True) or virtual time reaches ``deadline`` (False).

        ``deadline`` is an absolute virtual time; the predicate is checked after every event.
        """
        return self.scheduler.run_until(deadline, predicate)

    # ----------------------------------------------------------------- nodes

    def _config(self, node_id: str, overrides: dict[str, Any] | None = None) -> NodeConfig:
        settings: dict[str, Any] = {
            "seeds": (self.address_for(SEED_NODE),),
            "wall_offset": self.wall_offset,
        }
        settings.update(self.config_overrides)
        settings.update(overrides or {})
        config = NodeConfig(node_id=node_id, address=self.address_for(node_id), **settings)
        config.validate()
        return config

    @staticmethod
    def address_for(node_id: str) -> str:
        return f"sim://{node_id}"

    def add_node(self, config_overrides: dict[str, Any] | None = None, start: bool = True) -> str:
        """A new node ``n<k>`` (a fresh, empty store); it joins via the seed when started."""
        node_id = f"n{self._next_node}"
        self._next_node += 1
        overrides = dict(config_overrides or {})
        if self.clock_skew and "wall_offset" not in overrides:
            base = self.config_overrides.get("wall_offset", self.wall_offset)
            overrides["wall_offset"] = base + self.rng.uniform(-self.clock_skew, self.clock_skew)
        config = self._config(node_id, overrides)
        factory = self.node_factory or default_node_factory()
        host = NodeHost(self, config, MemoryStore(), factory)
        self.hosts[node_id] = host
        if start:
            host.start()
            self.log(node_id, "sim.start", {})
        return node_id

    def host(self, node_id: str) -> NodeHost:
        return self.hosts[node_id]

    def node(self, node_id: str) -> Any:
        """The running Node object (None while crashed or gone)."""
        return self.hosts[node_id].node

    def store(self, node_id: str) -> MemoryStore:
        return self.hosts[node_id].store  # type: ignore[return-value]

    def address_of(self, node_id: str) -> str | None:
        host = self.hosts.get(node_id)
        return host.address if host is not None else None

    @property
    def node_ids(self) -> list[str]:
        return list(self.hosts)

    def running(self) -> list[str]:
        """Ids of nodes whose process is up (running or leaving), in creation order."""
        return [node_id for node_id, host in self.hosts.items() if host.running]

    def down(self) -> list[str]:
        """Ids of nodes whose process is down but may be restarted (crashed or halted)."""
        return [node_id for node_id, host in self.hosts.items()
                if host.status in (CRASHED, HALTED)]

    def crash(self, node_id: str) -> None:
        """Kill the process: its memory, timers and incoming messages are lost, its disk is not."""
        host = self.hosts[node_id]
        if not host.running:
            raise ValueError(f"{node_id} is not running")
        host.crash()
        self.log(node_id, "sim.crash", {})

    def restart(self, node_id: str) -> None:
        """Boot a fresh Node on the surviving store."""
        host = self.hosts[node_id]
        if host.running:
            raise ValueError(f"{node_id} is already running")
        if host.start():
            self.log(node_id, "sim.restart", {"boot": host.boots})

    def fill_disk(self, node_id: str, full: str | None = FULL_DATA) -> None:
        """Fill (or, with None, free) a node's disk: while full, its store refuses writes
        (``StoreFull``), discarding every write since its last commit; ``FULL_DATA``
        still takes small meta updates (a node can restart), ``FULL`` nothing."""
        self.log(node_id, "sim.disk_full" if full else "sim.disk_freed", {"full": full})
        self.store(node_id).full = full

    def stop(self, node_id: str, grace: float | None = None) -> None:
        """Graceful stop (SIGTERM): deliver Shutdown, let it run ``grace`` seconds, then
        stop it. It stays a member of the cluster (down) and may be restarted."""
        grace = self.leave_grace if grace is None else grace
        self.log(node_id, "sim.stop", {"grace": grace})
        self.hosts[node_id].leave(grace)

    def pause(self, node_id: str) -> None:
        """Stall a node's process (SIGSTOP, swap, a long GC): inputs queue up, no timers."""
        self.log(node_id, "sim.pause", {})
        self.hosts[node_id].pause()

    def resume(self, node_id: str) -> None:
        self.log(node_id, "sim.resume", {})
        self.hosts[node_id].resume()

    def wipe(self, node_id: str) -> None:
        """Kill the node, empty its data directory and start it again under its old id."""
        host = self.hosts[node_id]
        if host.running:
            host.crash()
        host.store = MemoryStore()
        self.log(node_id, "sim.wipe", {})
        host.start()

    def admin(self, via: str, action: str, node_id: str) -> None:
        """An operator's membership command (``zkv node decommission|remove``), sent to
        ``via``; the node carries it out in the steps that follow."""
        self.log(via, "sim.admin", {"action": action, "node": node_id})
        self.hosts[via].step(ClientCall(ADMIN_CLIENT, AdminRequest(0, action, node_id)))

    def decommission(self, node_id: str, via: str | None = None) -> None:
        """Stream ``node_id``'s data away, then it leaves (and its process ends)."""
        self.admin(via or node_id, "decommission", node_id)

    def gone(self, node_id: str) -> bool:
        """Stopped for good: after a graceful stop, or a decommission."""
        return self.hosts[node_id].status == LEFT

    def subscribers_of(self, address: str) -> list[str]:
        """Addresses of running nodes subscribed to ``address``'s gossip, right now."""
        return [
            host.address for host in self.hosts.values()
            if host.node is not None and address in host.node.subscriptions()
        ]

    # --------------------------------------------------------------- network

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the nodes: the groups given, plus one group of every node not named."""
        named = [list(g) for g in groups]
        listed = {n for g in named for n in g}
        unknown = listed - set(self.hosts)
        if unknown:
            raise ValueError(f"unknown nodes in partition: {sorted(unknown)}")
        rest = [n for n in self.hosts if n not in listed]
        if rest:
            named.append(rest)
        self.network.partition(named)
        self.log("sim", "sim.partition", {"groups": [sorted(g) for g in named]})

    def isolate(self, node_id: str) -> None:
        """Cut one node off from every node and client (it keeps running)."""
        self.network.isolate(node_id)
        self.log(node_id, "sim.isolate", {})

    def heal(self) -> None:
        """End partitions and isolation."""
        self.network.heal()
        self.log("sim", "sim.heal", {})

    def set_faults(self, drop: float | None = None, duplicate: float | None = None,
                   delay: tuple[float, float] | None = None) -> None:
        """Change the default link faults (fields not given keep their current value)."""
        f = self.network.faults
        self.network.faults = LinkFaults(
            f.drop if drop is None else drop,
            f.duplicate if duplicate is None else duplicate,
            f.delay_min if delay is None else delay[0],
            f.delay_max if delay is None else delay[1],
        )

    def set_link(self, a: str, b: str, drop: float = 0.0, duplicate: float = 0.0,
                 delay: tuple[float, float] | None = None, both_ways: bool = True) -> None:
        base = self.network.faults
        lo, hi = delay or (base.delay_min, base.delay_max)
        self.network.set_link(a, b, LinkFaults(drop, duplicate, lo, hi), both_ways)

    def reset_faults(self) -> None:
        """Back to the faults the cluster was built with; per-link overrides removed."""
        self.network.faults = self.baseline
        self.network.clear_links()

    # --------------------------------------------------------------- clients

    def client(self) -> SimClient:
        """A new client process (``client://<k>``); its results go to ``self.history``."""
        client = SimClient(self, len(self.clients), self.client_margin)
        client.on_result = self.history.record
        self.clients.append(client)
        return client

    def routed_client(self, seeds: list[str] | None = None,
                      direct_reads: bool = True) -> RoutedClient:
        """A new client process that runs the library's policy (``zkv.core.client_policy``),
        knowing ``seeds`` (default: every node's address) to start with."""
        seeds = seeds if seeds is not None else [h.address for h in self.hosts.values()]
        client = RoutedClient(self, len(self.clients), seeds, direct_reads)
        client.on_result = self.history.record
        self.clients.append(client)
        return client

    def _idle_client(self) -> SimClient:
        """A scenario client with nothing outstanding (a new one if all are busy)."""
        for client in self._scenario_clients:
            if not client.busy:
                return client
        client = self.client()
        self._scenario_clients.append(client)
        return client

    def submit(self, node_id: str, op: str, key: str | bytes, value: str | bytes | None = None,
               consistency: str = "quorum", timeout: float | None = None,
               client: SimClient | None = None,
               expected: str | bytes | None = None) -> PendingResult:
        """Start a request without waiting; several may be in flight (one per client)."""
        client = client or self._idle_client()
        timeout = self.default_timeout if timeout is None else timeout
        return client.call(node_id, op, key, value, consistency, timeout, expected=expected)

    def request(self, node_id: str, op: str, key: str | bytes, value: str | bytes | None = None,
                consistency: str = "quorum", timeout: float | None = None,
                client: SimClient | None = None,
                expected: str | bytes | None = None) -> ClientResult:
        """Send one request and run the simulation until its reply or the client's timeout."""
        timeout = self.default_timeout if timeout is None else timeout
        pending = self.submit(node_id, op, key, value, consistency, timeout, client, expected)
        margin = (client.margin if client else self.client_margin) + 1.0
        self.run_until_condition(lambda: pending.done, self.now + timeout + margin)
        assert pending.result is not None, "the client deadline always resolves a request"
        return pending.result

    def get(self, node_id: str, key: str | bytes, **kw: Any) -> ClientResult:
        return self.request(node_id, "get", key, **kw)

    def put(self, node_id: str, key: str | bytes, value: str | bytes, **kw: Any) -> ClientResult:
        return self.request(node_id, "put", key, value, **kw)

    def delete(self, node_id: str, key: str | bytes, **kw: Any) -> ClientResult:
        return self.request(node_id, "delete", key, **kw)

    def cas(self, node_id: str, key: str | bytes, expected: str | bytes | None,
            value: str | bytes | None, **kw: Any) -> ClientResult:
        return self.request(node_id, "cas", key, value, expected=expected, **kw)

    # ------------------------------------------------------------- event log

    def log(self, node_id: str, kind: str, fields: dict[str, Any]) -> None:
        now = self.scheduler.now
        self.events.append(now, node_id, kind, fields)
        self._digest.update(f"E{now!r}|{node_id}|{kind}|{canonical(fields)}\n".encode())

    def _trace_delivery(self, now: float, packet: Packet) -> None:
        self._digest.update(
            f"M{now!r}|{packet.src}>{packet.dst_address}|{packet.channel}|".encode()
        )
        self._digest.update(packet.frame)
        if self.trace is not None:
            self.trace.append((now, packet.src, packet.dst, packet.channel, packet.frame))

    def trace_digest(self) -> str:
        """Fingerprint of every delivered message and every event so far."""
        return self._digest.hexdigest()
