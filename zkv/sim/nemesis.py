"""The nemesis: injects faults at random moments of a run, and heals them.

Faults: ``crash`` (a node's process dies and restarts later on the same disk),
``isolate`` (one node cut off), ``partition`` (the nodes split into a minority
and a majority), ``loss`` and ``duplicate`` (a burst of message loss or
duplication on every link), ``full_disk`` (a node's store refuses writes, as
LMDB's does when its map or disk is full: the node withholds the turn's
acknowledgements and restarts, or halts until the disk is freed). Each lasts
a random time; by default shorter than ``t_remove``, so nodes are suspected but
never removed from the ring (longer faults are the split-brain scenario and must
be asked for). At most
``max_down`` nodes are crashed, isolated or stalled at once.

Membership faults (``MEMBERSHIP``): ``join`` (a new node starts), ``decommission``
(an operator takes a node out; its process ends once its data moved), ``wipe``
(a node restarts on an empty directory under its old id), ``remove`` (a crash
that outlasts ``t_remove``, so the majority removes the node; it comes back
later and joins again) and ``stall`` (the process stops taking turns for longer
than ``t_remove``, then handles everything that queued up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zkv.sim.host import RUNNING
from zkv.sim.scheduler import Timer
from zkv.storage.memory import FULL, FULL_DATA

if TYPE_CHECKING:
    from zkv.sim.cluster import SimCluster

FAULTS = ("crash", "partition", "isolate", "loss", "duplicate")
MEMBERSHIP = ("join", "decommission", "wipe", "remove", "stall")
STORAGE = ("full_disk",)
KNOWN = FAULTS + MEMBERSHIP + STORAGE


@dataclass(frozen=True, slots=True)
class NemesisSpec:
    faults: tuple[str, ...] = FAULTS
    interval: tuple[float, float] = (0.5, 2.0)  # pause between two injections
    duration: tuple[float, float] | None = None  # None: 0.5 s .. 0.75 * t_remove
    max_down: int = 1  # nodes crashed or isolated at the same time
    loss: tuple[float, float] = (0.05, 0.3)  # drop probability during a loss burst
    duplicate: tuple[float, float] = (0.05, 0.3)

    max_nodes: int = 0  # joins stop at this many nodes (0: initial count + 3)
    min_ring: int = 4  # decommissions and wipes keep at least this many members

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(KNOWN)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(KNOWN)}")


class Nemesis:
    def __init__(self, cluster: SimCluster, spec: NemesisSpec, t_remove: float) -> None:
        self.cluster = cluster
        self.spec = spec
        self.duration = spec.duration or (min(0.5, 0.5 * t_remove), 0.75 * t_remove)
        self.log: list[tuple[float, str]] = []
        self._until = 0.0
        self._endings: list[Timer] = []
        self._loss = False
        self._dup = False
        self._max_nodes = spec.max_nodes or len(cluster.hosts) + 3
        self._t_remove = t_remove
        self._stalled: set[str] = set()
        self._full: set[str] = set()

    def start(self, until: float) -> None:
        """Inject faults from now until ``until`` (faults still active then end on schedule)."""
        self._until = until
        self._schedule_next()

    def _schedule_next(self) -> None:
        lo, hi = self.spec.interval
        self.cluster.scheduler.call_later(self.cluster.rng.uniform(lo, hi), self._inject)

    def _down(self) -> int:
        """Nodes out of action: crashed, isolated, stalled, or running but not (yet, or
        no longer) a member, like a wiped node waiting to be admitted again."""
        cluster = self.cluster
        outside = sum(1 for i in cluster.running()
                      if not getattr(cluster.node(i), "joined", True))
        return (len(cluster.down()) + len(cluster.network.isolated) + len(self._stalled)
                + len(self._full - set(cluster.down())) + outside)

    def _possible(self) -> list[str]:
        network = self.cluster.network
        room = self._down() < self.spec.max_down
        checks = {
            "crash": room and bool(self._candidates()),
            "isolate": room and not network.split and bool(self._candidates()),
            "partition": (not network.split and not network.isolated
                          and len(self.cluster.hosts) > 1),
            "loss": not self._loss,
            "duplicate": not self._dup,
            "join": len(self.cluster.hosts) < self._max_nodes,
            "decommission": room and bool(self._members(spare=True)),
            "wipe": room and bool(self._members(spare=True)),
            "remove": room and bool(self._members(spare=True)),
            "stall": room and bool(self._candidates()),
            "full_disk": room and bool(self._candidates()),
        }
        return [fault for fault in self.spec.faults if checks[fault]]

    def _candidates(self) -> list[str]:
        isolated = self.cluster.network.isolated
        return [node_id for node_id, host in self.cluster.hosts.items()
                if host.status == RUNNING and node_id not in isolated and not host.paused
                and node_id not in self._full]

    def _members(self, spare: bool) -> list[str]:
        """Running ring members; with ``spare``, only while the ring keeps ``min_ring``
        members without one (so quorums survive one more fault)."""
        cluster = self.cluster
        maps = [m for i in cluster.running()
                if (m := getattr(cluster.node(i), "cluster_map", None)) is not None]
        if not maps:
            return []
        cmap = max(maps, key=lambda m: m.epoch)
        if spare and (cmap.target is not None or len(cmap.ring) <= self.spec.min_ring):
            return []
        return [i for i in self._candidates() if i in cmap.ring and cluster.node(i).joined]

    def _inject(self) -> None:
        cluster = self.cluster
        if cluster.now >= self._until:
            return
        options = self._possible()
        if options:
            rng = cluster.rng
            fault = rng.choice(options)
            duration = rng.uniform(*self.duration)
            getattr(self, f"_start_{fault}")(duration)
        self._schedule_next()

    def _note(self, kind: str, text: str, **fields: object) -> None:
        self.log.append((self.cluster.now, text))
        self.cluster.log("nemesis", f"nemesis.{kind}", dict(fields))

    def _later(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        self._endings = [timer for timer in self._endings if timer.pending]
        self._endings.append(self.cluster.scheduler.call_later(delay, fn, *args))

    # ----------------------------------------------------------------- faults

    def _start_crash(self, duration: float) -> None:
        node_id = self.cluster.rng.choice(self._candidates())
        self._note("crash", f"crash {node_id} for {duration:.2f}s", node=node_id,
                   duration=duration)
        self.cluster.crash(node_id)
        self._later(duration, self._end_crash, node_id)

    def _end_crash(self, node_id: str) -> None:
        if not self.cluster.host(node_id).running:
            self._note("restart", f"restart {node_id}", node=node_id)
            self.cluster.restart(node_id)

    def _start_isolate(self, duration: float) -> None:
        node_id = self.cluster.rng.choice(self._candidates())
        self._note("isolate", f"isolate {node_id} for {duration:.2f}s", node=node_id,
                   duration=duration)
        self.cluster.isolate(node_id)
        self._later(duration, self._end_isolate, node_id)

    def _end_isolate(self, node_id: str) -> None:
        self._note("reconnect", f"reconnect {node_id}", node=node_id)
        self.cluster.network.reconnect(node_id)

    def _start_partition(self, duration: float) -> None:
        cluster = self.cluster
        rng = cluster.rng
        nodes = list(cluster.hosts)
        rng.shuffle(nodes)
        size = rng.randint(1, max(1, (len(nodes) - 1) // 2))
        minority = sorted(nodes[:size])
        self._note("partition", f"partition {minority} from the rest for {duration:.2f}s",
                   minority=minority, duration=duration)
        cluster.partition(minority)
        self._later(duration, self._end_partition)

    def _end_partition(self) -> None:
        self._note("heal_partition", "heal partition")
        self.cluster.network.partition([])

    def _start_loss(self, duration: float) -> None:
        rate = self.cluster.rng.uniform(*self.spec.loss)
        self._note("loss", f"loss {rate:.2f} for {duration:.2f}s", rate=rate, duration=duration)
        self._loss = True
        self.cluster.set_faults(drop=rate)
        self._later(duration, self._end_loss)

    def _end_loss(self) -> None:
        self._note("loss_over", "loss over")
        self._loss = False
        self.cluster.set_faults(drop=self.cluster.baseline.drop)

    def _start_duplicate(self, duration: float) -> None:
        rate = self.cluster.rng.uniform(*self.spec.duplicate)
        self._note("duplicate", f"duplicate {rate:.2f} for {duration:.2f}s", rate=rate,
                   duration=duration)
        self._dup = True
        self.cluster.set_faults(duplicate=rate)
        self._later(duration, self._end_duplicate)

    def _end_duplicate(self) -> None:
        self._note("duplicate_over", "duplicate over")
        self._dup = False
        self.cluster.set_faults(duplicate=self.cluster.baseline.duplicate)

    def _start_join(self, duration: float) -> None:
        node_id = self.cluster.add_node()
        self._note("join", f"join {node_id}", node=node_id)

    def _start_decommission(self, duration: float) -> None:
        node_id = self.cluster.rng.choice(self._members(spare=True))
        self._note("decommission", f"decommission {node_id}", node=node_id)
        self.cluster.decommission(node_id)

    def _start_wipe(self, duration: float) -> None:
        node_id = self.cluster.rng.choice(self._members(spare=True))
        self._note("wipe", f"wipe {node_id} and restart it", node=node_id)
        self.cluster.wipe(node_id)

    def _start_remove(self, duration: float) -> None:
        node_id = self.cluster.rng.choice(self._members(spare=True))
        duration = self._t_remove * self.cluster.rng.uniform(1.5, 2.5)
        self._note("remove", f"crash {node_id} for {duration:.2f}s (past t_remove)",
                   node=node_id, duration=duration)
        self.cluster.crash(node_id)
        self._later(duration, self._end_crash, node_id)

    def _start_stall(self, duration: float) -> None:
        node_id = self.cluster.rng.choice(self._candidates())
        duration = self._t_remove * self.cluster.rng.uniform(1.1, 1.5)
        self._note("stall", f"stall {node_id} for {duration:.2f}s (past t_remove)",
                   node=node_id, duration=duration)
        self._stalled.add(node_id)
        self.cluster.pause(node_id)
        self._later(duration, self._end_stall, node_id)

    def _end_stall(self, node_id: str) -> None:
        self._stalled.discard(node_id)
        if self.cluster.host(node_id).running:
            self._note("wake", f"wake {node_id}", node=node_id)
            self.cluster.resume(node_id)

    def _start_full_disk(self, duration: float) -> None:
        rng = self.cluster.rng
        node_id = rng.choice(self._candidates())
        # Mostly a full data area (the node restarts on the store); sometimes a disk with
        # no room at all (the node halts until the disk is freed).
        full = FULL if rng.random() < 0.25 else FULL_DATA
        self._note("full_disk", f"fill {node_id}'s disk ({full}) for {duration:.2f}s",
                   node=node_id, duration=duration, full=full)
        self._full.add(node_id)
        self.cluster.fill_disk(node_id, full)
        self._later(duration, self._end_full_disk, node_id)

    def _end_full_disk(self, node_id: str) -> None:
        self._full.discard(node_id)
        self._note("disk_freed", f"free {node_id}'s disk", node=node_id)
        self.cluster.fill_disk(node_id, None)
        if node_id in self.cluster.down():  # halted on it
            self._note("restart", f"restart {node_id}", node=node_id)
            self.cluster.restart(node_id)

    # ------------------------------------------------------------------ heal

    def heal_all(self) -> None:
        """End every fault now: network healed, baseline faults, crashed nodes restarted."""
        for timer in self._endings:
            timer.cancel()
        self._endings.clear()
        self._until = self.cluster.now
        cluster = self.cluster
        cluster.heal()
        cluster.reset_faults()
        self._loss = self._dup = False
        for node_id in sorted(self._stalled):
            self._end_stall(node_id)
        for node_id in sorted(self._full):
            self._end_full_disk(node_id)
        for node_id in cluster.down():
            self._note("restart", f"restart {node_id}", node=node_id)
            cluster.restart(node_id)
        self._note("heal_all", "heal everything")
