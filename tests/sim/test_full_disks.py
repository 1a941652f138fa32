"""Full disks (issue 14): a store that refuses writes discards every write since its last
commit, so the turn's acknowledgements are withheld and the node restarts from its store,
or halts until the disk is freed; the checker must still accept every run.
ZKV_FULL_DISK_SEEDS=N runs more seeds; a failure replays with
``zkv sim full-disks --seed N``."""

import os

import pytest

from zkv.sim.scenarios import format_report, run_scenario

SEEDS = int(os.environ.get("ZKV_FULL_DISK_SEEDS", "20"))


def test_full_disks_lose_no_acknowledged_write_and_stay_linearizable():
    seen = {"store_full": 0, "acks_withheld": 0, "rebooted": 0, "halted": 0}
    for seed in range(SEEDS):
        report = run_scenario("full-disks", seed)
        if not report.ok:
            pytest.fail(f"seed {seed}:\n{format_report(report)}")
        for kind in seen:
            seen[kind] += report.event_kinds.get(kind, 0)
    # The runs exercised both ways out of a lost turn, not only the quiet path.
    assert seen["store_full"] and seen["acks_withheld"], seen
    assert seen["rebooted"] and seen["halted"], seen
