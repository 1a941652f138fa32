"""The linearizability checker: hand-made histories, generated ones, and a brute-force oracle."""

from __future__ import annotations

import dataclasses
import functools
import random
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkv.check import (
    HistoryFormatError,
    Op,
    Verdict,
    check_history,
    check_key,
    decode_op,
    encode_op,
    load_history,
    save_history,
)

K = b"k"


def put(
    p: int, value: bytes, start: float, end: float | None, outcome: str = "ok", key: bytes = K
) -> Op:
    return Op(p, "put", key, value, outcome, start, end)


def get(
    p: int,
    value: bytes | None,
    start: float,
    end: float | None,
    outcome: str = "ok",
    key: bytes = K,
) -> Op:
    return Op(p, "get", key, value, outcome, start, end)


def delete(p: int, found: bool | None, start: float, end: float | None, outcome: str = "ok") -> Op:
    return Op(p, "delete", K, None, outcome, start, end, found)


def linearizable(*ops: Op) -> bool:
    result = check_key(list(ops))
    assert result.verdict is not Verdict.UNDECIDED
    return result.linearizable


# --------------------------------------------------------------------------- hand-made


def test_sequential_history_is_linearizable() -> None:
    assert linearizable(
        get(0, None, 0, 1),
        put(0, b"1", 2, 3),
        get(1, b"1", 4, 5),
        delete(1, True, 6, 7),
        get(0, None, 8, 9),
        delete(0, False, 10, 11),
    )


def test_get_overlapping_a_put_may_see_the_old_value() -> None:
    assert linearizable(put(0, b"1", 0, 1), put(0, b"2", 2, 6), get(1, b"1", 3, 4))


def test_get_overlapping_a_put_may_see_the_new_value() -> None:
    assert linearizable(put(0, b"1", 0, 1), put(0, b"2", 2, 6), get(1, b"2", 3, 4))


def test_concurrent_puts_may_take_effect_in_either_order() -> None:
    first = (put(0, b"1", 0, 5), put(1, b"2", 1, 4))
    assert linearizable(*first, get(2, b"1", 6, 7))
    assert linearizable(*first, get(2, b"2", 6, 7))


def test_ops_that_touch_in_time_count_as_concurrent() -> None:
    assert linearizable(put(0, b"1", 0, 2), get(1, None, 2, 3))


def test_stale_read_after_a_completed_put_is_a_violation() -> None:
    result = check_key([put(0, b"1", 0, 1), put(0, b"2", 2, 3), get(1, b"1", 4, 5)])
    assert result.verdict is Verdict.VIOLATION
    assert "was overwritten by p0 put b'2'" in result.explain()


def test_read_of_a_value_never_written_is_a_violation() -> None:
    result = check_key([put(0, b"1", 0, 1), get(1, b"9", 2, 3)])
    assert result.verdict is Verdict.VIOLATION
    assert result.stuck == get(1, b"9", 2, 3)
    assert "no put ever wrote that value" in result.explain()


def test_read_going_back_to_an_older_value_is_a_violation() -> None:
    # The put of 2 is still in flight, so either value alone is fine, but not 2 then 1.
    assert not linearizable(
        put(0, b"1", 0, 1), put(0, b"2", 2, 10), get(1, b"2", 3, 4), get(2, b"1", 5, 6)
    )
    assert linearizable(
        put(0, b"1", 0, 1), put(0, b"2", 2, 10), get(1, b"1", 3, 4), get(2, b"2", 5, 6)
    )


def test_unknown_put_may_take_effect_long_after_it_timed_out() -> None:
    assert linearizable(put(0, b"1", 0, None, "unknown"), get(1, None, 5, 6), get(1, b"1", 50, 51))


def test_unknown_put_may_never_take_effect() -> None:
    assert linearizable(put(0, b"1", 0, None, "unknown"), get(1, None, 5, 6), get(1, None, 50, 51))


def test_unknown_put_cannot_be_seen_before_it_started() -> None:
    assert not linearizable(get(1, b"1", 0, 1), put(0, b"1", 2, None, "unknown"))


def test_unknown_put_takes_effect_at_most_once() -> None:
    assert not linearizable(
        put(0, b"1", 0, None, "unknown"), get(1, b"1", 1, 2), put(1, b"2", 3, 4), get(1, b"1", 5, 6)
    )


def test_unknown_delete_may_take_effect_late() -> None:
    assert linearizable(
        put(0, b"1", 0, 1),
        delete(1, None, 2, None, "unknown"),
        get(0, b"1", 3, 4),
        get(0, None, 5, 6),
    )


def test_unread_put_may_land_just_before_an_unknown_put_takes_effect() -> None:
    # put 2 is never read, yet must come before the late unknown put of 1.
    assert linearizable(
        put(0, b"2", 6, 8),
        put(1, b"1", 6, None, "unknown"),
        get(2, b"1", 6, 8),
        get(3, b"1", 9, 11),
        put(4, b"2", 7, 13),
    )


def test_unknown_get_is_ignored() -> None:
    assert linearizable(put(0, b"1", 0, 1), get(1, b"zzz", 2, None, "unknown"))


def test_failed_put_whose_value_is_read_is_a_violation() -> None:
    result = check_key([put(0, b"1", 0, 1, "fail"), get(1, b"1", 2, 3)])
    assert not result.linearizable
    assert "only a failed put wrote that value" in result.explain()


def test_delete_not_found_while_a_value_is_present_is_a_violation() -> None:
    assert not linearizable(put(0, b"1", 0, 1), delete(1, False, 2, 3))


def test_delete_found_needs_no_value_present() -> None:
    # Our delete reads then writes a tombstone, so "found" over an absent key is allowed.
    assert linearizable(delete(0, True, 0, 1), get(1, None, 2, 3))


def test_result_gives_a_witness_order_when_linearizable() -> None:
    ops = [put(0, b"1", 0, 10), get(1, None, 1, 2), get(1, b"1", 3, 4)]
    result = check_key(ops)
    assert result.linearization == (ops[1], ops[0], ops[2])


def test_explanation_shows_longest_prefix_and_the_op_that_could_not_be_placed() -> None:
    result = check_key([put(0, b"1", 0, 1), put(0, b"2", 2, 3), get(1, b"1", 4, 5)])
    assert result.linearization == (put(0, b"1", 0, 1), put(0, b"2", 2, 3))
    assert result.state == b"2"
    text = result.explain()
    assert "longest linearizable prefix: 2 ops, leaving the register b'2'" in text
    assert "returned b'1', but the register holds b'2'" in text


def test_step_budget_gives_undecided_instead_of_hanging() -> None:
    # Twelve concurrent puts, each read while all are in flight: thousands of orders to rule out.
    ops = [put(p, bytes([p]), 0, 100) for p in range(12)]
    ops += [get(p, bytes([p]), 0, 100) for p in range(12)]
    ops.append(get(0, b"none", 101, 102))
    result = check_key(ops, max_steps=500)
    assert result.verdict is Verdict.UNDECIDED
    assert not result.linearizable


def test_check_key_rejects_mixed_keys() -> None:
    with pytest.raises(ValueError):
        check_key([put(0, b"1", 0, 1), put(0, b"1", 0, 1, key=b"other")])


# --------------------------------------------------------------------------- whole histories


def test_keys_are_checked_independently() -> None:
    result = check_history(
        [
            put(0, b"1", 0, 1, key=b"a"),
            get(1, b"1", 2, 3, key=b"b"),  # b was never written
            get(1, b"1", 4, 5, key=b"a"),
        ]
    )
    assert not result.ok
    assert [r.key for r in result.violations] == [b"b"]
    assert result.per_key[b"a"].linearizable


def test_smallest_violation_is_the_failing_key_with_fewest_ops() -> None:
    big = [
        put(0, b"1", 0, 1, key=b"big"),
        put(0, b"2", 2, 3, key=b"big"),
        get(0, b"1", 4, 5, key=b"big"),
    ]
    small = [get(0, b"x", 0, 1, key=b"small")]
    result = check_history(big + small + [get(0, None, 0, 1, key=b"fine")])
    assert {r.key for r in result.violations} == {b"big", b"small"}
    smallest = result.smallest_violation()
    assert smallest is not None and smallest.key == b"small"
    assert "key b'small': violation" in result.summary()


def test_empty_history_is_ok() -> None:
    result = check_history([])
    assert result.ok and result.smallest_violation() is None


# --------------------------------------------------------------------------- generated


@dataclasses.dataclass
class _InFlight:
    kind: str
    value: bytes | None
    start: float
    took_effect: bool = False
    read: bytes | None = None  # what a get saw
    found: bool | None = None  # what a delete saw


def run_register(rng: random.Random, n_ops: int, processes: int, faults: bool = True) -> list[Op]:
    """A history of clients driving one real register: linearizable by construction.

    Each op takes effect at one instant between its invocation and completion;
    timed-out writes may take effect later or never, failed ops never do.
    """
    state: bytes | None = None
    now = 0.0
    fresh = count()
    in_flight: dict[int, _InFlight] = {}
    ghosts: list[_InFlight] = []  # timed-out writes that may still take effect
    history: list[Op] = []
    issued = 0
    while issued < n_ops or in_flight:
        now += rng.choice((0.0, 0.5, 1.0))
        roll = rng.random()
        idle = [p for p in range(processes) if p not in in_flight]
        if idle and issued < n_ops and roll < 0.4:
            kind = rng.choice(("put", "put", "get", "get", "delete"))
            value = f"v{next(fresh)}".encode() if kind == "put" else None
            in_flight[rng.choice(idle)] = _InFlight(kind, value, now)
            issued += 1
            continue
        if not in_flight:
            continue
        waiting = [op for op in in_flight.values() if not op.took_effect] + ghosts
        if waiting and roll < 0.75:
            op = rng.choice(waiting)
            op.took_effect = True
            if op in ghosts:
                ghosts.remove(op)
            if op.kind == "put":
                state = op.value
            elif op.kind == "get":
                op.read = state
            else:
                op.found, state = state is not None, None
            continue
        p = rng.choice(sorted(in_flight))
        op = in_flight[p]
        fault = rng.random() if faults else 1.0
        if fault < 0.08:
            history.append(Op(p, op.kind, K, op.value, "unknown", op.start, None))
            if not op.took_effect and op.kind != "get" and rng.random() < 0.5:
                ghosts.append(op)
        elif fault < 0.12 and not op.took_effect:
            history.append(Op(p, op.kind, K, op.value, "fail", op.start, now))
        elif op.took_effect:
            value = op.read if op.kind == "get" else op.value
            history.append(Op(p, op.kind, K, value, "ok", op.start, now, op.found))
        else:
            continue
        del in_flight[p]
    return history


def corrupt_one_get(rng: random.Random, history: list[Op]) -> list[Op] | None:
    gets = [i for i, op in enumerate(history) if op.kind == "get" and op.outcome == "ok"]
    if not gets:
        return None
    i = rng.choice(gets)
    return (
        history[:i] + [dataclasses.replace(history[i], value=b"never-written")] + history[i + 1 :]
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.integers(1, 60), st.integers(1, 6))
def test_histories_of_a_real_register_pass_and_fail_once_corrupted(
    rng: random.Random, n_ops: int, processes: int
) -> None:
    history = run_register(rng, n_ops, processes)
    result = check_key(history)
    assert result.linearizable, result.explain()
    corrupted = corrupt_one_get(rng, history)
    if corrupted is not None:
        assert check_key(corrupted).verdict is Verdict.VIOLATION


def test_long_concurrent_history_is_checked_without_blowup() -> None:
    rng = random.Random(7)
    history = run_register(rng, 1000, 10)
    result = check_key(history)
    assert result.linearizable
    assert result.steps < 20 * len(history)
    corrupted = corrupt_one_get(rng, history)
    assert corrupted is not None
    assert check_key(corrupted).verdict is Verdict.VIOLATION


def test_long_sequential_history_with_a_late_violation_is_linear_work() -> None:
    history = [put(0, str(i).encode(), 2 * i, 2 * i + 1) for i in range(5000)]
    history.append(get(1, b"0", 10_000, 10_001))
    result = check_key(history)
    assert result.verdict is Verdict.VIOLATION
    assert result.steps < 3 * len(history)
    assert len(result.linearization) == 5000


# --------------------------------------------------------------------------- brute-force oracle


def brute_force(ops: list[Op]) -> bool:
    """Try every order of the ok ops and of any subset of the unknown writes: the definition."""
    required = [op for op in ops if op.outcome == "ok"]
    optional = [op for op in ops if op.outcome == "unknown" and op.kind != "get"]
    candidates = required + optional

    def step(op: Op, state: bytes | None) -> tuple[bool, bytes | None]:
        if op.kind == "put":
            return True, op.value
        if op.kind == "get":
            return op.value == state, state
        if op.outcome == "ok" and op.found is False:
            return state is None, state
        return True, None

    @functools.cache
    def search(placed: frozenset[int], state: bytes | None) -> bool:
        if all(i in placed for i in range(len(required))):
            return True
        for i, op in enumerate(candidates):
            if i in placed:
                continue
            if any(
                j not in placed and j != i and other.end < op.start  # type: ignore[operator]
                for j, other in enumerate(required)
            ):
                continue
            ok, after = step(op, state)
            if ok and search(placed | {i}, after):
                return True
        return False

    return search(frozenset(), None)


@st.composite
def small_histories(draw: st.DrawFn) -> list[Op]:
    ops = []
    for p in range(draw(st.integers(0, 9))):
        kind = draw(st.sampled_from(("put", "put", "get", "get", "delete")))
        outcome = draw(st.sampled_from(("ok", "ok", "ok", "ok", "unknown", "fail")))
        start = draw(st.integers(0, 10))
        end = None if outcome == "unknown" else start + draw(st.integers(0, 4))
        written = st.sampled_from((b"a", b"b", b"c"))
        value = (
            draw(written) if kind == "put" else draw(st.none() | written) if kind == "get" else None
        )
        found = draw(st.booleans()) if kind == "delete" and outcome == "ok" else None
        ops.append(
            Op(p, kind, K, value, outcome, float(start), None if end is None else float(end), found)
        )
    return ops


@settings(max_examples=1000, deadline=None)
@given(small_histories())
def test_checker_agrees_with_brute_force(ops: list[Op]) -> None:
    assert check_key(ops).linearizable == brute_force(ops)


# --------------------------------------------------------------------------- JSON lines

ops_strategy = st.builds(
    Op,
    process=st.integers(0, 1000),
    kind=st.just("put"),
    key=st.binary(max_size=8),
    value=st.binary(max_size=8),
    outcome=st.sampled_from(("ok", "fail")),
    start=st.floats(0, 1e6),
    end=st.just(2e6),
) | st.builds(
    Op,
    process=st.integers(0, 1000),
    kind=st.sampled_from(("get", "delete")),
    key=st.binary(max_size=8),
    value=st.none() | st.binary(max_size=8),
    outcome=st.just("unknown"),
    start=st.floats(0, 1e6),
    end=st.none(),
    found=st.none() | st.booleans(),
)


@given(ops_strategy)
def test_any_op_survives_a_json_line_round_trip(op: Op) -> None:
    assert decode_op(encode_op(op)) == op


def test_history_file_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ops = [
        put(0, b"\x00\xff bytes \n", 0.25, 1.5),
        get(1, None, 0.5, 2.0),
        delete(2, False, 3.0, 4.0),
        put(3, b"late", 5.0, None, "unknown"),
        get(4, b"x", 5.0, 6.0, "fail", key=b"\xe9"),
    ]
    path = tmp_path / "history.jsonl"
    save_history(ops, path)
    assert load_history(path) == ops
    assert check_history(load_history(path)) == check_history(ops)


def test_malformed_history_line_names_the_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "history.jsonl"
    path.write_text(encode_op(put(0, b"1", 0, 1)) + "\n\n" + '{"process": 1, "kind": "jump"}\n')
    with pytest.raises(HistoryFormatError, match=r"history.jsonl:3"):
        load_history(path)
