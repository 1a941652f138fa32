"""The chaos report's pictures, drawn from made-up histories: no cluster needed.

SVG output is read back as XML: the artists carry ids (``fault-KIND-ID`` for a
shaded fault, ``ops-KIND-OUTCOME`` for a group of marks, ``opI-pN-ROLE`` for a bar
of the failing key's timeline), so a test counts what a reader would see.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import pytest
from PIL import Image

from zkv import plots
from zkv.chaos import plots as chaos_plots
from zkv.chaos import redraw
from zkv.chaos.report import CounterReport, Summary, near_failure
from zkv.check import Op, check_history, save_history

K = b"chaos-1-ab12-k0.0"
T0 = 100.0  # the workload's start, on the monotonic clock the ops carry


def op(process: int, kind: str, value: bytes | None, start: float, end: float | None,
       outcome: str = "ok", found: bool | None = None, expected: bytes | None = None,
       key: bytes = K) -> Op:
    return Op(process, kind, key, value, outcome, T0 + start,
              None if end is None else T0 + end, found, expected)


def run_ops() -> list[Op]:
    """20 s of three clients: gets and puts, a few failed reads, a few unknown puts."""
    ops = []
    for i in range(200):
        p, t = i % 3, i * 0.1
        if i % 2:
            ops.append(op(p, "get", b"v", t, t + 0.004 + (i % 7) * 0.002))
        else:
            ops.append(op(p, "put", b"v%d" % i, t, t + 0.006))
    ops += [op(0, "get", None, 5.0 + i, 5.5 + i, outcome="fail") for i in range(3)]
    ops += [op(1, "put", b"u%d" % i, 6.0 + i, None, outcome="unknown") for i in range(4)]
    return ops


FAULTS = [  # as faults.jsonl has them: a start line, then an end line (one never ends)
    {"event": "start", "id": "f1", "kind": "kill", "nodes": ["node-2"], "start": T0 + 2,
     "end": None},
    {"event": "end", "id": "f1", "kind": "kill", "nodes": ["node-2"], "start": T0 + 2,
     "end": T0 + 4},
    {"event": "start", "id": "f2", "kind": "pause", "nodes": ["node-1"], "start": T0 + 3,
     "end": None},
    {"event": "end", "id": "f2", "kind": "pause", "nodes": ["node-1"], "start": T0 + 3,
     "end": T0 + 8},
    {"event": "start", "id": "f3", "kind": "kill", "nodes": ["node-3"], "start": T0 + 15,
     "end": None},
]


def svg(fig) -> ET.Element:
    """The figure as SVG, its text kept as text (not paths) so labels can be read."""
    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(out, format="svg")
    return ET.fromstring(out.getvalue())


def by_id(root: ET.Element, prefix: str) -> dict[str, ET.Element]:
    return {e.get("id"): e for e in root.iter() if (e.get("id") or "").startswith(prefix)}


def marks(element: ET.Element) -> int:
    return sum(1 for e in element.iter() if e.tag.endswith("}use"))


def texts(root: ET.Element) -> str:
    return "\n".join("".join(e.itertext()) for e in root.iter() if e.tag.endswith("}text"))


def summary(tmp_path: Path, **changes) -> Summary:
    fields = {
        "duration": 20.0, "nodes": 5, "network": "loopback", "clients": 3, "keys": 1,
        "ops": {"get": {"ok": 100, "fail": 3}, "put": {"ok": 100, "unknown": 4}},
        "faults": {"kill": 2, "pause": 1}, "fault_kinds": ["kill", "pause"],
        "skipped_faults": {}, "availability": 0.97, "availability_during_faults": 0.95,
        "availability_outside_faults": 0.99,
        "availability_by_fault": {"kill": 0.9, "pause": 1.0},
        "linearizability": {"linearizable": 1}, "lost_writes": 0, "placement_problems": 0,
        "unreadable_keys": 0, "settled": True, "faults_log": str(tmp_path / "faults.jsonl"),
        "history": str(tmp_path / "history.jsonl")}
    return Summary(**{**fields, **changes})


def test_fault_windows_take_each_faults_last_line_and_an_open_one_lasts_to_the_end():
    windows = chaos_plots.fault_windows(FAULTS, T0, end=20.0)
    assert [(w.kind, w.start, w.end, w.label) for w in windows] == [
        ("kill", 2.0, 4.0, "node-2"), ("pause", 3.0, 8.0, "node-1"),
        ("kill", 15.0, 20.0, "node-3")]


def test_the_latency_plot_shades_every_fault_and_marks_each_op_by_kind_and_outcome():
    ops = run_ops()
    windows = chaos_plots.fault_windows(FAULTS, T0, end=20.0)
    root = svg(chaos_plots.latency_figure(ops, windows, T0, end=20.0))
    assert set(by_id(root, "fault-")) == {"fault-kill-f1", "fault-pause-f2", "fault-kill-f3"}
    assert set(by_id(root, "lane-fault-")) == {"lane-fault-kill-f1", "lane-fault-pause-f2",
                                               "lane-fault-kill-f3"}
    groups = {name: marks(e) for name, e in by_id(root, "ops-").items()}
    assert groups == {"ops-get-ok": 100, "ops-put-ok": 100, "ops-get-fail": 3,
                      "ops-put-unknown": 4}
    assert "no answer" in texts(root)  # the row of the unknown ops is named


def test_the_throughput_plot_has_a_line_per_kind_and_one_for_the_failures():
    windows = chaos_plots.fault_windows(FAULTS, T0, end=20.0)
    root = svg(chaos_plots.throughput_figure(run_ops(), windows, T0, end=20.0))
    assert set(by_id(root, "rate-")) == {"rate-get", "rate-put", "rate-not-ok"}
    assert len(by_id(root, "fault-")) == 3


def failing_history() -> list[Op]:
    """A delete acknowledged, then a read of the value it removed: not linearizable."""
    return [
        op(0, "put", b"a", 1.0, 1.2), op(1, "get", b"a", 1.3, 1.35),
        op(2, "cas", b"b", 1.4, 1.6, found=True, expected=b"a"),
        op(3, "put", b"c", 1.5, None, outcome="unknown"),
        op(2, "update", b"d", 2.0, 2.2, found=True), op(0, "get", None, 2.1, 2.15, "fail"),
        op(0, "delete", None, 2.4, 2.6, found=True), op(2, "get", b"d", 2.7, 2.8),
        op(1, "get", None, 2.9, 3.0)]


def test_the_violation_timeline_draws_every_op_per_client_and_marks_the_stuck_one():
    result = check_history(failing_history()).smallest_violation()
    assert result is not None and result.stuck is not None
    root = svg(chaos_plots.timeline_figure(result, T0))
    bars = by_id(root, "op")
    assert len(bars) == len(result.history)
    assert [b.split("-", 1)[1] for b in bars if b.endswith("-stuck")] == ["p2-stuck"]
    words = texts(root)
    for label in ("client p0", "client p3", "#1 put 'a'", "delete found", "(unknown)",
                  "is not linearizable"):
        assert label in words, label


def test_a_long_failing_history_is_drawn_near_where_it_fails_as_the_text_shows_it():
    ops = [op(i % 2, "put", b"w%d" % i, i * 1.0, i * 1.0 + 0.5) for i in range(100)]
    ops.append(op(2, "get", b"w3", 100.0, 100.5))  # w3 was overwritten long before
    result = check_history(ops).smallest_violation()
    assert result is not None
    shown, _, _ = near_failure(result, chaos_plots.TIMELINE_OPS)
    assert 0 < len(shown) <= chaos_plots.TIMELINE_OPS < len(result.history)
    root = svg(chaos_plots.timeline_figure(result, T0))
    assert len(by_id(root, "op")) == len(shown)
    assert f"{len(shown)} of its {len(result.history)} ops" in texts(root)


def test_the_report_holds_the_verdict_and_the_pictures_and_png_files_beside_it(tmp_path):
    (tmp_path / "faults.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FAULTS))
    counter = CounterReport(key="c", workers=2, ops=10, reads=5, reads_ok=5, cas=5, acked=3,
                            conflicts=1, unknown=1, failed=0, final=4, final_read=True,
                            holds=True, linearizability="linearizable")
    path = chaos_plots.write_report(tmp_path, run_ops(), T0, summary(tmp_path, counter=counter))
    assert path == tmp_path / "report.html"
    page = path.read_text()
    assert 'class="pass">PASS' in page and "3 &lt;= 4 &lt;= 4: holds" in page
    assert page.count("data:image/png;base64,") == 2  # latency and throughput, inline
    for name in ("latency.png", "throughput.png"):
        with Image.open(tmp_path / name) as image:
            image.load()
            width, height = image.size
        assert width == round(11.0 * plots.DPI) and 400 < height < 1000, (name, image.size)
    assert not (tmp_path / "violation.png").exists()


def test_a_failed_run_reports_the_failing_key_as_a_timeline_with_its_explanation(tmp_path):
    (tmp_path / "faults.jsonl").write_text("")
    ops = failing_history()
    result = check_history(ops).smallest_violation()
    failed = summary(tmp_path, linearizability={"violation": 1},
                     violations=[f"key {K!r}: not linearizable ({len(ops)} ops)"])
    page = chaos_plots.write_report(tmp_path, ops, T0, failed, result,
                                    result.explain()).read_text()
    assert 'class="fail">FAIL' in page and "not linearizable (9 ops)" in page
    assert page.count("data:image/png;base64,") == 3
    assert "longest linearizable prefix" in page  # the explanation, under the timeline
    with Image.open(tmp_path / "violation.png") as image:
        assert image.size[0] == round(12.0 * plots.DPI)


def test_a_report_that_cannot_be_drawn_costs_the_run_a_note_not_its_verdict(tmp_path):
    broken = summary(tmp_path)
    assert chaos_plots.report_or_note(tmp_path / "missing-dir", run_ops(), T0, broken) == ""
    assert broken.notes and broken.notes[0].startswith("no report drawn:")


def test_a_finished_run_directory_can_be_drawn_again_with_its_failing_key(tmp_path):
    ops = run_ops() + failing_history()
    save_history(ops, tmp_path / "history.jsonl")
    (tmp_path / "faults.jsonl").write_text("".join(json.dumps(r) + "\n" for r in FAULTS))
    (tmp_path / "offsets.json").write_text(json.dumps({"t0_monotonic": T0}))
    failed = summary(tmp_path, linearizability={"violation": 1})
    failed.save(tmp_path / "summary.json")
    assert Summary.load(tmp_path / "summary.json") == failed
    assert redraw.main([str(tmp_path)]) == 0
    assert "longest linearizable prefix" in (tmp_path / "report.html").read_text()
    assert all((tmp_path / name).stat().st_size > 10_000
               for name in ("latency.png", "throughput.png", "violation.png"))


@pytest.mark.parametrize("value, label", [(b"v1", "put 'v1'"), (None, "delete found")])
def test_op_labels_are_short(value, label):
    kind = "put" if value else "delete"
    assert chaos_plots.op_label(op(0, kind, value, 0, 1, found=None if value else True)) \
        == label
