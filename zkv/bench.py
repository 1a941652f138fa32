"""``zkv bench``: a load generator that drives a cluster through the public client.

Clients are spread over worker processes (so the generator is not one GIL's
worth of CPU); inside a process each client runs in its own thread and owns its
``Client`` (one client per thread). With ``pipeline`` 1 a client uses the
blocking API; above 1 it keeps that many requests in flight with
``Client.submit``/``Client.poll``.

Before the clock starts, ``get``, ``mixed`` and ``delete`` runs load every key
once (split over the workers), so reads find values. ``mixed`` is half gets,
half puts; ``delete`` deletes keys in turn (a key deleted already counts as
``not_found``, not as an error). ``create`` creates fresh keys; ``cas`` walks
each of a client's own keys through successive values by compare-and-set;
``counter`` has every client increment one shared key by read-then-cas (the
contended case: successful increments count as ``cas``, lost races as
``not_found``; the reads as ``get``). Conditional runs use keys of their own.

The result holds, per operation kind and overall: completed operations, ops/s
over the measured window, latency percentiles (milliseconds) and errors; and the
generator's own CPU use (psutil, all worker processes), so a reader sees when
the generator rather than the cluster was the limit. For ``--plot`` it also
holds the latency distribution (``latency_distribution``: a few dozen
percentiles, HdrHistogram-style) and completions per time bucket
(``timeline``): counts, kept as the ops complete, not a timestamp per op.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import platform
import queue
import random
import shutil
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

WORKLOADS = ("put", "get", "mixed", "delete", "create", "cas", "counter")
PRELOAD_DEPTH = 64  # requests in flight per worker while loading keys
MAX_ERROR_SAMPLES = 5
TIMELINE_BUCKETS = 200  # most buckets of the throughput timeline (0.1 s or wider)
DISTRIBUTION_POINTS = 48  # percentiles kept of each kind's latencies


@dataclass
class BenchOptions:
    workload: str = "put"
    clients: int = 1
    duration: float = 5.0
    keys: int = 10_000
    value_size: int = 100
    consistency: str = "quorum"
    pipeline: int = 1
    timeout: float = 2.0
    processes: int = 0  # 0: min(clients, CPUs)
    seeds: list[str] = field(default_factory=list)
    seed: int = 1
    preload: bool = True  # load every key first (get, mixed, delete)
    transport: str | None = None  # the clients' links (``zkv.net.links``); None: the default
    direct_reads: bool = True  # quorum gets read the replicas directly (zkv.core.direct_read)
    # Node processes on this machine whose CPU the run counts (``node_pids``): CPU per
    # operation tells a change in a node's work apart from the disk's and the machine's
    # noise, which move ops/s and latency on a small shared machine.
    node_pids: list[int] = field(default_factory=list)


class BenchError(Exception):
    """The benchmark could not run (no cluster, bad option); the message says why."""


def key_name(i: int) -> str:
    return f"bench-{i:08d}"


# --------------------------------------------------------------------------- workers


def bucket_seconds(duration: float) -> float:
    """The timeline's bucket: 0.1 s, or wider for runs of over TIMELINE_BUCKETS tenths."""
    return max(0.1, duration / TIMELINE_BUCKETS)


@dataclass
class _Tally:
    latencies: dict[str, array] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    not_found: int = 0
    samples: list[str] = field(default_factory=list)
    origin: float = 0.0  # perf_counter() when the clock started
    bucket: float = 0.1  # seconds per timeline bucket
    # completions per bucket, by kind ("error" for failures): counts, not timestamps
    timeline: dict[str, array] = field(default_factory=dict)

    def ok(self, kind: str, seconds: float) -> None:
        lat = self.latencies.get(kind)
        if lat is None:
            lat = self.latencies[kind] = array("d")
        lat.append(seconds)
        self._count(kind)

    def fail(self, kind: str, exc: BaseException) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self._count("error")
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(f"{kind}: {type(exc).__name__}: {exc}")

    def _count(self, kind: str) -> None:
        i = max(0, int((time.perf_counter() - self.origin) / self.bucket))
        counts = self.timeline.get(kind)
        if counts is None:
            counts = self.timeline[kind] = array("l")
        if i >= len(counts):
            counts.extend([0] * (i + 1 - len(counts)))  # once per new bucket
        counts[i] += 1


def _chooser(options: BenchOptions, index: int) -> Callable[[], tuple[str, str, Any]]:
    rng = random.Random(options.seed * 1_000_003 + index)
    value = rng.randbytes(options.value_size)
    keys = options.keys
    workload = options.workload
    if workload in ("create", "cas"):
        # Keys of this run only (a nonce), each client its own: creates of fresh keys;
        # compare-and-sets walking each of a client's keys through 0, 1, 2, ...
        nonce = f"{time.time_ns():x}"
        slots = max(2, 2 * options.pipeline)
        issued = [0] * slots
        n = iter(range(1 << 62))

        def conditional() -> tuple[str, str, Any]:
            i = next(n)
            if workload == "create":
                return "create", f"bench-c{nonce}-{index}-{i}", value
            slot = i % slots
            j = issued[slot]
            issued[slot] = j + 1
            old = None if j == 0 else b"%d:" % j + value
            return "cas", f"bench-s{nonce}-{index}-{slot}", (old, b"%d:" % (j + 1) + value)
        return conditional
    if workload == "delete":
        counter = iter(range(index, 1 << 62, max(1, options.clients)))

        def delete() -> tuple[str, str, bytes | None]:
            return "delete", key_name(next(counter) % keys), None
        return delete
    if workload == "mixed":
        def mixed() -> tuple[str, str, bytes | None]:
            k = key_name(rng.randrange(keys))
            return ("get", k, None) if rng.random() < 0.5 else ("put", k, value)
        return mixed
    if workload == "get":
        return lambda: ("get", key_name(rng.randrange(keys)), None)
    return lambda: ("put", key_name(rng.randrange(keys)), value)


def _drive(client: Any, options: BenchOptions, index: int, end: float, tally: _Tally,
           counts: Any) -> None:
    """One client's loop until ``end`` (monotonic), then drain what is in flight."""
    from zkv.errors import KeyNotFound

    choose = _chooser(options, index)
    clock = time.perf_counter
    monotonic = time.monotonic
    done_ops = 0
    if options.workload == "counter":
        _count_up(client, options, index, end, tally, counts)
        return
    if options.pipeline <= 1:
        calls = {"get": client.get, "put": client.put, "delete": client.delete,
                 "create": client.create, "cas": client.cas}
        while monotonic() < end:
            kind, key, value = choose()
            t0 = clock()
            try:
                if value is None:
                    calls[kind](key)
                elif kind == "cas":
                    if not client.cas(key, *value):
                        tally.not_found += 1  # counted with "not found": condition failed
                else:
                    calls[kind](key, value)
                tally.ok(kind, clock() - t0)
            except KeyNotFound:
                tally.not_found += 1
                tally.ok(kind, clock() - t0)
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                tally.fail(kind, exc)
            done_ops += 1
            counts[index] = done_ops
        return

    depth = options.pipeline

    def settled(future: Any, kind: str, t0: float) -> None:
        nonlocal done_ops
        exc = future.exception()
        if exc is None:
            if future.result() is False:
                tally.not_found += 1  # a cas whose condition failed
            tally.ok(kind, clock() - t0)
        elif isinstance(exc, KeyNotFound):
            tally.not_found += 1
            tally.ok(kind, clock() - t0)
        else:
            tally.fail(kind, exc)
        done_ops += 1
        counts[index] = done_ops

    while True:
        now = monotonic()
        if now >= end:
            break
        while client.in_flight < depth:
            kind, key, value = choose()
            t0 = clock()
            if kind == "cas":
                future = client.submit(kind, key, value[1], expected=value[0])
            else:
                future = client.submit(kind, key, value)
            future.add_done_callback(lambda f, kind=kind, t0=t0: settled(f, kind, t0))
        client.poll(min(0.05, end - now))
    drain_end = monotonic() + options.timeout + 0.5
    while client.in_flight and monotonic() < drain_end:
        client.poll(0.05)


def _count_up(client: Any, options: BenchOptions, index: int, end: float, tally: _Tally,
              counts: Any) -> None:
    """Read-then-cas increments of one key shared by every client, until ``end``."""
    key = f"bench-counter-{options.seed}"
    clock = time.perf_counter
    done_ops = 0
    while time.monotonic() < end:
        t0 = clock()
        try:
            old = client.get(key)
            tally.ok("get", clock() - t0)
            t1 = clock()
            new = b"%d" % (int(old) + 1) if old else b"1"
            if client.cas(key, old, new):
                tally.ok("cas", clock() - t1)
            else:
                tally.not_found += 1  # another client incremented first
        except Exception as exc:  # noqa: BLE001 - every failure is counted
            tally.fail("cas", exc)
        done_ops += 1
        counts[index] = done_ops


def left_behind(options: BenchOptions) -> str:
    """What a run leaves in the cluster it ran against, in words."""
    if options.workload in ("create", "cas"):
        return "the bench-c*/bench-s* keys it created (names unique to the run)"
    if options.workload == "counter":
        return f"the key bench-counter-{options.seed}"
    return f"up to {options.keys:,} keys bench-{0:08d} ... bench-{options.keys - 1:08d}"


def cleanup(options: BenchOptions, depth: int = 64) -> tuple[int, int]:
    """Delete the keys a run of ``options`` wrote (``bench-NNNNNNNN`` for i < keys, and
    the counter key); returns (deleted, failed). Absent keys count as neither."""
    from zkv.client import Client
    from zkv.errors import KeyNotFound

    names = [key_name(i) for i in range(options.keys)] + [f"bench-counter-{options.seed}"]
    deleted = failed = 0
    with Client(options.seeds, timeout=options.timeout,
                consistency=options.consistency if options.consistency != "one"
                else "quorum", transport=options.transport) as client:
        pending = _pipelined(client, (("delete", name, None) for name in names), depth)
    for future in pending:
        exc = future.exception()
        if exc is None:
            deleted += 1
        elif not isinstance(exc, KeyNotFound):
            failed += 1
    return deleted, failed


def _pipelined(client: Any, ops: Iterator[tuple[str, str, bytes | None]],
               depth: int) -> list[Any]:
    """Submit every (op, key, value) with at most ``depth`` in flight; their futures,
    all settled."""
    pending: list[Any] = []
    exhausted = False
    while True:
        while not exhausted and client.in_flight < depth:
            item = next(ops, None)
            if item is None:
                exhausted = True
                break
            op, key, value = item
            pending.append(client.submit(op, key, value))
        if exhausted and not client.in_flight:
            return pending
        client.poll(0.05)


def _preload(client: Any, key_ids: range, value: bytes, depth: int, timeout: float) -> int:
    """Put every key in ``key_ids`` (pipelined); returns how many failed."""
    pending = _pipelined(client, (("put", key_name(i), value) for i in key_ids), depth)
    return sum(1 for future in pending if future.exception() is not None)


def _worker(wid: int, client_ids: list[int], options: BenchOptions, barrier: Any,
            counts: Any, results: Any) -> None:
    from zkv.client import Client

    try:
        clients = [Client(options.seeds, timeout=options.timeout,
                          consistency=options.consistency, transport=options.transport,
                          direct_reads=options.direct_reads)
                   for _ in client_ids]
        for client in clients:
            client.ring()  # learn the ring before the clock starts: requests go to replicas
        preload_failed = 0
        if options.preload and options.workload in ("get", "mixed", "delete"):
            share = range(wid, options.keys, max(1, options.processes))
            value = random.Random(wid).randbytes(options.value_size)
            preload_failed = _preload(clients[0], share, value, PRELOAD_DEPTH, options.timeout)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        barrier.abort()
        results.put({"worker": wid, "fatal": f"{type(exc).__name__}: {exc}"})
        return
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        return
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    t_start = time.monotonic()
    end = t_start + options.duration
    origin = time.perf_counter()
    tallies = [_Tally(origin=origin, bucket=bucket_seconds(options.duration))
               for _ in clients]
    threads = [threading.Thread(target=_drive, args=(c, options, i, end, t, counts),
                                daemon=True)
               for c, i, t in zip(clients, client_ids, tallies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start
    cpu1 = proc.cpu_times()
    for client in clients:
        client.close()
    latencies: dict[str, bytes] = {}
    errors: dict[str, int] = {}
    samples: list[str] = []
    not_found = 0
    timeline: dict[str, list[int]] = {}
    for tally in tallies:
        _add_counts(timeline, tally.timeline)
        for kind, lat in tally.latencies.items():
            latencies[kind] = latencies.get(kind, b"") + lat.tobytes()
        for kind, n in tally.errors.items():
            errors[kind] = errors.get(kind, 0) + n
        samples += tally.samples
        not_found += tally.not_found
    results.put({"worker": wid, "latencies": latencies, "errors": errors,
                 "samples": samples[:MAX_ERROR_SAMPLES], "not_found": not_found,
                 "elapsed": elapsed, "preload_failed": preload_failed, "timeline": timeline,
                 "cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)})


def _add_counts(total: dict[str, list[int]], more: Any) -> None:
    """Add per-bucket counts (kind -> counts) into ``total``, bucket by bucket."""
    for kind, counts in more.items():
        into = total.setdefault(kind, [])
        if len(into) < len(counts):
            into.extend([0] * (len(counts) - len(into)))
        for i, n in enumerate(counts):
            into[i] += n


# --------------------------------------------------------------------------- the run


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[i]


def latency_distribution(sorted_values: list[float], points: int = DISTRIBUTION_POINTS
                         ) -> list[list[float]]:
    """[percentile, ms] pairs at ``points`` spots spaced evenly on 1/(1-p)'s log scale,
    from the fastest op (p = 0) to the slowest (p = 1 - 1/n): HdrHistogram's percentile
    distribution, every nine of the tail given the same room, in a few hundred bytes."""
    n = len(sorted_values)
    if not n:
        return []
    out: list[list[float]] = []
    seen = -1
    for k in range(points):
        p = 1.0 - 1.0 / (n ** (k / max(1, points - 1)))
        i = min(n - 1, int(p * n + 1e-9))
        if i != seen:
            seen = i
            out.append([round(p, 7), round(sorted_values[i] * 1000.0, 4)])
    return out


def _summary(values: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    values.sort()
    ms = 1000.0
    return {
        "ops": len(values),
        "ops_per_s": round(len(values) / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(_percentile(values, 0.50) * ms, 3),
        "p95_ms": round(_percentile(values, 0.95) * ms, 3),
        "p99_ms": round(_percentile(values, 0.99) * ms, 3),
        "max_ms": round((values[-1] if values else 0.0) * ms, 3),
        "errors": errors,
    }


def cpu_seconds(procs: Iterable[psutil.Process]) -> float:
    """User and system CPU seconds of those of ``procs`` still alive."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def local_cluster_processes(data_dir: Path, supervisor: bool = False) -> list[psutil.Process]:
    """The live node processes a local cluster's ``cluster.json`` names (none without
    one), and its supervisor if asked; a recorded pid is checked against its start
    time, so a reused one is not counted."""
    from zkv.cluster_dir import read_cluster
    from zkv.supervisor import live_process

    info = read_cluster(data_dir) or {}
    records = list(info.get("nodes", []))
    if supervisor:
        records.append({"pid": info.get("supervisor_pid"),
                        "pid_create_time": info.get("supervisor_create_time")})
    procs = (live_process(r.get("pid"), r.get("pid_create_time")) for r in records)
    return [proc for proc in procs if proc is not None]


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform()}


def run(options: BenchOptions, progress: Callable[[int, float], None] | None = None
        ) -> dict[str, Any]:
    """Run the benchmark against ``options.seeds``; returns the result (JSON-ready).

    ``progress(ops_so_far, seconds_elapsed)`` is called a few times a second.
    """
    if options.workload not in WORKLOADS:
        raise BenchError(f"--workload must be one of {', '.join(WORKLOADS)}")
    if not options.seeds:
        raise BenchError("no node addresses to benchmark")
    processes = options.processes or min(options.clients, os.cpu_count() or 1)
    processes = max(1, min(processes, options.clients))
    options.processes = processes
    node_procs: list[psutil.Process] = []
    for pid in options.node_pids:
        with contextlib.suppress(psutil.Error):
            node_procs.append(psutil.Process(pid))
    ctx = (mp.get_context("fork") if "fork" in mp.get_all_start_methods()
           else mp.get_context("spawn"))
    barrier = ctx.Barrier(processes + 1)
    counts = ctx.Array("q", options.clients, lock=False)
    results = ctx.Queue()
    workers = []
    for wid in range(processes):
        ids = list(range(wid, options.clients, processes))
        p = ctx.Process(target=_worker, args=(wid, ids, options, barrier, counts, results),
                        daemon=True)
        p.start()
        workers.append(p)
    collected: list[dict] = []
    try:
        try:
            barrier.wait(timeout=120 + options.keys / 500)
        except threading.BrokenBarrierError:
            pass
        start = time.monotonic()
        nodes_cpu0 = cpu_seconds(node_procs)
        while len(collected) < processes:
            with contextlib.suppress(queue.Empty):
                collected.append(results.get(timeout=0.25))
            if progress is not None:
                progress(sum(counts), time.monotonic() - start)
            if not any(p.is_alive() for p in workers) and results.empty():
                break
            if time.monotonic() - start > options.duration + options.timeout + 60:
                break
        nodes_cpu = cpu_seconds(node_procs) - nodes_cpu0
    finally:
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    fatal = [r["fatal"] for r in collected if "fatal" in r]
    if fatal:
        raise BenchError(f"a worker could not start: {fatal[0]}")
    if len(collected) < processes:
        raise BenchError(f"only {len(collected)} of {processes} workers reported")
    elapsed = max(r["elapsed"] for r in collected)
    by_kind: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    timeline: dict[str, list[int]] = {}
    for r in collected:
        for kind, raw in r["latencies"].items():
            lat = array("d")
            lat.frombytes(raw)
            by_kind.setdefault(kind, []).extend(lat)
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
        _add_counts(timeline, r["timeline"])
    for values in by_kind.values():
        values.sort()
    rows = {kind: _summary(list(values), errors.get(kind, 0), elapsed)
            for kind, values in sorted(by_kind.items())}
    for kind, n in errors.items():
        rows.setdefault(kind, _summary([], n, elapsed))
    everything = [v for values in by_kind.values() for v in values]
    total = _summary(everything, sum(errors.values()), elapsed)  # sorts everything
    distribution = {kind: latency_distribution(values) for kind, values in by_kind.items()}
    if len(by_kind) > 1:
        distribution["all"] = latency_distribution(everything)
    cpu = sum(r["cpu"] for r in collected)
    nodes = None
    if options.node_pids:
        nodes = {"processes": len(options.node_pids), "cpu_s": round(nodes_cpu, 3),
                 "cpu_us_per_op": round(nodes_cpu / total["ops"] * 1e6) if total["ops"] else None}
    return {
        "options": {k: v for k, v in asdict(options).items() if k not in ("seed", "node_pids")},
        "elapsed_s": round(elapsed, 3),
        "total": total,
        "by_op": rows,
        "not_found": sum(r["not_found"] for r in collected),
        "preload_failed": sum(r["preload_failed"] for r in collected),
        "error_samples": [s for r in collected for s in r["samples"]][:MAX_ERROR_SAMPLES],
        "latency_distribution": distribution,
        "timeline": {"bucket_s": bucket_seconds(options.duration),
                     "ops": {k: v for k, v in sorted(timeline.items()) if k != "error"},
                     "errors": timeline.get("error", [])},
        "generator": {"processes": processes, "cpu_s": round(cpu, 3),
                      "cores_used": round(cpu / elapsed, 2) if elapsed else 0.0},
        "nodes": nodes,
        "machine": machine(),
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as a plain-text table."""
    o = result["options"]
    head = (f"workload {o['workload']}, {o['clients']} clients x pipeline {o['pipeline']}, "
            f"{o['keys']} keys, {o['value_size']}-byte values, {o['consistency']}, "
            f"{result['elapsed_s']:g}s")
    cols = ("OP", "OPS", "OPS/S", "P50 MS", "P95 MS", "P99 MS", "MAX MS", "ERRORS")
    table = [cols]
    rows = list(result["by_op"].items())
    if len(rows) != 1:
        rows.append(("all", result["total"]))
    for kind, r in rows:
        table.append((kind, str(r["ops"]), f"{r['ops_per_s']:.0f}", f"{r['p50_ms']:.3f}",
                      f"{r['p95_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['max_ms']:.3f}",
                      str(r["errors"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [head]
    for row in table:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
    g = result["generator"]
    lines.append(f"generator: {g['processes']} processes, {g['cores_used']:.2f} cores busy "
                 f"(of {result['machine']['nproc']})")
    n = result.get("nodes")
    if n and n["cpu_us_per_op"] is not None:
        lines.append(f"nodes: {n['processes']} processes, {n['cpu_s']:g} s of CPU, "
                     f"{n['cpu_us_per_op']:,} µs per operation")
    if result["not_found"]:
        lines.append(f"not found: {result['not_found']}")
    for sample in result["error_samples"]:
        lines.append(f"error: {sample}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- own cluster


class LocalCluster:
    """A supervised cluster of ``nodes`` nodes in a directory of its own, for one run."""

    def __init__(self, nodes: int, data_dir: Path | None = None, sync: bool = True,
                 keep: bool = False, timeout: float = 60.0) -> None:
        from zkv import supervisor as sup

        self.sup = sup
        self.own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="zkv-bench-")) if data_dir is None \
            else Path(data_dir)
        self.keep = keep
        base = _free_base_port(nodes * sup.PORTS_PER_NODE)
        argv = ["--nodes", str(nodes), "--data-dir", str(self.data_dir.resolve()),
                "--base-port", str(base), "--daemon", "--sync" if sync else "--no-sync"]
        try:
            info = sup.start_detached(self.data_dir, argv, timeout)
        except sup.ControlError as exc:
            self._remove()
            raise BenchError(f"could not start a {nodes}-node cluster: {exc}") from None
        self.seeds: list[str] = list(info["seeds"])

    def stop(self) -> None:
        try:
            self.sup.stop_cluster(self.data_dir)
        finally:
            self._remove()

    def _remove(self) -> None:
        if self.own_dir and not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _free_base_port(count: int) -> int:
    from zkv.supervisor import free_base_port

    try:
        return free_base_port(count)
    except RuntimeError as exc:
        raise BenchError(f"{exc} for the cluster") from None
