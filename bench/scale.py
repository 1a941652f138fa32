"""Scale run: load many keys into a 3-node cluster, then restart a node and move the data.

    .venv/bin/python bench/scale.py                       # 1,000,000 keys of 100 bytes
    .venv/bin/python bench/scale.py --keys 20000 --deadline 120

Item 4 of the speed issue. A local cluster (3 nodes, quorum, fsync on) is
started the way ``zkv cluster up --detach`` does it; then:

1. load: ``--keys`` distinct keys, pipelined through the public client from
   ``--processes`` generator processes (each a disjoint range of keys, a few
   clients, ``--depth`` requests in flight); a failed put is retried a few
   times, keys that still fail are counted.
2. each node's RSS, LMDB size (apparent and allocated) and keys held.
3. restart: one node is SIGKILLed through the supervisor, which restarts it;
   timed until its node.json says ready again and until it coordinates a quorum
   get of a loaded key.
4. stabilization: a 4th node joins (timed until it holds about 3/4 of the keys
   and stops growing, then until the others dropped the copies it took over)
   and is decommissioned again (``Client.admin("decommission", ...)``: the three
   stream its ranges back, the ring drops it and its process exits with code 3;
   timed until it has exited and the three hold every key again). SIGTERM only
   stops a node, which stays a member, so it is used only to clean up.

Keys held are read from each node's ``zkv_keys_stored`` metric, which the node
refreshes once a second, so stabilization times are good to a second or two.
A phase that misses ``--deadline`` is reported with how far it got. The report
goes to stderr/stdout and JSON to ``--json`` (default bench/results/scale-STAMP.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zkv import bench as zb
from zkv import supervisor as sup
from zkv.config import NODE_FILE, store_path
from zkv.core.messages import ClientReply, ClientRequest, DecodeError, decode, encode
from zkv.exit_codes import EXIT_DECOMMISSIONED
from zkv.net.figures import human_bytes, node_figures

NODES = 3
REPLICAS = 3
RETRIES = 3  # extra attempts for a put that failed
RETRY_PAUSE = 0.2  # seconds before a failed put is sent again
PUT_TIMEOUT = 5.0
PROGRESS_EVERY = 5.0  # seconds between progress lines on stderr
SAMPLE_EVERY = 0.5  # seconds between metric samples (the nodes refresh them every second)
STABLE_FOR = 5.0  # a key count unchanged this long has stopped growing
RESTART_DEADLINE = 120.0
JOINER = "node-4"
DECOMMISSION_RESEND = 3.0  # seconds before a decommission the map does not show is sent again


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} scale: {message}", file=sys.stderr, flush=True)


def value_for(worker: int, size: int) -> bytes:
    """Worker ``worker``'s value; the restart probe recomputes it to check what it reads."""
    return random.Random(worker).randbytes(size)


# --------------------------------------------------------------------------- load


def _load_range(client: Any, ids: range, value: bytes | Callable[[int], bytes], depth: int,
                counts: Any, slot: int, outcome: dict) -> None:
    """Put every key of ``ids`` (``value``, or ``value(i)`` for key i) through one client
    with ``depth`` requests in flight; ``outcome`` gets done, failed (the key ids) and
    retried counts (``bench/membership.py`` loads with it too).

    A failed put goes back into a queue for another attempt after a short pause
    (the client refreshes its ring after a refusal meanwhile).
    """
    value_of = value if callable(value) else (lambda _i: value)
    todo = iter(ids)
    retry: deque[tuple[float, int, int]] = deque()  # (due, key id, attempt), due ascending
    failed: list[int] = []
    done = retried = 0

    def settled(future: Any, i: int, attempt: int) -> None:
        nonlocal done, retried
        if future.exception() is None:
            done += 1
            counts[slot] = done
        elif attempt < RETRIES:
            retried += 1
            retry.append((time.monotonic() + RETRY_PAUSE, i, attempt + 1))
        else:
            failed.append(i)
            outcome["sample"] = outcome.get("sample") or str(future.exception())

    exhausted = False
    try:
        while True:
            now = time.monotonic()
            while client.in_flight < depth:
                if retry and retry[0][0] <= now:
                    _, i, attempt = retry.popleft()
                elif not exhausted:
                    i, attempt = next(todo, -1), 0
                    if i < 0:
                        exhausted = True
                        continue
                else:
                    break
                future = client.submit("put", zb.key_name(i), value_of(i))
                future.add_done_callback(lambda f, i=i, a=attempt: settled(f, i, a))
            if exhausted and not retry and not client.in_flight:
                break
            if client.in_flight:
                client.poll(0.05)
            else:
                time.sleep(RETRY_PAUSE / 4)  # only retries wait, none is due yet
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        outcome["fatal"] = f"{type(exc).__name__}: {exc}"
    outcome.update(done=done, failed=failed, retried=retried)


def _load_worker(wid: int, ids: range, seeds: list[str], clients: int, depth: int,
                 value_size: int, counts: Any, results: Any) -> None:
    """One generator process: ``clients`` clients, a thread each, share ``ids`` and ``depth``.

    Ctrl-C is the parent's to handle: it terminates the workers (plain SIGTERM).
    """
    from zkv.client import Client

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    opened: list[Any] = []
    try:
        for _ in range(clients):
            opened.append(Client(seeds, timeout=PUT_TIMEOUT))
            opened[-1].ring()  # route each put straight to a replica from the start
        value = value_for(wid, value_size)
        per_client = max(1, depth // clients)
        outcomes: list[dict] = [{} for _ in opened]
        threads = [threading.Thread(target=_load_range,
                                    args=(c, ids[k::clients], value, per_client, counts,
                                          wid * clients + k, outcomes[k]), daemon=True)
                   for k, c in enumerate(opened)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fatal = [o["fatal"] for o in outcomes if "fatal" in o]
        cpu = psutil.Process().cpu_times()
        results.put({"worker": wid, "cpu_s": cpu.user + cpu.system,
                     "done": sum(o["done"] for o in outcomes),
                     "failed": sum(len(o["failed"]) for o in outcomes),
                     "retried": sum(o["retried"] for o in outcomes),
                     "sample": next((o["sample"] for o in outcomes if "sample" in o), None),
                     "fatal": fatal[0] if fatal else None})
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put({"worker": wid, "fatal": f"{type(exc).__name__}: {exc}"})
    finally:
        for c in opened:
            c.close()


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def load(seeds: list[str], nodes: list[psutil.Process], args: argparse.Namespace) -> dict:
    """Phase 1: put ``args.keys`` keys; keys/s over the wall time of the whole load.

    CPU seconds of the generator and of the nodes show which one was the limit
    (they share the machine's cores).
    """
    nodes_cpu = cpu_seconds(nodes)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    counts = ctx.Array("q", args.processes * args.clients, lock=False)
    results = ctx.Queue()
    bounds = [args.keys * w // args.processes for w in range(args.processes + 1)]
    workers = [ctx.Process(target=_load_worker,
                           args=(w, range(bounds[w], bounds[w + 1]), seeds, args.clients,
                                 args.depth, args.value_size, counts, results), daemon=True)
               for w in range(args.processes)]
    collected: list[dict] = []
    start = time.monotonic()
    for p in workers:
        p.start()
    try:
        last_say, last_done = start, 0
        while len(collected) < len(workers):
            try:
                collected.append(results.get(timeout=0.5))
            except queue.Empty:
                if not any(p.is_alive() for p in workers):
                    break
            now = time.monotonic()
            if now - last_say >= PROGRESS_EVERY:
                done = sum(counts)
                say(f"loaded {done:,}/{args.keys:,} keys, {done / (now - start):,.0f} keys/s "
                    f"(last {now - last_say:.0f} s: {(done - last_done) / (now - last_say):,.0f}"
                    " keys/s)")
                last_say, last_done = now, done
        elapsed = time.monotonic() - start
        nodes_cpu = cpu_seconds(nodes) - nodes_cpu
    except BaseException:
        for p in workers:
            p.terminate()
        raise
    finally:
        for p in workers:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    fatal = [r["fatal"] for r in collected if r.get("fatal")]
    if fatal or len(collected) < len(workers):
        raise zb.BenchError(f"a load worker failed: {fatal[0] if fatal else 'it died'}")
    loaded = sum(r["done"] for r in collected)
    return {"keys": args.keys, "loaded": loaded, "failed": sum(r["failed"] for r in collected),
            "retried": sum(r["retried"] for r in collected),
            "error_sample": next((r["sample"] for r in collected if r["sample"]), None),
            "seconds": round(elapsed, 2), "keys_per_s": round(args.keys / elapsed, 1),
            "generator_cpu_s": round(sum(r["cpu_s"] for r in collected), 1),
            "nodes_cpu_s": round(nodes_cpu, 1)}


# --------------------------------------------------------------------------- node figures


def node_record(data_dir: Path, node_id: str) -> dict:
    return sup.find_node(sup.require_cluster(data_dir), node_id)


def node_file(node_dir: Path) -> dict:
    try:
        return json.loads((Path(node_dir) / NODE_FILE).read_text())
    except (OSError, ValueError):
        return {}  # not written yet (or mid-replace on a filesystem without atomic rename)


def keys_held(url: str) -> int | None:
    """None if the node does not answer (a node busy moving data may answer slowly)."""
    figures = node_figures(url, timeout=2.0)
    return figures.keys if figures is not None else None


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def snapshot(node_id: str, node_dir: Path, metrics: str, pid: int | None) -> dict:
    """RSS, store size and keys held of one node (``pid`` checked by the caller)."""
    data = store_path(node_dir) / "data.mdb"
    try:
        rss: int | None = psutil.Process(pid).memory_info().rss if pid else None
    except psutil.Error:
        rss = None
    return {"id": node_id, "pid": pid, "rss_bytes": rss, "keys": keys_held(metrics),
            "data_mdb_bytes": data.stat().st_size if data.exists() else None,
            "data_mdb_allocated": allocated(data) if data.exists() else None,
            "node_dir_allocated": sum(allocated(p) for p in Path(node_dir).rglob("*")
                                      if p.is_file())}


def cluster_snapshot(data_dir: Path) -> list[dict]:
    out = []
    for record in sup.require_cluster(data_dir)["nodes"]:
        proc = sup.live_process(record.get("pid"), record.get("pid_create_time"))
        out.append(snapshot(record["id"], Path(record["data_dir"]), record["metrics"],
                            proc.pid if proc else None))
    return out


def watch_keys(urls: dict[str, str], start: float, deadline: float, label: str,
               done: Callable[[dict[str, int], dict[str, float]], bool]) -> dict:
    """Sample every node's keys held until ``done(keys, seconds_unchanged)`` or ``deadline``.

    Returns whether it finished, when (seconds since ``start``), the last counts and,
    per node, when its count last changed (seconds since ``start``). A sample the node
    did not answer keeps its last count, so a slow answer does not look like a change.
    """
    keys: dict[str, int | None] = {n: None for n in urls}
    changed = dict.fromkeys(urls, start)
    last_say = time.monotonic()
    while True:
        now = time.monotonic()
        for node, url in urls.items():
            k = keys_held(url)
            if k is not None and k != keys[node]:
                keys[node], changed[node] = k, now
        known = {n: k for n, k in keys.items() if k is not None}
        finished = len(known) == len(urls) and done(known, {n: now - t
                                                            for n, t in changed.items()})
        if finished or now >= deadline:
            return {"done": finished, "seconds": round(now - start, 2), "keys": keys,
                    "last_change_s": {n: round(t - start, 2) for n, t in changed.items()}}
        if now - last_say >= PROGRESS_EVERY:
            say(f"{label} {now - start:.0f} s: " +
                ", ".join(f"{n} {'-' if k is None else f'{k:,}'}" for n, k in keys.items()))
            last_say = now
        time.sleep(SAMPLE_EVERY)


# --------------------------------------------------------------------------- restart


def served_get(sock: zmq.Socket, req_id: int, key: bytes, value: bytes, wait: float) -> bool:
    """Send one quorum get to the node behind ``sock`` (raw protocol, as the client sends
    it) and listen ``wait`` seconds: True once any of our gets was answered with ``value``
    (a late answer to an earlier one counts: the node served it)."""
    try:
        sock.send(encode(ClientRequest(req_id, "get", key, None, "quorum", 1000)), zmq.NOBLOCK)
    except zmq.Again:
        pass  # nothing connected yet; listen anyway, then ask again
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
        try:
            message = decode(sock.recv())
        except DecodeError:
            continue
        if isinstance(message, ClientReply) and message.status == "ok" \
                and message.value == value:
            return True
    time.sleep(max(0.0, end - time.monotonic()))  # a refusal comes at once: keep the pace
    return False


def restart(data_dir: Path, node_id: str, key: bytes, value: bytes) -> dict:
    """Phase 3: SIGKILL ``node_id`` (the supervisor restarts it); time until it is ready
    again and until it, as coordinator, answers a quorum get of ``key`` with ``value``."""
    record = node_record(data_dir, node_id)
    node_dir = Path(record["data_dir"])
    start = time.monotonic()
    old_pid = sup.kill_node(data_dir, node_id, restart=True)
    ready_s = get_s = None
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(record["address"])
    req_ids = itertools.count(1)
    try:
        while time.monotonic() - start < RESTART_DEADLINE and (ready_s is None or get_s is None):
            info = node_file(node_dir)
            if ready_s is None and info.get("status") == "ready" and info.get("pid") != old_pid:
                ready_s = round(time.monotonic() - start, 3)
            if get_s is None:
                if served_get(sock, next(req_ids), key, value, 0.05):
                    get_s = round(time.monotonic() - start, 3)
            else:
                time.sleep(0.02)
    finally:
        sock.close(0)
    return {"node": node_id, "ready_s": ready_s, "quorum_get_s": get_s,
            "supervisor_backoff_s": sup.BACKOFF_FIRST}


# --------------------------------------------------------------------------- join and leave


def start_joiner(data_dir: Path, seeds: list[str]) -> tuple[subprocess.Popen, dict]:
    """A 4th node joining through the first seed, run with the cluster's node flags; its
    command line is the supervisor's, but this script owns (and must stop) the process."""
    cluster = sup.require_cluster(data_dir)
    node = sup.ManagedNode(JOINER, sup.free_base_port(sup.PORTS_PER_NODE),
                           Path(data_dir).resolve() / JOINER, seeds[:1])
    node.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = sup.Supervisor(data_dir, 0, node_flags=cluster.get("node_flags")).node_command(node)
    with open(node.data_dir / sup.NODE_LOG, "ab") as log:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, preexec_fn=sup.parent_death_signal(),
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return popen, node.record()


def stop_process(popen: subprocess.Popen, grace: float = sup.STOP_TIMEOUT) -> float:
    """SIGTERM, SIGKILL after ``grace`` seconds; how long it took to exit."""
    start = time.monotonic()
    sup.stop_popen(popen, grace)
    return round(time.monotonic() - start, 2)


def decommission(popen: subprocess.Popen, record: dict, seeds: list[str], start: float,
                 deadline: float) -> dict:
    """Ask the cluster to decommission the node behind ``popen`` (the command goes to the
    node itself first, then to the seeds) and wait for its process to exit; the command
    is sent again every ``DECOMMISSION_RESEND`` seconds while the node's map still shows
    it ``normal`` (a command the node took is proposed by that node alone). Returns the
    exit code (None past ``deadline``), when it exited (seconds since ``start``), the
    epochs before and after, and the first answer's status."""
    from zkv.client import Client
    from zkv.errors import InvalidRequest, Unavailable

    node_id, address = record["id"], record["address"]
    outcome: dict[str, Any] = {"command": None, "epoch_before": None, "epoch_after": None,
                               "exit_code": None, "exit_s": None, "resent": 0}
    with Client([address, *seeds], timeout=5.0) as client:
        view = client.node_status(seeds[0], timeout=2.0)
        outcome["epoch_before"] = view["epoch"] if view else None

        def send() -> str | None:
            try:
                reply = client.admin("decommission", node_id)
            except (Unavailable, InvalidRequest) as exc:
                return f"error: {exc}"
            if reply.status == "refused":
                raise zb.BenchError(f"the cluster refused to decommission {node_id}: "
                                    f"{reply.detail}")
            return reply.status

        outcome["command"] = send()
        resend_at = time.monotonic() + DECOMMISSION_RESEND
        while popen.poll() is None and time.monotonic() < deadline:
            if time.monotonic() >= resend_at:
                resend_at = time.monotonic() + DECOMMISSION_RESEND
                view = client.node_status(seeds[0], timeout=1.0)
                state = (view or {}).get("members", {}).get(node_id, {}).get("state")
                if state == "normal":
                    outcome["resent"] += 1
                    send()
            time.sleep(0.05)
        if popen.poll() is not None:
            outcome["exit_code"] = popen.returncode
            outcome["exit_s"] = round(time.monotonic() - start, 2)
        view = client.node_status(seeds[0], timeout=2.0)
        outcome["epoch_after"] = view["epoch"] if view else None
    return outcome


def stabilization(data_dir: Path, seeds: list[str], keys: int, deadline: float) -> dict:
    """Phase 4: a 4th node joins (it should end with ~3/4 of the keys), then is
    decommissioned."""
    urls = {r["id"]: r["metrics"] for r in sup.require_cluster(data_dir)["nodes"]}
    share = keys * REPLICAS / (NODES + 1)
    started_wall = time.time()
    popen, record = start_joiner(data_dir, seeds)
    try:
        start = time.monotonic()
        say(f"{JOINER} started (pid {popen.pid}) on {record['address']}; expecting "
            f"~{share:,.0f} keys")
        all_urls = {**urls, JOINER: record["metrics"]}

        def took_share(held: dict[str, int], unchanged: dict[str, float]) -> bool:
            return held[JOINER] >= 0.95 * share and unchanged[JOINER] >= STABLE_FOR

        gained = watch_keys(all_urls, start, start + deadline, "join", took_share)
        ready_at = node_file(Path(record["data_dir"])).get("updated")
        held = gained["keys"][JOINER] or 0
        filled_s = gained["last_change_s"][JOINER]
        join = {"done": gained["done"], "keys": held, "seconds": filled_s,
                "keys_per_s": round(held / filled_s, 1) if filled_s else None,
                "share_expected": round(share),
                "node_ready_s": round(ready_at - started_wall, 2) if ready_at else None}
        say(f"{JOINER} holds {held:,} keys after {filled_s:.1f} s")

        def strays_dropped(held: dict[str, int], unchanged: dict[str, float]) -> bool:
            return sum(held.values()) <= 1.01 * REPLICAS * keys

        dropped = watch_keys(all_urls, start, start + deadline, "drop strays", strays_dropped)
        join["strays_dropped"] = {"done": dropped["done"], "seconds": dropped["seconds"],
                                  "keys": dropped["keys"]}
        before = {n: dropped["keys"][n] or 0 for n in urls}
        leave_start = time.monotonic()
        say(f"decommissioning {JOINER}")
        gone = decommission(popen, record, seeds, leave_start, leave_start + deadline)
        if gone["exit_code"] is None:
            say(f"{JOINER} still runs {deadline:g} s after the decommission command")
        else:
            say(f"{JOINER} exited with code {gone['exit_code']} {gone['exit_s']:.1f} s after "
                "the decommission command")

        def every_key_back(held: dict[str, int], unchanged: dict[str, float]) -> bool:
            return all(k >= keys for k in held.values())

        back = watch_keys(urls, leave_start, leave_start + deadline, "decommission",
                          every_key_back)
        gained_total = sum((back["keys"][n] or 0) - before[n] for n in urls)
        exited = gone["exit_code"] == EXIT_DECOMMISSIONED
        seconds = max(back["seconds"], gone["exit_s"] or 0.0)
        leave = {"done": back["done"] and exited, "seconds": seconds,
                 "keys_back_s": back["seconds"], "exit_s": gone["exit_s"],
                 "exit_code": gone["exit_code"], "command": gone["command"],
                 "resent": gone["resent"], "epoch_before": gone["epoch_before"],
                 "epoch_after": gone["epoch_after"], "keys_before": before,
                 "keys": back["keys"], "keys_gained": gained_total,
                 "keys_per_s": round(gained_total / seconds, 1) if seconds else None}
        return {"join": join, "decommission": leave}
    finally:
        stop_process(popen)


# --------------------------------------------------------------------------- report


def report(result: dict) -> str:
    o, m, ld = result["options"], result["machine"], result["load"]
    lines = [(f"zkv scale: {o['keys']:,} keys x {o['value_size']} B, {NODES} nodes, quorum, "
              f"fsync on; {o['processes']} processes x {o['clients']} clients, depth "
              f"{o['depth']}; {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}"),
             (f"load:     {ld['loaded']:,} keys in {ld['seconds']:.1f} s = "
              f"{ld['keys_per_s']:,.0f} keys/s; failed {ld['failed']}, retried {ld['retried']}")]
    busy = (ld["nodes_cpu_s"] + ld["generator_cpu_s"]) / ld["seconds"]
    lines.append(f"          CPU: nodes {ld['nodes_cpu_s']:.0f} s, generator "
                 f"{ld['generator_cpu_s']:.0f} s ({busy:.2f} of {m['nproc']} cores busy)")
    if ld["error_sample"]:
        lines.append(f"          e.g. {ld['error_sample']}")

    def size(n: int | None) -> str:
        return "-" if n is None else human_bytes(n)

    for title, nodes in (("after load", result["nodes_after_load"]),
                         ("at the end", result.get("nodes_at_end"))):
        if not nodes:
            continue
        lines.append(f"nodes {title}:")
        lines.append(f"  {'NODE':8} {'KEYS':>11} {'RSS':>10} {'DATA.MDB':>10} "
                     f"{'ALLOCATED':>10} {'NODE DIR':>10}")
        for n in nodes:
            keys = "-" if n["keys"] is None else f"{n['keys']:,}"
            lines.append(f"  {n['id']:8} {keys:>11} {size(n['rss_bytes']):>10} "
                         f"{size(n['data_mdb_bytes']):>10} {size(n['data_mdb_allocated']):>10} "
                         f"{size(n['node_dir_allocated']):>10}")
    r = result["restart"]

    def secs(s: float | None) -> str:
        return "not within the deadline" if s is None else f"{s:.2f} s"

    lines.append(f"restart:  {r['node']} SIGKILLed; ready again after {secs(r['ready_s'])} "
                 f"(incl. the supervisor's {r['supervisor_backoff_s']:g} s backoff), "
                 f"quorum get through it after {secs(r['quorum_get_s'])}")
    if "join" in result:
        j, lv = result["join"], result["decommission"]
        miss = "" if j["done"] else " (DEADLINE MISSED)"
        rate = f"{j['keys_per_s']:,.0f}" if j["keys_per_s"] else "-"
        ready = "-" if j["node_ready_s"] is None else f"{j['node_ready_s']:.1f} s"
        lines.append(f"join:     {JOINER} took {j['keys']:,} keys (expected ~"
                     f"{j['share_expected']:,}) in {j['seconds']:.1f} s from its start (ready "
                     f"after {ready}) = {rate} keys/s{miss}")
        s = j["strays_dropped"]
        copies = sum(k or 0 for k in s["keys"].values()) / max(1, o["keys"])
        lines.append(f"          the others dropped their copies: {copies:.2f} copies per key "
                     f"after {s['seconds']:.1f} s" + ("" if s["done"] else " (DEADLINE MISSED)"))
        rate = f"{lv['keys_per_s']:,.0f}" if lv["keys_per_s"] else "-"
        exit_s = "-" if lv["exit_s"] is None else f"{lv['exit_s']:.1f} s"
        lines.append(f"decommission: {JOINER} (epoch {lv['epoch_before']} -> "
                     f"{lv['epoch_after']}; exited with code {lv['exit_code']} after "
                     f"{exit_s}); the three gained {lv['keys_gained']:,} keys in "
                     f"{lv['seconds']:.1f} s = {rate} keys/s"
                     + ("" if lv["done"] else " (DEADLINE MISSED)"))
        lines.append("          keys held: " + ", ".join(
            f"{n} {'-' if k is None else f'{k:,}'}" for n, k in lv["keys"].items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict:
    result: dict[str, Any] = {"machine": zb.machine(), "options": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    say(f"starting a {NODES}-node cluster (fsync on)")
    cluster = zb.LocalCluster(NODES, args.data_dir, sync=True, keep=args.keep)
    try:
        say(f"cluster up in {cluster.data_dir}; loading {args.keys:,} keys")
        nodes = [sup.live_process(r.get("pid"), r.get("pid_create_time"))
                 for r in sup.require_cluster(cluster.data_dir)["nodes"]]
        result["load"] = load(cluster.seeds, [p for p in nodes if p is not None], args)
        say(f"loaded in {result['load']['seconds']:.1f} s; waiting for every replica to hold "
            "every key")
        urls = {r["id"]: r["metrics"] for r in sup.require_cluster(cluster.data_dir)["nodes"]}
        settle = watch_keys(urls, time.monotonic(), time.monotonic() + args.deadline,
                            "replicas", lambda held, unchanged: all(
                                k >= result["load"]["loaded"] or unchanged[n] >= STABLE_FOR
                                for n, k in held.items()))
        result["replicas_settled_s"] = settle["seconds"]
        result["nodes_after_load"] = cluster_snapshot(cluster.data_dir)
        say("restart: SIGKILL node-3")
        result["restart"] = restart(cluster.data_dir, "node-3", zb.key_name(0).encode(),
                                    value_for(0, args.value_size))
        if not args.skip_stabilization:
            result.update(stabilization(cluster.data_dir, cluster.seeds, args.keys,
                                        args.deadline))
            result["nodes_at_end"] = cluster_snapshot(cluster.data_dir)
    finally:
        say("stopping the cluster")
        cluster.stop()
        if cluster.own_dir and args.keep:
            say(f"data kept in {cluster.data_dir}")
    return result


def run_guarded(name: str, run: Callable[[argparse.Namespace], dict],
                args: argparse.Namespace) -> dict | int:
    """``run(args)``, with SIGTERM unwinding like Ctrl-C so that every process the run
    started is stopped; an exit code instead of the result when it failed or was
    interrupted."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return run(args)
    except (zb.BenchError, sup.ControlError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--value-size", type=int, default=100, help="bytes per value")
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--clients", type=int, default=4, help="clients per generator process")
    p.add_argument("--depth", type=int, default=64,
                   help="puts in flight per generator process (split over its clients)")
    p.add_argument("--data-dir", type=Path,
                   help="cluster directory, which must not exist or be empty (default: a "
                        "temporary one, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary cluster directory")
    p.add_argument("--skip-stabilization", action="store_true",
                   help="no 4th node joining and being decommissioned")
    p.add_argument("--deadline", type=float, default=1800.0,
                   help="seconds each stabilization phase may take")
    p.add_argument("--json", type=Path, help="default bench/results/scale-STAMP.json")
    args = p.parse_args()
    if min(args.keys, args.value_size, args.processes, args.clients, args.depth) < 1:
        p.error("--keys, --value-size, --processes, --clients and --depth must be positive")
    if args.data_dir is not None and args.data_dir.exists() and any(args.data_dir.iterdir()):
        p.error(f"--data-dir {args.data_dir} is not empty; the run needs a fresh cluster")
    path = args.json or ROOT / "bench" / "results" / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    result = run_guarded("scale", run, args)
    if isinstance(result, int):
        return result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
