"""The end of a chaos run: what was done, what was injected, what held.

``Summary`` is plain data (also written as ``summary.json``); ``render`` prints
it as tables; ``availability`` is the share of ops that succeeded, overall and
while a fault was active. ``CounterReport`` is the CAS counter's part. Every
membership fault is counted with the others by kind and, as a ring change, gets
a line of its own (``membership``: who, how long, the epoch and ring after), and
``ring`` is the ring the final checks ran against. ``near_failure`` picks the
part of a long failing key history worth showing (the text and the picture of
it show the same ops); ``report`` is where ``zkv.chaos.plots`` put the HTML.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from rich.console import Console
from rich.table import Table

from zkv.check import KeyResult, Op

ANSWERS = {  # an ok conditional op's answer, by kind and found
    "delete": ("found", "not found"),
    "create": ("exists", "created"),
    "update": ("updated", "not found"),
    "cas": ("true", "false"),
}


@dataclass
class CounterReport:
    """The CAS counter: what its ops were told, and whether its final value adds up."""

    key: str
    workers: int
    ops: int  # reads and cas ops, every outcome
    reads: int
    reads_ok: int
    cas: int
    acked: int  # cas True: acknowledged increments
    conflicts: int  # cas False
    unknown: int  # cas whose outcome is unknown
    failed: int  # cas that certainly did nothing
    final: int | None  # the count read at quorum after settling (None: none, or not a count)
    final_read: bool  # whether that read succeeded
    holds: bool  # acked <= final <= acked + unknown
    linearizability: str  # the checker's verdict on the counter key's history
    check_steps: int = 0


@dataclass
class Summary:
    duration: float
    nodes: int
    network: str  # "netns" or "loopback"
    clients: int
    keys: int
    ops: dict[str, dict[str, int]]  # kind -> outcome -> count
    faults: dict[str, int]  # kind -> injected
    fault_kinds: list[str]
    skipped_faults: dict[str, int]
    availability: float | None  # ok share of all workload ops
    availability_during_faults: float | None
    availability_outside_faults: float | None
    availability_by_fault: dict[str, float | None]
    linearizability: dict[str, int]  # verdict -> keys
    lost_writes: int
    placement_problems: int
    unreadable_keys: int
    settled: bool
    answers: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> answer -> ok ops
    conditional_ratio: float = 0.0
    counter: CounterReport | None = None
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    history: str = ""
    faults_log: str = ""
    data_dir: str = ""
    ring: list[str] = field(default_factory=list)  # the members at the end
    # ring changes, in order: id, kind, nodes, seconds, epoch, removed, members_after
    membership: list[dict] = field(default_factory=list)
    report: str = ""  # report.html, with the plots ("" if it could not be drawn)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def total_ops(self) -> int:
        """Every workload op, the CAS counter's included (not the final reads)."""
        return sum(sum(by.values()) for by in self.ops.values()) + (
            self.counter.ops if self.counter is not None else 0)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({**asdict(self), "ok": self.ok}, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Summary:
        """Read ``save``'s file back (to draw a report again from a run's directory)."""
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        summary = cls(**{k: v for k, v in data.items() if k in known})
        if isinstance(summary.counter, dict):
            summary.counter = CounterReport(**summary.counter)
        return summary


def near_failure(result: KeyResult, limit: int, lookback: float = 10.0
                 ) -> tuple[tuple[Op, ...], float, float]:
    """The ops of a failing key history worth showing, and the span (lo, hi) they were
    picked from: all of them if there are at most ``limit``; else (the CAS counter's
    history) only around where the search got stuck: the ops that overlap the time
    from the last ops of the longest linearizable prefix to the stuck op's completion,
    with the unknown writes invoked up to ``lookback`` seconds before, at most the
    last ``limit`` of them."""
    if len(result.history) <= limit:
        return result.history, -float("inf"), float("inf")
    prefix = [op for op in result.linearization if op.outcome == "ok"][-10:]
    lo = min((op.start for op in prefix), default=-float("inf"))
    hi = result.stuck.end if result.stuck is not None and result.stuck.end is not None else \
        max((op.end or op.start for op in prefix), default=float("inf"))
    near = [op for op in result.history if op.start <= hi and (
        op.end >= lo if op.end is not None else op.start >= lo - lookback)][-limit:]
    return tuple(near), lo, hi


def op_counts(ops: Iterable[Op]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for op in ops:
        counts.setdefault(op.kind, Counter())[op.outcome] += 1
    return {kind: dict(c) for kind, c in sorted(counts.items())}


def answer_counts(ops: Iterable[Op]) -> dict[str, dict[str, int]]:
    """The answers of the ok conditional ops: kind -> answer (``ANSWERS``) -> count."""
    counts: dict[str, Counter[str]] = {}
    for op in ops:
        if op.outcome == "ok" and op.kind in ANSWERS and op.found is not None:
            yes, no = ANSWERS[op.kind]
            counts.setdefault(op.kind, Counter())[yes if op.found else no] += 1
    return {kind: dict(c) for kind, c in sorted(counts.items())}


def availability(ops: Iterable[Op], windows: list[tuple[float, float]] | None = None,
                 inside: bool = True) -> float | None:
    """Share of ``ops`` that were ok; with ``windows``, only of the ops invoked inside
    them (or outside, with ``inside=False``). None when no op counts."""
    total = ok = 0
    for op in ops:
        if windows is not None:
            hit = any(a <= op.start < b for a, b in windows)
            if hit != inside:
                continue
        total += 1
        ok += op.outcome == "ok"
    return ok / total if total else None


def _answers(kind: str, answers: dict[str, int]) -> str:
    if kind not in ANSWERS:
        return ""
    return ", ".join(f"{answers.get(a, 0)} {a}" for a in ANSWERS[kind])


def _render_counter(c: CounterReport, console: Console) -> None:
    table = Table(title=f"CAS counter ({c.key}, {c.workers} workers)", title_justify="left",
                  show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("operations", str(c.ops))
    table.add_row("reads (ok / all)", f"{c.reads_ok} / {c.reads}")
    table.add_row("cas successes (acknowledged increments)", str(c.acked))
    table.add_row("cas conflicts (False)", str(c.conflicts))
    table.add_row("cas outcome unknown", str(c.unknown))
    if c.failed:
        table.add_row("cas failed (nothing done)", str(c.failed))
    final = "no read" if not c.final_read else "not a count" if c.final is None else str(c.final)
    table.add_row("final counter (quorum read)", final)
    table.add_row("acked <= final <= acked + unknown",
                  f"{c.acked} <= {final} <= {c.acked + c.unknown}: "
                  + ("holds" if c.holds else "VIOLATED"))
    table.add_row("linearizability of its history",
                  c.linearizability if c.linearizability != "violation" else "VIOLATION")
    console.print(table)


def _render_changes(changes: list[dict], console: Console) -> None:
    table = Table(title="Ring changes (membership faults)", title_justify="left")
    for name in ("fault", "kind", "node", "seconds", "epoch after", "members after"):
        table.add_column(name, justify="left" if name in ("fault", "kind", "node") else "right")
    for c in changes:
        node = "+".join(c["nodes"])
        if c["kind"] == "remove" and c.get("removed") is not None:
            node += " (removed)" if c["removed"] else " (not removed in time)"
        after = c.get("members_after")
        table.add_row(c["id"], c["kind"], node,
                      "unfinished" if c.get("seconds") is None else f"{c['seconds']:.1f}",
                      "-" if c.get("epoch") is None else str(c["epoch"]),
                      "-" if not after else str(len(after)))
    console.print(table)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def render(summary: Summary, console: Console) -> None:
    ops = Table(title="Operations", title_justify="left")
    ops.add_column("op")
    for outcome in ("ok", "fail", "unknown"):
        ops.add_column(outcome, justify="right")
    ops.add_column("total", justify="right")
    ops.add_column("ok answers")
    for kind, by in summary.ops.items():
        ops.add_row(kind, *(str(by.get(o, 0)) for o in ("ok", "fail", "unknown")),
                    str(sum(by.values())), _answers(kind, summary.answers.get(kind, {})))
    ops.add_row("all", *(str(sum(by.get(o, 0) for by in summary.ops.values()))
                         for o in ("ok", "fail", "unknown")),
                str(sum(sum(by.values()) for by in summary.ops.values())), "")
    console.print(ops)
    if summary.counter is not None:
        _render_counter(summary.counter, console)

    faults = Table(title="Faults injected", title_justify="left")
    faults.add_column("fault")
    faults.add_column("injected", justify="right")
    faults.add_column("availability while active", justify="right")
    for kind in summary.fault_kinds:
        faults.add_row(kind, str(summary.faults.get(kind, 0)),
                       _pct(summary.availability_by_fault.get(kind)))
    faults.add_row("all", str(sum(summary.faults.values())),
                   _pct(summary.availability_during_faults))
    console.print(faults)
    if summary.membership:
        _render_changes(summary.membership, console)

    result = Table(title="Result", title_justify="left", show_header=False)
    result.add_column("what")
    result.add_column("value", justify="right")
    result.add_row("availability overall", _pct(summary.availability))
    result.add_row("availability during faults", _pct(summary.availability_during_faults))
    result.add_row("availability without faults", _pct(summary.availability_outside_faults))
    lin = summary.linearizability
    result.add_row("keys checked", str(sum(lin.values())))
    result.add_row("linearizability violations", str(lin.get("violation", 0)))
    result.add_row("keys undecided by the checker", str(lin.get("undecided", 0)))
    result.add_row("acknowledged writes lost", str(summary.lost_writes))
    result.add_row("keys misplaced after settling", str(summary.placement_problems))
    result.add_row("keys unreadable after settling", str(summary.unreadable_keys))
    result.add_row("cluster settled", "yes" if summary.settled else "NO")
    if summary.ring:
        result.add_row(f"ring at the end ({len(summary.ring)} members)", ", ".join(summary.ring))
    console.print(result)
    for note in summary.notes:
        console.print(f"note: {note}")
    if summary.ok:
        console.print(f"[bold green]PASS[/]: {summary.total_ops} ops, "
                      f"{sum(summary.faults.values())} faults, no violation "
                      f"({summary.network}, {summary.nodes} nodes, {summary.duration:g}s)")
    else:
        console.print(f"[bold red]FAIL[/]: {len(summary.violations)} violation(s)")
        for line in summary.violations[:20]:
            console.print(f"  {line}", markup=False, highlight=False)
    console.print(f"history: {summary.history}\nfaults: {summary.faults_log}", markup=False,
                  highlight=False)
    if summary.report:
        console.print(f"report (plots): {summary.report}", markup=False, highlight=False)
