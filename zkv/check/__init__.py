"""Checking what clients saw: histories of ops and a linearizability checker for them."""

from zkv.check.history import Op, describe, format_history
from zkv.check.jsonl import HistoryFormatError, decode_op, encode_op, load_history, save_history
from zkv.check.linearizability import (
    DEFAULT_MAX_STEPS,
    HistoryResult,
    KeyResult,
    check_history,
    check_key,
)
from zkv.check.search import Verdict

__all__ = [
    "DEFAULT_MAX_STEPS",
    "HistoryFormatError",
    "HistoryResult",
    "KeyResult",
    "Op",
    "Verdict",
    "check_history",
    "check_key",
    "decode_op",
    "describe",
    "encode_op",
    "format_history",
    "load_history",
    "save_history",
]
