"""What a simulated run found, and its one-screen text form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zkv.sim.durability import LostWrite
from zkv.sim.history import Op
from zkv.sim.workload import COUNTER_KEY, CounterTally


@dataclass(slots=True)
class RunReport:
    scenario: str
    seed: int
    params: dict[str, Any]
    history: list[Op] = field(default_factory=list)
    op_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> outcome -> n
    statuses: dict[str, int] = field(default_factory=dict)  # client-visible status -> n
    final_values: dict[bytes, bytes | None] = field(default_factory=dict)
    unread_keys: list[bytes] = field(default_factory=list)  # no final read succeeded
    lost_writes: list[LostWrite] = field(default_factory=list)
    counter: CounterTally | None = None  # the CAS counter's increments, when it ran
    linearizable: bool | None = None  # True: proven; False: a violation; None: not proven
    linearizability: str = "not checked"
    # The checker's verdict: "linearizable", "violation", "undecided" (it gave up within
    # its step budget on some key: safety unproven, never a pass) or "not checked".
    verdict: str = "not checked"
    error: str | None = None  # a node's step (or the codec) raised: a bug, with context
    net: dict[str, Any] = field(default_factory=dict)
    nemesis: list[tuple[float, str]] = field(default_factory=list)
    event_kinds: dict[str, int] = field(default_factory=dict)
    trace_digest: str = ""
    sim_time: float = 0.0
    wall_time: float = 0.0

    @property
    def ops_completed(self) -> int:
        return len(self.history)

    @property
    def ops_per_second(self) -> float:
        """Client operations completed per wall-clock second of simulation."""
        return self.ops_completed / self.wall_time if self.wall_time > 0 else 0.0

    @property
    def speedup(self) -> float:
        """Virtual seconds simulated per wall-clock second."""
        return self.sim_time / self.wall_time if self.wall_time > 0 else 0.0

    @property
    def safe(self) -> bool:
        """No lost write, no linearizability violation, no crash of the core."""
        return (self.error is None and not self.lost_writes and self.linearizable is not False
                and self.counter_ok)

    @property
    def counter_ok(self) -> bool:
        """The CAS counter (if it ran) ends between its acknowledged increments and
        those plus the ones whose outcome is unknown."""
        if self.counter is None:
            return True
        return self.counter.explains(self.final_values.get(COUNTER_KEY))

    @property
    def undecided(self) -> bool:
        """The checker gave up on some key: its linearizability is unproven."""
        return self.verdict == "undecided"

    @property
    def ok(self) -> bool:
        """Safe, proven so when checked (an undecided history is no pass), and every key
        could be read back once the faults were healed."""
        return self.safe and not self.undecided and not self.unread_keys


def _show(value: bytes | None) -> str:
    return "absent" if value is None else repr(value)


EXPECTED_SPLIT_BRAIN = (" - an expected outcome: under the auto removal policy a partition "
                        "outlasting t_remove may serve a stale read from a degraded range "
                        "(docs/consistency.md, \"Removal policy\"; split-brain-manual avoids "
                        "it)")


def expected_failure(report: RunReport) -> bool:
    """A split-brain run that failed only as documented: a stale read, no lost write and
    no crash of the core."""
    return (report.scenario == "split-brain" and not report.ok and report.error is None
            and not report.lost_writes and report.counter_ok)


def format_report(report: RunReport) -> str:
    verdict = ("PASS" if report.ok else
               "UNDECIDED" if report.safe and report.undecided and not report.unread_keys
               else "FAIL")
    lines = [
        f"{verdict}  scenario={report.scenario} seed={report.seed}  "
        f"sim {report.sim_time:.1f}s in {report.wall_time:.2f}s wall "
        f"({report.speedup:.0f}x, {report.ops_per_second:.0f} simulated ops/s)"
        + (EXPECTED_SPLIT_BRAIN if expected_failure(report) else ""),
        "params: " + ", ".join(f"{k}={v}" for k, v in report.params.items()),
    ]
    if report.error:
        lines.append(f"ERROR: {report.error}")
    ops = "; ".join(
        f"{kind} " + " ".join(f"{outcome}={n}" for outcome, n in outcomes.items())
        for kind, outcomes in report.op_counts.items()
    )
    lines.append(f"ops: {report.ops_completed} ({ops})")
    if report.statuses:
        lines.append("replies: " + ", ".join(f"{k}={v}" for k, v in report.statuses.items()))
    net = report.net
    if net:
        reasons = ", ".join(f"{k}={v}" for k, v in net.get("drop_reasons", {}).items())
        lines.append(
            f"net: sent={net['sent']} delivered={net['delivered']} dropped={net['dropped']}"
            f" ({reasons}) duplicated={net['duplicated']}"
        )
    if report.nemesis:
        faults = [text for _, text in report.nemesis]
        lines.append(f"nemesis: {len(faults)} actions, e.g. " + "; ".join(faults[:4]))
    if report.final_values:
        lines.append("final: " + ", ".join(
            f"{k.decode(errors='replace')}={_show(v)}" for k, v in report.final_values.items()))
    if report.unread_keys:
        lines.append("UNREAD after healing: " + ", ".join(repr(k) for k in report.unread_keys))
    if report.counter is not None:
        c = report.counter
        lines.append(f"CAS counter: final {_show(report.final_values.get(COUNTER_KEY))}, "
                     f"{c.acked} increments acknowledged, {c.unknown} unknown: "
                     + ("consistent" if report.counter_ok else "INCONSISTENT"))
    lines.append("no acknowledged write lost: " + ("yes" if not report.lost_writes else "NO"))
    lines.extend(f"  {lost}" for lost in report.lost_writes)
    verdict_text = ("UNDECIDED (the checker gave up within its step budget: not proven)"
                    if report.undecided else
                    {True: "yes", False: "NO", None: "not checked"}[report.linearizable])
    lines.append(f"linearizable: {verdict_text}")
    lines.extend(f"  {line}" for line in report.linearizability.splitlines())
    lines.append(f"trace digest: {report.trace_digest}")
    return "\n".join(lines)
