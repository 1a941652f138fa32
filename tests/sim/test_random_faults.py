"""Randomized fault runs: concurrent clients under crashes, restarts, partitions, loss and
duplication. After healing, no acknowledged write is lost and every key's history is
linearizable. ZKV_SIM_SEEDS=N runs more seeds; a failure replays with
``zkv sim suite --seed N``.
"""

import os

import pytest

from zkv.sim.scenarios import format_report, run_scenario

SEEDS = int(os.environ.get("ZKV_SIM_SEEDS", "20"))

pytestmark = pytest.mark.slow  # the seed sweep: bin/test runs it, -m "not slow" skips it


@pytest.mark.parametrize("seed", range(SEEDS))
def test_random_faults_lose_nothing_and_stay_linearizable(seed):
    report = run_scenario("suite", seed)
    assert report.error is None, format_report(report)
    assert not report.lost_writes, format_report(report)
    assert report.linearizable, format_report(report)
    assert report.ok, format_report(report)
    assert report.nemesis, "the nemesis injected no fault"
    assert report.op_counts["put"].get("ok", 0) > 0, "no write was acknowledged"
