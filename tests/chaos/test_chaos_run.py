"""A minute of faults against a real 5-node cluster, then the verdict.

Kills and pauses always; partitions, packet loss and slow links too when the
nodes can run as separate hosts in network namespaces (root, ip, nft, tc).
The run fails on any violation: a key whose history is not linearizable, an
acknowledged write lost, a key not on exactly its replica set after settling.
Set ZKV_CHAOS_SEED to replay a schedule (timing still varies run to run).
"""

from __future__ import annotations

import io
import os
import random

import pytest
from rich.console import Console

from zkv.chaos import ChaosOptions, netns, run_chaos
from zkv.chaos.nemesis import KILL, PARTITION, PAUSE

from .conftest import FAST_TIMERS

DURATION = 60.0


@pytest.mark.timeout(300)
def test_a_minute_of_faults_breaks_no_guarantee(tmp_path):
    seed = int(os.environ.get("ZKV_CHAOS_SEED") or random.randrange(2**31))
    network = "netns" if netns.support() is None else "loopback"
    output = io.StringIO()
    result = run_chaos(
        ChaosOptions(duration=DURATION, nodes=5, data_dir=tmp_path / "cluster",
                     out=tmp_path / "run", network=network, seed=seed, progress=False,
                     node_flags=FAST_TIMERS),
        Console(file=output, width=120))
    report = output.getvalue()
    print(report)
    summary = result.summary
    assert result.ok, f"seed {seed} ({network}); cluster kept in {tmp_path}:\n{report}"
    assert summary.total_ops > 1000
    assert summary.faults.get(KILL, 0) >= 1 and summary.faults.get(PAUSE, 0) >= 1
    if network == "netns":
        assert summary.faults.get(PARTITION, 0) >= 1
