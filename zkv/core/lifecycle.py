"""A node's lifecycle: one state and the table of the moves allowed between states.

h11 keeps its connection states in one table and checks every change against it;
so does this. The state decides what a node does besides answering its peers:
whether it coordinates client requests, asks to join, or proposes ring changes.
"""

from __future__ import annotations

from enum import Enum


class Lifecycle(Enum):
    OUTSIDE = "outside"  # not in the cluster map: joining, or removed and asking again
    CONFIRMING = "confirming"  # in the map but in doubt of it: after a restart, a stall,
    # or a regained majority it coordinates nothing until a majority of voters gossiped an
    # epoch no newer than its own (``Node._doubt``)
    SERVING = "serving"  # coordinates client requests
    ISOLATED = "isolated"  # cut off from a majority of voters: consistency one only; on
    # seeing the majority again it confirms its map first
    STOPPING = "stopping"  # stopped (SIGTERM): finishes what it coordinates, stays a member
    DECOMMISSIONED = "decommissioned"  # its data moved away and it left the map for good

    @property
    def coordinates(self) -> bool:
        return self in (Lifecycle.SERVING, Lifecycle.ISOLATED)


# A member may always be removed (declared dead: OUTSIDE), stopped or decommissioned.
_EXITS = frozenset({Lifecycle.OUTSIDE, Lifecycle.STOPPING, Lifecycle.DECOMMISSIONED})
ALLOWED: dict[Lifecycle, frozenset[Lifecycle]] = {
    Lifecycle.OUTSIDE: frozenset({Lifecycle.SERVING, Lifecycle.STOPPING}),
    # A new doubt while confirming starts the count again.
    Lifecycle.CONFIRMING: _EXITS | {Lifecycle.SERVING, Lifecycle.ISOLATED,
                                    Lifecycle.CONFIRMING},
    Lifecycle.SERVING: _EXITS | {Lifecycle.ISOLATED, Lifecycle.CONFIRMING},
    Lifecycle.ISOLATED: _EXITS | {Lifecycle.CONFIRMING},
    Lifecycle.STOPPING: frozenset({Lifecycle.DECOMMISSIONED}),
    Lifecycle.DECOMMISSIONED: frozenset(),
}


class IllegalTransition(AssertionError):
    """A move the table does not allow: a bug in the node."""


def advance(current: Lifecycle, new: Lifecycle) -> Lifecycle:
    if new not in ALLOWED[current]:
        raise IllegalTransition(f"lifecycle {current.value} -> {new.value} is not allowed")
    return new
