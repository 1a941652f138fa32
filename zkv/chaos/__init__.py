"""``zkv chaos``: record a history under real faults, then check it (the Jepsen way).

- ``workload``: client processes doing get/put/delete/create/update/cas on a few
  contended keys, and counter processes incrementing one key by read-then-cas;
- ``nemesis``: kills, pauses, network faults and ring changes (join,
  decommission, wipe, remove) on a schedule, never more than ``max_down``
  replicas of any key at once, and a quorum of them untouched by a ring change;
- ``netns``: nodes as separate hosts in Linux network namespaces;
- ``cluster``: the supervised cluster under test, its processes and signals;
- ``checks``: linearizability, lost writes, placement after settling;
- ``report``: the summary table; ``plots``: the same with pictures (report.html);
- ``spec``: a run's options, resolved against the machine (``ChaosSpec``);
- ``setup``: the cluster, lab and processes of a run, set up and torn down;
- ``explain``: failing key histories for a reader;
- ``run``: one run, start to verdict (``run_chaos``).
"""

from zkv.chaos.run import ChaosError, ChaosOptions, ChaosResult, run_chaos

__all__ = ["ChaosError", "ChaosOptions", "ChaosResult", "run_chaos"]
