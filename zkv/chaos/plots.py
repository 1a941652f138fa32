"""A chaos run as pictures (Jepsen's standard ones), beside its history.

``write_report(out, ops, t0, summary, ...)`` writes into the run's directory:

- ``latency.png``: every op's latency (log scale) at the time it was invoked,
  coloured by kind, marked by outcome (ok, fail; an ``unknown`` op never got an
  answer, so it sits in a row of its own above the slowest answer);
- ``throughput.png``: ok ops per second per kind, and the failed or unknown ones;
- ``violation.png``, only when a key is not linearizable: the smallest failing
  key history (``near_failure``'s part of it: the same ops the text shows) as a
  timeline per client, the ops of the longest linearizable prefix numbered in
  the order found, the op that got stuck and those that could not follow marked;
- ``report.html``: the verdict and summary tables with those images inline.

Each fault's window (``faults.jsonl``) is shaded in its kind's colour. Times
are seconds since the workload started (``t0``). The figure functions take
plain data (ops, windows), so they are tested without a cluster;
``report_from_dir`` (``python -m zkv.chaos.redraw RUN_DIR``) draws a finished
run's report again.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zkv import plots
from zkv.chaos.report import Summary, near_failure
from zkv.chaos.workload import FINAL_READER
from zkv.check import KeyResult, Op, load_history
from zkv.check.history import KINDS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "report.html"
LATENCY_FILE, THROUGHPUT_FILE, VIOLATION_FILE = "latency.png", "throughput.png", "violation.png"
TIMELINE_OPS = 40  # ops drawn of a failing key history (more would not be readable)
FLOOR_MS = 0.01  # a log axis has no 0: faster ops are drawn here


def fault_windows(records: Iterable[dict], t0: float, end: float) -> list[plots.Window]:
    """The faults' windows, in seconds since ``t0``, from ``faults.jsonl`` records (the
    last line of each fault wins); a fault never ended lasts until ``end``."""
    last: dict[str, dict] = {}
    for record in records:
        last[str(record.get("id", len(last)))] = record
    windows = []
    for fault_id, r in last.items():
        start = float(r["start"]) - t0
        stop = float(r["end"]) - t0 if r.get("end") is not None else end
        windows.append(plots.Window(str(r["kind"]), start, stop,
                                    f"fault-{r['kind']}-{fault_id}",
                                    "+".join(r.get("nodes") or ())))
    return sorted(windows, key=lambda w: w.start)


def load_faults(path: Path) -> list[dict]:
    """The records of a ``faults.jsonl`` (start and end lines alike); none if missing."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _workload(ops: Iterable[Op], t0: float, end: float) -> list[Op]:
    """The workload's ops (not the final reads after healing), invoked before ``end``."""
    return [op for op in ops if op.process < FINAL_READER and op.start - t0 <= end]


def latency_figure(ops: Sequence[Op], windows: Sequence[plots.Window], t0: float,
                   end: float, title: str = "") -> Figure:
    """Every op's latency at its invocation time: a colour per kind, a mark per outcome."""
    fig, ax, _ = plots.with_lanes(windows, height=4.2)
    ops = _workload(ops, t0, end)
    answered = [(op.end - op.start) * 1000 for op in ops if op.end is not None]
    top = max(answered, default=1.0) * 2.5  # the row of ops that never got an answer
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(
        lambda: ([], []))
    for op in ops:
        xs, ys = groups[op.kind, op.outcome]
        xs.append(op.start - t0)
        ys.append(top if op.end is None else max(FLOOR_MS, (op.end - op.start) * 1000))
    # The most numerous kind first, so that the rarer ones are not buried under it;
    # failures and unknowns above every ok mark.
    for kind, outcome in sorted(groups, key=lambda g: (g[1] != "ok", -len(groups[g][0]))):
        xs, ys = groups[kind, outcome]
        ax.plot(xs, ys, linestyle="none", color=plots.KIND_COLORS[kind],
                gid=f"ops-{kind}-{outcome}", zorder=2 if outcome == "ok" else 3,
                **plots.OUTCOME_MARKS[outcome])
    plots.shade(ax, windows)
    plots.log_latency_axis(ax)
    if any(outcome == "unknown" for _, outcome in groups):
        ax.axhline(top / 1.6, color=plots.OTHER_COLOR, lw=0.6, ls=":")
        ax.text(-0.005, top, "no answer", transform=ax.get_yaxis_transform(), va="center",
                ha="right", fontsize="small", color=plots.OTHER_COLOR)
    ax.set_xlim(0, end)
    ax.set_xlabel("seconds since the workload started (op invoked)")
    fig.suptitle(title or "latency of every operation", x=0.01, ha="left")
    outcomes = {outcome for _, outcome in groups}
    plots.legend_right(ax, plots.kind_handles({k for k, _ in groups})
                       + plots.outcome_handles(outcomes, {"fail": "failed",
                                                          "unknown": "unknown (no answer)"}))
    return fig


def throughput_figure(ops: Sequence[Op], windows: Sequence[plots.Window], t0: float,
                      end: float, title: str = "") -> Figure:
    """Ok ops per second per kind (by completion), and the failed or unknown ones
    of every kind (a failure when it was told, an unknown when it was invoked)."""
    from matplotlib.lines import Line2D

    fig, ax, _ = plots.with_lanes(windows, height=3.4)
    ops = _workload(ops, t0, end)
    width = plots.bucket_width(end)
    ok: dict[str, list[float]] = defaultdict(list)
    bad: list[float] = []
    for op in ops:
        if op.outcome == "ok":
            ok[op.kind].append(op.end - t0)  # type: ignore[operator]  # ok ops have an end
        else:
            bad.append((op.end if op.end is not None else op.start) - t0)
    for kind in KINDS:
        if kind in ok:
            starts, rates = plots.rate(ok[kind], width, end)
            plots.step(ax, starts, rates, width, color=plots.KIND_COLORS[kind], lw=1.3,
                       gid=f"rate-{kind}")
    if bad:
        starts, rates = plots.rate(bad, width, end)
        plots.step(ax, starts, rates, width, color="black", lw=1.0, ls="--",
                   gid="rate-not-ok")
    plots.shade(ax, windows)
    ax.set_xlim(0, end)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"ops/s ({width:g} s buckets)")
    ax.set_xlabel("seconds since the workload started")
    ax.grid(True, alpha=0.3)
    fig.suptitle(title or "throughput per operation kind (ok ops)", x=0.01, ha="left")
    extra = [Line2D([], [], color="black", lw=1.0, ls="--", label="failed or unknown")] \
        if bad else []
    plots.legend_right(ax, plots.kind_handles(ok) + extra)
    return fig


def _short(value: bytes | None, limit: int = 12) -> str:
    """A value in at most ``limit`` characters: ``'v7'`` (no b prefix), ``absent``."""
    text = "absent" if value is None else repr(value)[1:]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def op_label(op: Op) -> str:
    """An op in a few characters, for a timeline bar: ``put 'v7'``, ``get→absent``."""
    answered = op.outcome == "ok" and op.found is not None
    if op.kind == "get":
        return "get" if op.outcome != "ok" else f"get→{_short(op.value)}"
    if op.kind == "put":
        return f"put {_short(op.value)}"
    if op.kind == "cas":
        text = f"cas {_short(op.expected, 8)}→{_short(op.value, 8)}"
        return text + ((" ✓" if op.found else " ✗") if answered else "")
    answers = {"delete": ("found", "not found"), "create": ("exists", "created"),
               "update": ("updated", "not found")}[op.kind]
    text = op.kind if op.kind == "delete" else f"{op.kind} {_short(op.value)}"
    return text + (f" {answers[0] if op.found else answers[1]}" if answered else "")


def timeline_figure(result: KeyResult, t0: float, limit: int = TIMELINE_OPS) -> Figure:
    """The failing key history around where it fails, one row per client: each op a
    bar from invocation to answer (an unknown one hatched and open to the right)."""
    from matplotlib.patches import Patch

    shown, _, _ = near_failure(result, limit)
    ops = sorted(shown, key=lambda op: op.start)
    processes = sorted({op.process for op in ops})
    row = {p: i for i, p in enumerate(processes)}
    order = {op: n for n, op in enumerate(result.linearization, 1)}
    blocked = {op for op, _ in result.blocked}
    lo = min(op.start for op in ops) - t0
    hi = max((op.end if op.end is not None else op.start) for op in ops) - t0
    pad = 0.04 * max(hi - lo, 1e-3)
    right = hi + 3 * pad
    fig, (ax,) = plots.figure(1, width=12.0, height=1.3 + 0.6 * len(processes))
    for n, op in enumerate(ops):
        x0 = op.start - t0
        x1 = (op.end - t0) if op.end is not None else right
        role = ("stuck" if op == result.stuck else "blocked" if op in blocked
                else "prefix" if op in order else "other")
        edge = {"stuck": "#c62828", "blocked": "#ef6c00"}.get(role, "#444444")
        bar = ax.barh(row[op.process], max(x1 - x0, pad / 20), left=x0, height=0.45,
                      color=plots.KIND_COLORS[op.kind],
                      alpha=0.35 if op.outcome == "fail" else 0.75,
                      edgecolor=edge, linewidth=2.2 if role in ("stuck", "blocked") else 0.6,
                      hatch="///" if op.outcome == "unknown" else None)
        bar.patches[0].set_gid(f"op{n}-p{op.process}-{role}")
        label = op_label(op) + ("" if op.outcome == "ok" else f" ({op.outcome})")
        if op in order:
            label = f"#{order[op]} {label}"
        # Above the bar (the axis runs downwards): a client's ops never overlap in time.
        ax.text(x0, row[op.process] - 0.27, label, fontsize=7, va="bottom", ha="left",
                clip_on=True)
    if result.stuck is not None and result.stuck.end is not None:
        ax.axvline(result.stuck.end - t0, color="#c62828", lw=1, ls="--")
    ax.set_yticks(range(len(processes)),
                  [("final read" if p >= FINAL_READER else f"client p{p}") for p in processes])
    ax.set_ylim(len(processes) - 0.5, -0.8)
    ax.set_xlim(lo - pad, right)
    ax.set_xlabel("seconds since the workload started")
    ax.grid(True, axis="x", alpha=0.3)
    shown_text = (f"all {len(ops)} ops" if len(ops) == len(result.history)
                  else f"{len(ops)} of its {len(result.history)} ops, around where it fails")
    n = len(result.linearization)
    prefix = (f"#1-#{n}: the longest linearizable prefix, in order" if n > 1 else
              "#1: the only op that can go first" if n else "no op can go first")
    ax.set_title(f"key {result.key.decode('latin-1')!r} is not linearizable ({shown_text})\n"
                 f"{prefix}, leaving {_short(result.state, 24)}; then the stuck op had to "
                 f"take effect by the dashed line, and no op could go next", loc="left",
                 fontsize="medium")
    handles = plots.kind_handles({op.kind for op in ops}) + (
        [Patch(facecolor="white", edgecolor="#444444", hatch="///", label="unknown outcome")]
        if any(op.outcome == "unknown" for op in ops) else []) + [
        Patch(facecolor="white", edgecolor="#c62828", lw=2, label="stuck op")] + (
        [Patch(facecolor="white", edgecolor="#ef6c00", lw=2, label="could not go next")]
        if blocked - {result.stuck} else [])
    plots.legend_right(ax, handles)
    return fig


def write_report(out: Path, ops: Sequence[Op], t0: float, summary: Summary,
                 violation: KeyResult | None = None, explanation: str | None = None,
                 faults: Sequence[dict] | None = None) -> Path:
    """Draw the pictures into ``out`` and write ``report.html``; returns its path.
    ``faults``: the fault records (default: read from ``summary.faults_log``)."""
    out = Path(out)
    records = load_faults(Path(summary.faults_log)) if faults is None else faults
    end = summary.duration
    windows = fault_windows(records, t0, end)
    verdict = "PASS" if summary.ok else "FAIL"
    lin = summary.linearizability
    head = (f"{verdict}: {summary.nodes} nodes ({summary.network}), "
            f"{summary.total_ops:,} ops, {sum(summary.faults.values())} faults; "
            f"{lin.get('linearizable', 0)} keys linearizable, "
            f"{lin.get('violation', 0)} not, {lin.get('undecided', 0)} undecided")
    images = [("Latency", LATENCY_FILE, latency_figure(ops, windows, t0, end, head)),
              ("Throughput", THROUGHPUT_FILE, throughput_figure(ops, windows, t0, end))]
    if violation is not None:
        images.append(("The smallest failing key history", VIOLATION_FILE,
                       timeline_figure(violation, t0)))
    for _, name, fig in images:
        plots.save(fig, out / name)
    path = out / REPORT_FILE
    path.write_text(plots.html_page(f"zkv chaos: {verdict}",
                                    _body(summary, head, images, out, explanation)),
                    encoding="utf-8")
    return path


def report_or_note(out: Path, ops: Sequence[Op], t0: float, summary: Summary,
                   violation: KeyResult | None = None, explanation: str | None = None) -> str:
    """``write_report``, but a report that cannot be drawn costs the run only a note:
    the verdict, already reached, must not be lost to a plotting error."""
    try:
        return str(write_report(out, ops, t0, summary, violation, explanation))
    except Exception as exc:  # noqa: BLE001 - reported as a note, never fatal
        summary.notes.append(f"no report drawn: {type(exc).__name__}: {exc}")
        return ""


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _counter(summary: Summary) -> str:
    c = summary.counter
    if c is None:
        return "-"
    final = "no read" if c.final is None else str(c.final)
    return f"{c.acked} <= {final} <= {c.acked + c.unknown}: {'holds' if c.holds else 'VIOLATED'}"


def _counter_ops(summary: Summary) -> list[tuple]:
    c = summary.counter
    if c is None:
        return []
    return [("counter (get, cas)", c.reads_ok + c.acked + c.conflicts,
             c.reads - c.reads_ok + c.failed, c.unknown, c.ops)]


def _body(summary: Summary, head: str, images: list, out: Path,
          explanation: str | None) -> str:
    cls = "pass" if summary.ok else "fail"
    verdict, _, rest = head.partition(": ")
    parts = [f'<h1>zkv chaos: <span class="{cls}">{verdict}</span></h1>',
             (f"<p>{html.escape(rest)}; {summary.clients} clients, {summary.keys} keys, "
              f"{summary.duration:g} s of faults; faults: "
              f"{html.escape(', '.join(summary.fault_kinds) or 'none')}.</p>")]
    if summary.violations:
        parts.append("<h2>Violations</h2><ul>" + "".join(
            f"<li>{html.escape(v)}</li>" for v in summary.violations) + "</ul>")
    lin = summary.linearizability
    parts.append("<h2>Verdict</h2>" + plots.html_table(None, [
        ("keys checked for linearizability", sum(lin.values())),
        ("not linearizable", lin.get("violation", 0)),
        ("undecided by the checker", lin.get("undecided", 0)),
        ("acknowledged writes lost", summary.lost_writes),
        ("keys misplaced after settling", summary.placement_problems),
        ("keys unreadable after settling", summary.unreadable_keys),
        ("CAS counter: acked <= final <= acked + unknown", _counter(summary)),
        ("cluster settled", "yes" if summary.settled else "NO"),
        ("availability overall", _pct(summary.availability)),
        ("availability during faults", _pct(summary.availability_during_faults)),
        ("availability without faults", _pct(summary.availability_outside_faults))]))
    for title, name, _ in images:
        parts.append(f"<h2>{html.escape(title)}</h2>"
                     f'<img alt="{html.escape(title)}" src="{plots.png_data_uri(out / name)}">')
        if name == VIOLATION_FILE and explanation:
            parts.append(f"<pre>{html.escape(explanation)}</pre>")
    outcomes = ("ok", "fail", "unknown")
    parts.append("<h2>Operations</h2>" + plots.html_table(
        ("op", *outcomes, "total"),
        [(kind, *(by.get(o, 0) for o in outcomes), sum(by.values()))
         for kind, by in summary.ops.items()] + _counter_ops(summary)))
    parts.append("<h2>Faults</h2>" + plots.html_table(
        ("fault", "injected", "availability while active"),
        [(kind, summary.faults.get(kind, 0), _pct(summary.availability_by_fault.get(kind)))
         for kind in summary.fault_kinds]))
    if summary.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(
            f"<li>{html.escape(n)}</li>" for n in summary.notes) + "</ul>")
    parts.append(f"<p>History: {html.escape(summary.history)}<br>"
                 f"Faults: {html.escape(summary.faults_log)}</p>")
    return "\n".join(parts)


def report_from_dir(run_dir: Path) -> Path:
    """Draw a finished run's report again from its files (the check runs again for
    the failing key's picture, only if the run found one)."""
    run_dir = Path(run_dir)
    summary = Summary.load(run_dir / "summary.json")
    ops = load_history(run_dir / "history.jsonl")
    t0 = json.loads((run_dir / "offsets.json").read_text())["t0_monotonic"]
    violation = explanation = None
    if summary.linearizability.get("violation"):
        from zkv.chaos import checks
        from zkv.chaos.explain import smallest_explained

        lin = checks.linearizability(ops)
        violation, explanation = lin.smallest_violation(), smallest_explained(lin)
    return write_report(run_dir, ops, t0, summary, violation, explanation,
                        load_faults(run_dir / "faults.jsonl"))

