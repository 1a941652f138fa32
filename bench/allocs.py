"""Allocations per operation in the node processes, counted by memray.

    .venv/bin/python bench/allocs.py                 # puts and gets, 3 nodes, 8x8 clients
    .venv/bin/python bench/allocs.py --workload put --top 25

The speed issue asks for less per-operation object churn on the hot path, measured.
A local cluster is started the way ``zkv cluster up --detach`` does it, with a
``sitecustomize`` on the nodes' path that turns a memray ``Tracker`` (Python's
small-object allocator included) on at the first SIGUSR1 and off at the second.
For each workload: a warm-up ``zkv bench`` run (so keys exist and the primaries
remember their versions, as in steady state), then the same run again with every
node tracked; allocations are counted from the nodes' files, minus what an
equally long idle window allocates (gossip, timers, metrics), and divided by the
operations the bench completed. Tracking slows the nodes several-fold, so the
loop turns carry fewer operations than untracked ones: the counts are an upper
bound for what a loaded node allocates per operation, and comparable across
versions of the code run the same way.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZKV = [sys.executable, "-m", "zkv"]

SITECUSTOMIZE = '''
import os, signal
_dir = os.environ.get("ZKV_ALLOC_DIR")
if _dir:
    _tracker = []
    def _toggle(signum, frame):
        import memray
        if _tracker:
            _tracker.pop().__exit__(None, None, None)
            return
        name = os.path.join(_dir, "%d-%d.bin" % (os.getpid(), time.time_ns()))
        tracker = memray.Tracker(name, trace_python_allocators=True)
        tracker.__enter__()
        _tracker.append(tracker)
    import time
    signal.signal(signal.SIGUSR1, _toggle)
'''


def node_pids(data_dir: Path) -> list[int]:
    pids = []
    for node_file in sorted(data_dir.glob("node-*/node.json")):
        pids.append(json.loads(node_file.read_text())["pid"])
    return pids


def bench(data_dir: Path, workload: str, args: argparse.Namespace, duration: float) -> dict:
    out = subprocess.run([*ZKV, "bench", "-d", str(data_dir), "-w", workload,
                          "--clients", str(args.clients), "--pipeline", str(args.pipeline),
                          "--keys", str(args.keys), "--duration", str(duration),
                          "--json", "--no-progress"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def tracked(pids: list[int], trace_dir: Path, work) -> tuple[list[Path], object]:
    """Run ``work()`` with every node tracked; the files it wrote and its result."""
    before = set(trace_dir.glob("*.bin"))
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    time.sleep(0.5)  # the handlers run when each node's loop next wakes
    result = work()
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    time.sleep(1.0)
    return sorted(set(trace_dir.glob("*.bin")) - before), result


def count(files: list[Path], sites: collections.Counter) -> int:
    """Allocations (not frees) in ``files``; their innermost zkv frames into ``sites``."""
    import memray
    from memray import AllocatorType

    frees = {AllocatorType.FREE, AllocatorType.PYMALLOC_FREE, AllocatorType.MUNMAP}
    total = 0
    for path in files:
        reader = memray.FileReader(str(path))
        for record in reader.get_allocation_records():
            if record.allocator in frees:
                continue
            total += record.n_allocations
            stack = record.stack_trace()
            site = next((f"{fn} ({file.split('/zkv/')[-1]}:{line})"
                         for fn, file, line in stack if "/zkv/" in file),
                        stack[0][0] if stack else "?")
            sites[site] += record.n_allocations
    return total


def measure(data_dir: Path, trace_dir: Path, workload: str, args: argparse.Namespace) -> dict:
    pids = node_pids(data_dir)
    bench(data_dir, workload, args, args.warmup)
    sites: collections.Counter = collections.Counter()
    files, result = tracked(pids, trace_dir, lambda: bench(data_dir, workload, args,
                                                         args.duration))
    assert isinstance(result, dict)
    busy = count(files, sites)
    started = time.monotonic()
    idle_files, _ = tracked(pids, trace_dir, lambda: time.sleep(args.duration))
    idle_window = time.monotonic() - started
    idle = count(idle_files, collections.Counter())
    ops = result["total"]["ops"]
    per_op = (busy - idle) / ops if ops else float("nan")
    return {"workload": workload, "ops": ops, "errors": result["total"].get("errors", 0),
            "allocations": busy, "idle_allocations": idle,
            "idle_window_s": round(idle_window, 2), "allocations_per_op": round(per_op, 1),
            "top_sites": [[site, round(n / ops, 2)] for site, n in sites.most_common(args.top)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", action="append", choices=["put", "get", "cas"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pipeline", type=int, default=8)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--base-port", type=int, default=7700)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    try:
        import memray  # noqa: F401
    except ImportError:
        print("bench/allocs.py needs memray (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        site_dir, trace_dir, data_dir = (Path(tmp) / d for d in ("site", "traces", "data"))
        site_dir.mkdir()
        trace_dir.mkdir()
        (site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env = {**os.environ, "ZKV_ALLOC_DIR": str(trace_dir),
               "PYTHONPATH": os.pathsep.join([str(site_dir), str(ROOT)])}
        subprocess.run([*ZKV, "cluster", "up", "--nodes", "3", "--detach", "--base-port",
                        str(args.base_port), "-d", str(data_dir)], env=env, check=True,
                       capture_output=True)
        try:
            results = [measure(data_dir, trace_dir, w, args)
                       for w in (args.workload or ["put", "get"])]
        finally:
            subprocess.run([*ZKV, "cluster", "down", "-d", str(data_dir)], capture_output=True)
    for r in results:
        print(f"{r['workload']}: {r['allocations_per_op']} allocations per op in the 3 nodes "
              f"({r['ops']} ops, {r['errors']} errors; {r['allocations']} allocations, "
              f"{r['idle_allocations']} in an idle {r['idle_window_s']} s)")
        for site, n in r["top_sites"]:
            print(f"  {n:8.2f}  {site}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
