"""Where the protocol parts put what they want done during one step."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from zkv.core.messages import Message


class Outbox(Protocol):
    def send(self, to: str, message: Message) -> None:
        """Message to a node by id (this node itself included)."""

    def reply(self, client: Hashable, message: Message) -> None: ...

    def event(self, kind: str, **fields: Any) -> None: ...
