"""Named simulator scenarios, for ``zkv sim <name> --seed N`` and for tests.

Each scenario is a function of the seed returning a ``RunReport``; a failing
(name, seed) pair replays exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zkv.sim.nemesis import MEMBERSHIP
from zkv.sim.report import RunReport, format_report
from zkv.sim.runner import run_random

Scenario = Callable[[int], RunReport]


def _random(seed: int) -> RunReport:
    """10 nodes, 5 clients, 30 s of get/put/delete under every fault kind."""
    return run_random(seed)


def _quick(seed: int) -> RunReport:
    """A small fast run: 5 nodes, 3 clients, 10 s."""
    return run_random(seed, nodes=5, clients=3, keys=3, duration=10.0, scenario="quick")


def _suite(seed: int) -> RunReport:
    """The randomized run of the default test suite (tests/sim/test_random_faults.py)."""
    return run_random(seed, duration=10.0, scenario="suite")


def _mixed(seed: int) -> RunReport:
    """Plain and conditional ops on shared keys plus a CAS counter, every fault.

    The run of tests/sim/test_conditional.py."""
    return run_random(seed, nodes=5, clients=4, keys=3, duration=8.0, conditional_ratio=0.5,
                      counter_clients=3, scenario="mixed")


def _crashes(seed: int) -> RunReport:
    """Frequent crashes and restarts only (disks survive)."""
    return run_random(seed, faults=("crash",), fault_interval=(0.3, 1.0), scenario="crashes")


def _partitions(seed: int) -> RunReport:
    """Partitions and isolated nodes, shorter than t_remove."""
    return run_random(seed, faults=("partition", "isolate"), scenario="partitions")


def _lossy(seed: int) -> RunReport:
    """Lossy and duplicating links: 5 % of messages dropped, 5 % duplicated."""
    return run_random(seed, faults=("loss", "duplicate"), drop=0.05, duplicate=0.05,
                      scenario="lossy")


def _split_brain(seed: int) -> RunReport:
    """Partitions outlasting t_remove under auto removal: the majority removes the others.

    A key with two replicas cut off is then served from the survivor, the documented
    degraded case (docs/consistency.md, "Removal policy")."""
    from zkv.core.config import NodeConfig  # noqa: PLC0415

    t_remove = NodeConfig("n", "a").t_remove
    return run_random(seed, faults=("partition",), fault_interval=(1.0, 2.0),
                      fault_duration=(1.2 * t_remove, 2.0 * t_remove), duration=40.0,
                      scenario="split-brain")


def _skewed_clocks(seed: int) -> RunReport:
    """Each node's wall clock off by up to 0.5 s (versions follow the hybrid clock)."""
    return run_random(seed, clock_skew=0.5, scenario="skewed-clocks")


# Membership runs use shorter failure timers, so removals and stalls past t_remove fit
# in a short run.
FAST_TIMERS = {"t_fail": 1.0, "t_remove": 3.0, "anti_entropy_interval": 1.0}


def _membership(faults: tuple[str, ...], name: str, **kw: Any) -> Scenario:
    def scenario(seed: int) -> RunReport:
        return run_random(seed, nodes=5, clients=4, keys=4, duration=10.0, faults=faults,
                          fault_interval=(0.5, 1.5), conditional_ratio=0.3,
                          config_overrides={**FAST_TIMERS, **kw.pop("config", {})},
                          scenario=name, **kw)
    scenario.__doc__ = _DOCS[name]
    return scenario


_DOCS = {
    "joins": "Nodes join (one or two at once) under load, crashes and message loss.",
    "decommissions": "Operators decommission nodes under load, crashes and message loss.",
    "removals": "Nodes crash for longer than t_remove: a majority removes them, they rejoin.",
    "wipes": "Nodes restart on an empty directory under their old id (a new member).",
    "stalls": "Processes stall for longer than t_remove, then handle what queued up.",
    "membership": "Every membership fault at once, with crashes, partitions and loss.",
    "split-brain-manual": "Partitions outlasting t_remove under the manual removal policy: "
                          "nobody is removed, so no read is stale.",
}


def _split_brain_manual(seed: int) -> RunReport:
    return run_random(seed, nodes=5, clients=4, keys=4, duration=12.0, faults=("partition",),
                      fault_interval=(0.5, 1.0),
                      fault_duration=(1.2 * FAST_TIMERS["t_remove"],
                                      2.0 * FAST_TIMERS["t_remove"]),
                      config_overrides={**FAST_TIMERS, "removal": "manual"},
                      conditional_ratio=0.3, scenario="split-brain-manual")


_split_brain_manual.__doc__ = _DOCS["split-brain-manual"]

SCENARIOS: dict[str, Scenario] = {
    "random": _random,
    "quick": _quick,
    "suite": _suite,
    "mixed": _mixed,
    "crashes": _crashes,
    "partitions": _partitions,
    "lossy": _lossy,
    "split-brain": _split_brain,
    "skewed-clocks": _skewed_clocks,
    "joins": _membership(("join", "crash", "loss"), "joins"),
    "decommissions": _membership(("decommission", "join", "crash", "loss"), "decommissions"),
    "removals": _membership(("remove", "join", "loss"), "removals"),
    "wipes": _membership(("wipe", "loss"), "wipes"),
    "stalls": _membership(("stall", "loss"), "stalls"),
    "membership": _membership(MEMBERSHIP + ("crash", "partition", "loss"), "membership"),
    "split-brain-manual": _split_brain_manual,
}


def run_scenario(name: str, seed: int) -> RunReport:
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    return scenario(seed)


__all__ = ["SCENARIOS", "format_report", "run_scenario"]
