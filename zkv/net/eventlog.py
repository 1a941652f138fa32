"""A node's structured event log: one JSON object per line in ``events.jsonl``.

Each line is ``{"ts": <wall seconds>, "node": <node id>, "kind": <kind>,
"fields": {...}}``. Bytes (keys, mostly) are written as UTF-8 text, with any
byte that is not UTF-8 shown as ``\\xNN``; sets and tuples become lists.

Lines are buffered and handed to the kernel once per loop turn (``flush``), so
a SIGKILL loses nothing already flushed; they are never fsynced (the log is for
people and tests, not for recovery). When the file grows past ``max_bytes`` it
is renamed to ``events.jsonl.1`` (replacing an older one) and a new one starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson

EVENT_LOG = "events.jsonl"
# One per replica read or write, or per client request: written only with ``log_ops`` (a
# line per operation costs more than the operation); the metrics count them always.
OP_EVENTS = frozenset({"replica_read", "replica_write", "replica_prepare",
                       "coordinator_done"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_slow_encode = json.JSONEncoder(default=_jsonable, separators=(",", ":"),
                                ensure_ascii=False).encode


def _encode(event: dict[str, Any]) -> bytes:
    """One line; orjson is ten times faster than json here, and the log takes an
    event per replica read or write. json only for what orjson refuses (an integer
    beyond 64 bits)."""
    try:
        return orjson.dumps(event, default=_jsonable, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return (_slow_encode(event) + "\n").encode()


class EventLog:
    def __init__(self, data_dir: Path, node_id: str, max_bytes: int) -> None:
        self.path = Path(data_dir) / EVENT_LOG
        self.node_id = node_id
        self.max_bytes = max_bytes
        self._file = open(self.path, "ab")
        self._size = self._file.tell()

    def append(self, kind: str, fields: dict[str, Any], ts: float) -> None:
        line = _encode({"ts": round(ts, 6), "node": self.node_id, "kind": kind,
                        "fields": fields})
        self._file.write(line)
        self._size += len(line)
        if self._size > self.max_bytes:
            self._rotate()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(EVENT_LOG + ".1"))
        self._file = open(self.path, "ab")
        self._size = 0


def read_events(data_dir: Path | str, include_rotated: bool = True) -> list[dict[str, Any]]:
    """Every event a node logged under ``data_dir``, oldest first (torn lines skipped)."""
    base = Path(data_dir) / EVENT_LOG
    paths = [base.with_name(EVENT_LOG + ".1"), base] if include_rotated else [base]
    events: list[dict[str, Any]] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
    return events
