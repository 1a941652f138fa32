"""The linearizability checker: hand-made histories, generated ones, and a brute-force oracle."""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import random
from itertools import count
from typing import Any

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
    describe,
    encode_op,
    load_history,
    save_history,
)
from zkv.check.search import RELAXED_SHARE, _RegisterSearch, is_register, relaxed_effect

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


def create(
    p: int, value: bytes, found: bool | None, start: float, end: float | None, outcome: str = "ok"
) -> Op:
    """``found``: True is the reply "exists", False "created"."""
    return Op(p, "create", K, value, outcome, start, end, found)


def update(
    p: int, value: bytes, found: bool | None, start: float, end: float | None, outcome: str = "ok"
) -> Op:
    """``found``: True is "updated", False the reply "not_found"."""
    return Op(p, "update", K, value, outcome, start, end, found)


def cas(
    p: int,
    expected: bytes | None,
    value: bytes | None,
    found: bool | None,
    start: float,
    end: float | None,
    outcome: str = "ok",
) -> Op:
    """``found``: True is "swapped", False "condition failed"."""
    return Op(p, "cas", K, value, outcome, start, end, found, expected)


def unknown(op: Op) -> Op:
    """The op, timed out."""
    return dataclasses.replace(op, outcome="unknown", end=None, found=None)


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
    assert "no op ever wrote that value" in result.explain()


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


def test_delete_found_needs_a_value_present() -> None:
    # The store decides a delete by consensus: "found" means the key was present.
    assert not linearizable(delete(0, True, 0, 1), get(1, None, 2, 3))
    assert linearizable(put(0, b"1", 0, 1), delete(0, True, 2, 3), get(1, None, 4, 5))


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


# --------------------------------------------------------------------------- conditional ops


def test_create_writes_only_on_an_absent_key_and_exists_needs_it_present() -> None:
    assert linearizable(
        create(0, b"x", False, 0, 1),
        get(1, b"x", 2, 3),
        create(1, b"y", True, 4, 5),
        get(0, b"x", 6, 7),
    )
    assert not linearizable(create(0, b"x", False, 0, 1), create(1, b"y", False, 2, 3))
    assert not linearizable(create(0, b"x", True, 0, 1))  # "exists" on a key never written
    assert linearizable(put(1, b"a", 0, 2), create(0, b"x", True, 1, 3))


def test_two_concurrent_creates_cannot_both_create() -> None:
    result = check_key([create(0, b"x", False, 0, 5), create(1, b"y", False, 0, 5)])
    assert result.verdict is Verdict.VIOLATION
    assert "requires the key absent, but the register holds" in result.explain()
    # One of them reporting "exists" is fine, and the creator's value is what stays.
    both = (create(0, b"x", False, 0, 5), create(1, b"y", True, 0, 5))
    assert linearizable(*both, get(2, b"x", 6, 7))
    assert not linearizable(*both, get(2, b"y", 6, 7))


def test_update_needs_the_key_present_and_not_found_needs_it_absent() -> None:
    assert not linearizable(update(0, b"x", True, 0, 1))
    assert linearizable(update(0, b"x", False, 0, 1), get(1, None, 2, 3))
    assert linearizable(put(0, b"a", 0, 1), update(1, b"b", True, 2, 3), get(0, b"b", 4, 5))
    assert not linearizable(put(0, b"a", 0, 1), update(1, b"b", False, 2, 3))
    # not_found writes nothing.
    assert not linearizable(update(0, b"x", False, 0, 1), get(1, b"x", 2, 3))


def test_cas_swaps_only_from_the_expected_value() -> None:
    assert linearizable(put(0, b"1", 0, 1), cas(1, b"1", b"2", True, 2, 3), get(0, b"2", 4, 5))
    assert not linearizable(put(0, b"1", 0, 1), cas(1, b"3", b"2", True, 2, 3))
    assert not linearizable(cas(1, b"1", b"2", True, 0, 1))  # nothing ever held 1


def test_cas_from_absent_creates_and_cas_to_none_deletes() -> None:
    assert linearizable(
        cas(0, None, b"1", True, 0, 1),
        get(1, b"1", 2, 3),
        cas(1, b"1", None, True, 4, 5),
        get(0, None, 6, 7),
        delete(0, False, 8, 9),
    )
    assert not linearizable(put(0, b"1", 0, 1), cas(0, None, b"2", True, 2, 3))


def test_failed_cas_whose_expected_value_is_the_only_possible_state_is_a_violation() -> None:
    result = check_key([put(0, b"1", 0, 1), cas(1, b"1", b"2", False, 2, 3)])
    assert result.verdict is Verdict.VIOLATION
    assert "reported b'1' not found, but the register holds b'1'" in result.explain()
    # With another put in flight, the cas may have seen that one.
    assert linearizable(put(0, b"1", 0, 1), put(2, b"9", 1.5, 4), cas(1, b"1", b"2", False, 2, 3))
    # Expecting absent fails only where the key is present.
    assert not linearizable(cas(0, None, b"1", False, 0, 1))


def test_cas_of_a_value_to_itself_is_a_read() -> None:
    assert linearizable(put(0, b"1", 0, 1), cas(1, b"1", b"1", True, 2, 3))
    assert not linearizable(put(0, b"2", 0, 1), cas(1, b"1", b"1", True, 2, 3))


def test_delete_found_is_conditional() -> None:
    # One value, written once, cannot be deleted twice.
    twice = (put(0, b"1", 0, 1), delete(1, True, 2, 5), delete(2, True, 2, 5))
    assert not linearizable(*twice)
    assert linearizable(*twice, put(3, b"2", 2, 5))  # unless something wrote between
    assert linearizable(*twice, put(3, b"2", 2, None, "unknown"))


def test_of_two_writes_of_one_value_the_one_completing_later_may_have_to_go_later() -> None:
    # Only the put of 'a' completing at 10 can follow the put of 'b'.
    assert linearizable(
        put(0, b"a", 0, 1),
        put(1, b"a", 0, 10),
        put(2, b"b", 2, 3),
        get(3, b"a", 4, 5),
    )
    # The same with conditional writes of one effect: two updates to 'a'.
    assert linearizable(
        put(4, b"x", 0, 0),
        update(0, b"a", True, 0, 1),
        update(1, b"a", True, 0, 10),
        put(2, b"b", 2, 3),
        get(3, b"a", 4, 5),
    )


def test_unknown_cas_may_take_effect_late_only_where_its_condition_holds() -> None:
    pending = unknown(cas(1, b"1", b"2", True, 2, 3))
    assert linearizable(put(0, b"1", 0, 1), pending, get(0, b"1", 3, 4), get(0, b"2", 50, 51))
    # Once 3 is in, the cas cannot take effect (and 2 before 3 would be overwritten).
    assert not linearizable(put(0, b"1", 0, 1), pending, put(0, b"3", 3, 4), get(0, b"2", 5, 6))
    # ... until the register holds 1 again.
    assert linearizable(
        put(0, b"1", 0, 1),
        pending,
        put(0, b"3", 3, 4),
        put(0, b"1", 5, 6),
        get(0, b"2", 7, 8),
    )


def test_unknown_cas_takes_effect_at_most_once() -> None:
    pending = unknown(cas(1, b"1", b"2", True, 2, 3))
    assert not linearizable(
        put(0, b"1", 0, 1),
        pending,
        get(0, b"2", 3, 4),
        put(0, b"1", 5, 6),
        get(0, b"2", 7, 8),
    )


def test_unknown_create_takes_effect_only_on_an_absent_key() -> None:
    pending = unknown(create(1, b"2", False, 2, 3))
    assert not linearizable(put(0, b"1", 0, 1), pending, get(0, b"2", 3, 4))
    assert linearizable(put(0, b"1", 0, 1), pending, delete(0, True, 3, 4), get(0, b"2", 5, 6))


def test_unknown_update_takes_effect_only_on_a_present_key() -> None:
    pending = unknown(update(1, b"2", True, 0, 1))
    assert not linearizable(pending, get(0, b"2", 1, 2))
    assert linearizable(pending, put(0, b"1", 1, 2), get(0, b"2", 3, 4))


def test_unknown_write_may_enable_a_conditional_op() -> None:
    # Nothing reads the unknown put's value, yet only it can make the delete find the key.
    assert linearizable(put(0, b"1", 0, None, "unknown"), delete(1, True, 5, 6))
    assert not linearizable(put(0, b"1", 0, None, "fail"), delete(1, True, 5, 6))
    # An unknown create the cas expects: create, then cas.
    assert linearizable(unknown(create(0, b"1", False, 0, 1)), cas(1, b"1", b"2", True, 5, 6))
    # A chain of unknown writes, each enabling the next, before the read that needs the last.
    chain = (unknown(create(0, b"1", False, 0, 1)), unknown(cas(1, b"1", b"2", True, 0, 1)))
    assert linearizable(*chain, get(2, b"2", 5, 6))
    assert not linearizable(*chain, get(2, b"2", 5, 6), get(2, b"1", 7, 8))


def test_failed_conditional_ops_have_no_effect() -> None:
    assert not linearizable(cas(0, None, b"1", None, 0, 1, "fail"), get(1, b"1", 2, 3))
    assert not linearizable(create(0, b"1", None, 0, 1, "fail"), get(1, b"1", 2, 3))


def test_cas_counter_where_two_cas_succeed_from_the_same_value_is_a_violation() -> None:
    reads = (put(0, b"1", 0, 1), get(1, b"1", 2, 3), get(2, b"1", 2, 3))
    one = cas(1, b"1", b"2", True, 4, 6)
    assert linearizable(*reads, one, cas(2, b"1", b"2", False, 4, 6), get(0, b"2", 7, 8))
    result = check_key([*reads, one, cas(2, b"1", b"2", True, 4, 6)])
    assert result.verdict is Verdict.VIOLATION
    assert "requires b'1', but the register holds b'2'" in result.explain()


def test_describe_shows_the_new_kinds_and_their_answers() -> None:
    assert (
        describe(cas(3, b"1", b"2", True, 1.5, 2))
        == "p3 cas b'1' -> b'2' found  ok  [1.500, 2.000]"
    )
    assert (
        describe(cas(3, None, None, False, 1, 2))
        == "p3 cas absent -> absent not found  ok  [1.000, 2.000]"
    )
    assert (
        describe(unknown(cas(3, b"1", None, True, 1, 2)))
        == "p3 cas b'1' -> absent  unknown  [1.000, ?]"
    )
    assert describe(create(1, b"x", True, 0, 1)) == "p1 create b'x' -> exists  ok  [0.000, 1.000]"
    assert describe(create(1, b"x", False, 0, 1)) == "p1 create b'x' -> created  ok  [0.000, 1.000]"
    assert describe(update(1, b"x", True, 0, 1)) == "p1 update b'x' -> updated  ok  [0.000, 1.000]"
    assert (
        describe(update(1, b"x", False, 0, 1)) == "p1 update b'x' -> not found  ok  [0.000, 1.000]"
    )
    assert describe(delete(1, True, 0, 1)) == "p1 delete -> found  ok  [0.000, 1.000]"


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"kind": "incr"}, "kind"),
        ({"kind": "create", "value": None}, "bytes"),
        ({"kind": "update", "value": "text"}, "bytes"),
        ({"kind": "put", "expected": b"1"}, "only a cas"),
        ({"kind": "delete", "value": None, "found": None}, "found"),
        ({"kind": "cas", "found": None}, "found"),
        ({"kind": "create", "found": 1}, "found"),
        ({"kind": "cas", "expected": "1"}, "expected"),
        ({"outcome": "done"}, "outcome"),
    ],
)
def test_malformed_ops_are_rejected_when_made(fields: dict[str, Any], complaint: str) -> None:
    good = Op(0, "update", K, b"v", "ok", 0.0, 1.0, True)
    with pytest.raises(ValueError, match=complaint):
        dataclasses.replace(good, **fields)


def test_well_formed_new_ops_are_accepted() -> None:
    cas(0, None, None, None, 0, None, "unknown")  # expects absent, would delete
    cas(0, b"1", None, True, 0, 1)
    Op(0, "delete", K, None, "unknown", 0.0, None)  # no answer came, so no found
    Op(0, "get", K, b"v", "ok", 0.0, 1.0)  # a get needs no found


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


REGISTER_KINDS = ("put", "put", "get", "get", "delete")
ALL_KINDS = ("put", "get", "get", "delete", "create", "update", "cas", "cas")


@dataclasses.dataclass
class _InFlight:
    kind: str
    value: bytes | None
    start: float
    expected: bytes | None = None  # a cas's
    took_effect: bool = False
    read: bytes | None = None  # what a get saw
    found: bool | None = None  # what a conditional op saw


def apply(op: _InFlight, state: bytes | None) -> bytes | None:
    """Let ``op`` take effect on a real register: record what it saw, return the new state."""
    present = state is not None
    if op.kind == "get":
        op.read = state
        return state
    if op.kind == "put":
        return op.value
    if op.kind == "delete":
        op.found = present
        return None
    if op.kind == "create":
        op.found = present  # "exists"
        return state if present else op.value
    if op.kind == "update":
        op.found = present
        return op.value if present else None
    op.found = state == op.expected
    return op.value if op.found else state


def run_register(
    rng: random.Random,
    n_ops: int,
    processes: int,
    faults: bool = True,
    kinds: tuple[str, ...] = REGISTER_KINDS,
) -> list[Op]:
    """A history of clients driving one real register: linearizable by construction.

    Each op takes effect at one instant between its invocation and completion;
    timed-out writes may take effect later or never (a conditional one doing
    what its condition then allows), failed ops never do.
    """
    state: bytes | None = None
    now = 0.0
    fresh = count()
    written: list[bytes] = []
    in_flight: dict[int, _InFlight] = {}
    ghosts: list[_InFlight] = []  # timed-out writes that may still take effect
    history: list[Op] = []
    issued = 0
    while issued < n_ops or in_flight:
        now += rng.choice((0.0, 0.5, 1.0))
        roll = rng.random()
        idle = [p for p in range(processes) if p not in in_flight]
        if idle and issued < n_ops and roll < 0.4:
            kind = rng.choice(kinds)
            value = (
                f"v{next(fresh)}".encode() if kind in ("put", "create", "update", "cas") else None
            )
            op = _InFlight(kind, value, now)
            if kind == "cas":
                # Mostly the value last seen (as a client would), else an older one or absent.
                op.expected = rng.choice((state, state, None, *written[-2:]))
                op.value = None if rng.random() < 0.1 else value
            if value is not None:
                written.append(value)
            in_flight[rng.choice(idle)] = op
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
            state = apply(op, state)
            continue
        p = rng.choice(sorted(in_flight))
        op = in_flight[p]
        fault = rng.random() if faults else 1.0
        if fault < 0.08:
            history.append(
                Op(p, op.kind, K, op.value, "unknown", op.start, None, None, op.expected)
            )
            if not op.took_effect and op.kind != "get" and rng.random() < 0.5:
                ghosts.append(op)
        elif fault < 0.12 and not op.took_effect:
            history.append(Op(p, op.kind, K, op.value, "fail", op.start, now, None, op.expected))
        elif op.took_effect:
            value = op.read if op.kind == "get" else op.value
            history.append(Op(p, op.kind, K, value, "ok", op.start, now, op.found, op.expected))
        else:
            continue
        del in_flight[p]
    return history


def run_counter(rng: random.Random, n_ops: int, processes: int, faults: bool = True) -> list[Op]:
    """A counter driven by ``processes`` clients, each looping: get n, then cas(n, n+1).

    Each op takes effect at one instant between its invocation and completion;
    a timed-out cas may take effect later (where the counter is then n) or never.
    """
    state: bytes | None = None
    now = 0.0
    in_flight: dict[int, _InFlight] = {}
    read: dict[int, bytes | None] = {}  # what each process's last get saw, until its cas
    ghosts: list[_InFlight] = []
    history: list[Op] = []
    issued = 0
    while issued < n_ops or in_flight:
        now += rng.choice((0.0, 0.5, 1.0))
        roll = rng.random()
        idle = [p for p in range(processes) if p not in in_flight]
        if idle and issued < n_ops and roll < 0.4:
            p = rng.choice(idle)
            if p in read:
                n = read.pop(p)
                after = str(1 + int(n or 0)).encode()
                in_flight[p] = _InFlight("cas", after, now, expected=n)
            else:
                in_flight[p] = _InFlight("get", None, now)
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
            state = apply(op, state)
            continue
        p = rng.choice(sorted(in_flight))
        op = in_flight[p]
        if op.kind == "cas" and faults and rng.random() < 0.05:
            history.append(Op(p, "cas", K, op.value, "unknown", op.start, None, None, op.expected))
            if not op.took_effect and rng.random() < 0.5:
                ghosts.append(op)
        elif not op.took_effect:
            continue
        elif op.kind == "get":
            history.append(Op(p, "get", K, op.read, "ok", op.start, now))
            read[p] = op.read
        else:
            history.append(Op(p, "cas", K, op.value, "ok", op.start, now, op.found, op.expected))
        del in_flight[p]
    return history


def assert_witness(history: list[Op], order: tuple[Op, ...]) -> None:
    """``order`` linearizes ``history``: every ok op once, unknown writes at most once,
    real time kept, and each op allowed where it is (the model, from scratch)."""
    used, made = collections.Counter(order), collections.Counter(history)
    assert not used - made, "ops in the order that are not in the history, or too often"
    for op, times in made.items():
        if op.outcome == "ok":
            assert used[op] == times, f"{op} is not in the order"
        elif op.outcome == "fail" or op.kind == "get":
            assert not used[op], f"{op} cannot take effect"
    latest_start = -math.inf
    state: bytes | None = None
    for op in order:
        if op.outcome == "ok":
            assert op.end >= latest_start, f"{op} comes after an op that started after it ended"  # type: ignore[operator]
        latest_start = max(latest_start, op.start)
        allowed, after = model_step(op, state)
        assert allowed, f"{op} cannot take effect on {state!r}"
        state = after


def corrupt_one_get(rng: random.Random, history: list[Op]) -> list[Op] | None:
    gets = [i for i, op in enumerate(history) if op.kind == "get" and op.outcome == "ok"]
    if not gets:
        return None
    i = rng.choice(gets)
    return (
        history[:i] + [dataclasses.replace(history[i], value=b"never-written")] + history[i + 1 :]
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32),  # a seed: hypothesis drawing every random choice is much slower
    st.integers(1, 60),
    st.integers(1, 6),
    st.sampled_from((REGISTER_KINDS, ALL_KINDS)),
)
def test_histories_of_a_real_register_pass_and_fail_once_corrupted(
    seed: int, n_ops: int, processes: int, kinds: tuple[str, ...]
) -> None:
    rng = random.Random(seed)
    history = run_register(rng, n_ops, processes, kinds=kinds)
    result = check_key(history)
    assert result.linearizable, result.explain()
    assert_witness(history, result.linearization)
    corrupted = corrupt_one_get(rng, history)
    if corrupted is not None:
        assert check_key(corrupted).verdict is Verdict.VIOLATION


def test_long_concurrent_history_is_checked_without_blowup() -> None:
    # Its deletes found the key, so they are conditional: the general search.
    rng = random.Random(7)
    history = run_register(rng, 1000, 10)
    result = check_key(history)
    assert result.linearizable
    assert result.steps < 20 * len(history)
    corrupted = corrupt_one_get(rng, history)
    assert corrupted is not None
    assert check_key(corrupted).verdict is Verdict.VIOLATION


def test_long_register_history_takes_the_register_search() -> None:
    # Puts and gets only (deletes that found the key are conditional): the pruned search.
    rng = random.Random(3)
    history = run_register(rng, 1000, 10, kinds=("put", "get", "get"))
    assert is_register(history)
    result = check_key(history)
    assert result.linearizable
    assert result.steps < 3 * len(history)


def test_long_history_of_every_kind_is_checked_without_blowup() -> None:
    rng = random.Random(11)
    history = run_register(rng, 1000, 10, kinds=ALL_KINDS)
    result = check_key(history)
    assert result.linearizable, result.explain()
    assert_witness(history, result.linearization)
    assert result.steps < 30 * len(history)
    corrupted = corrupt_one_get(rng, history)
    assert corrupted is not None
    assert check_key(corrupted).verdict is Verdict.VIOLATION


def test_a_violation_found_with_conditions_dropped_stands_when_the_full_search_runs_out() -> None:
    rng = random.Random(3)
    history = corrupt_one_get(rng, run_register(rng, 200, 10, kinds=ALL_KINDS))
    assert history is not None
    full = check_key(history, max_steps=None)
    assert full.verdict is Verdict.VIOLATION and not full.note
    relaxed = _RegisterSearch(sorted(history, key=lambda op: op.start), relaxed_effect).run(None)
    assert relaxed.verdict is Verdict.VIOLATION
    budget = RELAXED_SHARE * relaxed.steps  # the pre-check's share is just enough
    assert full.steps > budget  # but not what the full search needs
    result = check_key(history, max_steps=budget)
    assert result.verdict is Verdict.VIOLATION
    assert result.note and "conditional write taken for an unconditional one" in result.explain()
    assert check_key(history, max_steps=budget - RELAXED_SHARE).verdict is Verdict.UNDECIDED


def test_cas_counter_of_thousands_of_ops_and_32_processes_is_decided_quickly() -> None:
    history = run_counter(random.Random(5), 2000, 32)
    assert sum(op.kind == "cas" and op.found is True for op in history) > 100
    result = check_key(history)
    assert result.linearizable, result.explain()
    assert_witness(history, result.linearization)
    assert result.steps < 5 * len(history)
    # One more cas reported swapping: two from the same n, which a counter cannot do.
    failed = [i for i, op in enumerate(history) if op.kind == "cas" and op.found is False]
    i = failed[len(failed) // 2]
    doubled = history[:i] + [dataclasses.replace(history[i], found=True)] + history[i + 1 :]
    result = check_key(doubled)
    assert result.verdict is Verdict.VIOLATION
    assert result.steps < 5 * len(history)


def test_long_sequential_history_with_a_late_violation_is_linear_work() -> None:
    history = [put(0, str(i).encode(), 2 * i, 2 * i + 1) for i in range(5000)]
    history.append(get(1, b"0", 10_000, 10_001))
    result = check_key(history)
    assert result.verdict is Verdict.VIOLATION
    assert result.steps < 3 * len(history)
    assert len(result.linearization) == 5000


# --------------------------------------------------------------------------- brute-force oracle


def model_step(op: Op, state: bytes | None) -> tuple[bool, bytes | None]:
    """May ``op`` take effect on ``state``, and the state after it: the model, as the
    task states it (written here apart from ``zkv.check.history.effect``)."""
    present = state is not None
    if op.outcome == "unknown":  # takes effect only where its condition holds
        condition = {
            "put": True,
            "delete": present,
            "create": not present,
            "update": present,
            "cas": state == op.expected,
        }[op.kind]
        return condition, op.value
    if op.kind == "put":
        return True, op.value
    if op.kind == "get":
        return op.value == state, state
    if op.kind == "delete":
        return (present, None) if op.found else (not present, state)
    if op.kind == "create":
        return (present, state) if op.found else (not present, op.value)
    if op.kind == "update":
        return (present, op.value) if op.found else (not present, state)
    assert op.kind == "cas"
    return (state == op.expected, op.value) if op.found else (state != op.expected, state)


def brute_force(ops: list[Op]) -> bool:
    """Try every order of the ok ops and of any subset of the unknown writes: the definition."""
    required = [op for op in ops if op.outcome == "ok"]
    optional = [op for op in ops if op.outcome == "unknown" and op.kind != "get"]
    candidates = required + optional

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
            ok, after = model_step(op, state)
            if ok and search(placed | {i}, after):
                return True
        return False

    return search(frozenset(), None)


VALUES = (None, b"a", b"b", b"c")  # a small alphabet, so ops often touch the same value
SMALL_KINDS = ("put", "get", "get", "delete", "create", "update", "cas", "cas")


SMALL_SHAPES = [  # (kind, outcome, found), drawn as one
    (kind, outcome, found)
    for kind in SMALL_KINDS
    for outcome in ("ok", "ok", "ok", "ok", "unknown", "fail")
    for found in (False, True)
]


def small_history(rows: list[tuple[tuple[str, str, bool], int, int, int]]) -> list[Op]:
    """Ops from drawn rows ((kind, outcome, found), start, length, 4 * value + expected);
    what a kind cannot carry is dropped."""
    ops = []
    for p, ((kind, outcome, found), start, length, values) in enumerate(rows):
        value, expected = divmod(values, len(VALUES))
        if kind in ("put", "create", "update"):
            value = max(value, 1)  # bytes
        elif kind == "delete":
            value = 0
        ops.append(
            Op(
                p,
                kind,
                K,
                VALUES[value],
                outcome,
                float(start),
                None if outcome == "unknown" else float(start + length),
                found if outcome == "ok" and kind not in ("get", "put") else None,
                VALUES[expected] if kind == "cas" else None,
            )
        )
    return ops


# Few draws per op: generating is most of this test's time.
small_histories = st.lists(
    st.tuples(
        st.sampled_from(SMALL_SHAPES),
        st.integers(0, 10),
        st.integers(0, 4),
        st.integers(0, len(VALUES) ** 2 - 1),
    ),
    max_size=9,
).map(small_history)


@settings(max_examples=1000, deadline=None)
@given(small_histories)
def test_checker_agrees_with_brute_force(ops: list[Op]) -> None:
    result = check_key(ops)
    assert result.linearizable == brute_force(ops)
    if result.linearizable:
        assert_witness(ops, result.linearization)
    else:
        assert result.explain()


# --------------------------------------------------------------------------- JSON lines

ops_strategy = (
    st.builds(
        Op,
        process=st.integers(0, 1000),
        kind=st.just("put"),
        key=st.binary(max_size=8),
        value=st.binary(max_size=8),
        outcome=st.sampled_from(("ok", "fail")),
        start=st.floats(0, 1e6),
        end=st.just(2e6),
    )
    | st.builds(
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
    | st.builds(
        Op,
        process=st.integers(0, 1000),
        kind=st.sampled_from(("delete", "create", "update", "cas")),
        key=st.binary(max_size=8),
        value=st.binary(max_size=8),
        outcome=st.just("ok"),
        start=st.floats(0, 1e6),
        end=st.just(2e6),
        found=st.booleans(),
    ).map(lambda op: dataclasses.replace(op, value=None) if op.kind == "delete" else op)
    | st.builds(
        Op,
        process=st.integers(0, 1000),
        kind=st.just("cas"),
        key=st.binary(max_size=8),
        value=st.none() | st.binary(max_size=8),
        outcome=st.sampled_from(("ok", "fail", "unknown")),
        start=st.floats(0, 1e6),
        end=st.just(2e6),
        found=st.booleans(),
        expected=st.none() | st.binary(max_size=8),
    )
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
        create(5, b"c", True, 7.0, 8.0),
        update(6, b"u", False, 7.0, 8.0),
        cas(7, None, b"\x00", True, 9.0, 10.0),
        cas(8, b"\xff", None, None, 9.0, None, "unknown"),
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


def test_only_a_cas_line_carries_expected_and_older_lines_still_load() -> None:
    assert '"expected": null' in encode_op(cas(0, None, b"1", True, 0, 1))
    assert '"expected": "0"' in encode_op(cas(0, b"0", b"1", True, 0, 1))
    assert "expected" not in encode_op(delete(0, True, 0, 1))
    # A line written before cas existed: no expected key at all.
    line = (
        '{"process": 2, "kind": "delete", "key": "k", "value": null, "outcome": "ok", '
        '"start": 3.0, "end": 4.0, "found": false}'
    )
    assert decode_op(line) == delete(2, False, 3.0, 4.0)
    line = line.replace('"delete"', '"cas"').replace('"value": null', '"value": "1"')
    assert decode_op(line) == cas(2, None, b"1", False, 3.0, 4.0)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"expected": 7}, "'expected'"),
        ({"kind": "put", "expected": "0"}, "only a cas"),
        ({"found": None}, "found"),
        ({"found": "yes"}, "'found'"),
        ({"kind": "frobnicate"}, "kind"),
        ({"kind": "create", "value": None}, "bytes"),
        ({"expected": "\u0100"}, "latin-1"),
    ],
)
def test_bad_conditional_op_lines_are_refused_with_a_reason(
    change: dict[str, object], complaint: str
) -> None:
    obj = json.loads(encode_op(cas(0, b"0", b"1", True, 0, 1)))
    obj.update(change)
    with pytest.raises(HistoryFormatError, match=complaint):
        decode_op(json.dumps(obj))
