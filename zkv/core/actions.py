"""What a node is fed (events) and what it asks its driver to do (actions).

The driver (simulator or ZeroMQ runtime) applies a step's actions in one order:
commit the store (writes made during the step become durable), then send,
publish and reply. So no acknowledgement leaves before its write is durable.

Events and actions, like messages and records, are values: never changed once
made. They are not frozen dataclasses because building a frozen one costs three
to four times as much, and a client operation builds dozens; ``unsafe_hash``
keeps them hashable.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from zkv.core.messages import Message

# ----------------------------------------------------------------------------- events


@dataclass(slots=True, unsafe_hash=True)
class Deliver:
    """A message from another node (``sender`` is its node id)."""

    sender: str
    message: Message


@dataclass(slots=True, unsafe_hash=True)
class ClientCall:
    """A request from a client; ``client`` is an opaque handle used to reply."""

    client: Hashable
    message: Message


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed; the node fires whatever timers are due."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Leave the cluster gracefully: announce it, then stop taking requests."""


Input = Deliver | ClientCall | Tick | Shutdown

# ----------------------------------------------------------------------------- actions


@dataclass(slots=True, unsafe_hash=True)
class Send:
    """Point-to-point message to a node (``to`` may be "" when only the address is known)."""

    to: str
    address: str
    message: Message


@dataclass(slots=True, unsafe_hash=True)
class Reply:
    client: Hashable
    message: Message


@dataclass(slots=True, unsafe_hash=True)
class Publish:
    """Gossip: delivered to every node that subscribes to this node (knows it)."""

    message: Message


@dataclass(slots=True, unsafe_hash=True)
class Event:
    """A structured event-log entry (JSON-able fields)."""

    kind: str
    fields: dict[str, Any]


Action = Send | Reply | Publish | Event
