"""An Outbox that records what a protocol part asked for, for tests without a node."""

from __future__ import annotations

from typing import Any


class RecordingOutbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.replies: list[Any] = []
        self.events: list[tuple[str, dict]] = []

    def send(self, to: str, message: Any) -> None:
        self.sent.append((to, message))

    def reply(self, client: Any, message: Any) -> None:
        self.replies.append(message)

    def event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def take(self, kind: type) -> list[tuple[str, Any]]:
        """(recipient, message) of every message of ``kind`` sent since the last take;
        forgets everything sent."""
        got = [(to, m) for to, m in self.sent if isinstance(m, kind)]
        self.sent.clear()
        return got
