"""The README's tour, run as written: every shell block marked ``<!-- doctest -->``.

The tour runs in a temporary directory against ``bin/zkv cluster up --detach`` (on
free ports), so its commands find the cluster through ``./zkv-data`` as the README
says. A command's trailing comment is its expectation: ``# exit N`` its exit code
(0 when not said), ``# -> TEXT`` its output. The tour's node ids are the README's
example of what ``locate`` printed; each is replaced by the id ``locate`` really
printed in the same place.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import CLI_TIMEOUT, SupervisedCluster, free_base_port

ROOT = Path(__file__).resolve().parents[2]
MARK = "<!-- doctest -->"
STANDALONE = "<!-- doctest: standalone -->"  # a docs/ block that needs no cluster
COMMENT = re.compile(r"\s#\s")
EXIT = re.compile(r"#\s*exit (\d+)")
OUTPUT = re.compile(r"#\s*->\s*(.*?)\s*$")
NODE_ID = re.compile(r"\bnode-\d+\b")
NODES = 5  # what `cluster up` starts by default


@dataclass(frozen=True)
class Step:
    command: str
    exit_code: int
    output: str | None  # expected stdout (stripped), if the comment says
    comment: str


def runnable_blocks(markdown: str, mark: str = MARK) -> list[list[str]]:
    """The lines of each fenced block that follows a ``mark`` line."""
    blocks, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != mark:
            continue
        assert lines[i + 1].startswith("```"), f"README line {i + 2}: no block after {MARK}"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        blocks.append(lines[i + 2:end])
    return blocks


def parse_step(line: str) -> Step | None:
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    found = COMMENT.search(line)
    command, comment = (line[:found.start()], line[found.start():]) if found else (line, "")
    code = EXIT.search(comment)
    output = OUTPUT.search(comment)
    return Step(command.strip(), int(code.group(1)) if code else 0,
                output.group(1) if output else None, comment)


def test_the_readme_marks_the_tour_runnable():
    blocks = runnable_blocks((ROOT / "README.md").read_text())
    assert blocks, f"no {MARK} block in README.md"
    steps = [s for s in map(parse_step, blocks[0]) if s]
    assert any(s.exit_code == 3 for s in steps) and any(s.output for s in steps)
    assert any(" locate " in s.command for s in steps)


@pytest.fixture
def tour_dir(tmp_path: Path) -> Iterator[Path]:
    """A working directory whose ``bin/zkv`` runs the repository's ``bin/zkv``."""
    (tmp_path / "bin").mkdir()
    wrapper = tmp_path / "bin" / "zkv"
    wrapper.write_text(f'#!/usr/bin/env bash\nexec "{ROOT}/bin/zkv" "$@"\n')
    wrapper.chmod(0o755)
    yield tmp_path


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ZKV_SEEDS", "ZKV_CURVE_KEY", "ZKV_SERVER_KEY", "ZKV_PROG")}
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, timeout=CLI_TIMEOUT, check=False)


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tour_dir: Path):
    steps = [s for block in runnable_blocks((ROOT / "README.md").read_text())
             for s in map(parse_step, block) if s]
    cluster = SupervisedCluster(tour_dir / "zkv-data", 0, NODES)
    # As the tour says (`cluster up --detach`), on free ports; t_remove longer than the
    # tour takes on a loaded machine, so the two nodes it kills stay members meanwhile
    # (removed, the key would move to live nodes and the "exit 3" would not hold).
    for _ in range(5):
        base = free_base_port(3 * NODES)
        up = shell(f"bin/zkv cluster up --detach --base-port {base} --t-remove 30", tour_dir)
        if not (up.returncode == 2 and b"in use" in up.stderr):
            break
    try:
        assert up.returncode == 0, up.stderr.decode()
        cluster.info()
        ids: dict[str, str] = {}  # the README's example id -> the id locate printed
        started = time.monotonic()
        for step in steps:
            command = NODE_ID.sub(lambda m, ids=ids: ids.get(m.group(0), m.group(0)),
                                  step.command)
            got = shell(command, tour_dir)
            cluster.info()  # note every pid, for the clean-up
            where = f"{command!r} (README: {step.command!r}): {got.stderr.decode()}"
            assert got.returncode == step.exit_code, where
            if step.output is not None:
                assert got.stdout.decode().strip() == step.output, where
            if " locate " in f" {step.command} ":
                printed = got.stdout.decode().split()
                examples = NODE_ID.findall(step.comment)  # "say node-4 node-1 node-2"
                assert len(printed) == 3 and len(examples) == 3, (printed, examples)
                ids = dict(zip(examples, printed, strict=True))
        assert time.monotonic() - started < 120
    finally:
        try:
            shell("bin/zkv cluster down", tour_dir)
        finally:
            cluster.kill_everything()


def test_the_docs_standalone_blocks_run_as_written(tmp_path: Path):
    """Blocks of docs/ that need no cluster (marked ``<!-- doctest: standalone -->``) run
    in a fresh directory with ``zkv`` on the PATH, as an installed zkv would be."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "zkv").write_text(f'#!/usr/bin/env bash\nexec "{ROOT}/bin/zkv" "$@"\n')
    (shims / "zkv").chmod(0o755)
    ran = 0
    for page in sorted((ROOT / "docs").glob("*.md")):
        for n, block in enumerate(runnable_blocks(page.read_text(), STANDALONE)):
            work = tmp_path / f"{page.stem}-{n}"
            work.mkdir()
            for step in filter(None, map(parse_step, block)):
                got = shell(f'PATH="{shims}:$PATH"; {step.command}', work)
                where = f"{page.name}: {step.command!r}: {got.stderr.decode()}"
                assert got.returncode == step.exit_code, where
                if step.output is not None:
                    assert got.stdout.decode().strip() == step.output, where
                ran += 1
    assert ran >= 4, "the key-generation steps of docs/security.md should run"


@pytest.mark.slow
def test_the_first_run_says_it_creates_the_venv_and_hides_the_install_output(tmp_path: Path):
    """What the README promises of a first ``bin/zkv``: one line saying what it does, and
    not the installers' chatter (pip and the build backend stand in as stubs here)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "_venv.sh").write_text((ROOT / "bin" / "_venv.sh").read_text())
    (tmp_path / "pyproject.toml").write_text("")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    chatter = "Successfully installed zkv (editable install banner)"
    fake_python = f'#!/usr/bin/env bash\necho "{chatter}"; echo "{chatter}" >&2\n'
    # `python3 -m venv DIR` makes DIR/bin/python, itself a stub that "installs" noisily.
    (stubs / "python3").write_text(
        '#!/usr/bin/env bash\nmkdir -p "$3/bin"\n'
        f"cat > \"$3/bin/python\" <<'PY'\n{fake_python}PY\n"
        'chmod +x "$3/bin/python"\n')
    (stubs / "python3").chmod(0o755)
    env = dict(os.environ, PATH=f"{stubs}:{os.environ['PATH']}")
    first = subprocess.run(["bash", "-c", f"source {tmp_path}/bin/_venv.sh"], env=env,
                           capture_output=True, timeout=30, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stderr.decode() == "zkv: creating .venv (first run, ~15 s)\n"
    assert chatter.encode() not in first.stdout + first.stderr
    assert (tmp_path / ".venv" / ".zkv-installed").exists()
    again = subprocess.run(["bash", "-c", f"source {tmp_path}/bin/_venv.sh"], env=env,
                           capture_output=True, timeout=30, check=False)
    assert (again.returncode, again.stdout, again.stderr) == (0, b"", b"")


def test_the_readme_gives_the_suites_running_time_and_a_quick_run():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"bin/test\s+# the whole test suite: about \d+ minutes", readme)
    assert "bin/test tests/unit" in readme and ".venv/bin/python" in readme
