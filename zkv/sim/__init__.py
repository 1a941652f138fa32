"""EmulNet: the deterministic simulator that runs many zkv nodes in one process.

Virtual time, one seeded random generator, and a network that drops, delays,
duplicates and reorders messages, partitions nodes, crashes and restarts them.
Same seed, same trace.

- ``SimCluster``: build a cluster, drive it, inject faults, send client requests.
- ``run_random``: the randomized fault run of a ``RunSpec``, with history checks
  (``RunReport``).
- ``run_scenario`` / ``SCENARIOS`` / ``format_report``: named runs for ``zkv sim``.
"""

from zkv.sim.client import ClientResult, PendingResult, SimClient
from zkv.sim.cluster import SimCluster
from zkv.sim.events import EventLog, LogEntry
from zkv.sim.history import History, Op
from zkv.sim.network import LinkFaults, NetStats, Network
from zkv.sim.report import RunReport, format_report
from zkv.sim.runner import RunSpec, run_random
from zkv.sim.scenarios import SCENARIOS, run_scenario
from zkv.sim.scheduler import Scheduler

__all__ = [
    "SCENARIOS",
    "ClientResult",
    "EventLog",
    "History",
    "LinkFaults",
    "LogEntry",
    "NetStats",
    "Network",
    "Op",
    "PendingResult",
    "RunReport",
    "RunSpec",
    "Scheduler",
    "SimClient",
    "SimCluster",
    "format_report",
    "run_random",
    "run_scenario",
]
