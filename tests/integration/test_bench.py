"""``zkv bench`` runs end to end against its own cluster and reports clean numbers.

These check that the benchmark works, not how fast the store is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from zkv import plots
from zkv.errors import KeyNotFound


def bench(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "zkv", "bench", "--nodes", "3", "--json",
                           *args], capture_output=True, timeout=150)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.mark.parametrize("workload, pipeline", [("put", "1"), ("mixed", "4"), ("cas", "4"),
                                                ("create", "1")])
def test_bench_on_its_own_cluster_reports_ops_and_no_errors(workload: str, pipeline: str,
                                                            tmp_path: Path) -> None:
    plot = tmp_path / "bench.png"
    result = bench("--duration", "2", "--workload", workload, "--clients", "2",
                   "--pipeline", pipeline, "--keys", "200",
                   *(("--plot", str(plot)) if workload == "mixed" else ()),
                   # the clients over ZeroMQ's sockets once (the default is ZMTP on sockets)
                   *(("--transport", "zeromq") if workload == "create" else ()))
    assert result["options"]["transport"] == ("zeromq" if workload == "create" else None)
    assert result["total"]["ops"] > 0
    assert result["total"]["errors"] == 0, result["error_samples"]
    assert result["total"]["p50_ms"] > 0
    assert result["generator"]["processes"] >= 1
    # The nodes' CPU is counted over the timed window: its own cluster's three processes.
    assert result["nodes"]["processes"] == 3 and result["nodes"]["cpu_s"] > 0
    assert result["nodes"]["cpu_us_per_op"] > 0
    # What a plot is drawn from: the tail up to the slowest op, every op in the timeline.
    for kind, row in result["by_op"].items():
        assert result["latency_distribution"][kind][-1][1] == pytest.approx(row["max_ms"],
                                                                            abs=0.01)
    assert sum(map(sum, result["timeline"]["ops"].values())) == result["total"]["ops"]
    if workload == "mixed":  # --plot: one run draws it (a PNG of the promised size)
        with Image.open(plot) as image:
            image.load()
            assert image.size == (round(13.0 * plots.DPI), round(4.6 * plots.DPI))


def test_the_counter_workload_keeps_rising_without_errors() -> None:
    result = bench("--duration", "2", "--workload", "counter", "--clients", "4")
    cas = result["by_op"]["cas"]
    assert cas["ops"] > 0, result  # successful increments
    assert result["total"]["errors"] == 0, result["error_samples"]


def test_submitted_requests_settle_like_blocking_calls(cluster3) -> None:
    client = cluster3.client()
    futures = [client.submit("put", f"async-{i}", f"v{i}".encode()) for i in range(20)]
    while client.in_flight:
        client.poll(0.1)
    assert all(f.result() is None for f in futures)
    gets = [client.submit("get", f"async-{i}") for i in range(20)]
    missing = client.submit("delete", "async-never-written")
    while client.in_flight:
        client.poll(0.1)
    assert [f.result() for f in gets] == [f"v{i}".encode() for i in range(20)]
    assert isinstance(missing.exception(), KeyNotFound)
    assert client.get("async-3") == b"v3"  # the blocking API still works beside it
