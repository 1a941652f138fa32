"""Prometheus metrics of one node process, on its own registry, and the dashboard's feed.

The node loop owns the node and its store, and the HTTP server
(``zkv.net.http_server``: ``/metrics``, the dashboard and its API) answers on
other threads, so the server never calls into them: counters kept by the core
are read as plain integers (atomic under the GIL), and anything that needs the
store or the membership table (keys stored, members by status) is sampled by
the loop itself every ``refresh`` call; the dashboard reads only the snapshot
the loop ``publish``es (``zkv.net.dashboard``).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from zkv.native import native
from zkv.net.dashboard import Dashboard, DashboardFeed

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
MEMBER_STATUSES = ("alive", "down", "removed", "left")


class NodeMetrics:
    """What one node exports; ``observe_event`` is the only call on the request path."""

    def __init__(self, counters: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        # The request path's metrics are plain numbers the loop adds to, exported at
        # scrape time: ``prometheus_client``'s take a lock per observation, several
        # per client operation under load.
        self.requests = PlainCounter("zkv_requests", "Client operations coordinated by this "
                                     "node, by outcome", ("op", "status"))
        self.latency = PlainHistogram("zkv_request_latency_seconds", "Time from a client "
                                      "request reaching this coordinator to its answer")
        self.replica_latency = PlainHistogram(
            "zkv_replica_latency_seconds", "Time the group commit took in a loop turn that "
            "answered replica reads or writes (one observation each): how long a replica "
            "holds its answer until the turn's writes are durable", ("read", "write"))
        self.quorum_failures = PlainCounter("zkv_quorum_failures", "Client operations that "
                                            "did not reach their consistency level in time",
                                            ("op",))
        self.events = Counter("zkv_events", "Protocol events: ring changes, stabilization and "
                              "anti-entropy steps, repairs, corrupt records, store full...",
                              ["kind"], registry=self.registry)
        self.records_moved = Counter("zkv_records_moved", "Records sent or merged by "
                                     "stabilization, anti-entropy and stray hand-off",
                                     ["how"], registry=self.registry)
        self._event_children: dict[str, Any] = {}
        self._replica_reads = self._replica_writes = 0  # in the current turn
        self.keys_stored = 0
        self.bytes_stored = 0
        self.cpu_percent = 0.0
        self.rss_bytes = 0
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # the first call only starts the measurement
        self.members: dict[str, int] = dict.fromkeys(MEMBER_STATUSES, 0)
        self.ring: dict[str, int] = dict.fromkeys(RING_GAUGES, 0)
        self.registry.register(_Sampled(self, counters))
        ProcessCollector(registry=self.registry)
        self._counters = counters
        self.dashboard = DashboardFeed()
        self._server: Any = None

    def observe_event(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "replica_write" or kind == "replica_prepare":  # both persist, then answer
            self._replica_writes += 1
            return
        if kind == "replica_read":
            self._replica_reads += 1
            return
        self.dashboard.observe(kind, fields)
        if kind != "coordinator_done":
            self._count_event(kind, fields)
            return
        op = fields.get("op", "?")
        status = fields.get("status", "?")
        self.requests.inc((op, status))
        self.latency.observe(op, fields.get("latency") or 0.0)
        if status == "unavailable" or status == "unknown":
            self.quorum_failures.inc((op,))

    def _count_event(self, kind: str, fields: dict[str, Any]) -> None:
        child = self._event_children.get(kind)
        if child is None:
            child = self._event_children[kind] = self.events.labels(kind)
        child.inc()
        moved = _MOVED.get(kind)
        if moved is not None:
            how, field = moved
            count = fields.get(field) or 0
            if count:
                self.records_moved.labels(how).inc(count)

    def end_turn(self, commit_seconds: float) -> None:
        """The loop committed a turn: time the replica reads and writes it held."""
        for op, count in (("read", self._replica_reads), ("write", self._replica_writes)):
            if count:
                self.replica_latency.observe(op, commit_seconds, count)
        self._replica_reads = self._replica_writes = 0

    def refresh(self, keys_stored: int, members: dict[str, int], ring: dict[str, int],
                store_dir: Path | None = None) -> None:
        """Called by the node loop (the only thread that may touch the store)."""
        self.keys_stored = keys_stored
        if store_dir is not None:
            self.bytes_stored = _disk_bytes(store_dir)
        try:
            self.cpu_percent = self._process.cpu_percent(None)
            self.rss_bytes = self._process.memory_info().rss
        except psutil.Error:
            pass
        self.members = {**dict.fromkeys(MEMBER_STATUSES, 0), **members}
        self.ring = {**dict.fromkeys(RING_GAUGES, 0), **ring}

    def publish(self, node: Any) -> None:
        """Called by the node loop after ``refresh``: a new dashboard snapshot of ``node``."""
        self.dashboard.publish(node, self, self._counters())

    def serve(self, host: str, port: int, event_log: Path | None = None) -> None:
        """Serve /metrics and the dashboard on ``host:port`` (raises OSError if it cannot
        bind); the timeline starts with the end of ``event_log``."""
        from zkv.net.http_server import NodeHttpServer

        self.dashboard.event_log = event_log
        self._server = NodeHttpServer(host, port, self.registry, Dashboard(self.dashboard))

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class PlainHistogram:
    """A latency histogram by operation kept as plain lists, without
    ``prometheus_client``'s lock per observation; it can also take many equal
    observations at once (a loop turn adds the same commit time for each of its
    replica reads and writes with one bucket lookup). Kinds not named up front
    appear with their first observation."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.documentation = name, documentation
        self.counts = {label: [0] * (len(LATENCY_BUCKETS) + 1) for label in labels}
        self.sums = dict.fromkeys(labels, 0.0)

    def observe(self, label: str, seconds: float, count: int = 1) -> None:
        counts = self.counts.get(label)
        if counts is None:
            counts = self.counts[label] = [0] * (len(LATENCY_BUCKETS) + 1)
            self.sums[label] = 0.0
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += count
        self.sums[label] += seconds * count

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["op"])
        bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for label, counts in list(self.counts.items()):
            family.add_metric([label], list(zip(bounds, accumulate(list(counts)), strict=True)),
                              self.sums[label])
        return family


class PlainCounter:
    """A labelled counter kept as plain integers (see ``PlainHistogram``)."""

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...]) -> None:
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, labels: tuple[str, ...]) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=list(self.labels))
        for labels, value in list(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class _Sampled(Collector):
    """Metrics read at scrape time from integers the loop keeps current."""

    def __init__(self, metrics: NodeMetrics, counters: Callable[[], dict[str, int]]) -> None:
        self.metrics = metrics
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        c = self.counters()
        m = self.metrics
        yield CounterMetricFamily("zkv_rejected_frames", "Frames or messages refused as "
                                  "malformed or unexpected", value=c["rejected_frames"])
        yield CounterMetricFamily("zkv_checksum_failures", "Stored records that failed their "
                                  "checksum when read", value=c["checksum_failures"])
        yield CounterMetricFamily("zkv_handoff_records", "Records pushed to other replicas by "
                                  "stabilization and anti-entropy", value=c["handoff_records"])
        yield CounterMetricFamily("zkv_dropped_messages", "Outgoing messages dropped because a "
                                  "peer's queue was full", value=c["dropped_messages"])
        yield CounterMetricFamily("zkv_step_errors", "Events whose handling raised an "
                                  "exception (a bug)", value=c["step_errors"])
        yield CounterMetricFamily("zkv_withheld_messages", "Replies and acknowledgements not "
                                  "sent because the store dropped the turn's writes",
                                  value=c["withheld_messages"])
        yield CounterMetricFamily("zkv_fast_puts", "Puts this node wrote without a read "
                                  "phase (the fast_puts setting)", value=c["fast_puts"])
        yield CounterMetricFamily("zkv_fast_put_refused", "Fast puts refused because another "
                                  "node had written the key since (answered unknown)",
                                  value=c["fast_put_refused"])
        reads = CounterMetricFamily("zkv_record_cache_reads", "Record reads answered from "
                                    "the record cache (hit) or from LMDB (miss)",
                                    labels=["result"])
        reads.add_metric(["hit"], c["record_cache_hits"])
        reads.add_metric(["miss"], c["record_cache_misses"])
        yield reads
        direct = CounterMetricFamily("zkv_direct_reads", "Clients' direct reads of this "
                                     "replica: served, or refused (another epoch, a ring "
                                     "change under way, not a replica of the key)",
                                     labels=["result"])
        direct.add_metric(["served"], c["direct_served"])
        direct.add_metric(["refused"], c["direct_refused"])
        yield direct
        yield m.requests.family()
        yield m.latency.family()
        yield m.quorum_failures.family()
        yield m.replica_latency.family()
        yield GaugeMetricFamily("zkv_keys_stored", "Records (values and tombstones) this "
                                "replica holds", value=m.keys_stored)
        yield GaugeMetricFamily("zkv_store_bytes", "Bytes the store's files take on disk",
                                value=m.bytes_stored)
        yield GaugeMetricFamily("zkv_process_cpu_percent", "CPU use of the node process "
                                "since the previous sample (psutil; 100 = one core)",
                                value=m.cpu_percent)
        yield GaugeMetricFamily("zkv_process_rss_bytes", "Resident memory of the node "
                                "process (psutil)", value=m.rss_bytes)
        yield GaugeMetricFamily("zkv_native", "1 when the node runs the data path "
                                "compiled by mypyc, 0 for plain Python (docs/performance.md)",
                                value=int(native()))
        yield GaugeMetricFamily("zkv_ops_in_flight", "Client operations this node is "
                                "coordinating", value=c["ops_in_flight"])
        for name, help_text in RING_GAUGES.items():
            yield GaugeMetricFamily(f"zkv_{name}", help_text, value=m.ring[name])
        yield CounterMetricFamily("zkv_membership_refused", "Membership messages and commands "
                                  "refused (malformed or forged maps, taken addresses, "
                                  "impossible commands)", value=c["membership_refused"])
        members = GaugeMetricFamily("zkv_members", "Cluster members this node knows, by status",
                                    labels=["status"])
        for status, count in m.members.items():
            members.add_metric([status], count)
        yield members


# The ring's state as this node sees it (see ``Node.ring_gauges``).
RING_GAUGES = {
    "epoch": "Epoch of the cluster map this node holds",
    "ring_transition": "1 while a ring change is under way (quorums span the old and the "
                       "new replicas), else 0",
    "ranges_degraded": "Ranges this node streamed from fewer than a read quorum of their "
                       "old replicas (two of three lost): the survivors' data was all there was",
    "stream_keys": "Records this node received streaming the ranges it gains",
    "stream_ranges_left": "Ranges this node still has to stream in the current transition",
}

# Events that move records, and the field that says how many.
_MOVED: dict[str, tuple[str, str]] = {
    "handoff_merged": ("handoff_received", "records"),
    "anti_entropy": ("anti_entropy_sent", "pushed"),
    "strays_handoff": ("strays_sent", "keys"),
    "strays_dropped": ("strays_dropped", "keys"),
}


def _disk_bytes(directory: Path) -> int:
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
    except OSError:
        return 0
    return total
