"""Recording what clients saw: invoke/done messages become checkable ops."""

from __future__ import annotations

import multiprocessing

from zkv.chaos.workload import HistoryRecorder, KeySpace, outcome_of
from zkv.check import load_history
from zkv.errors import InvalidRequest, KeyNotFound, Unavailable


def test_outcomes_follow_what_the_client_can_know():
    assert outcome_of("get", None) == ("ok", None)
    assert outcome_of("get", Unavailable("x")) == ("fail", None)
    assert outcome_of("put", None) == ("ok", None)
    assert outcome_of("put", Unavailable("timed out")) == ("unknown", None)
    assert outcome_of("put", TimeoutError()) == ("unknown", None)
    assert outcome_of("put", InvalidRequest("too big")) == ("fail", None)
    assert outcome_of("delete", None) == ("ok", True)
    assert outcome_of("delete", KeyNotFound("k")) == ("ok", False)
    assert outcome_of("delete", Unavailable("x")) == ("unknown", None)


def test_completed_ops_are_written_as_json_lines_the_checker_loads(tmp_path):
    path = tmp_path / "history.jsonl"
    recorder = HistoryRecorder(path)
    recorder.take(("invoke", (0, 1), 0, "put", b"k", b"0:1", 1.0))
    recorder.take(("invoke", (1, 1), 1, "get", b"k", None, 1.1))
    recorder.take(("done", (0, 1), "ok", b"0:1", 1.5, None))
    recorder.take(("done", (1, 1), "ok", b"0:1", 1.6, None))
    recorder.take(("invoke", (1, 2), 1, "delete", b"k", None, 2.0))
    recorder.take(("done", (1, 2), "ok", None, 2.1, False))
    recorder.close()
    ops = load_history(path)
    assert [(o.kind, o.value, o.outcome, o.found) for o in ops] == [
        ("put", b"0:1", "ok", None), ("get", b"0:1", "ok", None),
        ("delete", None, "ok", False)]


def test_an_op_whose_outcome_never_came_is_recorded_as_unknown(tmp_path):
    recorder = HistoryRecorder(tmp_path / "h.jsonl")
    recorder.take(("invoke", (2, 7), 2, "put", b"k", b"2:7", 3.0))
    recorder.take(("invoke", (3, 1), 3, "get", b"k", None, 3.0))
    assert recorder.abandon_open() == 2
    recorder.close()
    put, get = sorted(load_history(tmp_path / "h.jsonl"), key=lambda o: o.kind, reverse=True)
    assert (put.kind, put.value, put.outcome, put.end) == ("put", b"2:7", "unknown", None)
    assert (get.kind, get.outcome) == ("get", "unknown")


def test_messages_from_worker_processes_are_drained_from_their_queue(tmp_path):
    queue = multiprocessing.get_context("spawn").Queue()
    queue.put(("invoke", (0, 1), 0, "get", b"k", None, 1.0))
    queue.put(("done", (0, 1), "fail", None, 2.0, None))
    recorder = HistoryRecorder(tmp_path / "h.jsonl")
    import time

    deadline = time.monotonic() + 5
    while not recorder.ops and time.monotonic() < deadline:
        recorder.drain(queue)
    assert [(o.kind, o.outcome) for o in recorder.ops] == [("get", "fail")]


def test_keys_rotate_so_each_history_stays_small():
    space = KeySpace("p-", slots=3, lifetime=10.0, t0=100.0)
    assert space.key(0, 100.0) == b"p-0.0"
    assert space.key(0, 109.9) == b"p-0.0"
    assert space.key(0, 110.0) == b"p-0.1"
    assert space.key(1, 106.0) == b"p-1.0" and space.key(1, 107.0) == b"p-1.1"  # staggered
    assert set(space.keys_until(111.0)) >= {space.key(s, t) for s in range(3)
                                             for t in (100.0, 105.0, 111.0)}
