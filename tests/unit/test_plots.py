"""``zkv bench``'s numbers for plotting, and the bench and matrix pictures, from made-up
results: the distribution keeps the tail, the timeline counts every op once, and the
figures hold a line (or bar) for every series they claim."""

from __future__ import annotations

import importlib.util
import io
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from zkv import bench as zb
from zkv import plots
from zkv.cli import app

ROOT = Path(__file__).resolve().parents[2]


def ids(fig, prefix: str) -> set[str]:
    out = io.StringIO()
    fig.savefig(out, format="svg")
    return {e.get("id") for e in ET.fromstring(out.getvalue()).iter()
            if (e.get("id") or "").startswith(prefix)}


def test_the_latency_distribution_runs_from_the_fastest_op_to_the_slowest():
    values = sorted(i / 1000 for i in range(1, 10_001))  # 1 ms .. 10 s
    points = zb.latency_distribution(values)
    assert len(points) <= zb.DISTRIBUTION_POINTS
    assert points[0] == [0.0, 1.0] and points[-1][1] == 10_000.0
    assert points[-1][0] == round(1 - 1 / len(values), 7)  # the max sits at 1 - 1/n
    assert [p for p, _ in points] == sorted(p for p, _ in points)
    assert [ms for _, ms in points] == sorted(ms for _, ms in points)
    assert sum(1 for p, _ in points if p >= 0.99) >= 10  # the tail keeps its share
    assert zb.latency_distribution([]) == [] and zb.latency_distribution([0.002]) == [[0.0, 2.0]]


def test_the_timeline_counts_each_completion_once_in_its_bucket():
    tally = zb._Tally(origin=time.perf_counter() - 0.35, bucket=0.1)  # 0.35 s into the run
    for _ in range(3):
        tally.ok("put", 0.001)
    tally.fail("get", RuntimeError("x"))
    assert list(tally.timeline["put"]) == [0, 0, 0, 3]
    assert list(tally.timeline["error"]) == [0, 0, 0, 1]
    totals: dict[str, list[int]] = {"put": [1]}
    zb._add_counts(totals, tally.timeline)
    assert totals["put"] == [1, 0, 0, 3]
    assert zb.bucket_seconds(5) == 0.1 and zb.bucket_seconds(600) == 3.0


def bench_result(kinds=("get", "put"), errors=True) -> dict:
    return {"elapsed_s": 2.0,
            "latency_distribution": {k: [[0.0, 1.0], [0.5, 2.0], [0.99, 9.0], [0.999, 30.0]]
                                     for k in (*kinds, "all")},
            "timeline": {"bucket_s": 0.1, "ops": {k: [50] * 20 for k in kinds},
                         "errors": [0] * 19 + [2] if errors else []}}


def test_the_bench_figure_has_a_distribution_and_a_rate_per_kind(tmp_path):
    fig = plots.bench_figure(bench_result(), "workload mixed")
    assert ids(fig, "distribution-") == {"distribution-get", "distribution-put",
                                         "distribution-all"}
    assert ids(fig, "rate-") == {"rate-get", "rate-put", "rate-all", "rate-errors"}
    path = plots.save(fig, tmp_path / "bench.png")
    with Image.open(path) as image:
        image.load()
        assert image.size == (round(13.0 * plots.DPI), round(4.6 * plots.DPI))


def test_the_matrix_chart_has_a_bar_per_cell_and_node_count(tmp_path):
    rows = [{"options": {"nodes": n, "workload": w, "clients": c, "pipeline": 1, "duration": 5},
             "total": {"ops_per_s": 100.0 * n * c}}
            for n in (1, 3) for w in ("put", "get") for c in (1, 8)]
    out = io.StringIO()
    plots.matrix_figure(rows).savefig(out, format="svg")
    bars = [e.get("id") for e in ET.fromstring(out.getvalue()).iter()
            if (e.get("id") or "").startswith("nodes-")]
    assert sorted(bars) == ["nodes-1"] * 4 + ["nodes-3"] * 4  # 4 cells, each node count
    matrix = _load_matrix_script()  # bench/matrix.py, a script
    with Image.open(matrix.chart(rows, tmp_path / "m.png")) as image:
        image.load()
        assert image.size[1] == round(4.8 * plots.DPI)


def _load_matrix_script():
    spec = importlib.util.spec_from_file_location("bench_matrix", ROOT / "bench" / "matrix.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_refuses_a_plot_file_it_cannot_write_before_it_runs(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--seeds", "127.0.0.1:1", "--plot",
                                      str(tmp_path / "bench.txt")])
    assert result.exit_code == 2 and "--plot" in result.output
    result = CliRunner().invoke(app, ["bench", "--seeds", "127.0.0.1:1", "--plot",
                                      str(tmp_path / "no-such-dir" / "bench.png")])
    assert result.exit_code == 2


def test_plotting_starts_no_matplotlib_until_a_figure_is_drawn():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", ("import sys, zkv.cli, zkv.chaos.run, "
                            "zkv.bench; print('matplotlib' in sys.modules)")],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
