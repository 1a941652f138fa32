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

The options resolve to a ``ChaosSpec`` (``spec``), the cluster and processes
are set up and torn down by ``setup.Stage``, failing histories are explained by
``explain``; what is here is the run itself (``ChaosRun``), phase by phase.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from zkv.chaos import checks, netns, plots
from zkv.chaos.cluster import ChaosCluster, ClusterError, ClusterFaults
from zkv.chaos.explain import smallest_explained, write_violations
from zkv.chaos.nemesis import KILL, MEMBERSHIP_FAULTS, Fault, Nemesis, NemesisSpec, ReplicaGuard
from zkv.chaos.report import (
    CounterReport,
    Summary,
    answer_counts,
    availability,
    op_counts,
    render,
)
from zkv.chaos.setup import Stage, exit_on_sigterm, t_remove_of, wait_for_ring
from zkv.chaos.spec import FAST_TIMERS, ChaosError, ChaosOptions, ChaosSpec, resolve
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
from zkv.check import HistoryResult, Op
from zkv.core.ring import Ring

__all__ = ["FAST_TIMERS", "ChaosError", "ChaosOptions", "ChaosResult", "ChaosRun",
           "run_and_exit_code", "run_chaos"]

HISTORY_FILE = "history.jsonl"
FAULTS_FILE = "faults.jsonl"
SUMMARY_FILE = "summary.json"
LOOP = 0.05  # seconds between two turns of the main loop


@dataclass
class ChaosResult:
    summary: Summary
    out: Path
    smallest_violation: str | None = None  # the smallest failing key history, explained
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.summary.ok


def run_chaos(opts: ChaosOptions, console: Console | None = None) -> ChaosResult:
    """Carry out one run; raises ChaosError if it cannot start. See the module doc."""
    console = console or Console()
    spec = resolve(opts)
    notes = list(spec.notes)
    restore_sigterm = exit_on_sigterm()
    stage = Stage()
    ok = False
    try:
        ring = stage.set_up(spec, console, notes)
        spec.out.mkdir(parents=True, exist_ok=True)
        result = ChaosRun(spec, stage, ring, console, notes).result()
        ok = result.ok
        return result
    except (ClusterError, netns.LabError) as exc:
        raise ChaosError(str(exc)) from None
    finally:
        stage.tear_down()
        restore_sigterm()
        stage.remove_temp_dir(keep=opts.keep or not ok, console=console)


class ChaosRun:
    """One run on a stage that is set: workload and faults (``_drive``), healing and
    final reads (``_wind_down``), the checks (``_check``) and the verdict. Each phase
    leaves what the next needs on the run; ``result`` calls them in order."""

    def __init__(self, spec: ChaosSpec, stage: Stage, ring: Ring, console: Console,
                 notes: list[str]) -> None:
        assert stage.cluster is not None and stage.pool is not None
        self.spec = spec
        self.opts = spec.options
        self.stage = stage
        self.cluster: ChaosCluster = stage.cluster
        self.ring = ring  # at the start
        self.console = console
        self.notes = notes
        self.history_path = spec.out / HISTORY_FILE
        self.faults_path = spec.out / FAULTS_FILE
        self.settle_waiting: list[str] = []  # what the settling last waited for, if it failed

    def result(self) -> ChaosResult:
        self._start()
        with _progress(self.console, self.opts.progress) as progress:
            task = progress.add_task("chaos", total=self.opts.duration, status="starting")

            def status(text: str) -> None:
                progress.update(task, status=text)

            self._drive(lambda done, text: progress.update(task, completed=done, status=text))
            progress.update(task, completed=self.opts.duration, status="healing")
            self._wind_down(status)
            self._check(status)
        violations = self._violations()
        summary = self._summary(violations)
        return self._report(summary, violations)

    # ----------------------------------------------------------------- the run

    def _start(self) -> None:
        """The recorders, the nemesis and the worker processes."""
        opts, cluster = self.opts, self.cluster
        self.recorder = HistoryRecorder(self.history_path)
        self.faults_log = open(self.faults_path, "a", encoding="utf-8")
        self.hands = ClusterFaults(cluster, self.stage.pool)
        guard = ReplicaGuard.for_ring(self.ring, opts.max_down)
        self.nemesis = Nemesis(NemesisSpec(kinds=self.spec.kinds, max_down=opts.max_down,
                                           t_remove=t_remove_of(self.spec, cluster)),
                               sorted(self.ring.nodes, key=cluster.index), guard, self.hands,
                               random.Random(self.spec.seed),
                               self._log_fault) if self.spec.kinds else None
        self.t0 = time.monotonic()
        run_tag = f"chaos-{self.spec.seed}-{secrets.token_hex(2)}"
        self.counter_key = f"{run_tag}-counter".encode() if opts.counter_workers else None
        self.workload = WorkloadSpec(
            KeySpace(f"{run_tag}-k", opts.keys, opts.key_lifetime, self.t0),
            tuple(cluster.addresses), self.t0 + opts.duration, opts.timeout,
            namespace=cluster.client_namespace, seed=self.spec.seed,
            conditional_ratio=opts.conditional, counter_key=self.counter_key or b"")
        mp = self.stage.mp
        self.events, self.stop = mp.Queue(), mp.Event()
        stride = opts.clients + opts.counter_workers  # process ids: index + k * stride
        for i in range(stride):
            main, name = (worker_main, "worker") if i < opts.clients else (counter_main,
                                                                            "counter")
            proc = mp.Process(target=main, args=(i, stride, self.workload, self.events,
                                                 self.stop),
                              daemon=True, name=f"zkv-chaos-{name}-{i}")
            proc.start()
            self.stage.workers.append(proc)

    def _log_fault(self, fault: Fault, event: str) -> None:
        assert self.nemesis is not None
        self.faults_log.write(self.nemesis.log_line(fault, event) + "\n")
        self.faults_log.flush()

    def _drive(self, show: Callable[[float, str], None]) -> None:
        """Until the deadline: record the ops, let the nemesis act, show progress."""
        nemesis, workers = self.nemesis, self.stage.workers
        counts = {"ok": 0, "all": 0}
        while (now := time.monotonic()) < self.workload.deadline:
            ops = self.recorder.drain(self.events)
            counts["all"] += len(ops)
            counts["ok"] += sum(op.outcome == "ok" for op in ops)
            if nemesis is not None:
                nemesis.step(now)
            active = ", ".join(f"{f.kind} {'+'.join(f.nodes)}" for f in
                               (nemesis.active if nemesis else []))
            share = f"{100 * counts['ok'] / counts['all']:.0f}%" if counts["all"] else "-"
            show(min(now - self.t0, self.opts.duration),
                 f"{counts['all']} ops, {share} ok | "
                 f"{sum(nemesis.injected.values()) if nemesis else 0} "
                 f"faults | {active or 'no fault'}")
            if not any(p.is_alive() for p in workers):
                self.notes.append("every worker process ended before the deadline")
                break
            time.sleep(LOOP)

    def _wind_down(self, status: Callable[[str], None]) -> None:
        """Stop the workload, heal every fault, let the cluster settle, read every key."""
        opts, recorder, pool = self.opts, self.recorder, self.stage.pool
        self.stop.set()
        settle_deadline = time.monotonic() + opts.settle_timeout
        self.unhealed = _heal(self.nemesis, recorder, self.events, settle_deadline)
        _join(self.stage.workers, recorder, self.events, opts.timeout + 5)
        abandoned = recorder.abandon_open()
        if abandoned:
            self.notes.append(f"{abandoned} ops had no outcome (worker ended): recorded as "
                              "unknown")
        self.notes += self.hands.problems
        status("settling")
        self.settled_ring = wait_for_ring(pool, self.cluster,
                                          max(1.0, settle_deadline - time.monotonic()),
                                          self.settle_waiting)
        self.workload_ops = list(recorder.ops)
        self.keys = sorted({op.key for op in self.workload_ops}
                           | ({self.counter_key} if self.counter_key else set()))
        status(f"final reads of {len(self.keys)} keys")
        attempts = pool.apply(checks.final_reads, (
            self.cluster.member_addresses, self.keys,
            max(10.0, settle_deadline - time.monotonic()), max(opts.timeout, 2.0)))
        self.finals: dict[bytes, Op] = {}
        for key, outcome, value, start, end in attempts:
            op = Op(FINAL_READER, "get", key, value if outcome == "ok" else None, outcome,
                    start, end)
            recorder.add(op)
            if outcome == "ok":
                self.finals.setdefault(key, op)
        recorder.close()
        self.faults_log.close()

    def _check(self, status: Callable[[str], None]) -> None:
        """Placement on the final ring, linearizability, lost writes, the counter."""
        status("checking placement")
        self.final_ring = self.settled_ring or Ring(self.cluster.member_ids, self.ring.replicas,
                                                    self.ring.vnodes)
        self.placement = _settled_placement(
            self.cluster, self.final_ring,
            time.monotonic() + max(10.0, self.opts.settle_timeout / 2))
        status(f"checking {len(self.recorder.ops)} ops")
        self.lin = checks.linearizability(self.recorder.ops)
        self.lost = checks.lost_writes(self.workload_ops, self.finals)
        key = self.counter_key
        self.tally = CounterTally.of(self.workload_ops, key) if key else None
        self.counter_problem = (checks.counter_problem(self.tally, key, self.finals.get(key))
                                if self.tally is not None and key else None)
        self.step_errors = _step_errors(self.cluster)

    # ----------------------------------------------------------------- the verdict

    def _violations(self) -> list[str]:
        """Every way the run failed, one line each; none: it passed."""
        lin, counter_key = self.lin, self.counter_key
        violations = [f"fault {f.fault_id} could not be healed: " + (
            f"{'+'.join(f.nodes)} never came back" if f.kind == KILL else
            f"the {f.kind} of {'+'.join(f.nodes)} never finished ({f.phase})")
            for f in self.unhealed]
        if self.settled_ring is None:
            violations.append(f"the cluster did not settle within "
                              f"{self.opts.settle_timeout:g}s (not every member served with "
                              "a ring of exactly the members: "
                              f"{', '.join(self.cluster.member_ids)}; last waiting for "
                              f"{'; '.join(self.settle_waiting) or '?'})")
        what = {counter_key: "the CAS counter, "}
        violations += [f"key {r.key!r}: not linearizable ({what.get(r.key, '')}"
                       f"{len(r.history)} ops)" for r in lin.violations]
        violations += [f"key {r.key!r}: the checker could not decide ({what.get(r.key, '')}"
                       f"{len(r.history)} ops, {r.steps} steps); safety unproven"
                       for r in lin.undecided]
        violations += [w.explain() for w in self.lost]
        if self.counter_problem:
            violations.append(self.counter_problem)
        violations += [f"key {k!r}: no final quorum read succeeded after settling"
                       for k in self.keys if k not in self.finals and k != counter_key]
        violations += [p.explain() for p in self.placement]
        violations += self.step_errors
        return violations

    def _summary(self, violations: list[str]) -> Summary:
        opts, nemesis, lin, ops = self.opts, self.nemesis, self.lin, self.workload_ops
        windows = nemesis.windows() if nemesis else []
        by_kind = {}
        for kind in self.spec.kinds:
            spans = [(f.start, f.end if f.end is not None else float("inf"))
                     for f in (nemesis.history if nemesis else []) if f.kind == kind]
            by_kind[kind] = availability(ops, spans) if spans else None
        if lin.violations:
            path = write_violations(self.spec.out, self.spec.seed, self.history_path, lin)
            self.notes.append(f"every failing key history, explained: {path}")
        plain_ops = [op for op in ops if op.key != self.counter_key]
        changes = [f for f in (nemesis.history if nemesis else [])
                   if f.kind in MEMBERSHIP_FAULTS]
        return Summary(
            duration=opts.duration, nodes=len(self.ring.nodes), network=self.spec.network,
            clients=opts.clients, keys=len(self.keys), ops=op_counts(plain_ops),
            answers=answer_counts(plain_ops), conditional_ratio=opts.conditional,
            counter=self._counter_report() if self.tally is not None else None,
            faults=dict(nemesis.injected) if nemesis else {}, fault_kinds=list(self.spec.kinds),
            skipped_faults=dict(nemesis.skipped) if nemesis else {},
            availability=availability(ops),
            availability_during_faults=availability(ops, windows) if windows else None,
            availability_outside_faults=availability(ops, windows, inside=False),
            availability_by_fault=by_kind,
            linearizability={v: n for v, n in (("linearizable", sum(r.linearizable for r in
                                                                     lin.per_key.values())),
                                               ("violation", len(lin.violations)),
                                               ("undecided", len(lin.undecided)))},
            lost_writes=len(self.lost), placement_problems=len(self.placement),
            unreadable_keys=sum(k not in self.finals for k in self.keys),
            settled=self.settled_ring is not None,
            notes=self.notes, violations=violations, history=str(self.history_path),
            faults_log=str(self.faults_path), data_dir=str(self.cluster.data_dir),
            ring=sorted(self.final_ring.nodes, key=self.cluster.index),
            membership=[_change_record(f) for f in changes])

    def _counter_report(self) -> CounterReport:
        assert self.tally is not None and self.counter_key is not None
        return _counter_report(self.tally, self.counter_key, self.opts.counter_workers,
                               self.finals, self.lin, self.counter_problem)

    def _report(self, summary: Summary, violations: list[str]) -> ChaosResult:
        """Write the summary and the report with its plots, and show the verdict."""
        out, console = self.spec.out, self.console
        smallest = smallest_explained(self.lin)
        summary.report = plots.report_or_note(out, self.recorder.ops, self.t0, summary,
                                              self.lin.smallest_violation(), smallest)
        summary.save(out / SUMMARY_FILE)
        render(summary, console)
        if smallest:
            console.print("\nsmallest failing key history:", style="bold red")
            console.print(smallest, markup=False, highlight=False)
        (out / "offsets.json").write_text(json.dumps(
            {"t0_monotonic": self.t0, "wall_minus_monotonic": time.time() - time.monotonic()})
            + "\n")
        return ChaosResult(summary, out, smallest, violations)


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), console=Console(stderr=True),
                    disable=not enabled, transient=False)


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
