"""Membership run: ring changes under a reader that checks every key (issue 11).

    .venv/bin/python bench/membership.py                  # 150,000 keys of 100 bytes
    .venv/bin/python bench/membership.py --keys 3000 --baseline 3

On real processes: a 3-node cluster under a supervisor (quorum, fsync on, the
default timers, started the way ``zkv cluster up --detach`` does it), then:

1. load: ``--keys`` keys at quorum, each with a value of its own (so a reader
   can tell it), pipelined through the public client from ``--processes``
   generator processes; a failed put is retried a few times, and a key whose
   put was never acknowledged is not checked later (0 expected).
2. a reader process starts reading every key at quorum, pass after pass, at
   ``--read-rate`` gets/s (at most ``--read-depth`` in flight). Every get is
   checked: a key not found, or holding another value than the acknowledged
   one, is a *miss* (there must be none). A get that fails (unavailable, no
   answer in time) is an *error*; the key is read again later in the pass.
3. after ``--baseline`` seconds: ``zkv cluster add --nodes 2`` (returns once
   every running node serves with both in the ring and no change is under way).
4. ``zkv node decommission NODE`` (returns once the ring dropped it and its
   process has exited).
5. the reader finishes its pass and reads every key once more, both without its
   rate limit, and stops.

Each node's event log is followed while the run goes on (it rotates under load).
A change's *streaming time* runs from the first node's ``map_adopted`` of its
transition epoch (a map with a target ring) to the first ``map_adopted`` of the
next settled epoch (no target); a change may take more than one transition (two
nodes added at once join in one transition only if both asked before it was
proposed). Its *keys streamed* are the ``keys`` of the gainers' ``stream_done``
events of its transition epochs, and keys/s those over the streaming time. A
gainer pulls each range from every live old replica until a read quorum of them
sent all of it, so a key usually arrives more than once: the *key copies gained*
(the (key, replica) pairs the target ring has and the old one has not, computed
from the two rings) say how much data had to move. Reader latency is reported for
the gets sent before the first change, during each change's command and its
streaming, and in the final passes.

The report is Markdown on stdout; JSON lines (one per change, one for the run)
are appended to ``--json`` (default bench/results/membership.jsonl).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scale import _load_range as load_range  # bench/, the script's own dir
from scale import run_guarded

from zkv import bench as zb
from zkv import supervisor as sup
from zkv.core.config import NodeConfig
from zkv.core.ring import Ring
from zkv.net.eventlog import EVENT_LOG
from zkv.net.figures import node_figures

NODES = 3
ADD = 2
RETRY_PAUSE = 0.2  # seconds before a failed get is sent again (puts: scale._load_range)
OP_TIMEOUT = 5.0  # seconds a client waits for one answer
PROGRESS_EVERY = 5.0  # seconds between progress lines on stderr
EVENT_POLL = 0.2  # seconds between reads of the nodes' event logs
EVENT_KINDS = frozenset({"map_adopted", "map_propose", "map_decided", "map_proposal_failed",
                         "stream_start", "stream_done", "ranges_degraded", "command", "joined",
                         "decommissioned", "stall", "majority_lost", "member_status",
                         "strays_handoff", "strays_dropped"})
WATCHED = (b'"kind":"map_', b'"kind":"stream_', b'"kind":"ranges_', b'"kind":"command"',
           b'"kind":"joined"', b'"kind":"decommissioned"', b'"kind":"stall"',
           b'"kind":"majority_lost"', b'"kind":"member_status"', b'"kind":"strays_')
READ_BUFFER = 8 * 1024 * 1024  # bytes of one event log read at a time
ERROR_LOG = 200  # reader errors kept with their time and key
EXIT_NEAR = 1.0  # seconds around a decommissioned node's exit the report counts errors in


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} membership: {message}", file=sys.stderr, flush=True)


def value_of(i: int, size: int) -> bytes:
    """Key ``i``'s value: its number repeated, so every key has a value of its own."""
    digits = b"%09d," % i
    return (digits * (size // len(digits) + 1))[:size]


# --------------------------------------------------------------------------- cluster


class Cluster:
    """A supervised cluster of ``NODES`` nodes with ports free for ``ADD`` more (``cluster
    add`` takes the next ones of the layout), in ``data_dir`` or a temporary directory."""

    def __init__(self, data_dir: Path | None, keep: bool, timeout: float = 60.0) -> None:
        self.own_dir = data_dir is None
        self.keep = keep
        self.data_dir = (Path(tempfile.mkdtemp(prefix="zkv-membership-")) if data_dir is None
                         else Path(data_dir)).resolve()
        try:
            base = sup.free_base_port((NODES + ADD) * sup.PORTS_PER_NODE)
        except RuntimeError as exc:
            raise zb.BenchError(f"{exc} for the cluster") from None
        argv = ["--nodes", str(NODES), "--data-dir", str(self.data_dir),
                "--base-port", str(base), "--daemon", "--sync"]
        try:
            info = sup.start_detached(self.data_dir, argv, timeout)
        except sup.ControlError as exc:
            self._remove()
            raise zb.BenchError(f"could not start a {NODES}-node cluster: {exc}") from None
        self.seeds: list[str] = list(info["seeds"])

    def records(self) -> list[dict]:
        return sup.require_cluster(self.data_dir)["nodes"]

    def zkv(self, *args: str, timeout: float) -> dict:
        """Run ``zkv ARGS --data-dir D --json --no-progress``; its JSON answer, with the
        exit code and the seconds it took."""
        start = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "zkv", *args, "--data-dir",
                                   str(self.data_dir), "--json", "--no-progress",
                                   "--timeout", f"{timeout:g}"],
                                  capture_output=True, timeout=timeout + 60, check=False,
                                  env={k: v for k, v in os.environ.items() if k != "ZKV_SEEDS"})
        except subprocess.TimeoutExpired:
            return {"exit_code": None, "seconds": round(time.monotonic() - start, 2),
                    "error": "the command hung"}
        out: dict[str, Any] = {"exit_code": done.returncode,
                               "seconds": round(time.monotonic() - start, 2)}
        try:
            out.update(json.loads(done.stdout))
        except ValueError:
            pass
        if done.returncode != 0:
            out["error"] = done.stderr.decode(errors="replace").strip()[-500:]
        return out

    def keys_held(self) -> dict[str, int | None]:
        """Keys each running node holds (its ``zkv_keys_stored``, refreshed once a second)."""
        out: dict[str, int | None] = {}
        for r in self.records():
            if r.get("status") == "decommissioned":
                continue
            fig = node_figures(r.get("metrics"), timeout=2.0)
            out[r["id"]] = fig.keys if fig is not None else None
        return out

    def stop(self) -> None:
        try:
            sup.stop_cluster(self.data_dir)
        finally:
            self._remove()

    def _remove(self) -> None:
        if self.own_dir and not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- event logs


class EventTail:
    """Follows every node's ``events.jsonl`` under the cluster directory (a thread reads
    them every ``EVENT_POLL`` seconds) and keeps the ring-change events (``EVENT_KINDS``).
    Logs that exist when it starts are followed from their end, new ones from their
    start; a rotated log is read to its end first."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.bytes_read = 0
        self._files: dict[Path, tuple[Any, bytes]] = {}  # path -> (open file, partial line)
        self._begun = False
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="event-tail")

    def start(self) -> None:
        self.poll()  # note the logs there are now, at their end
        self._begun = True
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._halt.set()
            self._thread.join(timeout=10)
        with self.lock:
            for f, _ in self._files.values():
                f.close()
            self._files.clear()

    def _run(self) -> None:
        while not self._halt.wait(EVENT_POLL):
            self.poll()

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.events)

    def poll(self) -> None:
        with self.lock:
            self._poll()

    def _poll(self) -> None:
        for path in sorted(self.data_dir.glob(f"*/{EVENT_LOG}")):
            if path not in self._files:
                try:
                    f = open(path, "rb")
                except OSError:
                    continue
                if not self._begun:
                    f.seek(0, os.SEEK_END)
                self._files[path] = (f, b"")
            self._drain(path)
            try:
                current = os.stat(path).st_ino
            except OSError:
                continue
            f = self._files[path][0]
            if current != os.fstat(f.fileno()).st_ino:  # rotated: the old one is read out
                self._drain(path)
                f.close()
                try:
                    self._files[path] = (open(path, "rb"), b"")
                except OSError:
                    del self._files[path]
                    continue
                self._drain(path)

    def _drain(self, path: Path) -> None:
        f, rest = self._files[path]
        while True:
            chunk = f.read(READ_BUFFER)
            if not chunk:
                break
            self.bytes_read += len(chunk)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if any(w in data for w in WATCHED):
                found = []
                for line in data[:cut].split(b"\n"):
                    if line and any(w in line for w in WATCHED):
                        try:
                            event = json.loads(line)
                        except ValueError:
                            continue
                        if event.get("kind") in EVENT_KINDS:
                            found.append(event)
                self.events.extend(found)
        self._files[path] = (f, rest)


def transitions(events: list[dict], after_epoch: int) -> list[dict]:
    """The ring transitions past ``after_epoch``: each transition epoch (a map with a
    target), when the first node adopted it, the settled epoch that ended it and when,
    the gainers' streaming (the last ``stream_done`` per node), and the target ring."""
    adopted: dict[int, dict] = {}
    for e in events:
        if e["kind"] != "map_adopted":
            continue
        epoch = e["fields"]["epoch"]
        if epoch > after_epoch and (epoch not in adopted or e["ts"] < adopted[epoch]["ts"]):
            adopted[epoch] = e
    done: dict[int, dict[str, dict]] = {}
    started: dict[int, set[str]] = {}
    for e in events:
        f = e["fields"]
        if e["kind"] == "stream_done":
            done.setdefault(f["epoch"], {})[e["node"]] = {**f, "ts": e["ts"]}
        elif e["kind"] == "stream_start":
            started.setdefault(f["epoch"], set()).add(e["node"])
    out = []
    epochs = sorted(adopted)
    for k, epoch in enumerate(epochs):
        f = adopted[epoch]["fields"]
        if f.get("target") is None:
            continue
        settled = next((x for x in epochs[k + 1:] if adopted[x]["fields"].get("target") is None),
                       None)
        streams = done.get(epoch, {})
        begun, end = adopted[epoch]["ts"], adopted[settled]["ts"] if settled else None
        out.append({
            "epoch": epoch, "ring": f["ring"], "target": f["target"],
            "settled_epoch": settled, "adopted_at": begun, "settled_at": end,
            "seconds": round(end - begun, 3) if end is not None else None,
            "gainers": sorted(started.get(epoch, set()) | set(streams)),
            "keys_streamed": sum(s["keys"] for s in streams.values()),
            "bytes": sum(s["bytes"] for s in streams.values()),
            "stream_done_s": {n: round(s["ts"] - begun, 3) for n, s in sorted(streams.items())},
        })
    return out


def timeline(events: list[dict], start: float, end: float) -> tuple[list, dict]:
    """The watched events from ``start`` to ``end`` as [seconds after start, node, kind,
    fields], but ``strays_dropped`` (one per acknowledged hand-off batch) summed per
    node: events, keys, first and last (seconds after start)."""
    out: list = []
    dropped: dict[str, dict] = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        if not start <= e["ts"] <= end:
            continue
        at = round(e["ts"] - start, 3)
        if e["kind"] == "strays_dropped":
            d = dropped.setdefault(e["node"], {"events": 0, "keys": 0, "first_s": at})
            d["events"] += 1
            d["keys"] += e["fields"].get("keys", 0)
            d["last_s"] = at
        else:
            out.append([at, e["node"], e["kind"], e["fields"]])
    return out, dropped


def copies_gained(ring: list[str], target: list[str], keys: int) -> int:
    """How many (key, replica) pairs the ``target`` ring has that ``ring`` has not: the
    distinct key copies a transition must stream (the nodes run the default replicas
    and vnodes)."""
    defaults = NodeConfig("", "")
    old = Ring(ring, defaults.replicas, defaults.vnodes)
    new = Ring(target, defaults.replicas, defaults.vnodes)
    return sum(len(set(new.locate(k)) - set(old.locate(k)))
               for k in (zb.key_name(i).encode() for i in range(keys)))


# --------------------------------------------------------------------------- load


def _load_worker(wid: int, ids: range, seeds: list[str], clients: int, depth: int,
                 value_size: int, counts: Any, results: Any) -> None:
    """One generator process: ``clients`` clients, a thread each, share ``ids`` and
    ``depth``; the ids whose put never succeeded go back to the parent."""
    from zkv.client import Client

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    opened: list[Any] = []
    try:
        for _ in range(clients):
            opened.append(Client(seeds, timeout=OP_TIMEOUT))
            opened[-1].ring()
        outcomes: list[dict] = [{} for _ in opened]
        per_client = max(1, depth // clients)
        threads = [threading.Thread(target=load_range,
                                    args=(c, ids[k::clients],
                                          lambda i: value_of(i, value_size), per_client,
                                          counts, wid * clients + k, outcomes[k]), daemon=True)
                   for k, c in enumerate(opened)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fatal = [o["fatal"] for o in outcomes if "fatal" in o]
        results.put({"worker": wid, "done": sum(o["done"] for o in outcomes),
                     "failed": [i for o in outcomes for i in o["failed"]],
                     "retried": sum(o["retried"] for o in outcomes),
                     "sample": next((o["sample"] for o in outcomes if "sample" in o), None),
                     "fatal": fatal[0] if fatal else None})
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put({"worker": wid, "fatal": f"{type(exc).__name__}: {exc}"})
    finally:
        for c in opened:
            c.close()


def _context() -> Any:
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def load(seeds: list[str], args: argparse.Namespace) -> tuple[dict, list[int]]:
    """Phase 1: put every key; the figures, and the ids whose put never succeeded."""
    ctx = _context()
    counts = ctx.Array("q", args.processes * args.clients, lock=False)
    results = ctx.Queue()
    bounds = [args.keys * w // args.processes for w in range(args.processes + 1)]
    workers = [ctx.Process(target=_load_worker,
                           args=(w, range(bounds[w], bounds[w + 1]), seeds, args.clients,
                                 args.depth, args.value_size, counts, results), daemon=True)
               for w in range(args.processes)]
    collected: list[dict] = []
    start = last_say = time.monotonic()
    for p in workers:
        p.start()
    try:
        while len(collected) < len(workers):
            try:
                collected.append(results.get(timeout=0.5))
            except queue.Empty:
                if not any(p.is_alive() for p in workers):
                    break
            if time.monotonic() - last_say >= PROGRESS_EVERY:
                last_say = time.monotonic()
                say(f"loaded {sum(counts):,}/{args.keys:,} keys")
        elapsed = time.monotonic() - start
    finally:
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    fatal = [r["fatal"] for r in collected if r.get("fatal")]
    if fatal or len(collected) < len(workers):
        raise zb.BenchError(f"a load worker failed: {fatal[0] if fatal else 'it died'}")
    failed = sorted(i for r in collected for i in r["failed"])
    return {"keys": args.keys, "loaded": sum(r["done"] for r in collected),
            "failed": len(failed), "failed_ids": failed[:100],
            "retried": sum(r["retried"] for r in collected),
            "error_sample": next((r["sample"] for r in collected if r["sample"]), None),
            "seconds": round(elapsed, 2), "keys_per_s": round(args.keys / elapsed, 1)}, failed


# --------------------------------------------------------------------------- reader

# progress counters the reader shares with the parent
GETS, MISSES, ERRORS, PASSES, FINAL = range(5)


def _reader(seeds: list[str], keys: int, skip: list[int], value_size: int, rate: float,
            depth: int, counters: Any, final: Any, samples_path: str, results: Any) -> None:
    """Read every key at quorum, pass after pass, ``rate`` gets/s at most (none once
    ``final`` is set: then it finishes the pass and does one more, and stops).

    Writes (wall time sent, seconds to the answer, 1 if ok else 0) per get to
    ``samples_path`` as doubles; puts a summary with every miss on ``results``."""
    from zkv.client import Client

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    skipped = set(skip)
    ids = [i for i in range(keys) if i not in skipped]
    samples = array("d")
    misses: list[dict] = []
    passes: list[dict] = []
    state = {"errors": 0, "sample": None, "unverified": 0}
    error_log: list[dict] = []  # the first ERROR_LOG errors: when, which key, what
    try:
        client = Client(seeds, timeout=OP_TIMEOUT, consistency="quorum")
        client.ring()
        paced_from, paced_sent = time.monotonic(), 0
        passes_left: int | None = None  # passes still to read once final is set

        def settled(future: Any, i: int, attempt: int, wall: float, t0: float, pass_no: int,
                    pass_state: dict, retry: deque) -> None:
            took = time.monotonic() - t0
            exc = future.exception()
            samples.extend((wall, took, 0.0 if exc else 1.0))
            counters[GETS] += 1
            pass_state["gets"] += 1
            if exc is not None:
                state["errors"] += 1
                pass_state["errors"] += 1
                counters[ERRORS] += 1
                state["sample"] = state["sample"] or f"{type(exc).__name__}: {exc}"
                if len(error_log) < ERROR_LOG:
                    error_log.append({"at": round(wall, 3), "seconds": round(took, 3),
                                      "key": zb.key_name(i), "error": str(exc)[-120:]})
                if attempt < 20:
                    retry.append((time.monotonic() + RETRY_PAUSE, i, attempt + 1))
                else:
                    state["unverified"] += 1
                return
            value = future.result()
            if value != value_of(i, value_size):
                counters[MISSES] += 1
                pass_state["misses"] += 1
                misses.append({"key": zb.key_name(i), "at": round(wall, 3), "pass": pass_no,
                               "got": None if value is None
                               else value[:24].decode(errors="backslashreplace")})

        while passes_left is None or passes_left > 0:
            todo = deque(ids)
            retry: deque[tuple[float, int, int]] = deque()
            started, started_wall = time.monotonic(), time.time()
            pass_no = len(passes)
            pass_state = {"gets": 0, "misses": 0, "errors": 0}

            while todo or retry or client.in_flight:
                if passes_left is None and final.is_set():
                    passes_left = 2  # this one and one more
                    counters[FINAL] = 1
                paced = passes_left is None
                now = time.monotonic()
                while client.in_flight < depth:
                    if paced and paced_sent >= (now - paced_from) * rate + 1:
                        break
                    if retry and retry[0][0] <= now:
                        _, i, attempt = retry.popleft()
                    elif todo:
                        i, attempt = todo.popleft(), 0
                    else:
                        break
                    t0, wall = time.monotonic(), time.time()
                    future = client.submit("get", zb.key_name(i))
                    future.add_done_callback(
                        lambda f, i=i, a=attempt, w=wall, t=t0, n=pass_no, ps=pass_state,
                        rq=retry: settled(f, i, a, w, t, n, ps, rq))
                    paced_sent += 1
                if client.in_flight:
                    wait = 0.05 if not paced else max(0.0005, min(
                        0.05, paced_from + (paced_sent + 1) / rate - time.monotonic()))
                    client.poll(wait)
                else:
                    time.sleep(0.002)
            passes.append({"pass": pass_no, "started": round(started_wall, 3),
                           "seconds": round(time.monotonic() - started, 2),
                           "paced": passes_left is None, **pass_state})
            counters[PASSES] = len(passes)
            if passes_left is not None:
                passes_left -= 1
        client.close()
        Path(samples_path).write_bytes(samples.tobytes())
        results.put({"passes": passes, "misses": misses, "errors": state["errors"],
                     "error_sample": state["sample"], "error_log": error_log,
                     "unverified": state["unverified"],
                     "keys_checked": len(ids)})
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put({"fatal": f"{type(exc).__name__}: {exc}"})


class Reader:
    def __init__(self, seeds: list[str], keys: int, skip: list[int], args: argparse.Namespace,
                 samples_path: Path) -> None:
        ctx = _context()
        self.counters = ctx.Array("q", 5, lock=False)
        self.final = ctx.Event()
        self.results = ctx.Queue()
        self.samples_path = samples_path
        self.process = ctx.Process(target=_reader, daemon=True, args=(
            seeds, keys, skip, args.value_size, args.read_rate, args.read_depth,
            self.counters, self.final, str(samples_path), self.results))
        self.started_at = time.time()
        self.process.start()

    def progress(self) -> str:
        c = self.counters
        return (f"reader: {c[GETS]:,} gets, {c[PASSES]} passes done, {c[MISSES]} misses, "
                f"{c[ERRORS]} errors")

    def finish(self, timeout: float) -> dict:
        """Let it finish its pass and read every key once more; its summary."""
        self.final.set()
        deadline = time.monotonic() + timeout
        last_say = time.monotonic()
        while True:
            try:
                result = self.results.get(timeout=0.5)
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise zb.BenchError("the reader died") from None
            if time.monotonic() >= deadline:
                self.stop()
                raise zb.BenchError(f"the reader did not finish its passes within {timeout:g} s")
            if time.monotonic() - last_say >= PROGRESS_EVERY:
                last_say = time.monotonic()
                say(f"final passes: {self.progress()}")
        self.process.join(timeout=10)
        if result.get("fatal"):
            raise zb.BenchError(f"the reader failed: {result['fatal']}")
        raw = array("d")
        raw.frombytes(self.samples_path.read_bytes())
        result["samples"] = raw
        return result

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()


def latency(samples: array, windows: list[tuple[float, float]]) -> dict:
    """p50, p99 and max (ms), gets and errors of the gets sent within any of ``windows``."""
    took: list[float] = []
    errors = 0
    for k in range(0, len(samples), 3):
        wall = samples[k]
        if any(a <= wall < b for a, b in windows):
            if samples[k + 2]:
                took.append(samples[k + 1])
            else:
                errors += 1
    took.sort()
    if not took:
        return {"gets": 0, "errors": errors, "p50_ms": None, "p99_ms": None, "max_ms": None}
    seconds = sum(b - a for a, b in windows)

    def pct(q: float) -> float:
        return round(took[min(len(took) - 1, int(q * len(took)))] * 1000, 2)

    return {"gets": len(took), "errors": errors, "gets_per_s": round(len(took) / seconds, 1)
            if seconds > 0 else None, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(took[-1] * 1000, 2)}


# --------------------------------------------------------------------------- the run


def current_epoch(cluster: Cluster) -> int:
    from zkv.client import Client

    best = 0
    for r in cluster.records():
        if r.get("status") in ("running", "restarting") and r.get("address"):
            with Client([r["address"]], timeout=2.0) as c:
                view = c.node_status(r["address"], timeout=2.0)
            if view:
                best = max(best, view["epoch"])
    return best


def change(cluster: Cluster, tail: EventTail, reader: Reader, label: str, args: list[str],
           timeout: float, keys: int) -> dict:
    """Run one membership command while the reader reads; what it took, from the
    command's answer and the nodes' events."""
    epoch = current_epoch(cluster)
    keys_before = cluster.keys_held()
    say(f"{label} (epoch {epoch}); {reader.progress()}")
    holder: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: holder.update(cluster.zkv(*args, timeout=timeout)),
                              daemon=True)
    sent_at = time.time()
    worker.start()
    last_say = time.monotonic()
    while worker.is_alive():
        worker.join(0.5)
        if time.monotonic() - last_say >= PROGRESS_EVERY:
            last_say = time.monotonic()
            now = transitions(tail.snapshot(), epoch)
            where = (f"epoch {now[-1]['epoch']} -> target {now[-1]['target']}" if now
                     else "no transition yet")
            say(f"{label}: {time.time() - sent_at:.0f} s, {where}; {reader.progress()}")
    answer = dict(holder)
    returned_at = time.time()
    time.sleep(EVENT_POLL * 3)  # the last events reach the logs and the tail
    tail.poll()
    moves = transitions(tail.snapshot(), epoch)
    keys_after = cluster.keys_held()
    seen, dropped = timeline(tail.snapshot(), sent_at, time.time())
    done = answer.get("exit_code") == 0 and bool(moves) and all(
        m["settled_at"] is not None for m in moves)
    for m in moves:
        m["key_copies"] = copies_gained(m["ring"], m["target"], keys)
    streaming_s = sum(m["seconds"] or 0.0 for m in moves)
    records = sum(m["keys_streamed"] for m in moves)
    copies = sum(m["key_copies"] for m in moves)
    out = {"change": label, "command": args, "done": done, "epoch_before": epoch,
           "epoch_after": moves[-1]["settled_epoch"] if moves else None,
           "command_s": answer.get("seconds"), "exit_code": answer.get("exit_code"),
           "error": answer.get("error"), "sent_at": round(sent_at, 3),
           "returned_at": round(returned_at, 3),
           "left_at": {e["node"]: e["ts"] for e in tail.snapshot()
                       if e["kind"] == "decommissioned" and e["ts"] >= sent_at},
           "transitions": moves, "streaming_s": round(streaming_s, 3),
           "span_s": round(moves[-1]["settled_at"] - moves[0]["adopted_at"], 3)
           if done else None,
           "keys_streamed": records, "bytes_streamed": sum(m["bytes"] for m in moves),
           "keys_per_s": round(records / streaming_s, 1) if streaming_s else None,
           "key_copies_gained": copies,
           "key_copies_per_s": round(copies / streaming_s, 1) if streaming_s else None,
           "keys_before": keys_before, "keys_after": keys_after,
           "stalls": [x for x in seen if x[2] == "stall"],
           "timeline": seen, "strays_dropped": dropped,
           "answer": {k: v for k, v in answer.items()
                      if k not in ("exit_code", "seconds", "error")}}
    say(f"{label}: {'done' if done else 'NOT DONE'} in {answer.get('seconds')} s "
        f"(exit {answer.get('exit_code')}); {len(moves)} transition(s), streaming "
        f"{streaming_s:.2f} s, {records:,} keys streamed ({copies:,} key copies gained)"
        + (f"; {answer['error']}" if answer.get("error") else ""))
    return out


def run(args: argparse.Namespace) -> dict:
    result: dict[str, Any] = {
        "machine": zb.machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    say(f"starting a {NODES}-node cluster (fsync on, default timers)")
    cluster = Cluster(args.data_dir, args.keep)
    tail: EventTail | None = None
    reader: Reader | None = None
    scratch = cluster.data_dir / "reader"  # the reader's latency samples
    try:
        say(f"cluster up in {cluster.data_dir}; loading {args.keys:,} keys")
        result["load"], failed = load(cluster.seeds, args)
        say(f"loaded {result['load']['loaded']:,} keys in {result['load']['seconds']:.1f} s "
            f"({result['load']['failed']} failed)")
        tail = EventTail(cluster.data_dir)
        tail.start()
        scratch.mkdir()
        reader = Reader(cluster.seeds, args.keys, failed, args, scratch / "samples.bin")
        time.sleep(args.baseline)
        result["changes"] = [
            change(cluster, tail, reader, f"add {ADD} nodes",
                   ["cluster", "add", "--nodes", str(ADD)], args.timeout, args.keys),
        ]
        if result["changes"][0]["exit_code"] == 0:
            result["changes"].append(
                change(cluster, tail, reader, f"decommission {args.decommission}",
                       ["node", "decommission", args.decommission], args.timeout,
                       args.keys))
        say(f"changes over; the reader reads every key once more. {reader.progress()}")
        finished_at = time.time()
        read = reader.finish(args.timeout)
        samples = read.pop("samples")
        tail.stop()
        result["events_read_bytes"] = tail.bytes_read
        streaming = {c["change"]: [(m["adopted_at"], m["settled_at"])
                                   for m in c["transitions"] if m["settled_at"] is not None]
                     for c in result["changes"]}
        windows = {"before the changes": [(reader.started_at, result["changes"][0]["sent_at"])]}
        for c in result["changes"]:
            windows[f"{c['change']}: whole command"] = [(c["sent_at"], c["returned_at"])]
            windows[f"{c['change']}: streaming"] = streaming[c["change"]]
        windows["during streaming (both changes)"] = [w for ws in streaming.values() for w in ws]
        windows["final passes (unpaced)"] = [(finished_at, time.time())]
        read["latency"] = {name: latency(samples, w) for name, w in windows.items()}
        read["gets"] = len(samples) // 3
        read["misses_total"] = len(read["misses"])
        read["misses"] = read["misses"][:100]
        result["reader"] = read
        result["keys_at_end"] = cluster.keys_held()
        result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        try:
            if reader is not None:
                reader.stop()
            if tail is not None:
                tail.stop()
        finally:
            say("stopping the cluster")
            cluster.stop()
            shutil.rmtree(scratch, ignore_errors=True)
            if cluster.own_dir and args.keep:
                say(f"data kept in {cluster.data_dir}")
    return result


# --------------------------------------------------------------------------- report


def _n(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def report(result: dict) -> str:
    o, m, ld, rd = result["options"], result["machine"], result["load"], result["reader"]
    errors = f"Reader errors: {rd['errors']}"
    if rd["error_sample"]:
        errors += f" (e.g. {rd['error_sample']})"
    if rd["unverified"]:
        errors += f"; {rd['unverified']} keys left unverified"
    lines = [(f"## zkv membership: {o['keys']:,} keys x {o['value_size']} B, {NODES} -> "
              f"{NODES + ADD} -> {NODES + ADD - 1} nodes"),
             "",
             (f"{m['nproc']} CPUs ({m['cpu']}), Python {m['python']}; quorum, fsync on, "
              f"default timers; {result['started']}; load average (1 min) "
              f"{result['loadavg_start'][0]:.1f} at the start, "
              f"{result['loadavg_end'][0]:.1f} at the end."),
             "",
             (f"Load: {ld['loaded']:,} keys in {ld['seconds']:.1f} s ({ld['keys_per_s']:,.0f} "
              f"keys/s), {ld['failed']} failed. Reader: quorum gets, {o['read_rate']:,.0f}/s "
              f"at most (up to {o['read_depth']} in flight) until the changes are over, then "
              f"unpaced; {rd['gets']:,} gets in {len(rd['passes'])} passes over "
              f"{rd['keys_checked']:,} keys."),
             "",
             (f"**Misses: {rd['misses_total']}** (a key not found or with another value than "
              f"the acknowledged one). {errors}."),
             "",
             ("| change | done | epochs | command s | streaming s | keys streamed | keys/s | "
              "key copies gained | copies/s | gainers |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in result["changes"]:
        epochs = " -> ".join(str(e) for e in [c["epoch_before"], *[
            x for t in c["transitions"] for x in (t["epoch"], t["settled_epoch"])]] if e)
        gainers = sorted({g for t in c["transitions"] for g in t["gainers"]})
        lines.append(f"| {c['change']} | {'yes' if c['done'] else 'NO'} | {epochs} | "
                     f"{_n(c['command_s'], '.1f')} | {_n(c['streaming_s'], '.2f')} | "
                     f"{_n(c['keys_streamed'])} | {_n(c['keys_per_s'])} | "
                     f"{_n(c['key_copies_gained'])} | {_n(c['key_copies_per_s'])} | "
                     f"{', '.join(gainers)} |")
    lines += ["", "| reader, gets sent | gets | gets/s | p50 ms | p99 ms | max ms | errors |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label, lat in rd["latency"].items():
        lines.append(f"| {label} | {lat['gets']:,} | {_n(lat.get('gets_per_s'))} | "
                     f"{_n(lat['p50_ms'], '.2f')} | {_n(lat['p99_ms'], '.2f')} | "
                     f"{_n(lat['max_ms'], '.1f')} | {lat['errors']} |")
    for c in result["changes"]:
        for node, left in c.get("left_at", {}).items():
            near = [e for e in rd["error_log"] if abs(e["at"] - left) <= EXIT_NEAR]
            lines += ["", (f"{node} exited {left - c['sent_at']:.1f} s after the {c['change']} "
                           f"command; {len(near)} of the reader's errors were gets sent within "
                           f"{EXIT_NEAR:g} s of that.")]
    lines += ["", "Keys held at the end: " + ", ".join(
        f"{n} {_n(k)}" for n, k in result["keys_at_end"].items()) + "."]
    for c in result["changes"]:
        if c.get("error"):
            lines.append(f"\n{c['change']} failed: {c['error']}")
    if rd["misses"]:
        lines.append("\nFirst misses: " + "; ".join(
            f"{x['key']} (pass {x['pass']}) got {x['got']!r}" for x in rd["misses"][:10]))
    return "\n".join(lines)


def json_lines(result: dict) -> list[str]:
    run_id = result["started"]
    out = [json.dumps({"record": "change", "run": run_id, **c}) for c in result["changes"]]
    summary = {k: v for k, v in result.items() if k != "changes"}
    summary["changes"] = [c["change"] for c in result["changes"]]
    summary["misses"] = result["reader"]["misses_total"]
    out.append(json.dumps({"record": "run", "run": run_id, **summary}))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=150_000)
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (>= 10)")
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--clients", type=int, default=4, help="clients per generator process")
    p.add_argument("--depth", type=int, default=64, help="puts in flight per generator process")
    p.add_argument("--read-rate", type=float, default=1000.0,
                   help="gets/s the reader sends at most while the changes run")
    p.add_argument("--read-depth", type=int, default=32, help="gets the reader has in flight")
    p.add_argument("--baseline", type=float, default=15.0,
                   help="seconds the reader reads before the first change")
    p.add_argument("--decommission", default="node-3", help="the node to decommission")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds each change (and the reader's final passes) may take")
    p.add_argument("--data-dir", type=Path,
                   help="cluster directory, which must not exist or be empty (default: a "
                        "temporary one, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary cluster directory")
    p.add_argument("--json", type=Path, help="JSON lines are appended here (default "
                                             "bench/results/membership.jsonl)")
    args = p.parse_args()
    if min(args.keys, args.processes, args.clients, args.depth, args.read_depth) < 1 \
            or args.value_size < 10 or not args.read_rate > 0:
        p.error("--keys, --processes, --clients, --depth, --read-depth and --read-rate must be "
                "positive, --value-size at least 10")
    if args.data_dir is not None and args.data_dir.exists() and any(args.data_dir.iterdir()):
        p.error(f"--data-dir {args.data_dir} is not empty; the run needs a fresh cluster")
    path = args.json or ROOT / "bench" / "results" / "membership.jsonl"
    result = run_guarded("membership", run, args)
    if isinstance(result, int):
        return result
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.writelines(line + "\n" for line in json_lines(result))
    print(report(result))
    print(f"\nappended to {path}")
    ok = result["reader"]["misses_total"] == 0 and all(c["done"] for c in result["changes"]) \
        and len(result["changes"]) == 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
