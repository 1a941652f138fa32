"""Histories as JSON lines, so a chaos run can be checked (and re-checked) later.

One op per line, e.g.::

    {"process": 3, "kind": "put", "key": "user:1", "value": "v7", "outcome": "ok",
     "start": 1.5, "end": 2.25, "found": null}

A cas also has ``expected``, the value it requires (``null`` = absent)::

    {"process": 4, "kind": "cas", "key": "n", "value": "8", "outcome": "ok",
     "start": 3.0, "end": 3.5, "found": true, "expected": "7"}

Kinds: get, put, delete, create, update, cas (the model is in
``zkv.check.history``). Keys and values are bytes stored as latin-1 strings:
byte ``n`` becomes code point ``n``, so any bytes round-trip exactly and ASCII
stays readable (JSON escapes the rest as ``\\u00XX``). ``end``, ``found`` and
``expected`` may be ``null``/absent. ``expected`` is written only for a cas,
so lines of the other kinds look as they did before cas existed, and files
written before then still load. Lines are written one at a time, so a tool can
append as ops complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from zkv.check.history import Op


class HistoryFormatError(ValueError):
    """A history file line that is not a valid op; the message names the line."""


def encode_op(op: Op) -> str:
    """One JSON line (without the newline)."""
    obj = {
        "process": op.process,
        "kind": op.kind,
        "key": op.key.decode("latin-1"),
        "value": _text(op.value),
        "outcome": op.outcome,
        "start": op.start,
        "end": op.end,
        "found": op.found,
    }
    if op.kind == "cas":
        obj["expected"] = _text(op.expected)
    return json.dumps(obj)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def decode_op(line: str) -> Op:
    """Parse ``encode_op``'s output; raises ``HistoryFormatError`` on anything else."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HistoryFormatError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise HistoryFormatError("an op must be a JSON object")
    try:
        return Op(
            process=_field(obj, "process", int),
            kind=_field(obj, "kind", str),
            key=_field(obj, "key", str).encode("latin-1"),
            value=_optional_bytes(obj, "value"),
            outcome=_field(obj, "outcome", str),
            start=float(_field(obj, "start", (int, float))),
            end=_optional_time(obj, "end"),
            found=_optional_field(obj, "found", bool),
            expected=_optional_bytes(obj, "expected"),
        )
    except UnicodeEncodeError:
        raise HistoryFormatError("key/value strings must be latin-1 (code points < 256)") from None
    except ValueError as exc:  # Op's own validation
        raise HistoryFormatError(str(exc)) from None


def save_history(ops: Iterable[Op], path: str | os.PathLike[str]) -> None:
    """Write (replacing) a history file."""
    with open(path, "w", encoding="utf-8") as out:
        out.writelines(encode_op(op) + "\n" for op in ops)


def load_history(path: str | os.PathLike[str]) -> list[Op]:
    """Read a history file; blank lines are skipped, errors name the line number."""
    ops = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                ops.append(decode_op(line))
            except HistoryFormatError as exc:
                raise HistoryFormatError(f"{path}:{number}: {exc}") from None
    return ops


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    # bool is an int to Python, but never a valid process id or time here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise HistoryFormatError(f"field {name!r} is missing or has the wrong type")
    return value


def _optional_field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    return None if obj.get(name) is None else _field(obj, name, kind)


def _optional_bytes(obj: dict[str, Any], name: str) -> bytes | None:
    text = _optional_field(obj, name, str)
    return None if text is None else text.encode("latin-1")


def _optional_time(obj: dict[str, Any], name: str) -> float | None:
    value = _optional_field(obj, name, (int, float))
    return None if value is None else float(value)
