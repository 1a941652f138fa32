"""75 seconds of every kind of fault against a real 5-node cluster, then the verdict:
docs/chaos.md's long run, as written there but shorter.

The run is the documented command line (``zkv chaos --nodes 5 --duration 600``)
with ``--duration 600`` replaced by ``--duration 75``, so a renamed or dropped
flag of it fails this test; it adds ``--faults all`` (every kind the set-up
allows, ring changes included), a seed, its directories and ``--no-progress``.
Kills and pauses always; partitions, packet loss and slow links too when the
nodes can run as separate hosts in network namespaces (root, ip, nft, tc); and
ring changes: joins, decommissions, wipes and removals, one at a time. The
workload mixes plain and conditional ops (create, update, cas), and two
processes increment a CAS counter. The run fails on any violation: a key whose
history is not linearizable (or that the checker could not decide), an
acknowledged write lost, a counter that does not add up to its acknowledged
increments, a key not on exactly its replica set of the ring as it ends.

The seed is fixed (DEFAULT_SEEDS, one per network) and printed;
ZKV_CHAOS_SEED=N runs another schedule (timing still varies run to run). The
seeds were picked by replaying the nemesis alone against
tests/chaos/test_nemesis.py's FakeCluster with the timing of real runs varied
(ring changes of 1.2-4 s as measured, or 1-8 s, or 2-10 s; killed nodes back
after 0.5-4 s; 50-150 ms per turn of the run's loop): in 150-200 replays of
75 s each, every fault kind asserted below came up in 95-100 % of them (185 in
network namespaces: kills, pauses, partitions, loss, slow links, a join and a
decommission) and 99-100 % (178 on loopback: kills, pauses, a join and a
decommission), where a random seed gets them in about a third. The node timers
are those of ``zkv chaos`` itself (its defaults: t_remove above the longest
fault but a ``remove``, which outlasts it on purpose).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from zkv.chaos import netns
from zkv.chaos.nemesis import DECOMMISSION, JOIN, KILL, LOSS, PARTITION, PAUSE, SLOW, NemesisSpec
from zkv.chaos.report import Summary
from zkv.chaos.run import FAST_TIMERS  # t_remove above the longest fault, as the nemesis assumes

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = "--duration 600"  # docs/chaos.md's 10-minute run ...
DURATION = 75  # ... shortened to this many seconds here
DEFAULT_SEEDS = {"netns": 185, "loopback": 178}


def documented_long_run() -> list[str]:
    """The ``zkv chaos`` command line of docs/chaos.md that runs 10 minutes."""
    lines = [line for line in (ROOT / "docs" / "chaos.md").read_text().splitlines()
             if line.startswith("zkv chaos ") and DOCUMENTED in line]
    assert len(lines) == 1, f"docs/chaos.md should show one `zkv chaos ... {DOCUMENTED}`"
    return shlex.split(re.split(r"\s#\s", lines[0])[0])


def test_the_timers_leave_room_for_the_longest_fault():
    """The documented gap (two replicas cut off past t_remove) is out of reach."""
    t_remove = float(FAST_TIMERS[FAST_TIMERS.index("--t-remove") + 1])
    longest = max(high for _, high in NemesisSpec().durations.values())
    assert longest < t_remove, (longest, t_remove)


@pytest.mark.slow
@pytest.mark.alone  # its fault schedule was picked for an idle machine's timing
@pytest.mark.timeout(330)
def test_the_documented_long_run_shortened_breaks_no_guarantee(tmp_path):
    network = "netns" if netns.support() is None else "loopback"
    seed = int(os.environ.get("ZKV_CHAOS_SEED") or DEFAULT_SEEDS[network])
    print(f"chaos seed {seed} ({network}); ZKV_CHAOS_SEED=N replays another")
    command = documented_long_run()
    assert command[:2] == ["zkv", "chaos"] and DOCUMENTED in shlex.join(command), command
    # The explicit override: the documented --duration 600 becomes --duration 75.
    command = shlex.split(shlex.join(command).replace(DOCUMENTED, f"--duration {DURATION}"))
    out, cluster = tmp_path / "run", tmp_path / "cluster"
    command += ["--faults", "all", "--seed", str(seed), "--data-dir", str(cluster),
                "--out", str(out), "--no-progress"]
    print("$", shlex.join(command))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKV_")}
    run = subprocess.run([sys.executable, "-m", "zkv", *command[1:]], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=310, check=False)
    report = run.stdout + run.stderr
    print(report)
    assert run.returncode == 0, f"seed {seed} ({network}); cluster kept in {cluster}:\n{report}"
    summary = Summary.load(out / "summary.json")
    assert summary.ok and summary.duration == DURATION and summary.nodes == 5, report
    assert summary.network == network and summary.total_ops > 1000, report
    # Conditional ops ran, with both answers.
    assert summary.conditional_ratio > 0
    for kind in ("create", "update", "cas"):
        assert summary.ops.get(kind, {}).get("ok", 0) > 0, summary.ops
    assert summary.answers["cas"].get("true", 0) > 0, summary.answers
    assert summary.answers["cas"].get("false", 0) > 0, summary.answers
    # The counter moved and adds up (summary.ok covers it too; said here plainly).
    counter = summary.counter
    assert counter is not None and counter.workers == 2
    assert counter.acked > 0 and counter.conflicts > 0, counter
    assert counter.holds and counter.final is not None, counter
    assert counter.acked <= counter.final <= counter.acked + counter.unknown, counter
    assert counter.linearizability == "linearizable", counter
    # Every process and network fault kind the set-up allows was injected ...
    kinds = (KILL, PAUSE, PARTITION, LOSS, SLOW) if network == "netns" else (KILL, PAUSE)
    missing = [kind for kind in kinds if summary.faults.get(kind, 0) < 1]
    assert not missing, f"seed {seed}: never injected {missing}; injected {summary.faults}"
    # ... and the ring changed: a join and a decommission finished, as did every ring
    # change, and the checks ran on the ring as it ended.
    done = [c for c in summary.membership if c["seconds"] is not None]
    for kind in (JOIN, DECOMMISSION):
        assert any(c["kind"] == kind for c in done), (
            f"seed {seed}: no {kind} finished; injected {summary.faults}\n{report}")
    assert len(done) == len(summary.membership), "every ring change finished"
    assert set(summary.ring) == set(done[-1]["members_after"]), "checked on the final ring"
    # Beside the history, the report: the verdict and its pictures, inline and as files.
    assert summary.report == str(out / "report.html"), summary.notes
    page = (out / "report.html").read_text()
    assert 'class="pass">PASS' in page and page.count("data:image/png;base64,") == 2
    assert all((out / name).stat().st_size > 20_000
               for name in ("latency.png", "throughput.png"))
