"""One simulated machine: a node's disk (its store) and, while it runs, its process.

The host is the simulator's driver for a single ``Node``: it turns arriving
packets into events, steps the node, ends the turn as the runtime does
(``zkv.core.turn.end_turn``: commit, then send; withhold and restart, or halt,
when the store refused a write), and keeps exactly one Tick pending at the
node's next wakeup. Each step is a turn of its own.
A crash drops the ``Node`` object (memory, timers and in-flight work are lost);
the store, like a disk, survives for the next ``start()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zkv.core.actions import (
    ClientCall,
    Deliver,
    Event,
    Input,
    Publish,
    Reply,
    Send,
    Shutdown,
    Tick,
)
from zkv.core.config import NodeConfig
from zkv.core.messages import Message
from zkv.core.turn import boot, end_turn
from zkv.sim.network import CLIENT, GOSSIP, PEER, REPLY, Packet
from zkv.sim.scheduler import Timer
from zkv.storage.base import StoreFull

if TYPE_CHECKING:
    from zkv.sim.cluster import SimCluster
    from zkv.storage.base import Store

RUNNING, LEAVING, CRASHED, LEFT = "running", "leaving", "crashed", "left"
HALTED = "halted"  # a turn's writes were lost and the full store had no room to restart

# A node that asks for another Tick at (or before) the instant of the Tick it
# just handled gets it this much later, so a core bug cannot freeze virtual time.
MIN_TICK_GAP = 1e-3

NodeFactory = Callable[[NodeConfig, Any, float], Any]


class StepError(RuntimeError):
    """A node's ``step`` raised: a bug in the core, reported with where and when."""


class NodeHost:
    def __init__(self, cluster: SimCluster, config: NodeConfig, store: Store,
                 factory: NodeFactory) -> None:
        self.cluster = cluster
        self.config = config
        self.store = store
        self.factory = factory
        self.node_id = config.node_id
        self.address = config.address
        self.node: Any = None  # the running Node, None while crashed or gone
        self.status = CRASHED
        self.generation = 0  # bumped on every start/crash so stale timers do nothing
        self.boots = 0
        self.steps = 0
        self._tick: Timer | None = None
        self._removal: Timer | None = None
        self.paused = False  # stalled (SIGSTOP, swap): inputs queue up, no ticks
        self._queued: list[Input] = []

    @property
    def running(self) -> bool:
        return self.node is not None

    # ------------------------------------------------------------- lifecycle

    def start(self) -> bool:
        """Boot a fresh Node on this host's store (first start or restart after a crash);
        False when the store is too full to start on (the host stays down)."""
        if self.node is not None:
            raise RuntimeError(f"{self.node_id} is already running")
        now = self.cluster.scheduler.now
        self.generation += 1
        self.boots += 1
        try:
            self.node = boot(self.factory, self.config, self.store, now)
        except StoreFull as exc:
            self.cluster.log(self.node_id, "sim.start_failed", {"reason": str(exc)})
            return False
        self.status = RUNNING
        self.cluster.network.attach(self.address, self.node_id, self.deliver)
        self._schedule_tick(after_tick=False)
        return True

    def pause(self) -> None:
        """Stall the process: what reaches it waits in its queues, its timers do not fire."""
        self.paused = True

    def resume(self) -> None:
        """Wake up and handle what queued meanwhile, in order (the node sees the jump in
        time on its first step), then carry on."""
        self.paused = False
        queued, self._queued = self._queued, []
        for event in queued:
            self.step(event)
        if self.node is not None:
            self._schedule_tick(after_tick=False)

    def crash(self, status: str = CRASHED) -> None:
        """Lose the process: memory and timers go, messages to it are lost; the store stays."""
        self.generation += 1
        self.paused = False
        self._queued = []
        self.node = None
        self.status = status
        self.cluster.network.detach(self.address)
        for timer in (self._tick, self._removal):
            if timer is not None:
                timer.cancel()
        self._tick = self._removal = None

    def leave(self, grace: float) -> None:
        """Deliver Shutdown, keep running for ``grace`` seconds, then stop for good."""
        if self.node is None:
            raise RuntimeError(f"{self.node_id} is not running")
        self.step(Shutdown())
        if self.node is None:
            return
        self.status = LEAVING
        self._removal = self.cluster.scheduler.call_later(grace, self._finish_leaving,
                                                          self.generation)

    def _finish_leaving(self, generation: int) -> None:
        if generation == self.generation and self.node is not None:
            self._removal = None
            self.crash(status=LEFT)
            self.cluster.log(self.node_id, "sim.left", {})

    # --------------------------------------------------------------- driving

    def deliver(self, packet: Packet, message: Message) -> None:
        """Network handler: a packet reached this host's address."""
        if packet.channel == CLIENT:
            self.step(ClientCall(packet.src_address, message))
        else:
            self.step(Deliver(packet.src, message))

    def step(self, event: Input) -> None:
        node = self.node
        if node is None:
            return
        if self.paused:
            if not isinstance(event, Tick):
                self._queued.append(event)
            return
        cluster = self.cluster
        now = cluster.scheduler.now
        try:
            actions = node.step(event, now)
        except Exception as exc:
            raise StepError(
                f"{self.node_id} failed at t={now:.6f} (seed {cluster.seed}) on {event!r}: {exc!r}"
            ) from exc
        self.steps += 1
        end = end_turn(node, self.store, actions, now, step_failed=False,
                       send_early=self._dispatch, factory=self.factory)
        self._dispatch(end.events)
        if end.halted:
            self.crash(status=HALTED)
            return
        if end.rebooted:  # the old memory's tick goes with it; the next one is the new node's
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            self.boots += 1
            self.node = node = end.node
        self._dispatch(end.outputs)
        # Decommissioned: the process ends, as zkv's does.
        if self.node is node and getattr(node, "left", False):
            self.crash(status=LEFT)
            cluster.log(self.node_id, "sim.left", {})
            return
        if self.node is node:
            self._schedule_tick(after_tick=isinstance(event, Tick))

    def _dispatch(self, actions: list[Any]) -> None:
        cluster = self.cluster
        network = cluster.network
        for action in actions:
            if isinstance(action, Send):
                address = action.address or cluster.address_of(action.to)
                if address:
                    network.send(self.node_id, self.address, address, action.message, PEER)
            elif isinstance(action, Reply):
                network.send(self.node_id, self.address, str(action.client), action.message,
                             REPLY)
            elif isinstance(action, Publish):
                subscribers = cluster.subscribers_of(self.address)
                if subscribers:
                    network.multicast(self.node_id, self.address, subscribers, action.message,
                                      GOSSIP)
            elif isinstance(action, Event):
                cluster.log(self.node_id, action.kind, action.fields)
            else:
                raise StepError(f"{self.node_id} returned an unknown action {action!r}")

    def _schedule_tick(self, after_tick: bool) -> None:
        now = self.cluster.scheduler.now
        wakeup = self.node.next_wakeup()
        if wakeup is None or math.isinf(wakeup) or math.isnan(wakeup):
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            return
        if after_tick and wakeup <= now:
            wakeup = now + MIN_TICK_GAP
        wakeup = max(wakeup, now)
        tick = self._tick
        if tick is not None and tick.pending:
            if tick.time == wakeup:
                return
            tick.cancel()
        self._tick = self.cluster.scheduler.call_at(wakeup, self._on_tick, self.generation)

    def _on_tick(self, generation: int) -> None:
        if generation != self.generation:
            return
        self._tick = None
        self.step(Tick())
