"""``bench/membership.py`` adds two nodes and decommissions one under a reader, at a tiny
size, and the reader misses no key.

This checks that the membership run works and that its proof holds on real processes,
not how fast the store streams.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole benchmark run: bin/test runs it, -m "not slow" skips it

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "membership.py"


def test_membership_run_adds_and_decommissions_without_a_miss(tmp_path: Path) -> None:
    out = tmp_path / "membership.jsonl"
    keys = 3000
    done = subprocess.run([sys.executable, str(SCRIPT), "--keys", str(keys), "--baseline", "2",
                           "--timeout", "60", "--data-dir", str(tmp_path / "cluster"),
                           "--json", str(out)],
                          capture_output=True, timeout=150, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["record"] for line in lines] == ["change", "change", "run"]
    add, gone, run = lines
    assert run["load"]["loaded"] == keys and run["load"]["failed"] == 0
    assert run["misses"] == 0 and run["reader"]["misses"] == []
    reader = run["reader"]
    assert reader["keys_checked"] == keys and len(reader["passes"]) >= 2
    assert reader["passes"][-1]["gets"] >= keys and reader["passes"][-1]["misses"] == 0

    assert add["change"] == "add 2 nodes" and add["done"] and add["exit_code"] == 0
    assert add["answer"]["added"] == ["node-4", "node-5"]
    assert gone["change"] == "decommission node-3" and gone["done"]
    assert "node-3" in gone["left_at"]
    for change in (add, gone):
        assert change["epoch_after"] > change["epoch_before"]
        assert change["streaming_s"] > 0 and change["keys_streamed"] > 0
        assert change["keys_streamed"] >= change["key_copies_gained"] > 0
        assert all(t["settled_epoch"] > t["epoch"] for t in change["transitions"])
    # Both join in one transition, or in two when the second asked after the first's
    # proposal: either way both streamed.
    assert {"node-4", "node-5"} <= {g for t in add["transitions"] for g in t["gainers"]}
    assert "node-3" not in run["keys_at_end"]
    assert "**Misses: 0**" in done.stdout.decode()
