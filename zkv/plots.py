"""Plot primitives shared by the ``zkv chaos`` report and ``zkv bench --plot``.

matplotlib is imported only inside these functions (the CLI starts without it),
and figures are drawn on the Agg canvas without pyplot: no global state, no
display needed. Every figure function takes plain data and returns a
``Figure``; ``save`` writes it as PNG, SVG or PDF (by the suffix). An
artist that a test or a reader may want to find in an SVG gets a ``gid`` (its
element id there), e.g. ``fault-kill-f3`` or ``ops-put-ok``.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 110

# One colour per op kind, per fault kind (light, for shading behind the marks) and
# one mark per outcome, the same in every picture.
KIND_COLORS = {"get": "#1f77b4", "put": "#ff7f0e", "delete": "#d62728",
               "create": "#2ca02c", "update": "#9467bd", "cas": "#8c564b"}
FAULT_COLORS = {"kill": "#fb8072", "pause": "#fdb462", "partition": "#bebada",
                "loss": "#80b1d3", "slow": "#b3de69", "join": "#8dd3c7",
                "decommission": "#bcbcbc", "wipe": "#fccde5", "remove": "#ffed6f"}
OUTCOME_MARKS: dict[str, dict[str, Any]] = {
    "ok": {"marker": "o", "markersize": 2.0, "alpha": 0.45},
    "fail": {"marker": "x", "markersize": 5.0, "alpha": 0.9, "markeredgewidth": 1.2},
    "unknown": {"marker": "^", "markersize": 5.5, "alpha": 0.9, "markerfacecolor": "none",
                "markeredgewidth": 1.0}}
OTHER_COLOR = "#555555"


class Window(NamedTuple):
    """A span of the x axis to shade: a fault, from ``start`` to ``end`` (seconds), on
    the nodes ``label`` names."""

    kind: str
    start: float
    end: float
    gid: str = ""
    label: str = ""


def figure(rows: int = 1, width: float = 11.0, height: float = 3.4, sharex: bool = True,
           cols: int = 1, **grid: Any) -> tuple[Figure, list[Axes]]:
    """A figure of ``rows`` x ``cols`` axes (row by row) on the Agg canvas; ``height``
    is per row, ``grid`` goes to ``subplots`` (e.g. ``width_ratios``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, sharex=sharex, squeeze=False, **grid)
    return fig, list(axes.flat)


def save(fig: Figure, path: Path | str) -> Path:
    """Write ``fig`` as PNG, SVG or PDF, as ``path``'s suffix says; returns the path."""
    path = Path(path)
    fig.savefig(path, format=path.suffix.lstrip(".").lower() or "png", dpi=DPI)
    return path


def png_data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI, so an HTML report is one self-contained file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def bucket_width(span: float, buckets: int = 120) -> float:
    """A round bucket width (0.1, 0.25, 0.5, 1, 2, 5, 10 ... s) giving about ``buckets``
    buckets over ``span`` seconds: fine enough to see a fault, coarse enough to count."""
    target = max(span, 1e-9) / buckets
    for width in (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0):
        if width >= target:
            return width
    return 60.0 * math.ceil(target / 60.0)


def rate(times: Iterable[float], width: float, end: float) -> tuple[list[float], list[float]]:
    """Events per second in buckets of ``width`` from 0 to ``end``: (bucket starts, rates)."""
    count = max(1, math.ceil(end / width))
    counts = [0] * count
    for t in times:
        i = int(t // width)
        if 0 <= i < count:
            counts[i] += 1
    return [i * width for i in range(count)], [c / width for c in counts]


def step(ax: Axes, starts: Sequence[float], values: Sequence[float], width: float,
         **style: Any) -> None:
    """``values`` as a step line, each held over its bucket (the last one too)."""
    if not starts:
        return
    ax.step([*starts, starts[-1] + width], [*values, values[-1]], where="post", **style)


def shade(ax: Axes, windows: Iterable[Window]) -> None:
    """Shade each window lightly in its kind's colour over the axes' full height (the
    lanes of ``fault_lanes`` say which kind each is)."""
    for w in windows:
        span = ax.axvspan(w.start, max(w.end, w.start + 0.05),
                          color=FAULT_COLORS.get(w.kind, "#dddddd"), alpha=0.2, lw=0, zorder=0)
        span.set_gid(w.gid or f"fault-{w.kind}")


def with_lanes(windows: Sequence[Window], height: float, width: float = 11.0
               ) -> tuple[Figure, Axes, Axes | None]:
    """A figure of one plot under a strip of fault lanes (one per kind present, none
    if there is no window): (figure, plot, lanes)."""
    kinds = lane_kinds(windows)
    if not kinds:
        fig, (ax,) = figure(1, width=width, height=height)
        return fig, ax, None
    strip = 0.3 + 0.2 * len(kinds)
    fig, (lanes, ax) = figure(2, width=width, height=(height + strip) / 2,
                              height_ratios=[strip, height])
    fault_lanes(lanes, windows, kinds)
    return fig, ax, lanes


def lane_kinds(windows: Iterable[Window]) -> list[str]:
    """The kinds of ``windows``, in ``FAULT_COLORS`` order (the nemesis's), unknown last."""
    present = {w.kind for w in windows}
    return [k for k in FAULT_COLORS if k in present] + sorted(present - set(FAULT_COLORS))


def fault_lanes(ax: Axes, windows: Sequence[Window], kinds: Sequence[str]) -> None:
    """One lane per fault kind, a bar per fault labelled with its nodes where there is
    room; faults of one kind that overlap in time share their lane side by side."""
    row = {k: i for i, k in enumerate(kinds)}
    span = max((w.end for w in windows), default=1.0) - min((w.start for w in windows),
                                                             default=0.0)
    for kind in kinds:
        mine = sorted((w for w in windows if w.kind == kind), key=lambda w: w.start)
        ends: list[float] = []  # per slot: when its last window ends
        slots = []
        for w in mine:
            free = next((i for i, e in enumerate(ends) if e <= w.start), len(ends))
            ends[free:free + 1] = [w.end]
            slots.append(free)
        height = 0.8 / max(1, len(ends))
        for w, slot in zip(mine, slots):
            y = row[kind] - 0.4 + height * (slot + 0.5)
            bars = ax.barh(y, max(w.end - w.start, 0.05), left=w.start, height=height,
                           color=FAULT_COLORS.get(kind, "#dddddd"), edgecolor="#777777",
                           linewidth=0.4)
            bars.patches[0].set_gid(f"lane-{w.gid or kind}")
            if w.label and (w.end - w.start) > span / 40:
                ax.text(w.start + span / 500, y, w.label, fontsize=6 if len(ends) < 3 else 5,
                        va="center", ha="left", clip_on=True)
    ax.set_yticks(range(len(kinds)), kinds, fontsize="small")
    ax.set_ylim(len(kinds) - 0.5, -0.5)
    ax.tick_params(axis="x", labelbottom=False, length=0)
    ax.tick_params(axis="y", length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)


def kind_handles(kinds: Iterable[str]) -> list[Any]:
    """Legend entries for the op kinds present, in ``KIND_COLORS`` order."""
    from matplotlib.lines import Line2D

    present = set(kinds)
    return [Line2D([], [], color=c, lw=2, label=k) for k, c in KIND_COLORS.items()
            if k in present]


def outcome_handles(outcomes: Iterable[str], labels: dict[str, str] | None = None) -> list[Any]:
    """Legend entries for the outcomes present: each one's mark, in grey, big enough
    to tell apart (the ok dots are drawn small and faint)."""
    from matplotlib.lines import Line2D

    labels = labels or {}
    present = set(outcomes)
    handles = []
    for outcome, mark in OUTCOME_MARKS.items():
        if outcome in present:
            style = {**mark, "alpha": 1.0,
                     "markersize": max(5.0, float(mark.get("markersize", 5.0)))}
            handles.append(Line2D([], [], color=OTHER_COLOR, linestyle="none",
                                  label=labels.get(outcome, outcome), **style))
    return handles


def legend_right(ax: Axes, handles: list[Any]) -> None:
    """A legend outside the axes, on the right, so it never hides data."""
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small", frameon=False)


def log_latency_axis(ax: Axes, label: str = "latency (ms)") -> None:
    """Log y in milliseconds, labelled with plain numbers (0.1, 1, 10) rather than
    powers, and at 2 and 5 of each decade too when the data span few decades (call
    it after plotting)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    if high / max(low, 1e-12) < 10 ** 2.5:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_ylabel(label)
    ax.grid(True, which="major", alpha=0.3)


def percentile_axis(ax: Axes, most: float) -> None:
    """x as 1/(1-p) on a log scale, labelled in percentiles (HdrHistogram's plot):
    every extra nine of the tail gets the same room; ``most`` is the largest x."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    ticks = [1.0, 2.0]
    while ticks[-1] * 10 <= most * 1.0001:
        ticks.append(ticks[-1] * 5 if ticks[-1] == 2.0 else ticks[-1] * 10)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([percent_label(1 - 1 / t) for t in ticks])
    ax.set_xlim(1.0, max(most, 2.0) * 1.05)
    ax.set_xlabel("percentile")


def percent_label(p: float) -> str:
    """0.999 -> ``99.9%``; 0 -> ``0%``."""
    text = f"{100 * p:.6f}".rstrip("0").rstrip(".")
    return f"{text}%"


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (no external assets) around ``body``."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px;
       padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
.pass {{ color: #1a7f37; }} .fail {{ color: #c62828; }}
table {{ border-collapse: collapse; margin: .4em 0; }}
td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
pre {{ background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: 12px; }}
</style></head>
<body>
{body}
</body></html>
"""


def html_table(header: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    """Rows of cells as an HTML table; every cell is escaped."""
    head = ("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"
            if header else "")
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table>{head}{body}</table>"


# --------------------------------------------------------------------------- bench


def bench_figure(result: dict[str, Any], title: str = "") -> Figure:
    """``zkv bench``'s result: latency by percentile (HdrHistogram's picture) and
    completions per second over the run, per op kind."""
    fig, (left, right) = figure(1, width=13.0, height=4.6, sharex=False, cols=2,
                                width_ratios=[1.15, 1.0])
    distribution = result.get("latency_distribution") or {}
    most = 2.0
    for kind, points in distribution.items():
        if not points:
            continue
        xs = [1.0 / max(1e-12, 1.0 - p) for p, _ in points]
        most = max(most, xs[-1])
        left.plot(xs, [max(ms, 1e-3) for _, ms in points], marker=".", markersize=4,
                  lw=2.0 if kind == "all" else 1.4, gid=f"distribution-{kind}",
                  color="black" if kind == "all" else KIND_COLORS.get(kind, OTHER_COLOR),
                  label=kind)
    percentile_axis(left, most)
    log_latency_axis(left)
    left.grid(True, which="major", axis="x", alpha=0.3)
    left.set_title("latency by percentile", loc="left")
    if distribution:
        left.legend(fontsize="small", loc="upper left")

    timeline = result.get("timeline") or {}
    width = float(timeline.get("bucket_s") or 0.1)
    series = dict(timeline.get("ops") or {})
    if len(series) > 1:  # the sum too, as the table's "all" row
        series["all"] = [sum(c) for c in zip_longest(*series.values(), fillvalue=0)]
    if any(timeline.get("errors") or ()):
        series["errors"] = timeline["errors"]
    # Only whole buckets: the last, cut short by the end of the run, would look like a
    # collapse of the throughput.
    elapsed = float(result.get("elapsed_s") or 0.0)
    whole = int(elapsed / width + 1e-6) if elapsed else max(map(len, series.values()), default=0)
    for kind, counts in series.items():
        counts = list(counts[:whole]) + [0] * (whole - len(counts))
        step(right, [i * width for i in range(whole)], [c / width for c in counts], width,
             color="black" if kind in ("all", "errors") else KIND_COLORS.get(kind, OTHER_COLOR),
             ls="--" if kind == "errors" else "-", lw=2.0 if kind == "all" else 1.3,
             label=kind, gid=f"rate-{kind}")
    right.set_ylim(bottom=0)
    right.set_xlim(0, max(whole * width, width))
    right.set_xlabel("seconds since the clock started")
    right.set_ylabel(f"ops/s ({width:g} s buckets)")
    right.grid(True, alpha=0.3)
    right.set_title("throughput over the run", loc="left")
    if series:
        right.legend(fontsize="small", loc="best")
    if title:
        fig.suptitle(title, x=0.01, ha="left")
    return fig


def matrix_figure(rows: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """``bench/matrix.py``'s cells: ops/s of each (workload, clients, pipeline), a bar
    per node count, on a log scale (the cells span a few hundred to tens of thousands)."""
    from matplotlib.ticker import FuncFormatter

    cells: list[tuple[str, int, int]] = []
    nodes: list[int] = []
    value: dict[tuple[int, tuple[str, int, int]], float] = {}
    for r in rows:
        o = r["options"]
        cell = (o["workload"], int(o["clients"]), int(o["pipeline"]))
        if cell not in cells:
            cells.append(cell)
        if o.get("nodes") not in nodes:
            nodes.append(o.get("nodes"))
        value[o.get("nodes"), cell] = float(r["total"]["ops_per_s"])
    fig, (ax,) = figure(1, width=min(16.0, max(7.0, 2.5 + 0.75 * len(cells))),
                        height=4.8)
    slot = 0.8 / max(1, len(nodes))
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    for j, n in enumerate(nodes):
        xs = [i - 0.4 + slot * (j + 0.5) for i, cell in enumerate(cells) if (n, cell) in value]
        ys = [value[n, cell] for cell in cells if (n, cell) in value]
        bars = ax.bar(xs, ys, width=slot * 0.92, color=colors[j % len(colors)],
                      label=f"{n} node{'s' if n != 1 else ''}", gid=f"nodes-{n}")
        for bar, y in zip(bars, ys):
            ax.text(bar.get_x() + bar.get_width() / 2, y, f"{y:,.0f}", ha="center",
                    va="bottom", fontsize=6, rotation=90)
    ax.set_yscale("log")
    if value:
        ax.set_ylim(top=max(value.values()) * 1.7)  # room for the labels of the tallest
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xticks(range(len(cells)), [f"{w}\nc{c} p{p}" for w, c, p in cells],
                  fontsize="small")
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.set_ylabel("ops/s (log scale)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title or "ops/s per cell: workload, clients (c) x pipeline (p)", loc="left")
    legend_right(ax, ax.get_legend_handles_labels()[0])
    return fig
