"""A loop turn: the one order in which both drivers let a node's outputs leave.

etcd's raft hands its application one ``Ready`` (persist, then send); zkv's two
drivers, the ZeroMQ runtime and the simulator's host, hand every turn's actions
to ``end_turn`` and dispatch only what it returns. The rule it keeps:

- a replica request (``ReadRequest``, ``WriteRequest``, ``Prepare``) acknowledges
  nothing this node stored, so it may leave before the commit (``send_early``):
  the replicas start on it while this node syncs;
- everything else (replies, acknowledgements, gossip) leaves only after the turn's
  writes are durable (``store.commit()``, one transaction, one sync);
- if those writes may be lost, because the store refused one (``StoreFull``
  discards every write since the last commit, earlier steps' included) or a step
  raised half-way, no reply or acknowledgement of the turn leaves (gossip still
  does: it claims nothing about the lost writes), and the node restarts from its
  store as after a crash, because its memory (a coordinator that counted its own
  write, say) still believes in them. If not even the restart fits in the store,
  the node halts: going on with that memory could acknowledge a write that is
  gone, and a crash is what the protocol is built to survive.

A node is made by ``boot``, which commits what its constructor wrote (the
incarnation) before the node can send anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zkv.core.actions import Action, Event, Publish, Send
from zkv.core.messages import Prepare, ReadRequest, WriteRequest
from zkv.storage.base import Store, StoreFull

BEFORE_COMMIT = (ReadRequest, WriteRequest, Prepare)
"""Messages that may leave before the turn's commit: requests to replicas, which
acknowledge nothing this node stored."""

NodeFactory = Callable[[Any, Store, float], Any]  # (config, store, now) -> Node


def leaves_before_commit(action: Action) -> bool:
    return type(action) is Send and isinstance(action.message, BEFORE_COMMIT)


@dataclass(slots=True)
class TurnEnd:
    """What a driver does once the turn is over."""

    node: Any  # the node to go on with: a fresh one after a restart, None if halted
    outputs: list[Action] = field(default_factory=list)  # Send/Reply/Publish, in order
    events: list[Event] = field(default_factory=list)  # the steps' events, then the turn's
    withheld: int = 0  # replies and acknowledgements not sent: their writes may be lost
    rebooted: bool = False

    @property
    def halted(self) -> bool:
        return self.node is None


def boot(factory: NodeFactory, config: Any, store: Store, now: float) -> Any:
    """A node on ``store``, its start durable (the constructor's writes, such as the
    incarnation, committed) before it can send anything. Raises StoreFull."""
    node = factory(config, store, now)
    store.commit()
    return node


def end_turn(node: Any, store: Store, actions: list[Action], now: float, *,
             step_failed: bool, send_early: Callable[[list[Send]], None],
             factory: NodeFactory) -> TurnEnd:
    """Send the early requests, commit, and return what may leave now (see the module
    docstring). ``step_failed``: a step of the turn raised."""
    early: list[Send] = []
    outputs: list[Action] = []
    events: list[Event] = []
    writes_lost = step_failed
    for action in actions:
        if type(action) is Event:
            events.append(action)
            writes_lost = writes_lost or action.kind == "store_full"
        elif leaves_before_commit(action):
            early.append(action)  # type: ignore[arg-type]
        else:
            outputs.append(action)
    if early:
        send_early(early)
    try:
        store.commit()
    except StoreFull as exc:
        events.append(Event("store_full", {"detail": str(exc)}))
        writes_lost = True
    end = TurnEnd(node, outputs, events)
    if not writes_lost:
        return end
    end.outputs = [a for a in outputs if type(a) is Publish]
    end.withheld = len(outputs) - len(end.outputs)
    events.append(Event("acks_withheld", {"messages": end.withheld}))
    end.node = reboot(node, store, now, factory, events)
    end.rebooted = end.node is not None
    return end


def reboot(node: Any, store: Store, now: float, factory: NodeFactory,
           events: list[Event]) -> Any:
    """A fresh node on the same store (its memory forgotten, as in a crash), carrying
    the counters exported as totals; None when even that does not fit in the store."""
    try:
        fresh = boot(factory, node.config, store, now)
    except StoreFull as exc:
        events.append(Event("halted", {"reason": f"store full: {exc}"}))
        return None
    fresh.carry_counters(node)
    events.append(Event("rebooted", {"incarnation": fresh.incarnation}))
    return fresh
