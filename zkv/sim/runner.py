"""The randomized fault run: workload plus nemesis, then heal, settle and check.

``run_random`` is the simulator's main product: concurrent clients hammer a
small key space through random nodes while the nemesis crashes, isolates and
partitions nodes and makes links lossy or duplicating. Then every fault is
healed, the cluster settles, every key is read back with a quorum read (those
reads join the history), and the run is judged: no acknowledged write lost, and
the whole history linearizable (``zkv.check``). Same seed, same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from zkv.core.messages import DecodeError
from zkv.sim.cluster import SimCluster
from zkv.sim.durability import find_lost_writes
from zkv.sim.history import History
from zkv.sim.host import NodeFactory, StepError
from zkv.sim.nemesis import Nemesis, NemesisSpec
from zkv.sim.report import RunReport
from zkv.sim.workload import COUNTER_KEY, Workload, WorkloadSpec, key_name

FINAL_READ_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What one randomized run does, apart from its seed: a scenario is a spec that
    runs under many seeds (``zkv.sim.scenarios``), a failing (spec, seed) pair replays.

    ``nemesis.duration`` defaults to 0.5 s .. 0.75 * t_remove, so no fault lasts long
    enough for a node to be removed from the ring. ``warmup`` (default: until every
    node is a member and coordinates) lets the cluster form before the workload
    starts; ``settle`` (default t_remove plus two anti-entropy rounds) lets it repair
    after healing, before the final reads.
    """

    scenario: str = "random"  # the name the report gives
    nodes: int = 10
    duration: float = 30.0  # seconds of workload and faults
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    nemesis: NemesisSpec = field(default_factory=NemesisSpec)
    # Every link, all run long (the nemesis adds bursts of loss and duplication).
    drop: float = 0.0
    duplicate: float = 0.0
    delay: tuple[float, float] = (0.001, 0.010)
    clock_skew: float = 0.0  # each node's wall clock off by up to this many seconds
    warmup: float | None = None
    settle: float | None = None
    config_overrides: dict[str, Any] | None = None  # NodeConfig fields
    node_factory: NodeFactory | None = None  # a stand-in for the real node (engine tests)
    check_linearizability: bool = True
    max_check_steps: int | None = None  # the checker's budget per key; None: its default

    def params(self) -> dict[str, Any]:
        """What the report lists of this spec: the shape, and whatever is not default."""
        work, faults = self.workload, self.nemesis
        params: dict[str, Any] = {
            "nodes": self.nodes, "clients": work.clients, "keys": work.keys,
            "duration": self.duration, "faults": ",".join(faults.faults) or "none",
            "max_down": faults.max_down,
        }
        if self.drop or self.duplicate:
            params.update(drop=self.drop, duplicate=self.duplicate)
        if self.clock_skew:
            params["clock_skew"] = self.clock_skew
        if work.conditional_ratio or work.counter_clients:
            params.update(conditional_ratio=work.conditional_ratio,
                          counter_clients=work.counter_clients)
        return params


def run_random(seed: int, spec: RunSpec = RunSpec()) -> RunReport:
    """One randomized run; never raises for a bug found in the nodes (see ``report.error``)."""
    wall_start = time.perf_counter()  # for the speed report only; never steers the run
    report = RunReport(spec.scenario, seed, spec.params())
    cluster = SimCluster(seed, spec.nodes, config_overrides=spec.config_overrides,
                         node_factory=spec.node_factory, drop=spec.drop,
                         duplicate=spec.duplicate, delay=spec.delay, clock_skew=spec.clock_skew)
    config = cluster.host("n0").config
    nemesis = Nemesis(cluster, spec.nemesis, config.t_remove)
    workload = Workload(cluster, spec.workload)
    try:
        if spec.warmup is None:  # until the cluster has formed
            cluster.run_until_condition(lambda: _formed(cluster), cluster.now + 10 * config.t_fail)
        else:
            cluster.run_for(spec.warmup)
        end = cluster.now + spec.duration
        workload.start(end)
        nemesis.start(end)
        cluster.run_until(end)
        cluster.run_until_condition(lambda: workload.idle,
                                    cluster.now + workload.timeout + cluster.client_margin + 1.0)
        nemesis.heal_all()
        cluster.run_for(config.t_remove + 2 * config.anti_entropy_interval
                        if spec.settle is None else spec.settle)
        names = [key_name(i) for i in range(spec.workload.keys)]
        if spec.workload.counter_clients:
            names.append(COUNTER_KEY)
        report.final_values, report.unread_keys = _final_reads(cluster, names)
        if spec.workload.counter_clients:
            report.counter = workload.counter
    except (StepError, DecodeError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    history = cluster.history
    report.history = list(history.ops)
    report.op_counts = history.counts()
    report.statuses = history.statuses()
    report.lost_writes = find_lost_writes(history.ops, report.final_values)
    if spec.check_linearizability and report.error is None:
        report.verdict, report.linearizability = check_linearizability_of(
            history, spec.max_check_steps)
        report.linearizable = {"linearizable": True, "violation": False}.get(report.verdict)
    report.net = cluster.network.stats.snapshot()
    report.nemesis = list(nemesis.log)
    report.event_kinds = dict(sorted(cluster.events.kinds().items()))
    report.trace_digest = cluster.trace_digest()
    report.sim_time = cluster.now
    report.wall_time = time.perf_counter() - wall_start
    return report


def _formed(cluster: SimCluster) -> bool:
    """Every node is a member, holds the same settled map and coordinates."""
    nodes = [cluster.node(i) for i in cluster.running()]
    maps = {getattr(n, "cluster_map", None) for n in nodes}
    if len(maps) != 1:
        return False
    (cmap,) = maps
    return (cmap is not None and cmap.target is None
            and all(getattr(n, "coordinating", True) for n in nodes))


def _final_reads(cluster: SimCluster, keys: list[bytes]
                 ) -> tuple[dict[bytes, bytes | None], list[bytes]]:
    """Quorum-read every key once the cluster is healed; retries a few times if unavailable.

    Each attempt asks the running nodes in a random order until one answers, as a
    client does: a node that is not a member (a join still pending when the run
    ended) answers ``unavailable``, and asking only one random node per attempt
    made such nodes fail the read by chance."""
    reader = cluster.client()
    final: dict[bytes, bytes | None] = {}
    unread: list[bytes] = []
    for key in keys:
        for _ in range(FINAL_READ_ATTEMPTS):
            order = list(cluster.running())
            cluster.rng.shuffle(order)
            result = None
            for node_id in order:
                result = cluster.request(node_id, "get", key, consistency="quorum",
                                         client=reader)
                if result.status != "unavailable":
                    break
            if result is not None and result.status in ("ok", "not_found"):
                final[key] = result.value if result.status == "ok" else None
                break
            cluster.run_for(1.0)
        else:
            unread.append(key)
    return final, unread


def check_linearizability_of(history: History, max_steps: int | None = None) -> tuple[str, str]:
    """(verdict, explanation) from zkv.check. The verdict is "linearizable" (every key
    proven), "violation" (some key is not), "undecided" (no violation, but the search
    gave up on some key within ``max_steps``: unproven, which is not a pass) or
    "not checked"."""
    try:
        from zkv.check import check_history  # optional at import time
    except ImportError as exc:
        return "not checked", f"skipped: zkv.check.check_history is not available ({exc})"
    kwargs = {} if max_steps is None else {"max_steps": max_steps}
    result = check_history(history.for_checker(), **kwargs)
    summary = result.summary()
    if result.violations:
        return "violation", summary
    if result.undecided:
        return "undecided", summary
    return "linearizable", summary
