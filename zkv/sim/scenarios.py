"""Named simulator scenarios, for ``zkv sim <name> --seed N`` and for tests.

Each scenario is a run spec (``RUNS``), run under any seed by a function of the
seed returning a ``RunReport`` (``SCENARIOS``); a failing (name, seed) pair
replays exactly.
"""

from __future__ import annotations

from collections.abc import Callable

from zkv.core.config import NodeConfig
from zkv.sim.nemesis import MEMBERSHIP, NemesisSpec
from zkv.sim.report import RunReport, format_report
from zkv.sim.runner import RunSpec, run_random
from zkv.sim.workload import WorkloadSpec

Scenario = Callable[[int], RunReport]

# Membership runs use shorter failure timers, so removals and stalls past t_remove fit
# in a short run.
FAST_TIMERS = {"t_fail": 1.0, "t_remove": 3.0, "anti_entropy_interval": 1.0}

_T_REMOVE = NodeConfig("n", "a").t_remove


# Three of a randomized run's clients run the library's policy (routing, retries,
# direct reads), the others send each request to a random node: the policy's clients
# found two bugs in it that random coordinators never meet (tests/sim/test_client_policy.py).
ROUTED = 3


def _membership(name: str, faults: tuple[str, ...]) -> RunSpec:
    return RunSpec(name, nodes=5, duration=10.0,
                   workload=WorkloadSpec(clients=4, keys=4, conditional_ratio=0.3,
                                         routed_clients=ROUTED),
                   nemesis=NemesisSpec(faults, interval=(0.5, 1.5)),
                   config_overrides=dict(FAST_TIMERS))


# name: (spec, what it does: the first line is what ``zkv sim --list`` shows)
RUNS: dict[str, tuple[RunSpec, str]] = {
    "random": (RunSpec("random", workload=WorkloadSpec(routed_clients=ROUTED)),
               "10 nodes, 5 clients, 30 s of get/put/delete under every fault kind."),
    "quick": (RunSpec("quick", nodes=5, duration=10.0,
                      workload=WorkloadSpec(clients=3, keys=3)),
              "A small fast run: 5 nodes, 3 clients, 10 s."),
    "suite": (RunSpec("suite", duration=10.0, workload=WorkloadSpec(routed_clients=ROUTED)),
              ("The randomized run of the default test suite "
               "(tests/sim/test_random_faults.py).")),
    "mixed": (RunSpec("mixed", nodes=5, duration=8.0,
                      workload=WorkloadSpec(clients=4, keys=3, conditional_ratio=0.5,
                                            counter_clients=3)),
              ("Plain and conditional ops on shared keys plus a CAS counter, every fault.\n\n"
               "The run of tests/sim/test_conditional.py.")),
    "fast-puts": (RunSpec("fast-puts", nodes=5, duration=8.0,
                          workload=WorkloadSpec(clients=4, keys=3, conditional_ratio=0.5,
                                                counter_clients=3),
                          config_overrides={"extra": {"fast_puts_everywhere": True}}),
                  ("The mixed run with every put written at once, without its read phase, "
                   "by whichever node coordinates it.\n\n"
                   "Far more refused and racing fast puts than the primary-only fast path "
                   "meets: its safety rests on the replicas' refusal rule alone "
                   "(tests/sim/test_conditional.py).")),
    "crashes": (RunSpec("crashes", nemesis=NemesisSpec(("crash",), interval=(0.3, 1.0))),
                "Frequent crashes and restarts only (disks survive)."),
    "partitions": (RunSpec("partitions", nemesis=NemesisSpec(("partition", "isolate"))),
                   "Partitions and isolated nodes, shorter than t_remove."),
    "lossy": (RunSpec("lossy", nemesis=NemesisSpec(("loss", "duplicate")), drop=0.05,
                      duplicate=0.05, workload=WorkloadSpec(routed_clients=ROUTED)),
              "Lossy and duplicating links: 5 % of messages dropped, 5 % duplicated."),
    "split-brain": (RunSpec("split-brain", duration=40.0, nemesis=NemesisSpec(
                        ("partition",), interval=(1.0, 2.0),
                        duration=(1.2 * _T_REMOVE, 2.0 * _T_REMOVE))),
                    ("Partitions outlasting t_remove under auto removal: the majority removes "
                     "the others.\n\n"
                     "A key with two replicas cut off is then served from the survivor, the "
                     "documented degraded case (docs/consistency.md, \"Removal policy\").")),
    "skewed-clocks": (RunSpec("skewed-clocks", clock_skew=0.5),
                      ("Each node's wall clock off by up to 0.5 s (versions follow the hybrid "
                       "clock).")),
    "joins": (_membership("joins", ("join", "crash", "loss")),
              "Nodes join (one or two at once) under load, crashes and message loss."),
    "decommissions": (_membership("decommissions", ("decommission", "join", "crash", "loss")),
                      "Operators decommission nodes under load, crashes and message loss."),
    "removals": (_membership("removals", ("remove", "join", "loss")),
                 "Nodes crash for longer than t_remove: a majority removes them, they rejoin."),
    "wipes": (_membership("wipes", ("wipe", "loss")),
              "Nodes restart on an empty directory under their old id (a new member)."),
    "stalls": (_membership("stalls", ("stall", "loss")),
               "Processes stall for longer than t_remove, then handle what queued up."),
    "membership": (_membership("membership", MEMBERSHIP + ("crash", "partition", "loss")),
                   "Every membership fault at once, with crashes, partitions and loss."),
    "split-brain-manual": (
        RunSpec("split-brain-manual", nodes=5, duration=12.0,
                workload=WorkloadSpec(clients=4, keys=4, conditional_ratio=0.3),
                nemesis=NemesisSpec(("partition",), interval=(0.5, 1.0),
                                    duration=(1.2 * FAST_TIMERS["t_remove"],
                                              2.0 * FAST_TIMERS["t_remove"])),
                config_overrides={**FAST_TIMERS, "removal": "manual"}),
        ("Partitions outlasting t_remove under the manual removal policy: nobody is "
         "removed, so no read is stale.")),
    "clients": (RunSpec("clients", nodes=5, duration=10.0,
                        workload=WorkloadSpec(clients=5, keys=4, conditional_ratio=0.3,
                                              routed_clients=4),
                        nemesis=NemesisSpec(("crash", "isolate", "partition", "loss", "stall"),
                                            interval=(0.5, 1.5)),
                        config_overrides=dict(FAST_TIMERS)),
                ("The library's client policy (routing, hedged reads, retries) under crashes, "
                 "partitions, loss and stalled coordinators.")),
    "direct-reads": (
        RunSpec("direct-reads", nodes=5, duration=10.0,
                workload=WorkloadSpec(clients=4, keys=3, conditional_ratio=0.3,
                                      routed_clients=4, direct_reads=True),
                nemesis=NemesisSpec(MEMBERSHIP + ("crash", "isolate", "partition", "loss"),
                                    interval=(0.5, 1.5)),
                config_overrides=dict(FAST_TIMERS)),
        ("Every client reads quorum gets from the replicas directly, under ring changes, "
         "crashes, partitions and loss.\n\n"
         "The replicas serve a direct read only at their map's epoch and with no ring "
         "change under way (zkv.core.direct_read).")),
    "full-disks": (_membership("full-disks", ("full_disk", "crash", "loss")),
                   ("Nodes' disks fill up under load (writes refused, the turn's acks "
                    "withheld, the node restarts or halts), with crashes and loss.")),
}


def _scenario(spec: RunSpec, doc: str) -> Scenario:
    def scenario(seed: int) -> RunReport:
        return run_random(seed, spec)

    scenario.__doc__ = doc
    return scenario


SCENARIOS: dict[str, Scenario] = {name: _scenario(spec, doc)
                                  for name, (spec, doc) in RUNS.items()}


def run_scenario(name: str, seed: int) -> RunReport:
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
    return scenario(seed)


__all__ = ["RUNS", "SCENARIOS", "format_report", "run_scenario"]
