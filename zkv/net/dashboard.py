"""The dashboard of one node: the snapshot its loop publishes, and the JSON API built on it.

Two threads, one rule: the node loop owns the node and its store, and the HTTP
server answers on its own threads, so the HTTP side never calls into either.
The loop feeds ``DashboardFeed`` (``observe`` for each protocol event, from the
metrics hook it already calls) and, twice a second in its metric sample,
``publish``es a ``NodeView``: an immutable snapshot of what the dashboard
shows of this node. ``Dashboard`` (HTTP threads) reads only the latest view,
swapped in as one reference, and the views other nodes serve at their
``/api/node``, fetched over HTTP with a short timeout; so no request waits on
the loop and no loop turn waits on a request or on a peer.

Every node shows the whole cluster: its membership table says who the peers
are and at which port each serves HTTP (the gossip carries it), and their
figures come from their own ``/api/node``. A peer that does not answer keeps
its last figures, marked stale, and its status is what this node's failure
detector says (``down`` once it has been silent for ``t_fail``).

The endpoints are documented in docs/dashboard.md.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from zkv.core.ring import TOKEN_SPACE, Ring, token

EVENTS_KEPT = 200  # recent timeline events a node keeps in memory
EVENTS_REPORTED = 100  # of those, how many its /api/node hands to peers
EVENTS_MAX = 500  # the most /api/events returns
HISTORY_BYTES = 256 * 1024  # tail of events.jsonl read at start (the timeline before it)
BUCKETS_KEPT = 20  # publish intervals of operations kept: 10 s at two a second
RATE_BUCKETS = 4  # of those, the ones ops/s is measured over (about 2 s)
LATENCY_SAMPLES = 2048  # latencies kept per interval (a reservoir beyond that)
PEER_TIMEOUT = 0.5  # seconds a peer's /api/node may take
PEERS_FRESH = 0.4  # seconds one round of peer reports serves every request
PEER_WORKERS = 8
REPORT_BYTES = 1024 * 1024  # the largest /api/node answer read from a peer

# Events worth a line in the timeline. Per-operation events (replica reads and
# writes, read repairs, coordinator outcomes) are counted, not listed.
TIMELINE = frozenset({
    "ready", "stopped", "stopping", "rebooted", "stall", "step_error", "store_full",
    "member_status", "majority_lost", "joined", "removed", "decommissioned",
    "map_propose", "map_decided", "map_adopted", "map_proposal_failed", "map_refused",
    "command", "command_refused", "join_refused",
    "stream_start", "stream_done", "ranges_degraded",
    "anti_entropy", "corrupt_record", "strays_dropped", "tombstones_collected",
})
FAILED = ("unavailable", "unknown")  # outcomes counted as failed operations


# --------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member as this node sees it."""

    node_id: str
    address: str  # tcp://host:port
    incarnation: int
    status: str  # this node's failure detector: alive, down, removed, left (unknown: none)
    ring: str | None  # place in the cluster map: normal, joining, leaving, removing
    http_port: int | None  # None: the default (request port + 2); 0: no HTTP server


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the dashboard shows of one node; built by the loop, read by HTTP threads."""

    node_id: str
    address: str
    http_port: int | None  # as gossiped (``MemberView.http_port``)
    pid: int
    incarnation: int
    started: float  # wall-clock seconds
    taken: float  # wall-clock seconds this view was built
    epoch: int
    transition: bool
    ring: frozenset[str]
    target: frozenset[str] | None
    replicas: int
    vnodes: int
    max_key: int
    t_fail: float
    removal: str
    members: tuple[MemberView, ...]
    figures: dict[str, Any]  # JSON-ready, never changed after publishing
    events: tuple[dict[str, Any], ...]  # newest last

    def report(self) -> dict[str, Any]:
        """``/api/node``: this node's own figures and recent events."""
        return {
            "node": self.node_id, "address": self.address, "pid": self.pid,
            "incarnation": self.incarnation, "started": self.started,
            "uptime": round(max(0.0, time.time() - self.started), 1), "time": self.taken,
            "epoch": self.epoch, "transition": self.transition, "figures": self.figures,
            "events": [dict(e, node=self.node_id) for e in self.events[-EVENTS_REPORTED:]],
        }


class _Figures(Protocol):
    """What the feed reads from ``zkv.net.metrics.NodeMetrics`` when it publishes."""

    keys_stored: int
    bytes_stored: int
    cpu_percent: float
    rss_bytes: int


@dataclass(slots=True)
class _Bucket:
    """Client operations this node coordinated in one publish interval."""

    at: float  # monotonic seconds the interval ended
    ops: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    seen: int = 0  # latencies offered (more than kept when the reservoir is full)


class DashboardFeed:
    """The loop's side: counts what happens and publishes ``view`` (see the module doc)."""

    def __init__(self) -> None:
        self.view: NodeView | None = None  # the one attribute HTTP threads read
        self.event_log: Path | None = None  # the node's events.jsonl, read at the first publish
        self._started = time.time()
        self._events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._current = _Bucket(time.monotonic())
        self._buckets: deque[_Bucket] = deque(maxlen=BUCKETS_KEPT)
        self._ops_total: dict[str, int] = {}
        self._failed_total = 0
        self._repairs = {"anti_entropy_rounds": 0, "anti_entropy_records": 0,
                         "read_repairs": 0, "corrupt_records": 0, "handoff_records": 0}

    # -- fed by the loop

    def load_history(self, event_log: Path) -> None:
        """Start the timeline with the end of the node's event log: this run's start (the
        runtime logs ``ready`` itself) and the runs before."""
        self._events.clear()  # what was observed so far is in the file too
        try:
            with open(event_log, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - HISTORY_BYTES))
                tail = f.read()
        except OSError:
            return
        lines = tail.split(b"\n")
        if len(tail) == HISTORY_BYTES or size > HISTORY_BYTES:
            lines = lines[1:]  # the first one is cut
        for line in lines:
            try:
                event = json.loads(line)
                kind, fields, ts = event["kind"], event["fields"], float(event["ts"])
            except (ValueError, KeyError, TypeError):
                continue
            if kind in TIMELINE and isinstance(fields, dict) and _worth_listing(kind, fields):
                self._events.append({"ts": ts, "kind": kind, "text": describe(kind, fields)})

    def observe(self, kind: str, fields: dict[str, Any]) -> None:
        """One protocol event (``NodeMetrics.observe_event``); cheap, on the request path."""
        if kind == "coordinator_done":
            bucket = self._current
            op = fields.get("op", "?")
            bucket.ops[op] = bucket.ops.get(op, 0) + 1
            if fields.get("status") in FAILED:
                bucket.failed += 1
            latency = fields.get("latency")
            if isinstance(latency, (int, float)):
                bucket.seen += 1
                if len(bucket.latencies) < LATENCY_SAMPLES:
                    bucket.latencies.append(float(latency))
                else:  # keep a uniform sample without a random generator
                    bucket.latencies[bucket.seen * 7919 % LATENCY_SAMPLES] = float(latency)
            return
        repairs = self._repairs
        if kind == "read_repair":
            repairs["read_repairs"] += 1
        elif kind == "anti_entropy":
            moved = _count(fields.get("pushed")) + _count(fields.get("pulled"))
            if moved:
                repairs["anti_entropy_rounds"] += 1
                repairs["anti_entropy_records"] += moved
        elif kind == "corrupt_record":
            repairs["corrupt_records"] += _count(fields.get("count"))
        elif kind == "handoff_merged":
            repairs["handoff_records"] += _count(fields.get("records"))
        if kind in TIMELINE and _worth_listing(kind, fields):
            self._events.append({"ts": round(time.time(), 3), "kind": kind,
                                 "text": describe(kind, fields)})

    def publish(self, node: Any, metrics: _Figures, counters: dict[str, int]) -> None:
        """Build and swap in a new ``view`` of ``node`` (a ``zkv.core.node.Node``); only
        the loop calls this, so only the loop reads the node."""
        if self.event_log is not None:
            self.load_history(self.event_log)
            self.event_log = None
        now = time.monotonic()
        done = self._current
        done.at = now
        self._buckets.append(done)
        self._current = _Bucket(now)
        for op, n in done.ops.items():
            self._ops_total[op] = self._ops_total.get(op, 0) + n
        self._failed_total += done.failed

        status = node.status()
        places = status.get("members", {})
        membership = node.membership
        members: dict[str, MemberView] = {}
        for node_id, m in membership.members.items():
            place = places.get(node_id, {})
            members[node_id] = MemberView(node_id, m.state.address, m.state.incarnation,
                                          m.status, place.get("state"), m.state.http_port)
        for node_id, place in places.items():
            if node_id not in members:  # in the map, never heard of by gossip yet
                members[node_id] = MemberView(node_id, place.get("address", ""), 0,
                                              "unknown", place.get("state"), None)
        cmap = node.cluster_map
        streaming = dict(status.get("streaming", {}))
        streaming["active"] = bool(cmap is not None and cmap.target is not None
                                   and streaming.get("ranges_done", 0) < streaming.get("ranges", 0))
        config = node.config
        self.view = NodeView(
            node_id=node.node_id, address=node.address, http_port=config.http_port,
            pid=os.getpid(), incarnation=node.incarnation, started=self._started,
            taken=round(time.time(), 3), epoch=status.get("epoch", 0),
            transition=cmap is not None and cmap.target is not None,
            ring=frozenset(node.ring.nodes),
            target=frozenset(cmap.target) if cmap is not None and cmap.target is not None
            else None,
            replicas=node.ring.replicas, vnodes=node.ring.vnodes, max_key=config.max_key,
            t_fail=config.t_fail, removal=config.removal,
            members=tuple(sorted(members.values(), key=lambda m: m.node_id)),
            figures=self._figures(metrics, counters, streaming),
            events=tuple(self._events),
        )

    def _figures(self, metrics: _Figures, counters: dict[str, int],
                 streaming: dict[str, Any]) -> dict[str, Any]:
        recent = list(self._buckets)[-RATE_BUCKETS:]
        span = recent[-1].at - recent[0].at if len(recent) > 1 else 0.0
        rated = recent[1:] if span > 0 else []  # the first bucket's end starts the span
        ops_per_s: dict[str, float] = {}
        for bucket in rated:
            for op, n in bucket.ops.items():
                ops_per_s[op] = ops_per_s.get(op, 0.0) + n
        failed_recent = sum(b.failed for b in rated)
        latencies = sorted(x for b in self._buckets for x in b.latencies)
        return {
            "keys": metrics.keys_stored,
            "bytes": metrics.bytes_stored,
            "cpu_percent": round(metrics.cpu_percent, 1),
            "rss_bytes": metrics.rss_bytes,
            "ops_per_s": {op: round(n / span, 1) for op, n in sorted(ops_per_s.items())}
            if span > 0 else {},
            "ops_total": dict(sorted(self._ops_total.items())),
            "failed_total": self._failed_total,
            "failed_per_s": round(failed_recent / span, 2) if span > 0 else 0.0,
            "latency_ms": {"p50": _percentile_ms(latencies, 0.50),
                           "p99": _percentile_ms(latencies, 0.99),
                           "window_s": round(self._window(), 1)},
            "in_flight": counters.get("ops_in_flight", 0),
            "streaming": streaming,
            "repairs": dict(self._repairs,
                            checksum_failures=counters.get("checksum_failures", 0)),
        }

    def _window(self) -> float:
        if len(self._buckets) < 2:
            return 0.0
        return self._buckets[-1].at - self._buckets[0].at


def _count(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    i = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))  # nearest rank
    return round(ordered[i] * 1000, 3)


def _worth_listing(kind: str, fields: dict[str, Any]) -> bool:
    """Anti-entropy rounds that moved nothing would bury the timeline: listed only when
    they repaired something."""
    if kind == "anti_entropy":
        return bool(_count(fields.get("pushed")) or _count(fields.get("pulled")))
    return True


def _ids(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v) if v else "none"
    return str(v)


def describe(kind: str, f: dict[str, Any]) -> str:
    """One line a person reads in the timeline (keys are never shown, only counts)."""
    g = f.get
    if kind == "member_status":
        was = f" (was {g('old')})" if g("old") else ""
        return f"sees {g('node')} {g('new')}{was}"
    if kind == "map_adopted":
        text = f"epoch {g('epoch')}: ring {_ids(g('ring'))}"
        if g("target") is not None:
            text += f" -> {_ids(g('target'))}"
        if g("gone"):
            text += f" (dead: {_ids(g('gone'))})"
        return text
    if kind == "map_propose":
        return f"proposes epoch {g('epoch')}: {g('why')}"
    if kind == "map_decided":
        return f"epoch {g('epoch')} decided: {g('why')}"
    if kind == "stream_start":
        text = f"streams {g('ranges')} ranges it gains (epoch {g('epoch')})"
        if g("degraded"):
            text += f", {g('degraded')} degraded"
        if g("resumed"):
            text += f", {g('resumed')} already done"
        return text
    if kind == "stream_done":
        return f"streamed its ranges: {g('keys')} keys, {g('bytes')} bytes (epoch {g('epoch')})"
    if kind == "ranges_degraded":
        return (f"{g('ranges')} ranges streamed from fewer than a read quorum "
                f"(epoch {g('epoch')})")
    if kind == "anti_entropy":
        return f"anti-entropy with {g('peer')}: pushed {g('pushed')}, pulled {g('pulled')}"
    if kind == "corrupt_record":
        return f"{g('count')} corrupt records found; repaired from the other replicas"
    if kind == "strays_dropped":
        return f"dropped {g('keys')} copies it no longer owns"
    if kind == "tombstones_collected":
        return f"collected {g('keys')} tombstones"
    if kind in ("command", "command_refused"):
        text = f"operator: {g('action')} {g('node')}"
        return text + (f" refused: {g('reason')}" if kind == "command_refused" else "")
    if kind == "ready":
        return f"ready at {g('address')} (pid {g('pid')}, incarnation {g('incarnation')})"
    if kind == "stopped":
        return f"stopped (exit {g('exit')})"
    if kind == "stall":
        return f"loop stalled {g('seconds')} s"
    if kind in ("joined", "removed", "decommissioned"):
        return f"{kind} (epoch {g('epoch')})"
    if kind == "majority_lost":
        return "lost sight of a majority: proposes nothing"
    detail = ", ".join(f"{k} {v}" for k, v in f.items()
                       if k not in ("key", "keys") and isinstance(v, (str, int, float)))
    return kind.replace("_", " ") + (f": {detail}" if detail else "")


# --------------------------------------------------------------------------- HTTP side


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a message for people."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class PeerReport:
    report: dict[str, Any] | None  # the last /api/node that answered, if any
    answering: bool
    age: float | None  # seconds since ``report`` was fetched


class PeerReports:
    """Peers' ``/api/node``, fetched in parallel with a short timeout; one round serves
    every request for ``PEERS_FRESH`` seconds, so many viewers cost one round."""

    def __init__(self, timeout: float = PEER_TIMEOUT, fresh: float = PEERS_FRESH) -> None:
        self.timeout = timeout
        self.fresh = fresh
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._round_at = -1e18
        self._round: dict[str, tuple[str, bool]] = {}  # node -> (url, answered)
        self._last: dict[str, tuple[float, dict[str, Any]]] = {}  # node -> (when, report)
        # Peers' reports go straight to them: never through a proxy of the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, targets: dict[str, str]) -> dict[str, PeerReport]:
        """The reports of ``targets`` (node id -> URL), fetched now or moments ago."""
        with self._lock:
            now = time.monotonic()
            fresh = {n: u for n, (u, _) in self._round.items()}
            if now - self._round_at >= self.fresh or fresh != targets:
                self._fetch_round(targets)
                now = time.monotonic()
            out = {}
            for node_id in targets:
                answered = self._round.get(node_id, ("", False))[1]
                last = self._last.get(node_id)
                out[node_id] = PeerReport(last[1] if last else None, answered,
                                          round(now - last[0], 1) if last else None)
            return out

    def _fetch_round(self, targets: dict[str, str]) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PEER_WORKERS, thread_name_prefix="zkv-peers")
        futures = {n: (url, self._pool.submit(self._fetch, n, url)) for n, url in targets.items()}
        deadline = time.monotonic() + self.timeout + 0.2
        round_: dict[str, tuple[str, bool]] = {}
        for node_id, (url, future) in futures.items():
            try:
                report = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except (FutureTimeout, Exception):  # noqa: BLE001 - any failure: no answer
                report = None
            if report is not None:
                self._last[node_id] = (time.monotonic(), report)
            round_[node_id] = (url, report is not None)
        for node_id in list(self._last):
            if node_id not in targets:
                del self._last[node_id]
        self._round = round_
        self._round_at = time.monotonic()

    def _fetch(self, node_id: str, url: str) -> dict[str, Any] | None:
        try:
            with self._opener.open(url, timeout=self.timeout) as response:
                body = response.read(REPORT_BYTES + 1)
        except (OSError, urllib.error.URLError, ValueError):
            return None
        if len(body) > REPORT_BYTES:
            return None
        try:
            report = json.loads(body)
        except ValueError:
            return None
        # Whoever answers on that port must be the node we asked (a port can be reused).
        if not isinstance(report, dict) or report.get("node") != node_id:
            return None
        return report

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def http_url(address: str, port: int | None) -> str | None:
    """The base URL of a node's HTTP server from its request address and gossiped HTTP
    port (None: the default, request port + 2; 0: it serves none)."""
    if port == 0:
        return None
    rest = address.partition("://")[2] or address
    host, _, request_port = rest.rpartition(":")
    if port is None:
        if not request_port.isdigit():
            return None
        port = int(request_port) + 2
    return f"http://{host}:{port}" if host else None


class Dashboard:
    """The HTTP threads' side: the JSON of each endpoint, from views only."""

    def __init__(self, feed: DashboardFeed, peers: PeerReports | None = None) -> None:
        self.feed = feed
        self.peers = peers or PeerReports()
        self._rings: dict[tuple[frozenset[str], int, int], Ring] = {}
        self._rings_lock = threading.Lock()

    def close(self) -> None:
        self.peers.close()

    def _view(self) -> NodeView:
        view = self.feed.view
        if view is None:
            raise ApiError(503, "the node is starting; try again in a second")
        return view

    def _ring(self, nodes: frozenset[str], replicas: int, vnodes: int) -> Ring:
        """The ring over ``nodes``: the same ``Ring`` clients build from a RingInfo
        (``Client.locate``), so a key's replicas here are the ones ``zkv locate`` prints."""
        key = (nodes, replicas, vnodes)
        with self._rings_lock:
            ring = self._rings.get(key)
            if ring is None:
                if len(self._rings) >= 4:
                    self._rings.clear()
                ring = self._rings[key] = Ring(nodes, replicas, vnodes)
            return ring

    # -- endpoints

    def node(self) -> dict[str, Any]:
        return self._view().report()

    def status(self) -> dict[str, Any]:
        view = self._view()
        targets = {}
        for m in view.members:
            url = http_url(m.address, m.http_port)
            if m.node_id != view.node_id and url and m.status != "left":
                targets[m.node_id] = url + "/api/node"
        reports = self.peers.get(targets)
        own = view.report()
        members = []
        for m in view.members:
            url = http_url(m.address, m.http_port)
            entry: dict[str, Any] = {
                "id": m.node_id, "address": m.address, "http": url + "/" if url else None,
                "incarnation": m.incarnation, "status": m.status, "ring": m.ring,
                "self": m.node_id == view.node_id,
            }
            if m.node_id == view.node_id:
                entry.update(answering=True, stale=None, pid=own["pid"],
                             uptime=own["uptime"], figures=own["figures"])
            else:
                peer = reports.get(m.node_id)
                report = peer.report if peer else None
                answering = peer.answering if peer else None
                entry.update(
                    answering=answering,
                    stale=None if peer is None or peer.answering else peer.age,
                    pid=report.get("pid") if report else None,
                    uptime=report.get("uptime") if report and answering else None,
                    figures=report.get("figures") if report else None)
                if report and answering and not m.incarnation:
                    entry["incarnation"] = report.get("incarnation", 0)
            members.append(entry)
        return {
            "node": view.node_id, "time": round(time.time(), 3), "epoch": view.epoch,
            "transition": view.transition, "removal": view.removal, "t_fail": view.t_fail,
            "max_key": view.max_key, "replicas": view.replicas,
            "ring": sorted(view.ring), "target": sorted(view.target) if view.target else None,
            "members": members, "totals": _totals(members),
        }

    def ring(self) -> dict[str, Any]:
        view = self._view()
        ring = self._ring(view.ring, view.replicas, view.vnodes)
        target = None
        if view.target is not None:
            target = self._ring(view.target, view.replicas, view.vnodes)
        return {
            "node": view.node_id, "epoch": view.epoch, "transition": view.transition,
            "replicas": view.replicas, "vnodes": view.vnodes,
            "nodes": sorted(ring.nodes), "arcs": ring_arcs(ring),
            "target": sorted(target.nodes) if target is not None else None,
            "target_arcs": ring_arcs(target) if target is not None else None,
        }

    def locate(self, query: str) -> dict[str, Any]:
        view = self._view()
        raw = query_bytes(query, "key")
        if raw is None:
            raise ApiError(400, "say which key: /api/locate?key=KEY")
        if not raw:
            raise ApiError(400, "key must not be empty")
        if len(raw) > view.max_key:
            raise ApiError(400, f"key of {len(raw)} bytes exceeds the {view.max_key}-byte "
                                "limit")
        ring = self._ring(view.ring, view.replicas, view.vnodes)
        if not ring.nodes:
            raise ApiError(503, "this node holds no ring yet")
        tok = token(raw)
        target = None
        if view.target is not None:
            target = list(self._ring(view.target, view.replicas, view.vnodes).locate(raw))
        replicas = list(ring.locate(raw))
        return {
            "node": view.node_id, "key": raw.decode("utf-8", errors="backslashreplace"),
            "bytes": len(raw), "token": f"{tok:016x}", "position": round(tok / TOKEN_SPACE, 6),
            "epoch": view.epoch, "replicas": replicas, "target_replicas": target,
            "points": replica_points(ring, raw, replicas),
        }

    def events(self, query: str) -> dict[str, Any]:
        view = self._view()
        raw = query_bytes(query, "limit")
        limit = EVENTS_REPORTED
        if raw is not None:
            if not raw.isdigit() or not 1 <= int(raw) <= EVENTS_MAX:
                raise ApiError(400, f"limit must be a number from 1 to {EVENTS_MAX}")
            limit = int(raw)
        targets = {}
        for m in view.members:
            url = http_url(m.address, m.http_port)
            if m.node_id != view.node_id and url and m.status != "left":
                targets[m.node_id] = url + "/api/node"
        lists: list[Iterable[dict[str, Any]]] = [view.report()["events"]]
        for peer in self.peers.get(targets).values():
            if peer.report and isinstance(peer.report.get("events"), list):
                lists.append(e for e in peer.report["events"] if isinstance(e, dict))
        seen = set()
        merged = []
        for events in lists:
            for e in events:
                mark = (e.get("node"), e.get("ts"), e.get("kind"), e.get("text"))
                if mark not in seen and isinstance(e.get("ts"), (int, float)):
                    seen.add(mark)
                    merged.append(e)
        merged.sort(key=lambda e: e["ts"], reverse=True)
        return {"node": view.node_id, "events": merged[:limit]}


def ring_arcs(ring: Ring) -> list[list[Any]]:
    """The ring as arcs ``[start, end, owner]`` in turns (0 to 1 clockwise from the top;
    the arc across 0 starts below 0), adjacent arcs of one owner merged."""
    n = ring.segments
    if not n:
        return []
    arcs: list[list[Any]] = []
    last = ring.segment_token(n - 1) / TOKEN_SPACE
    for i in range(n):
        end = ring.segment_token(i) / TOKEN_SPACE
        start = ring.segment_token(i - 1) / TOKEN_SPACE if i else last - 1.0
        owner = ring.segment_replicas(i)[0]
        if arcs and arcs[-1][2] == owner:
            arcs[-1][1] = end
        else:
            arcs.append([start, end, owner])
    if len(arcs) > 1 and arcs[0][2] == arcs[-1][2]:  # the wrap: one arc across 0
        first = arcs.pop(0)
        arcs[-1][1] = first[1] + 1.0
    return [[round(a, 6), round(b, 6), owner] for a, b, owner in arcs]


def replica_points(ring: Ring, key: bytes, replicas: list[str]) -> list[float]:
    """Where to mark each replica on the drawing: the start of its first arc clockwise
    from the key (the key itself for the primary). Drawing only: the replicas are
    ``Ring.locate``'s."""
    n = ring.segments
    first = ring.segment(key)
    points: list[float] = []
    for node_id in replicas:
        for step in range(n):
            seg = (first + step) % n
            if ring.segment_replicas(seg)[0] == node_id:
                if step == 0:
                    points.append(round(token(key) / TOKEN_SPACE, 6))
                else:
                    points.append(round(ring.segment_token((seg - 1) % n) / TOKEN_SPACE, 6))
                break
    return points


def query_bytes(query: str, name: str) -> bytes | None:
    """A query parameter's exact bytes (a key need not be UTF-8), or None if absent."""
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if urllib.parse.unquote_plus(key) == name:
            return urllib.parse.unquote_to_bytes(value.replace("+", " ")) if eq else b""
    return None


def _totals(members: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: dict[str, int] = {}
    ops = failed = 0.0
    keys = size = 0
    for m in members:
        statuses[m["status"]] = statuses.get(m["status"], 0) + 1
        fig = m.get("figures")
        if fig and m.get("answering"):
            ops += sum(v for v in fig.get("ops_per_s", {}).values() if isinstance(v, (int, float)))
            failed += fig.get("failed_per_s") or 0
            keys += fig.get("keys") or 0
            size += fig.get("bytes") or 0
    return {"members": statuses, "ops_per_s": round(ops, 1), "failed_per_s": round(failed, 2),
            "keys": keys, "bytes": size}
