"""One chaos run, start to verdict: ``run_chaos(ChaosOptions(...))``.

1. Get a cluster: attach to a running ``zkv cluster up`` (``data_dir``), or start
   one (``nodes``), on 127.0.0.1 or, where the machine allows, each node in its
   own network namespace so that network faults are possible.
2. For ``duration`` seconds: ``clients`` worker processes run the workload
   (plain and conditional ops) and ``counter_workers`` processes the CAS
   counter, while the nemesis injects faults; every op goes to
   ``history.jsonl``, every fault to ``faults.jsonl`` (both with
   ``time.monotonic()`` times). Membership faults change the ring as it runs:
   nodes join, are decommissioned, wiped or removed and come back.
3. Heal every fault (a ring change under way is let finish), wait (with a
   deadline) until every member serves with a ring of exactly the members,
   read every key at quorum (the reads join the history). The members at the
   end are the nodes listed in ``cluster.json`` that were not decommissioned.
4. Check linearizability, lost writes, the counter and placement on that final
   ring (``zkv.chaos.checks``), and report (``zkv.chaos.report``). The run
   passes only if nothing was violated; a key the checker could not decide is a
   violation too (safety unproven), never a pass.

This process never talks to the cluster itself: workers and a probe process do,
having first joined the lab's namespace when there is one. It owns every
process and namespace it creates and ends them on any exit, including Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import random
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from zkv.chaos import checks, netns
from zkv.chaos.cluster import ChaosCluster, ClusterError, ClusterFaults
from zkv.chaos.nemesis import (
    DEFAULT_KINDS,
    FAULT_KINDS,
    KILL,
    MEMBERSHIP_FAULTS,
    NETWORK_FAULTS,
    Fault,
    Nemesis,
    NemesisSpec,
    ReplicaGuard,
)
from zkv.chaos.report import (
    CounterReport,
    Summary,
    answer_counts,
    availability,
    op_counts,
    render,
)
from zkv.chaos.workload import (
    FINAL_READER,
    CounterTally,
    HistoryRecorder,
    KeySpace,
    WorkloadSpec,
    counter_main,
    counter_value,
    worker_main,
)
from zkv.check import HistoryResult, KeyResult, Op
from zkv.core.config import NodeConfig
from zkv.core.ring import Ring

# Quick failure detection; t_remove stays above the longest fault (see nemesis.py).
FAST_TIMERS = ("--gossip-interval", "0.1", "--t-fail", "1", "--t-remove", "8")
HISTORY_FILE = "history.jsonl"
FAULTS_FILE = "faults.jsonl"
SUMMARY_FILE = "summary.json"
VIOLATIONS_FILE = "violations.txt"  # every failing key history, explained in full
SHOWN_OPS = 200  # a failing key history longer than this is shown near where it fails
LOOP = 0.05  # seconds between two turns of the main loop


class ChaosError(Exception):
    """The run could not be carried out (bad options, no cluster); not a verdict."""


@dataclass
class ChaosOptions:
    duration: float = 60.0
    nodes: int | None = None  # start a cluster of this many nodes; None: attach to data_dir
    data_dir: Path | None = None  # attach: the cluster's directory; own: where to put it
    out: Path | None = None  # history, faults and summary (default: zkv-chaos/RUN)
    clients: int = 4
    keys: int = 6  # keys in use at any moment
    conditional: float = 0.3  # share of the would-be puts done as create/update/cas
    counter_workers: int = 2  # processes incrementing the CAS counter (0: no counter)
    key_lifetime: float = 20.0  # seconds before a key's slot moves to a fresh key
    max_down: int = 2
    # None: kill, pause and (in a lab) the network faults; every kind (FAULT_KINDS)
    # means every kind the set-up allows (membership faults only on an own cluster)
    kinds: tuple[str, ...] | None = None
    network: str = "auto"  # auto | netns | loopback (netns only for a cluster it starts)
    seed: int | None = None
    timeout: float = 1.0  # client timeout per op
    settle_timeout: float = 60.0
    node_flags: tuple[str, ...] = FAST_TIMERS
    subnet: str = netns.DEFAULT_SUBNET
    keep: bool = False  # keep an own cluster's directory even when the run passes
    progress: bool = True


@dataclass
class ChaosResult:
    summary: Summary
    out: Path
    smallest_violation: str | None = None  # the smallest failing key history, explained
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.summary.ok


def _enter(namespace: str | None) -> None:
    if namespace:
        netns.enter(namespace)


def run_chaos(opts: ChaosOptions, console: Console | None = None) -> ChaosResult:
    """Carry out one run; raises ChaosError if it cannot start. See the module doc."""
    console = console or Console()
    if opts.duration <= 0 or opts.clients < 1 or opts.keys < 1 or opts.max_down < 1:
        raise ChaosError("duration, clients, keys and max_down must be positive")
    if not 0.0 <= opts.conditional <= 1.0:
        raise ChaosError("the conditional share must be between 0 and 1")
    if opts.counter_workers < 0:
        raise ChaosError("counter workers must not be negative")
    seed = opts.seed if opts.seed is not None else secrets.randbelow(2**31)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}"
    own = opts.nodes is not None
    network = _network(opts, own)
    kinds = _kinds(opts, network, own)
    out = Path(opts.out) if opts.out else (
        Path("zkv-chaos") / run_id if own else Path(opts.data_dir or "zkv-data") / "chaos" / run_id)
    notes = []
    if network == "loopback" and set(FAULT_KINDS) - set(kinds) >= set(NETWORK_FAULTS):
        reason = netns.support() if own else "the cluster was not started by zkv chaos"
        notes.append(f"network faults off: nodes share 127.0.0.1 ({reason or 'loopback'})")

    restore_sigterm = _exit_on_sigterm()
    lab: netns.Lab | None = None
    cluster: ChaosCluster | None = None
    temp_dir: Path | None = None
    mp = multiprocessing.get_context("spawn")
    pool = None
    workers: list = []
    ok = False
    try:
        if own:
            cluster_dir = Path(opts.data_dir) if opts.data_dir else None
            if cluster_dir is None:
                temp_dir = cluster_dir = Path(tempfile.mkdtemp(prefix="zkv-chaos-"))
            if network == "netns":
                lab = netns.Lab(opts.nodes, subnet=opts.subnet).create()
                if lab.netem is False and "slow" in kinds:
                    notes.append("slow links use a tbf rate limit: this kernel has no netem")
            console.print(f"zkv chaos: starting {opts.nodes} nodes in {cluster_dir} "
                          f"({network}), seed {seed}", highlight=False)
            cluster = ChaosCluster.start(cluster_dir, opts.nodes, list(opts.node_flags), lab)
        else:
            cluster = ChaosCluster.attach(Path(opts.data_dir or "zkv-data"))
            console.print(f"zkv chaos: attached to {cluster.data_dir} ({len(cluster.refs)} "
                          f"nodes), seed {seed}", highlight=False)
        pool = mp.Pool(1, initializer=_enter, initargs=(cluster.client_namespace,))
        ring = _wait_for_ring(pool, cluster, opts.settle_timeout)
        if ring is None:
            raise ChaosError("the cluster's nodes do not agree on a ring of all of them; is "
                             "every node running?")
        out.mkdir(parents=True, exist_ok=True)
        result = _run(opts, console, cluster, ring, pool, mp, workers, seed, kinds, network,
                      out, notes)
        ok = result.ok
        return result
    except (ClusterError, netns.LabError) as exc:
        raise ChaosError(str(exc)) from None
    finally:
        for proc in workers:
            if proc.is_alive():
                proc.kill()
        if pool is not None:
            pool.terminate()
        if cluster is not None:
            for node_id in cluster.node_ids:  # never leave a node paused, or held down
                cluster.resume(node_id)
            if not cluster.own:
                cluster.release()
            cluster.stop()
        if lab is not None:
            lab.destroy()
        restore_sigterm()
        if temp_dir is not None:
            if ok and not opts.keep:
                shutil.rmtree(temp_dir, ignore_errors=True)
            else:
                console.print(f"cluster data kept in {temp_dir}", highlight=False)


def _exit_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise SystemExit (so the clean-up runs); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _network(opts: ChaosOptions, own: bool) -> str:
    if opts.network not in ("auto", "netns", "loopback"):
        raise ChaosError(f"network must be auto, netns or loopback, not {opts.network!r}")
    if opts.network == "loopback":
        return "loopback"
    if not own:
        if opts.network == "netns":
            raise ChaosError("--netns needs a cluster that zkv chaos starts itself (--nodes N)")
        return "loopback"
    reason = netns.support()
    if reason is None:
        return "netns"
    if opts.network == "netns":
        raise ChaosError(f"cannot use network namespaces: {reason}")
    return "loopback"


def _kinds(opts: ChaosOptions, network: str, own: bool) -> tuple[str, ...]:
    if opts.kinds is None or set(opts.kinds) == set(FAULT_KINDS):
        allowed = DEFAULT_KINDS if opts.kinds is None else FAULT_KINDS
        # Membership faults change an attached cluster for good: only when named.
        return tuple(k for k in allowed if (network == "netns" or k not in NETWORK_FAULTS)
                     and (own or k not in MEMBERSHIP_FAULTS))
    if network != "netns":
        wanted = [k for k in opts.kinds if k in NETWORK_FAULTS]
        if wanted:
            raise ChaosError(f"{wanted[0]} faults need the nodes in network namespaces "
                             "(a cluster started by zkv chaos, as root, with ip/nft/tc)")
    return tuple(opts.kinds)


def _wait_for_ring(pool, cluster: ChaosCluster, timeout: float) -> Ring | None:
    """The ring once every member serves and reports exactly the members (the nodes
    not decommissioned); None at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.refresh()
        want = tuple(sorted(cluster.member_ids))
        if cluster.all_serving():
            views = pool.apply(checks.ring_views, (cluster.member_addresses,))
            shapes = set(views.values())
            if len(shapes) == 1 and None not in shapes:
                members, replicas, vnodes = shapes.pop()
                if members == want:
                    return Ring(members, replicas, vnodes)
        time.sleep(0.2)
    return None


def _run(opts: ChaosOptions, console: Console, cluster: ChaosCluster, ring: Ring, pool, mp,
         workers: list, seed: int, kinds: tuple[str, ...], network: str, out: Path,
         notes: list[str]) -> ChaosResult:
    rng = random.Random(seed)
    history_path, faults_path = out / HISTORY_FILE, out / FAULTS_FILE
    recorder = HistoryRecorder(history_path)
    faults_log = open(faults_path, "a", encoding="utf-8")
    guard = ReplicaGuard.for_ring(ring, opts.max_down)

    def on_change(fault: Fault, event: str) -> None:
        faults_log.write(nemesis.log_line(fault, event) + "\n")
        faults_log.flush()

    hands = ClusterFaults(cluster, pool)
    nemesis = Nemesis(NemesisSpec(kinds=kinds, max_down=opts.max_down,
                                  t_remove=_t_remove(opts, cluster)),
                      sorted(ring.nodes, key=cluster.index), guard, hands, rng,
                      on_change) if kinds else None
    t0 = time.monotonic()
    run_tag = f"chaos-{seed}-{secrets.token_hex(2)}"
    counter_key = f"{run_tag}-counter".encode() if opts.counter_workers else None
    spec = WorkloadSpec(KeySpace(f"{run_tag}-k", opts.keys, opts.key_lifetime, t0),
                        tuple(cluster.addresses), t0 + opts.duration, opts.timeout,
                        namespace=cluster.client_namespace, seed=seed,
                        conditional_ratio=opts.conditional, counter_key=counter_key or b"")
    events, stop = mp.Queue(), mp.Event()
    stride = opts.clients + opts.counter_workers  # process ids: index + k * stride
    for i in range(stride):
        main, name = (worker_main, "worker") if i < opts.clients else (counter_main, "counter")
        proc = mp.Process(target=main, args=(i, stride, spec, events, stop),
                          daemon=True, name=f"zkv-chaos-{name}-{i}")
        proc.start()
        workers.append(proc)

    with _progress(console, opts.progress) as progress:
        task = progress.add_task("chaos", total=opts.duration, status="starting")
        counts = {"ok": 0, "all": 0}
        while (now := time.monotonic()) < spec.deadline:
            _count(recorder.drain(events), counts)
            if nemesis is not None:
                nemesis.step(now)
            active = ", ".join(f"{f.kind} {'+'.join(f.nodes)}" for f in
                               (nemesis.active if nemesis else []))
            share = f"{100 * counts['ok'] / counts['all']:.0f}%" if counts["all"] else "-"
            progress.update(task, completed=min(now - t0, opts.duration),
                            status=f"{counts['all']} ops, {share} ok | "
                                   f"{sum(nemesis.injected.values()) if nemesis else 0} "
                                   f"faults | {active or 'no fault'}")
            if not any(p.is_alive() for p in workers):
                notes.append("every worker process ended before the deadline")
                break
            time.sleep(LOOP)
        progress.update(task, completed=opts.duration, status="healing")
        stop.set()
        settle_deadline = time.monotonic() + opts.settle_timeout
        unhealed = _heal(nemesis, recorder, events, settle_deadline)
        _join(workers, recorder, events, opts.timeout + 5)
        abandoned = recorder.abandon_open()
        if abandoned:
            notes.append(f"{abandoned} ops had no outcome (worker ended): recorded as unknown")
        notes += hands.problems
        progress.update(task, status="settling")
        settled_ring = _wait_for_ring(pool, cluster, max(1.0, settle_deadline - time.monotonic()))
        workload_ops = list(recorder.ops)
        keys = sorted({op.key for op in workload_ops} | ({counter_key} if counter_key else set()))
        progress.update(task, status=f"final reads of {len(keys)} keys")
        attempts = pool.apply(checks.final_reads, (
            cluster.member_addresses, keys, max(10.0, settle_deadline - time.monotonic()),
            max(opts.timeout, 2.0)))
        finals: dict[bytes, Op] = {}
        for key, outcome, value, start, end in attempts:
            op = Op(FINAL_READER, "get", key, value if outcome == "ok" else None, outcome,
                    start, end)
            recorder.add(op)
            if outcome == "ok":
                finals.setdefault(key, op)
        recorder.close()
        faults_log.close()
        progress.update(task, status="checking placement")
        final_ring = settled_ring or Ring(cluster.member_ids, ring.replicas, ring.vnodes)
        placement = _settled_placement(cluster, final_ring,
                                       time.monotonic() + max(10.0, opts.settle_timeout / 2))
        progress.update(task, status=f"checking {len(recorder.ops)} ops")
        lin = checks.linearizability(recorder.ops)
        lost = checks.lost_writes(workload_ops, finals)
        tally = CounterTally.of(workload_ops, counter_key) if counter_key else None
        counter_problem = (checks.counter_problem(tally, counter_key, finals.get(counter_key))
                           if tally is not None else None)
        step_errors = _step_errors(cluster)

    violations: list[str] = []
    violations += [f"fault {f.fault_id} could not be healed: " + (
        f"{'+'.join(f.nodes)} never came back" if f.kind == KILL else
        f"the {f.kind} of {'+'.join(f.nodes)} never finished ({f.phase})")
        for f in unhealed]
    if settled_ring is None:
        violations.append(f"the cluster did not settle within {opts.settle_timeout:g}s "
                          "(not every member served with a ring of exactly the members: "
                          f"{', '.join(cluster.member_ids)})")
    what = {counter_key: "the CAS counter, "}
    violations += [f"key {r.key!r}: not linearizable ({what.get(r.key, '')}{len(r.history)} ops)"
                   for r in lin.violations]
    violations += [f"key {r.key!r}: the checker could not decide ({what.get(r.key, '')}"
                   f"{len(r.history)} ops, {r.steps} steps); safety unproven"
                   for r in lin.undecided]
    violations += [w.explain() for w in lost]
    if counter_problem:
        violations.append(counter_problem)
    violations += [f"key {k!r}: no final quorum read succeeded after settling"
                   for k in keys if k not in finals and k != counter_key]
    violations += [p.explain() for p in placement]
    violations += step_errors

    windows = nemesis.windows() if nemesis else []
    by_kind = {}
    for kind in kinds:
        spans = [(f.start, f.end if f.end is not None else float("inf"))
                 for f in (nemesis.history if nemesis else []) if f.kind == kind]
        by_kind[kind] = availability(workload_ops, spans) if spans else None
    if lin.violations:
        (out / VIOLATIONS_FILE).write_text(
            f"seed {seed}, history {history_path}\n\n" + "\n\n".join(
                r.explain() for r in sorted(lin.violations, key=lambda r: len(r.history)))
            + "\n")
        notes.append(f"every failing key history, explained: {out / VIOLATIONS_FILE}")
    plain_ops = [op for op in workload_ops if op.key != counter_key]
    changes = [f for f in (nemesis.history if nemesis else []) if f.kind in MEMBERSHIP_FAULTS]
    summary = Summary(
        duration=opts.duration, nodes=len(ring.nodes), network=network,
        clients=opts.clients, keys=len(keys), ops=op_counts(plain_ops),
        answers=answer_counts(plain_ops), conditional_ratio=opts.conditional,
        counter=_counter_report(tally, counter_key, opts.counter_workers, finals, lin,
                                counter_problem) if tally is not None else None,
        faults=dict(nemesis.injected) if nemesis else {}, fault_kinds=list(kinds),
        skipped_faults=dict(nemesis.skipped) if nemesis else {},
        availability=availability(workload_ops),
        availability_during_faults=availability(workload_ops, windows) if windows else None,
        availability_outside_faults=availability(workload_ops, windows, inside=False),
        availability_by_fault=by_kind,
        linearizability={v: n for v, n in (("linearizable", sum(r.linearizable for r in
                                                                 lin.per_key.values())),
                                           ("violation", len(lin.violations)),
                                           ("undecided", len(lin.undecided)))},
        lost_writes=len(lost), placement_problems=len(placement),
        unreadable_keys=sum(k not in finals for k in keys), settled=settled_ring is not None,
        notes=notes, violations=violations, history=str(history_path),
        faults_log=str(faults_path), data_dir=str(cluster.data_dir),
        ring=sorted(final_ring.nodes, key=cluster.index),
        membership=[_change_record(f) for f in changes])
    summary.save(out / SUMMARY_FILE)
    smallest = _smallest(lin)
    render(summary, console)
    if smallest:
        console.print("\nsmallest failing key history:", style="bold red")
        console.print(smallest, markup=False, highlight=False)
    (out / "offsets.json").write_text(json.dumps(
        {"t0_monotonic": t0, "wall_minus_monotonic": time.time() - time.monotonic()}) + "\n")
    return ChaosResult(summary, out, smallest, violations)


def _count(ops: list[Op], counts: dict[str, int]) -> None:
    counts["all"] += len(ops)
    counts["ok"] += sum(op.outcome == "ok" for op in ops)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), console=Console(stderr=True),
                    disable=not enabled, transient=False)


def _t_remove(opts: ChaosOptions, cluster: ChaosCluster) -> float:
    """The cluster's t_remove, from its node flags (own: ours; attached: its supervisor's)."""
    flags = list(opts.node_flags) if cluster.own else list(cluster.info().get("node_flags", []))
    if "--t-remove" in flags[:-1]:
        try:
            return float(flags[flags.index("--t-remove") + 1])
        except ValueError:
            pass
    return NodeConfig.t_remove


def _heal(nemesis: Nemesis | None, recorder: HistoryRecorder, events,
          deadline: float) -> list[Fault]:
    """End every fault; wait for killed nodes to come back and ring changes to finish.
    Those that did not in time."""
    if nemesis is None:
        return []
    while waiting := nemesis.heal(time.monotonic()):
        recorder.drain(events)
        if time.monotonic() >= deadline:
            return waiting
        time.sleep(0.1)
    return []


def _change_record(fault: Fault) -> dict:
    """A ring change for the report: what, on whom, how long, and the ring after."""
    seconds = None if fault.end is None else round(fault.end - fault.start, 2)
    return {"id": fault.fault_id, "kind": fault.kind, "nodes": list(fault.nodes),
            "seconds": seconds, "epoch": fault.detail.get("epoch"),
            "removed": fault.detail.get("removed"),
            "members_after": fault.detail.get("members_after")}


def _join(workers: list, recorder: HistoryRecorder, events, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(p.is_alive() for p in workers) and time.monotonic() < deadline:
        recorder.drain(events)
        time.sleep(0.05)
    for proc in workers:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
    recorder.drain(events)


def _settled_placement(cluster: ChaosCluster, ring: Ring,
                       deadline: float) -> list[checks.PlacementProblem]:
    """Placement problems once none are left, or those still there at the deadline
    (anti-entropy and stray collection may need a few rounds after the final reads)."""
    data_dirs = {n: cluster.ref(n).data_dir for n in ring.nodes}
    while True:
        problems = checks.placement(ring, checks.read_stores(data_dirs))
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(0.5)


def _step_errors(cluster: ChaosCluster) -> list[str]:
    """Exceptions raised inside the protocol core, as the nodes logged them."""
    found = []
    for ref in cluster.refs:
        for name in ("events.jsonl.1", "events.jsonl"):
            try:
                with open(ref.data_dir / name, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        if '"kind":"step_error"' in line:
                            found.append(f"{ref.node_id}: the core raised: {line.strip()}")
            except OSError:
                continue
    return found[:20]


def _smallest(lin: HistoryResult) -> str | None:
    smallest = lin.smallest_violation()
    return explain_near_failure(smallest) if smallest is not None else None


def explain_near_failure(result: KeyResult, limit: int = SHOWN_OPS,
                         lookback: float = 10.0) -> str:
    """``result.explain()``, but a history longer than ``limit`` ops (the CAS
    counter's) is shown only around where the search got stuck: the ops that
    overlap the time from the last ops of the longest linearizable prefix to the
    stuck op's completion, with the unknown writes invoked up to ``lookback``
    seconds before (the full explanation goes to ``VIOLATIONS_FILE``)."""
    if len(result.history) <= limit:
        return result.explain()
    prefix = [op for op in result.linearization if op.outcome == "ok"][-10:]
    lo = min((op.start for op in prefix), default=-float("inf"))
    hi = result.stuck.end if result.stuck is not None and result.stuck.end is not None else \
        max((op.end or op.start for op in prefix), default=float("inf"))
    near = [op for op in result.history if op.start <= hi and (
        op.end >= lo if op.end is not None else op.start >= lo - lookback)][-limit:]
    text = dataclasses.replace(result, history=tuple(near)).explain()
    head, _, rest = text.partition("\n")
    return (f"{head.replace(f'({len(near)} ops', f'({len(result.history)} ops', 1)}\n"
            f"(history shown: the {len(near)} ops around where it fails, "
            f"{lo:.3f} to {hi:.3f}; all of it is in {VIOLATIONS_FILE})\n{rest}")


def _counter_report(tally: CounterTally, key: bytes, workers: int, finals: dict[bytes, Op],
                    lin: HistoryResult, problem: str | None) -> CounterReport:
    final = finals.get(key)
    result = lin.per_key.get(key)
    return CounterReport(
        key=key.decode("latin-1"), workers=workers, ops=tally.ops, reads=tally.reads,
        reads_ok=tally.reads_ok, cas=tally.cas, acked=tally.acked,
        conflicts=tally.conflicts, unknown=tally.unknown, failed=tally.failed,
        final=None if final is None else counter_value(final.value),
        final_read=final is not None, holds=problem is None,
        linearizability=result.verdict.value if result is not None else "not checked",
        check_steps=result.steps if result is not None else 0)


def run_and_exit_code(opts: ChaosOptions, console: Console | None = None,
                      fail: Callable[[str], None] | None = None) -> int:
    """0 if the run passed, 1 on any violation; ChaosError goes to ``fail`` (exit 2)."""
    try:
        return 0 if run_chaos(opts, console).ok else 1
    except ChaosError as exc:
        if fail is None:
            raise
        fail(str(exc))
        return 2
