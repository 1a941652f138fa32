"""The systemd units in systemd/ pass ``systemd-analyze verify`` and keep their hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
INSTALLED_ZKV = "/usr/local/bin/zkv"


def _zkv_here() -> str:
    """A zkv executable that exists on this machine, to stand in for the installed one."""
    candidate = Path(sys.executable).with_name("zkv")
    return str(candidate) if candidate.exists() else shutil.which("zkv") or sys.executable


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists, and AssertPathExists names the
    # config on a real host: point both at files that exist here.
    (tmp_path / "check.toml").write_text('id = "check"\n')
    unit = (UNITS / "zkv-node@.service").read_text()
    assert INSTALLED_ZKV in unit
    unit = unit.replace(INSTALLED_ZKV, _zkv_here()).replace("/etc/zkv/%i.toml",
                                                           str(tmp_path / "%i.toml"))
    (tmp_path / "zkv-node@.service").write_text(unit)
    shutil.copy(UNITS / "zkv.target", tmp_path / "zkv.target")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "zkv-node@check.service", "zkv.target"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "zkv" in line]  # verify may also chatter about the host's own units
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_the_node_unit_runs_the_node_hardened() -> None:
    unit = (UNITS / "zkv-node@.service").read_text()
    settings = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines()
                if "=" in line and not line.startswith("#")}
    assert settings["ExecStart"] == f"{INSTALLED_ZKV} node start --config /etc/zkv/%i.toml"
    assert settings["Restart"] == "on-failure"
    assert settings["StateDirectory"] == "zkv/%i"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "MemoryDenyWriteExecute": "yes",
                       "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}.items():
        assert settings.get(key) == value, key
    assert int(settings["LimitNOFILE"]) >= 4096
