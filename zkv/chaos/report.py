"""The end of a chaos run: what was done, what was injected, what held.

``Summary`` is plain data (also written as ``summary.json``); ``render`` prints
it as tables; ``availability`` is the share of ops that succeeded, overall and
while a fault was active.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from zkv.check import Op


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
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    history: str = ""
    faults_log: str = ""
    data_dir: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def total_ops(self) -> int:
        return sum(sum(by.values()) for by in self.ops.values())

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({**asdict(self), "ok": self.ok}, indent=2) + "\n")


def op_counts(ops: Iterable[Op]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for op in ops:
        counts.setdefault(op.kind, Counter())[op.outcome] += 1
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


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def render(summary: Summary, console: Console) -> None:
    ops = Table(title="Operations", title_justify="left")
    ops.add_column("op")
    for outcome in ("ok", "fail", "unknown"):
        ops.add_column(outcome, justify="right")
    ops.add_column("total", justify="right")
    for kind, by in summary.ops.items():
        ops.add_row(kind, *(str(by.get(o, 0)) for o in ("ok", "fail", "unknown")),
                    str(sum(by.values())))
    ops.add_row("all", *(str(sum(by.get(o, 0) for by in summary.ops.values()))
                         for o in ("ok", "fail", "unknown")), str(summary.total_ops))
    console.print(ops)

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
