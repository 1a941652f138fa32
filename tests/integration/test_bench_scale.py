"""``bench/scale.py`` runs every phase end to end at a tiny size and reports clean numbers.

This checks that the scale run works, not how fast the store is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a whole benchmark run: bin/test runs it, -m "not slow" skips it

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


def test_scale_run_loads_restarts_joins_and_decommissions(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    keys = 2000
    done = subprocess.run([sys.executable, str(SCRIPT), "--keys", str(keys), "--deadline", "60",
                           "--data-dir", str(tmp_path / "cluster"), "--json", str(out)],
                          capture_output=True, timeout=150)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result = json.loads(out.read_text())
    assert result["load"]["loaded"] == keys and result["load"]["failed"] == 0
    assert result["load"]["keys_per_s"] > 0
    nodes = result["nodes_after_load"]
    assert [n["keys"] for n in nodes] == [keys] * 3
    assert all(n["rss_bytes"] > 0 and n["data_mdb_allocated"] > 0 for n in nodes)
    restart = result["restart"]
    assert 0 < restart["ready_s"] <= restart["quorum_get_s"]
    assert result["join"]["done"] and result["join"]["strays_dropped"]["done"]
    gone = result["decommission"]
    assert gone["done"] and gone["exit_code"] == 3 and gone["keys_gained"] > 0
    assert gone["epoch_after"] > gone["epoch_before"]
    assert "decommission:" in done.stdout.decode()
