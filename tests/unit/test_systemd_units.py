"""The systemd units in systemd/ pass ``systemd-analyze verify`` and keep their hardening;
and what docs/systemd.md says to do with them holds, as far as it can be checked without
systemd running: the units parse, ExecStart's program is what the install steps put there
and takes the unit's flags, the files the steps install exist, and the instance they
enable fits the config they install (its data directory is the unit's state directory)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from zkv.config import load_settings

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
INSTALLED_ZKV = "/usr/local/bin/zkv"
DOC = REPO / "docs" / "systemd.md"
MARK = "<!-- doctest: systemd -->"  # the install steps in docs/systemd.md
SECTIONS = {".service": {"Unit", "Service", "Install"}, ".target": {"Unit", "Install"}}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file's settings by section (a key set twice has both values); fails on a
    line that is no comment, section header or ``Key=Value`` in a section."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header.group(1)
            assert section not in sections, f"{path.name}:{n}: [{section}] twice"
            sections[section] = {}
            continue
        setting = re.fullmatch(r"([A-Z][A-Za-z]+)=(.*)", line)
        assert setting and section, f"{path.name}:{n}: not a setting in a section: {line!r}"
        sections[section].setdefault(setting.group(1), []).append(setting.group(2))
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    (value,) = unit[section][key]
    return value


def test_the_units_parse() -> None:
    units = sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.target"))
    assert [u.name for u in units] == ["zkv-node@.service", "zkv.target"]
    for path in units:
        unit = parse_unit(path)
        assert set(unit) <= SECTIONS[path.suffix] and "Unit" in unit, (path.name, set(unit))
        assert one(unit, "Install", "WantedBy")
    node = parse_unit(UNITS / "zkv-node@.service")
    assert one(node, "Unit", "PartOf") == "zkv.target" == one(node, "Install", "WantedBy")


def help_flags(*command: str) -> set[str]:
    result = subprocess.run([sys.executable, "-m", "zkv", *command, "--help"],
                            capture_output=True, text=True, timeout=60, check=True)
    return set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", result.stdout))


def test_the_node_unit_runs_a_command_that_takes_its_flags(tmp_path: Path) -> None:
    """ExecStart is `zkv node start --config /etc/zkv/%i.toml`: every flag it passes is
    one `zkv node start --help` lists, and run as the unit would (with %i a config that
    has a bad field), zkv reads the file and exits 2, which the unit does not restart."""
    unit = parse_unit(UNITS / "zkv-node@.service")
    program, *args = shlex.split(one(unit, "Service", "ExecStart"))
    assert program == INSTALLED_ZKV
    flags = [a for a in args if a.startswith("-")]
    assert flags and set(flags) <= help_flags(*args[:2]), (flags, args[:2])
    (tmp_path / "check.toml").write_text('id = "check"\nport = "7400"\n')
    args = [a.replace("/etc/zkv/", f"{tmp_path}/").replace("%i", "check") for a in args]
    result = subprocess.run([sys.executable, "-m", "zkv", *args], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"zkv: {tmp_path}/check.toml: port: "), result.stderr
    assert "2" in one(unit, "Service", "RestartPreventExitStatus").split()


def install_steps() -> list[list[str]]:
    """docs/systemd.md's marked block, one command a line, without sudo and comments."""
    lines = DOC.read_text().splitlines()
    start = lines.index(MARK) + 1
    assert lines[start].startswith("```"), f"no block after {MARK} in {DOC.name}"
    end = next(j for j in range(start + 1, len(lines)) if lines[j].startswith("```"))
    steps = []
    for line in lines[start + 1:end]:
        for command in re.split(r"\s*(?:&&|;)\s*", re.split(r"(?:^|\s)#", line)[0]):
            words = shlex.split(command)
            if words:
                steps.append(words[1:] if words[0] == "sudo" else words)
    return steps


def installs(steps: list[list[str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each ``install`` that copies files."""
    copies = []
    for words in steps:
        if words[0] != "install" or "-d" in words:
            continue
        rest, i = [], 1
        while i < len(words):
            if words[i] in ("-m", "-o", "-g"):
                i += 2
                continue
            rest.append(words[i])
            i += 1
        copies.append((rest[:-1], rest[-1]))
    return copies


def test_the_install_steps_fit_the_units_and_the_repository() -> None:
    steps = install_steps()
    unit = parse_unit(UNITS / "zkv-node@.service")
    # The unit's program: a virtualenv's `zkv` script (pyproject declares it), linked
    # to where ExecStart runs it.
    venv = next(w[-1] for w in steps if w[:3] == ["python3", "-m", "venv"])
    assert any(w[0] == f"{venv}/bin/pip" and w[1] == "install" for w in steps), steps
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["zkv"] == "zkv.cli:app"
    assert ["ln", "-s", f"{venv}/bin/zkv", INSTALLED_ZKV] in steps
    assert shlex.split(one(unit, "Service", "ExecStart"))[0] == INSTALLED_ZKV
    # Every file the steps install is in the repository.
    copies = installs(steps)
    for sources, _ in copies:
        for source in sources:
            assert (REPO / source).is_file(), f"docs/systemd.md installs {source}: missing"
    installed = {Path(dest if not dest.endswith("/") else dest + Path(s).name).name: s
                 for sources, dest in copies for s in sources}
    # The user the sysusers file makes is the one the unit runs as.
    sysusers = (REPO / installed["zkv.conf"]).read_text().splitlines()
    users = [line.split()[1] for line in sysusers if line.startswith("u ")]
    assert users == [one(unit, "Service", "User")] == [one(unit, "Service", "Group")]
    assert ["systemd-sysusers"] in steps
    # The instance enabled has the config installed for it, and the config is valid with
    # its data directory the unit's state directory (the only place it may write).
    (enable,) = [w for w in steps if w[:3] == ["systemctl", "enable", "--now"]]
    instances = [w.split("@", 1)[1] for w in enable[3:] if w.startswith("zkv-node@")]
    assert instances, enable
    for name in enable[3:]:  # zkv-node@zkv-1 is an instance of zkv-node@.service
        template = re.sub(r"@[^.]*", "@", name)
        assert (template if "." in template else f"{template}.service") in installed, name
    for instance in instances:
        config = one(unit, "Unit", "AssertPathExists").replace("%i", instance)
        assert Path(config).name in installed and Path(config).parent == Path("/etc") / one(
            unit, "Service", "ConfigurationDirectory"), (config, installed)
        settings = load_settings(REPO / installed[Path(config).name])
        state = Path("/var/lib") / one(unit, "Service", "StateDirectory").replace("%i", instance)
        assert settings.data_dir == state, (settings.data_dir, state)
        assert one(unit, "Service", "WorkingDirectory").replace("%i", instance) == str(state)
        assert f'data_dir = "{state}"' in DOC.read_text()


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
