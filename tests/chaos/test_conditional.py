"""Conditional ops and the CAS counter in the chaos workload, without a cluster:
how client answers become ops, the counter's tally and check, lost writes among
conditional ops, and the checker on a long counter history."""

from __future__ import annotations

import io
import random
import threading
import time

import pytest
from rich.console import Console

from zkv.chaos import workload
from zkv.chaos.checks import counter_problem, linearizability, lost_writes, may_write
from zkv.chaos.explain import explain_near_failure
from zkv.chaos.report import CounterReport, Summary, answer_counts, render
from zkv.chaos.workload import (
    CounterTally,
    HistoryRecorder,
    KeySpace,
    WorkloadSpec,
    after,
    counter_main,
    expectation,
    outcome_of,
    worker_main,
)
from zkv.check import Op, check_key, load_history
from zkv.errors import InvalidRequest, KeyExists, KeyNotFound, Unavailable

K = b"k"
C = b"counter"


# --------------------------------------------------------------------------- outcomes


def test_conditional_answers_become_ok_ops_with_found():
    # create: created = ok, precondition (the key present) not found; exists = found
    assert outcome_of("create", None) == ("ok", False)
    assert outcome_of("create", KeyExists("k")) == ("ok", True)
    assert outcome_of("update", None) == ("ok", True)
    assert outcome_of("update", KeyNotFound("k")) == ("ok", False)
    assert outcome_of("delete", None) == ("ok", True)
    assert outcome_of("delete", KeyNotFound("k")) == ("ok", False)
    assert outcome_of("cas", None, True) == ("ok", True)
    assert outcome_of("cas", None, False) == ("ok", False)


def test_conditional_ops_that_may_have_landed_are_unknown_and_refusals_fail():
    for kind in ("create", "update", "delete", "cas"):
        assert outcome_of(kind, Unavailable("outcome unknown")) == ("unknown", None)
        assert outcome_of(kind, TimeoutError()) == ("unknown", None)
        assert outcome_of(kind, InvalidRequest("too big")) == ("fail", None)
    assert outcome_of("create", KeyNotFound("k")) == ("unknown", None)  # not its answer
    assert outcome_of("update", KeyExists("k")) == ("unknown", None)
    assert outcome_of("cas", None, None) == ("unknown", None)  # a cas answers True or False


def test_recorded_conditional_ops_carry_found_expected_and_value(tmp_path):
    recorder = HistoryRecorder(tmp_path / "h.jsonl")
    msgs = [
        ("invoke", (0, 1), 0, "create", K, b"0:1", 1.0, None), ("done", (0, 1), "ok", b"0:1",
                                                                1.1, False),
        ("invoke", (0, 2), 0, "cas", K, b"0:2", 2.0, b"0:1"), ("done", (0, 2), "ok", b"0:2",
                                                                2.1, True),
        ("invoke", (0, 3), 0, "cas", K, None, 3.0, b"zz"), ("done", (0, 3), "ok", None, 3.1,
                                                             False),
        ("invoke", (0, 4), 0, "update", K, b"0:4", 4.0, None), ("done", (0, 4), "unknown",
                                                                b"0:4", 4.5, None),
        ("invoke", (1, 1), 4, "cas", K, None, 5.0, b"0:2"),  # never answered
    ]
    for message in msgs:
        recorder.take(message)
    assert recorder.abandon_open() == 1
    recorder.close()
    ops = load_history(tmp_path / "h.jsonl")
    assert [(o.kind, o.value, o.outcome, o.found, o.expected, o.end) for o in ops] == [
        ("create", b"0:1", "ok", False, None, 1.1),
        ("cas", b"0:2", "ok", True, b"0:1", 2.1),
        ("cas", None, "ok", False, b"zz", 3.1),
        ("update", b"0:4", "unknown", None, None, None),
        ("cas", None, "unknown", None, b"0:2", None),
    ]
    assert linearizability(ops).ok


def test_old_style_invoke_messages_still_record(tmp_path):
    recorder = HistoryRecorder(tmp_path / "h.jsonl")
    recorder.take(("invoke", (0, 1), 0, "put", K, b"0:1", 1.0))
    op = recorder.take(("done", (0, 1), "ok", b"0:1", 1.5, None))
    recorder.close()
    assert (op.kind, op.value, op.expected) == ("put", b"0:1", None)


def test_a_worker_expects_what_it_last_saw_and_sometimes_something_else():
    assert after("get", "ok", None, b"a", None, None) == b"a"
    assert after("create", "ok", True, None, b"new", b"old") == b"old"  # exists: not told
    assert after("create", "ok", False, None, b"new", None) == b"new"
    assert after("update", "ok", False, None, b"new", b"old") is None
    assert after("cas", "ok", False, None, b"new", b"old") == b"old"
    assert after("cas", "ok", True, None, None, b"old") is None  # a cas that deletes
    assert after("put", "unknown", None, None, b"new", b"old") == b"old"
    rng = random.Random(3)
    seen = {K: b"last", b"other": b"o"}
    picks = [expectation(rng, K, seen, 7) for _ in range(500)]
    assert 0.7 < picks.count(b"last") / len(picks) < 0.9
    assert set(picks) - {b"last"} <= {None, b"7:never", b"o"}
    assert expectation(random.Random(0), b"fresh", {}, 1) in (None, b"1:never")


def test_a_share_of_the_would_be_puts_become_conditional():
    spec = WorkloadSpec(KeySpace("p", 3, 10.0, 0.0), ("a",), 10.0, conditional_ratio=0.3)
    rng = random.Random(1)
    kinds = [spec.choose(rng, 1.0)[0] for _ in range(20_000)]
    writes = [k for k in kinds if k in ("put", "create", "update", "cas")]
    share = sum(k != "put" for k in writes) / len(writes)
    assert 0.27 < share < 0.33
    assert {k for k in kinds} == {"get", "put", "delete", "create", "update", "cas"}
    plain = WorkloadSpec(KeySpace("p", 3, 10.0, 0.0), ("a",), 10.0)
    assert {plain.choose(rng, 1.0)[0] for _ in range(2000)} == {"get", "put", "delete"}


# --------------------------------------------------------------------------- the counter


def cas(expected: bytes | None, value: bytes, outcome: str = "ok", found: bool | None = True,
        start: float = 1.0, end: float | None = 2.0, process: int = 1, key: bytes = C) -> Op:
    return Op(process, "cas", key, value, outcome, start, end if outcome != "unknown" else None,
              found if outcome == "ok" else None, expected)


def get(value: bytes | None, start: float = 0.0, end: float = 0.5, outcome: str = "ok",
        key: bytes = C, process: int = 1) -> Op:
    return Op(process, "get", key, value if outcome == "ok" else None, outcome, start, end)


def test_the_tally_counts_what_the_counters_cas_ops_were_told():
    ops = [get(None), cas(None, b"1"), get(b"1"), cas(b"1", b"2", found=False),
           cas(b"1", b"2", outcome="unknown"), get(None, outcome="fail"),
           cas(b"1", b"2", outcome="fail", found=None), get(b"1", key=K),
           cas(None, b"x", key=K), get(b"1", process=workload.FINAL_READER)]
    tally = CounterTally.of(ops, C)
    assert (tally.reads, tally.reads_ok, tally.cas, tally.acked, tally.conflicts,
            tally.unknown, tally.failed) == (3, 2, 4, 1, 1, 1, 1)
    assert tally.ops == 7


@pytest.mark.parametrize(("final", "holds"), [
    (None, False), (b"1", False), (b"2", True), (b"3", True), (b"5", True), (b"6", False),
    (b"x", False)])
def test_the_final_count_must_lie_between_acked_and_acked_plus_unknown(final, holds):
    tally = CounterTally(acked=2, unknown=3)
    assert tally.explains(final) is holds
    problem = counter_problem(tally, C, get(final, 100, 101))
    assert (problem is None) is holds
    if final == b"1":
        assert "1 acknowledged increment(s) lost" in problem
    if final == b"6":
        assert "1 increment(s) more than were attempted" in problem


def test_absent_counts_as_zero_and_a_missing_final_read_is_a_problem():
    assert CounterTally().explains(None)
    assert counter_problem(CounterTally(), C, get(None, 9, 10)) is None
    assert "no final quorum read" in counter_problem(CounterTally(), C, None)


def atomic_counter_history(ops: int, workers: int = 2, seed: int = 1,
                           p_unknown: float = 0.02) -> tuple[list[Op], bytes | None]:
    """A counter that is linearizable by construction: each op takes effect at a
    random point of its interval; an unknown cas takes effect or not."""
    rng = random.Random(seed)
    clock = [rng.uniform(0, 0.01) for _ in range(workers)]
    process = list(range(workers))
    reading = [True] * workers
    seen: list[bytes | None] = [None] * workers
    planned = []
    for _ in range(ops):
        w = min(range(workers), key=clock.__getitem__)
        start = clock[w]
        end = start + rng.uniform(0.002, 0.01)
        planned.append((rng.uniform(start, end), w, reading[w], start, end))
        clock[w] = end + rng.uniform(0, 0.005)
        reading[w] = not reading[w]
    state, history = None, []
    for _, w, read, start, end in sorted(planned):
        if read:
            seen[w] = state
            history.append(get(state, start, end, process=process[w]))
            continue
        n = int(seen[w]) if seen[w] else 0
        value = b"%d" % (n + 1)
        unknown = rng.random() < p_unknown
        took = state == seen[w] and (not unknown or rng.random() < 0.5)
        if took:
            state = value
        if unknown:
            history.append(cas(seen[w], value, "unknown", None, start, None, process[w]))
            process[w] += workers
        else:
            history.append(cas(seen[w], value, "ok", took, start, end, process[w]))
    return history, state


def test_a_long_counter_history_checks_in_steps_linear_in_its_length():
    history, state = atomic_counter_history(20_000)
    tally = CounterTally.of(history, C)
    assert tally.acked > 1000 and tally.conflicts > 100 and tally.unknown > 50
    assert tally.explains(state)
    result = check_key(history + [get(state, 1e6, 1e6 + 1)], max_steps=None)
    assert result.linearizable
    assert result.steps < 10 * len(history)


def test_a_lost_increment_is_found_and_shown_near_where_it_fails():
    history, state = atomic_counter_history(2_000, p_unknown=0.0)
    n = int(state)
    # One more acknowledged increment after everything, then a final read that misses it.
    history += [cas(state, b"%d" % (n + 1), start=1e3, end=1e3 + 1, process=99),
                get(state, 1e3 + 2, 1e3 + 3, process=workload.FINAL_READER)]
    result = check_key(history, max_steps=None)
    assert not result.linearizable
    text = explain_near_failure(result, limit=50)
    assert f"({len(history)} ops" in text
    assert len(text.splitlines()) < 100
    assert f"cas b'{n}' -> b'{n + 1}'" in text
    tally = CounterTally.of(history, C)
    assert not tally.explains(state)


# --------------------------------------------------------------------------- lost writes


def op(kind: str, value: bytes | None, start: float, end: float | None, outcome: str = "ok",
       found: bool | None = None, expected: bytes | None = None) -> Op:
    return Op(1, kind, K, value, outcome, start, end if outcome != "unknown" else None,
              found if outcome == "ok" else None, expected)


def final(value: bytes | None) -> Op:
    return Op(99, "get", K, value, "ok", 100.0, 100.1)


def test_an_ok_conditional_op_wrote_only_when_its_precondition_was_as_required():
    assert may_write(op("create", b"a", 1, 2, found=False))
    assert not may_write(op("create", b"a", 1, 2, found=True))  # exists
    assert may_write(op("update", b"a", 1, 2, found=True))
    assert not may_write(op("update", b"a", 1, 2, found=False))
    assert may_write(op("cas", b"a", 1, 2, found=True, expected=None))
    assert not may_write(op("cas", b"a", 1, 2, found=False, expected=None))
    assert may_write(op("cas", b"a", 1, None, outcome="unknown", expected=b"x"))
    assert not may_write(op("cas", b"a", 1, 2, outcome="fail", expected=b"x"))


def test_lost_conditional_writes():
    created = op("create", b"a", 1, 2, found=False)
    updated = op("update", b"b", 3, 4, found=True)
    assert lost_writes([created, updated], {K: final(b"b")}) == []
    (lost,) = lost_writes([created, updated], {K: final(b"a")})
    assert lost.write == updated
    # An update that found nothing wrote nothing: the create's value may stay.
    missed = op("update", b"b", 3, 4, found=False)
    assert lost_writes([created, missed], {K: final(b"a")}) == []
    # A cas that was told False wrote nothing; one told True did.
    refused = op("cas", b"c", 5, 6, found=False, expected=b"zz")
    assert lost_writes([created, refused], {K: final(b"a")}) == []
    swapped = op("cas", b"c", 5, 6, found=True, expected=b"a")
    assert lost_writes([created, swapped], {K: final(b"a")})[0].write == swapped
    # A value written only by a create that found the key present was never written.
    exists = op("create", b"z", 1, 2, found=True)
    assert "nobody wrote" in lost_writes([created, exists], {K: final(b"z")})[0].explain()


def test_a_cas_that_deletes_is_a_delete_for_lost_writes():
    put = op("put", b"a", 1, 2)
    erase = op("cas", None, 3, 4, found=True, expected=b"a")
    assert lost_writes([put, erase], {K: final(None)}) == []
    later = op("put", b"b", 5, 6)
    assert lost_writes([put, erase, later], {K: final(None)})[0].write == later
    unknown = op("cas", None, 4.5, None, outcome="unknown", expected=b"b")
    assert lost_writes([put, later, unknown], {K: final(None)}) == []  # it may come last
    refused = op("cas", None, 7, 8, found=False, expected=b"a")
    assert [w.write for w in lost_writes([put, later, refused], {K: final(None)})] == [put, later]


# --------------------------------------------------------------------------- report


def test_the_report_shows_answers_and_the_counter():
    ops = [op("cas", b"a", 1, 2, found=True), op("cas", b"b", 1, 2, found=False),
           op("create", b"c", 1, 2, found=True), op("delete", None, 1, 2, found=False)]
    answers = answer_counts(ops)
    assert answers == {"cas": {"true": 1, "false": 1}, "create": {"exists": 1},
                       "delete": {"not found": 1}}
    counter = CounterReport(key="c", workers=2, ops=10, reads=5, reads_ok=5, cas=5, acked=3,
                            conflicts=1, unknown=1, failed=0, final=4, final_read=True,
                            holds=True, linearizability="linearizable")
    summary = Summary(duration=1, nodes=3, network="loopback", clients=1, keys=2,
                      ops={"cas": {"ok": 2}, "create": {"ok": 1}, "delete": {"ok": 1}},
                      faults={}, fault_kinds=[], skipped_faults={}, availability=1.0,
                      availability_during_faults=None, availability_outside_faults=1.0,
                      availability_by_fault={}, linearizability={"linearizable": 2},
                      lost_writes=0, placement_problems=0, unreadable_keys=0, settled=True,
                      answers=answers, counter=counter)
    assert summary.total_ops == 14
    out = io.StringIO()
    render(summary, Console(file=out, width=160))
    text = out.getvalue()
    assert "1 true, 1 false" in text and "1 exists, 0 created" in text
    assert "3 <= 4 <= 4: holds" in text and "cas conflicts (False)" in text


# --------------------------------------------------------------------------- workers


class AtomicStore:
    """An in-memory store with the client's API, for running the workers here."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.lock = threading.Lock()

    def client(self, seeds, timeout=1.0):  # Client's signature
        return _FakeClient(self)


class _FakeClient:
    def __init__(self, store: AtomicStore) -> None:
        self.s = store

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def get(self, key):
        with self.s.lock:
            return self.s.data.get(key)

    def put(self, key, value):
        with self.s.lock:
            self.s.data[key] = value

    def delete(self, key):
        with self.s.lock:
            if key not in self.s.data:
                raise KeyNotFound(key)
            del self.s.data[key]

    def create(self, key, value):
        with self.s.lock:
            if key in self.s.data:
                raise KeyExists(key)
            self.s.data[key] = value

    def update(self, key, value):
        with self.s.lock:
            if key not in self.s.data:
                raise KeyNotFound(key)
            self.s.data[key] = value

    def cas(self, key, expected, value):
        with self.s.lock:
            if self.s.data.get(key) != expected:
                return False
            if value is None:
                self.s.data.pop(key, None)
            else:
                self.s.data[key] = value
            return True


class _Events(list):
    put = list.append


def test_workers_and_counters_record_a_checkable_history(tmp_path, monkeypatch):
    import zkv.client

    store = AtomicStore()
    monkeypatch.setattr(zkv.client, "Client", store.client)
    t0 = time.monotonic()
    spec = WorkloadSpec(KeySpace("k", 2, 100.0, t0), ("x",), t0 + 0.6, think=(0.0, 0.001),
                        conditional_ratio=0.5, counter_key=C, seed=5)
    events, stop = _Events(), threading.Event()
    threads = [threading.Thread(target=worker_main, args=(i, 4, spec, events, stop))
               for i in range(2)]
    threads += [threading.Thread(target=counter_main, args=(i, 4, spec, events, stop))
                for i in range(2, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    recorder = HistoryRecorder(tmp_path / "h.jsonl")
    for message in list(events):
        recorder.take(message)
    recorder.close()
    ops = recorder.ops
    kinds = {o.kind for o in ops if o.key != C}
    assert kinds == {"get", "put", "delete", "create", "update", "cas"}
    assert answer_counts(ops)["cas"].get("true") and answer_counts(ops)["cas"].get("false")
    tally = CounterTally.of(ops, C)
    assert tally.acked > 10 and tally.unknown == 0
    assert tally.explains(store.data.get(C)) and int(store.data[C]) == tally.acked
    finals = [Op(workload.FINAL_READER, "get", k, store.data.get(k), "ok", 1e9, 1e9 + 1)
              for k in sorted({o.key for o in ops})]
    result = linearizability(ops + finals)
    assert result.ok, result.summary()
    assert lost_writes(ops, {f.key: f for f in finals}) == []
    assert load_history(tmp_path / "h.jsonl") == ops
