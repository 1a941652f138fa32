"""Failing key histories for a reader: each in full in ``VIOLATIONS_FILE``, and the
smallest on the console, cut to the ops near where it fails when it is long."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from zkv.chaos.report import near_failure
from zkv.check import HistoryResult, KeyResult

VIOLATIONS_FILE = "violations.txt"  # every failing key history, explained in full
SHOWN_OPS = 200  # a failing key history longer than this is shown near where it fails


def write_violations(out: Path, seed: int, history: Path, lin: HistoryResult) -> Path:
    """Every failing key history, explained, smallest first."""
    path = out / VIOLATIONS_FILE
    path.write_text(
        f"seed {seed}, history {history}\n\n" + "\n\n".join(
            r.explain() for r in sorted(lin.violations, key=lambda r: len(r.history)))
        + "\n")
    return path


def smallest_explained(lin: HistoryResult) -> str | None:
    """The smallest failing key history, explained (None when every key passed)."""
    smallest = lin.smallest_violation()
    return explain_near_failure(smallest) if smallest is not None else None


def explain_near_failure(result: KeyResult, limit: int = SHOWN_OPS,
                         lookback: float = 10.0) -> str:
    """``result.explain()``, but a history longer than ``limit`` ops (the CAS
    counter's) is shown only around where the search got stuck: the ops that
    overlap the time from the last ops of the longest linearizable prefix to the
    stuck op's completion, with the unknown writes invoked up to ``lookback``
    seconds before (the full explanation goes to ``VIOLATIONS_FILE``)."""
    if len(result.history) <= limit:
        return result.explain()
    near, lo, hi = near_failure(result, limit, lookback)
    text = dataclasses.replace(result, history=near).explain()
    head, _, rest = text.partition("\n")
    return (f"{head.replace(f'({len(near)} ops', f'({len(result.history)} ops', 1)}\n"
            f"(history shown: the {len(near)} ops around where it fails, "
            f"{lo:.3f} to {hi:.3f}; all of it is in {VIOLATIONS_FILE})\n{rest}")
