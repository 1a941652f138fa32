"""Gossip membership: who is alive (who is in the ring is the cluster map's business).

Each node publishes its table every gossip interval; receivers keep, per
member, the state with the highest (incarnation, heartbeat) and note when it
last advanced on their own clock. Local status follows from that age:

    alive --t_fail--> down --t_remove--> removed
    (left: the member said goodbye, after its decommission)

``TRANSITIONS`` lists every change of status this node may make, and each change
is checked against it.

``down`` members are skipped by requests; ``removed`` ones are *removable*: under
the ``auto`` removal policy the node that proposes ring changes proposes their
removal (``ring_changes``). A member turns removable only while this node sees a
majority of the cluster map's voters alive, so the minority side of a partition
proposes nothing. A member returns when a fresher heartbeat or a higher
incarnation (a restart) arrives.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from zkv.core.messages import MemberState


class MemberStatus(enum.StrEnum):
    """What this node believes of a member. Gossip carries the values of ``ALIVE``
    and ``LEFT`` (``MemberState.status``), and status reports show them."""

    ALIVE = "alive"
    DOWN = "down"  # silent for t_fail: requests skip it
    REMOVED = "removed"  # silent for t_remove while a majority is seen: removable
    LEFT = "left"  # said goodbye (decommissioned)


ALIVE, DOWN, REMOVED, LEFT = (MemberStatus.ALIVE, MemberStatus.DOWN, MemberStatus.REMOVED,
                              MemberStatus.LEFT)
IN_RING = (ALIVE, DOWN)

# Every status change this node may make (None: not yet heard of). Gossip moves a
# member to ALIVE (fresher news) or LEFT (its goodbye); the timers move the ones in
# the ring between ALIVE, DOWN and REMOVED. Any other change is a bug.
TRANSITIONS: dict[MemberStatus | None, frozenset[MemberStatus]] = {
    None: frozenset({ALIVE, LEFT}),
    ALIVE: frozenset({DOWN, REMOVED, LEFT}),
    DOWN: frozenset({ALIVE, REMOVED, LEFT}),
    REMOVED: frozenset({ALIVE, LEFT}),  # back: a fresher heartbeat, or a restart
    LEFT: frozenset({ALIVE}),  # its id back as a new member (a wiped directory)
}


@dataclass(slots=True)
class Member:
    state: MemberState
    status: MemberStatus
    fresh_at: float  # local time the heartbeat last advanced

    @property
    def freshness(self) -> tuple[int, int]:
        return (self.state.incarnation, self.state.heartbeat)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A member's status changed (``old`` None: first heard of); checked against
    ``TRANSITIONS`` when made."""

    node_id: str
    old: MemberStatus | None
    new: MemberStatus

    def __post_init__(self) -> None:
        assert self.new in TRANSITIONS[self.old], (
            f"member {self.node_id}: {self.old} -> {self.new} is not a status change "
            f"membership makes")


class Membership:
    def __init__(self, me: MemberState, t_fail: float, t_remove: float, now: float) -> None:
        self.me_id = me.node_id
        self.t_fail = t_fail
        self.t_remove = t_remove
        self.members: dict[str, Member] = {me.node_id: Member(me, ALIVE, now)}
        # Bumped by every status change and every new member: what caches of who is
        # alive (the node's placements) compare to know they are still right.
        self.generation = 0

    # ------------------------------------------------------------------ views

    @property
    def me(self) -> MemberState:
        return self.members[self.me_id].state

    def status(self, node_id: str) -> MemberStatus | None:
        m = self.members.get(node_id)
        return m.status if m else None

    def alive(self, node_id: str) -> bool:
        m = self.members.get(node_id)
        return m is not None and m.status == ALIVE

    def address(self, node_id: str) -> str | None:
        m = self.members.get(node_id)
        return m.state.address if m else None

    def http_port(self, node_id: str) -> int | None:
        """Where the member serves HTTP (metrics, dashboard) at its host: None for the
        default (request port + 2) or an unknown member, 0 for nowhere."""
        m = self.members.get(node_id)
        return m.state.http_port if m else None

    def gossip_table(self) -> list[MemberState]:
        """What this node tells others: every member not removed."""
        return [m.state for m in self.members.values() if m.status != REMOVED]

    def subscriptions(self) -> set[str]:
        """Addresses to hear gossip from: removed members too, so their return is noticed."""
        return {
            m.state.address
            for i, m in self.members.items()
            if i != self.me_id and m.status != LEFT
        }

    # ------------------------------------------------------------------ updates

    def beat(self) -> None:
        me = self.me
        self.members[self.me_id].state = MemberState(
            me.node_id, me.address, me.incarnation, me.heartbeat + 1, me.status, me.http_port
        )

    def leave(self) -> None:
        me = self.me
        self.members[self.me_id].state = MemberState(
            me.node_id, me.address, me.incarnation, me.heartbeat + 1, LEFT.value, me.http_port
        )

    def merge(self, states: list[MemberState], now: float) -> list[StatusChange]:
        changes: list[StatusChange] = []
        for state in states:
            if state.node_id == self.me_id:
                self._refute(state)
                continue
            known = self.members.get(state.node_id)
            incoming = (state.incarnation, state.heartbeat)
            if known is not None and incoming <= known.freshness:
                continue
            new_status = LEFT if state.status == LEFT else ALIVE
            old_status = known.status if known else None
            if old_status != new_status:
                changes.append(StatusChange(state.node_id, old_status, new_status))
                self.generation += 1
            if known is None:
                self.members[state.node_id] = Member(state, new_status, now)
            else:
                known.state, known.status, known.fresh_at = state, new_status, now
        return changes

    def _refute(self, state: MemberState) -> None:
        """Someone holds a fresher record of me (a restart lost my counter): jump past it."""
        me = self.me
        if (state.incarnation, state.heartbeat) >= (me.incarnation, me.heartbeat):
            self.members[self.me_id].state = MemberState(
                me.node_id, me.address, state.incarnation, state.heartbeat + 1, me.status,
                me.http_port,
            )

    def majority_alive(self, voters: frozenset[str]) -> bool:
        """True when more than half of ``voters`` (the cluster map's) are alive to this node."""
        alive = sum(1 for v in voters if v == self.me_id or self.alive(v))
        return 2 * alive > len(voters)

    def check(self, now: float, majority: bool = True) -> list[StatusChange]:
        """Apply the failure-detection timers; returns the status changes. A member
        turns ``removed`` (removable) only while this node sees a ``majority``."""
        changes: list[StatusChange] = []
        for node_id, m in self.members.items():
            if node_id == self.me_id or m.status not in IN_RING:
                continue
            age = now - m.fresh_at
            if age > self.t_remove and majority:
                new = REMOVED
            elif age > self.t_fail:
                new = DOWN
            else:
                new = ALIVE
            if new != m.status:
                changes.append(StatusChange(node_id, m.status, new))
                m.status = new
                self.generation += 1
        return changes
