"""``bench/compare.py`` drives etcd and zkv with one generator and writes its results.

These check that the comparison works (ops on both sides, no errors, a table),
not which system is faster: 1 s per cell, 2 clients, a few hundred keys.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPARE = ROOT / "bench" / "compare.py"


def compare(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COMPARE), *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_etcd_and_zkv_both_serve_the_same_load_without_errors(tmp_path: Path) -> None:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian: apt-get install etcd-server; .ci/run "
                    "installs it when run as root)")
    done = compare("--systems", "etcd,zkv", "--clients", "2", "--duration", "1",
                   "--warmup", "0.3", "--keys", "200", "--out", str(tmp_path),
                   "--tmp-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    [jsonl] = tmp_path.glob("compare-*.jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    cells = {(r["system"], r["workload"]) for r in rows}
    assert cells == {(s, w) for s in ("etcd", "zkv") for w in ("put", "get")}, cells
    for r in rows:
        assert r["ops"] > 0, r
        assert r["errors"] == 0, (r["system"], r["workload"], r["error_samples"])
        assert r["not_found"] == 0 and r["preload_failed"] == 0, r
        assert r["clients"] == 2 and r["generator"]["processes"] == 2
        assert r["p50_ms"] > 0 and r["generator"]["cpu_s"] > 0
    [md] = tmp_path.glob("compare-*.md")
    table = md.read_text()
    assert "| system | workload | clients | ops/s | p50 ms | p99 ms | errors | zkv/etcd" in table
    assert table.count("| zkv (3) |") == 2 and table.count("| etcd (3) |") == 2
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("zkv-compare-")]
    assert leftovers == [], "the systems' data directory was not removed"


def test_without_etcd_the_comparison_is_skipped_with_a_reason(tmp_path: Path) -> None:
    done = compare("--etcd", str(tmp_path / "no-such-etcd"), "--out", str(tmp_path),
                   timeout=30)
    assert done.returncode == 0, done.stderr
    assert "skipped: no etcd binary" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_zkv_alone_serves_the_raw_wire_generator_without_errors(tmp_path: Path) -> None:
    """The default generator speaks zkv's wire (ZMTP) on plain sockets: every put and
    every get of the loaded keys answered, through the nodes' ordinary ROUTER."""
    done = compare("--systems", "zkv", "--clients", "2", "--duration", "1", "--warmup", "0.3",
                   "--keys", "200", "--out", str(tmp_path), "--tmp-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    [jsonl] = tmp_path.glob("compare-*.jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert {r["workload"] for r in rows} == {"put", "get"}
    for r in rows:
        assert r["ops"] > 0 and r["errors"] == 0, (r["workload"], r["error_samples"])
        assert r["not_found"] == 0 and r["preload_failed"] == 0, r
        assert r["settings"]["api"].startswith("ZMTP on a plain socket"), r["settings"]
