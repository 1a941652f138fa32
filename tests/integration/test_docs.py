"""The README and docs/, run as written: every block marked ``<!-- doctest... -->``.

- ``<!-- doctest -->`` (README): the tour, in a temporary directory against
  ``bin/zkv cluster up --detach`` (on free ports), so its commands find the
  cluster through ``./zkv-data`` as the README says. A command's trailing
  comment is its expectation: ``# exit N`` its exit code (0 when not said),
  ``# -> TEXT`` its output. The tour's node ids are the README's example of
  what ``locate`` printed; each is replaced by the id ``locate`` really printed
  in the same place. After the tour, on its cluster: the README's Python
  snippet and docs/chaos.md's attached run (``zkv chaos --data-dir zkv-data``,
  with ``--duration 5`` added).
- ``<!-- doctest: python -->``: Python snippets, run with ``.venv/bin/python`` as
  the README says; ``# -> VALUE`` says what a call returns, ``# raises NAME``
  what it raises. The README's runs against the tour's cluster, docs/security.md's
  against a CurveZMQ node started with the keys its standalone block made.
- ``<!-- doctest: standalone -->`` (docs/): blocks that need no cluster.
- ``<!-- doctest: one-host -->`` (docs/configuration.md): the one-host example,
  its nodes started from copies of ``conf/one-host/`` on free ports.

docs/chaos.md's 10-minute run is run, shortened, by tests/chaos/test_chaos_run.py;
docs/systemd.md's units are checked by tests/unit/test_systemd_units.py.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zkv.cli import DEFAULT_DATA_DIR
from zkv.config import node_address
from zkv.net.security import CurveKeys
from zkv.probe import probe_ring
from zkv.supervisor import (
    DEFAULT_BASE_PORT,
    DEFAULT_NODES,
    PORTS_PER_NODE,
    parent_death_signal,
)

from .harness import CLI_TIMEOUT, START_TIMEOUT, SupervisedCluster, free_base_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"  # the README: run Python with .venv/bin/python
MARK = "<!-- doctest -->"
STANDALONE = "<!-- doctest: standalone -->"  # a docs/ block that needs no cluster
PYTHON = "<!-- doctest: python -->"  # a Python snippet (see python_script)
ONE_HOST = "<!-- doctest: one-host -->"  # docs/configuration.md's one-host example
ONE_HOST_PORTS = range(7500, 7509)  # conf/one-host's three nodes, three ports each
ONE_HOST_PORT = re.compile(r"\b75(?:0[0-8])\b")
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
        assert lines[i + 1].startswith("```"), f"line {i + 2}: no block after {mark}"
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


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_python_snippet_is_marked_and_has_a_runner():
    """A Python block nobody runs would go stale: each one is marked, and only the
    README (the tour's cluster) and docs/security.md (a CurveZMQ node) have them."""
    found = {}
    for page in pages():
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "```python":
                assert i > 0 and lines[i - 1].strip() == PYTHON, (
                    f"{page.name} line {i + 1}: a Python block without {PYTHON}")
                found[page.name] = found.get(page.name, 0) + 1
    assert found == {"README.md": 1, "security.md": 1}, found


RESULT = re.compile(r"#\s*->\s*(.*?)\s*$")
RAISES = re.compile(r"#\s*raises\s+([\w.]+)")


def leading_literal(text: str) -> object:
    """The value of the longest start of ``text`` that is a Python literal:
    ``b"ada" (None when...)`` -> b"ada"."""
    for end in range(len(text), 0, -1):
        try:
            return ast.literal_eval(text[:end].strip())
        except (ValueError, SyntaxError):
            continue
    raise ValueError(f"no Python literal at the start of {text!r}")


def python_script(block: list[str], edit: Callable[[str], str] = lambda s: s) -> str:
    """A Python block as a script that checks its comments: a line ending in
    ``# -> VALUE`` must return VALUE, one ending in ``# raises NAME`` must raise it.
    ``edit`` rewrites each line first (addresses, node ids)."""
    out = ["import zkv.errors", "",
           "def _returns(got, want, code):",
           "    assert got == want, f'{code}: returned {got!r}, the docs say {want!r}'", ""]
    for line in map(edit, block):
        found = COMMENT.search(line)
        code, comment = (line[:found.start()], line[found.start():]) if found else (line, "")
        indent = code[:len(code) - len(code.lstrip())]
        if (result := RESULT.search(comment)) is not None:
            want = leading_literal(result.group(1))
            out.append(f"{indent}_returns({code.strip()}, {want!r}, {code.strip()!r})")
        elif (raises := RAISES.search(comment)) is not None:
            out += [f"{indent}try:", f"{indent}    {code.strip()}",
                    f"{indent}except {raises.group(1)}:", f"{indent}    pass",
                    f"{indent}else:",
                    f"{indent}    raise AssertionError({(code.strip() + ' did not raise')!r})"]
        else:
            out.append(code.rstrip())
    return "\n".join(out) + "\n"


def test_python_snippets_check_their_comments():
    script = python_script(['x = [1]', 'x.pop()  # -> 1 (then empty)',
                            'x.pop()  # raises IndexError', 'len(x)  # -> 0; no more'])
    assert subprocess.run([VENV_PYTHON, "-c", script], capture_output=True,
                          timeout=30).returncode == 0
    for wrong in ('x.pop()  # -> 2', 'x.pop()  # raises KeyError'):
        script = python_script(['x = [1]', wrong])
        assert subprocess.run([VENV_PYTHON, "-c", script], capture_output=True,
                              timeout=30).returncode == 1, wrong


def run_python(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """``.venv/bin/python snippet.py`` in ``cwd``, as the README says to run Python."""
    (cwd / "snippet.py").write_text(script)
    return subprocess.run([VENV_PYTHON, "snippet.py"], cwd=cwd, capture_output=True,
                          env=clean_env(), timeout=CLI_TIMEOUT, check=False)


def zkv_shim(directory: Path) -> Path:
    """``directory/zkv``, which runs the repository's ``bin/zkv``; ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "zkv").write_text(f'#!/usr/bin/env bash\nexec "{ROOT}/bin/zkv" "$@"\n')
    (directory / "zkv").chmod(0o755)
    return directory


@pytest.fixture
def tour_dir(tmp_path: Path) -> Iterator[Path]:
    """A working directory whose ``bin/zkv`` runs the repository's ``bin/zkv``."""
    zkv_shim(tmp_path / "bin")
    yield tmp_path


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("ZKV_SEEDS", "ZKV_CURVE_KEY", "ZKV_SERVER_KEY", "ZKV_PROG")}


def shell(command: str, cwd: Path, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=clean_env(),
                          capture_output=True, timeout=timeout, check=False)


def run_step(step: Step, command: str, cwd: Path, where: str) -> subprocess.CompletedProcess:
    """Run ``command`` (``step``'s, edited) in ``cwd``; fail unless it did as ``step`` says."""
    got = shell(command, cwd)
    where = f"{where}: {command!r}: {got.stderr.decode()}"
    assert got.returncode == step.exit_code, where
    if step.output is not None:
        assert got.stdout.decode().strip() == step.output, where
    return got


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
        # The README's Python snippet, on the tour's cluster: node-1's address for
        # cluster up's default one, and its example replicas for the real ones.
        (snippet,) = runnable_blocks((ROOT / "README.md").read_text(), PYTHON)
        default = f"127.0.0.1:{DEFAULT_BASE_PORT}"
        assert any(default in line for line in snippet), f"the snippet should use {default}"
        got = shell("bin/zkv locate user:1", tour_dir)
        assert got.returncode == 0, got.stderr.decode()
        replicas = got.stdout.decode().split()
        example = next(NODE_ID.findall(line) for line in snippet if "locate" in line)
        named = dict(zip(example, replicas, strict=True))

        def edit(line: str) -> str:
            line = line.replace(default, f"127.0.0.1:{base}")
            return NODE_ID.sub(lambda m: named.get(m.group(0), m.group(0)), line)

        # ... and what the README says after it: from_cluster_dir finds the cluster.
        script = python_script(snippet, edit) + (
            'with Client.from_cluster_dir("zkv-data") as kv:\n'
            '    _returns(kv.get("user:1"), b"grace", "from_cluster_dir")\n')
        got = run_python(script, tour_dir)
        assert got.returncode == 0, f"README's Python snippet:\n{script}\n{got.stderr.decode()}"
        # docs/chaos.md's run against a running `cluster up` cluster, as written there
        # (`zkv` on the PATH) but 5 s long instead of its default 60 s.
        found = [line.split(" #")[0].strip() for line in
                 (ROOT / "docs" / "chaos.md").read_text().splitlines()
                 if line.startswith("zkv chaos ") and "--nodes" not in line]
        assert len(found) == 1, f"docs/chaos.md: one attached `zkv chaos` line: {found}"
        (attached,) = found
        shims = zkv_shim(tour_dir / "shims")
        got = shell(f'PATH="{shims}:$PATH"; {attached} --duration 5', tour_dir, timeout=120)
        assert got.returncode == 0, f"{attached}: {got.stdout.decode()}{got.stderr.decode()}"
        assert "PASS" in got.stdout.decode() and "(loopback, 5 nodes, 5s)" in got.stdout.decode()
    finally:
        try:
            shell("bin/zkv cluster down", tour_dir)
        finally:
            cluster.kill_everything()


def test_the_docs_standalone_blocks_run_as_written(tmp_path: Path):
    """Blocks of docs/ that need no cluster (marked ``<!-- doctest: standalone -->``) run
    in a fresh directory with ``zkv`` on the PATH, as an installed zkv would be."""
    shims = zkv_shim(tmp_path / "shims")
    ran = 0
    for page in sorted((ROOT / "docs").glob("*.md")):
        for n, block in enumerate(runnable_blocks(page.read_text(), STANDALONE)):
            work = tmp_path / f"{page.stem}-{n}"
            work.mkdir()
            for step in filter(None, map(parse_step, block)):
                run_step(step, f'PATH="{shims}:$PATH"; {step.command}', work, page.name)
                ran += 1
    assert ran >= 4, "the key-generation steps of docs/security.md should run"


def test_the_security_snippet_runs_against_a_curve_node(tmp_path: Path):
    """docs/security.md's Python snippet and its ``ZKV_CURVE_KEY=... zkv get k``, with
    the keys its standalone block made, against one node started with the flags it
    names (``--curve --secret-key F --authorized-keys D``), on a free port."""
    page = (ROOT / "docs" / "security.md").read_text()
    shims = zkv_shim(tmp_path / "shims")
    (keygen,) = runnable_blocks(page, STANDALONE)
    for step in filter(None, map(parse_step, keygen)):
        run_step(step, f'PATH="{shims}:$PATH"; {step.command}', tmp_path, "security.md")
    flags = "--curve --secret-key F --authorized-keys D"
    assert f"`{flags}`" in page
    port = free_base_port(PORTS_PER_NODE)
    flags = flags.replace("F", "keys/private/cluster.key_secret").replace(
        "D", "keys/authorized")
    node = (f"zkv node start --id n1 --port {port} --data-dir n1 --seeds 127.0.0.1:{port} "
            f"--t-fail 1 --gossip-interval 0.1 {flags}")
    with background_nodes(tmp_path, shims, [node]) as nodes:
        keys = CurveKeys.from_files(tmp_path / "keys/private/app1.key_secret",
                                    tmp_path / "keys/authorized/cluster.key")

        def serving() -> bool:
            nodes.check_running()
            return probe_ring(node_address("127.0.0.1", port), curve=keys) == {"n1"}

        wait_until(serving, START_TIMEOUT, "the curve node to serve")
        (snippet,) = runnable_blocks(page, PYTHON)
        assert any("10.0.0.1:7400" in line for line in snippet), snippet
        script = python_script(
            snippet, lambda line: line.replace("10.0.0.1:7400", f"127.0.0.1:{port}"))
        got = run_python(script, tmp_path)
        assert got.returncode == 0, f"security.md's snippet:\n{script}\n{got.stderr.decode()}"
        found = re.findall(r"`((?:ZKV_\w+=\S+ )+zkv get k)`", page)
        assert len(found) == 1, f"docs/security.md: one `ZKV_...=... zkv get k`: {found}"
        (cli,) = found
        got = shell(f'PATH="{shims}:$PATH"; export ZKV_SEEDS=127.0.0.1:{port}; {cli}',
                    tmp_path)
        assert (got.returncode, got.stdout) == (0, b"v"), got.stderr.decode()
        nodes.stop()


class BackgroundNodes:
    """Node commands run in the background by the shell, each its own session; its
    processes are the nodes themselves (every wrapper execs), so stopped by PID."""

    def __init__(self, cwd: Path, shims: Path, commands: list[str]) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        for n, command in enumerate(commands):
            self.logs.append(cwd / f"background-{n}.log")
            with open(self.logs[-1], "wb") as log:
                self.procs.append(subprocess.Popen(
                    ["bash", "-c", f'PATH="{shims}:$PATH"; exec {command}'], cwd=cwd,
                    env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=parent_death_signal(signal.SIGKILL)))

    def check_running(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            assert proc.poll() is None, f"exited with {proc.returncode}: {log.read_text()}"

    def stop(self) -> None:
        """SIGTERM by PID: every node exits 0 (a graceful stop)."""
        for proc in self.procs:
            os.kill(proc.pid, signal.SIGTERM)
        for proc, log in zip(self.procs, self.logs, strict=True):
            assert proc.wait(timeout=30) == 0, log.read_text()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@contextlib.contextmanager
def background_nodes(cwd: Path, shims: Path, commands: list[str]) -> Iterator[BackgroundNodes]:
    """``BackgroundNodes``, SIGKILLed (by PID) at the end if still running."""
    nodes = BackgroundNodes(cwd, shims, commands)
    try:
        yield nodes
    finally:
        nodes.kill()


@pytest.mark.slow
def test_the_one_host_example_runs_beside_cluster_up(tmp_path: Path):
    """docs/configuration.md's one-host block: conf/one-host's three nodes started from
    their files (copied, the ports 7500-7508 moved to free ones, in the commands too),
    then reached with ``--seeds`` and ``ZKV_SEEDS``, then stopped by PID."""
    (block,) = runnable_blocks((ROOT / "docs" / "configuration.md").read_text(), ONE_HOST)
    steps = [s for s in map(parse_step, block) if s]
    starts = [s for s in steps if s.command.startswith("zkv node start --config ")]
    configs = [shlex.split(s.command)[4] for s in starts]
    assert len(starts) == 3 and all(c.startswith("conf/one-host/") for c in configs), starts
    # Beside `cluster up`: none of its default ports, nothing in its default directory.
    cluster_up = range(DEFAULT_BASE_PORT, DEFAULT_BASE_PORT + PORTS_PER_NODE * DEFAULT_NODES)
    ids, ports_of_requests = set(), []
    for config in configs:
        settings = tomllib.loads((ROOT / config).read_text())
        ports = range(settings["port"], settings["port"] + PORTS_PER_NODE)
        assert set(ports) <= set(ONE_HOST_PORTS) and not set(ports) & set(cluster_up), config
        data_dir = Path(settings["data_dir"])
        assert not data_dir.is_absolute() and data_dir.parts[0] == "one-host-data", config
        assert data_dir.parts[0] != str(DEFAULT_DATA_DIR), config
        ids.add(settings["id"])
        ports_of_requests.append(settings["port"])
    base = free_base_port(len(ONE_HOST_PORTS))

    def moved(text: str) -> str:
        return ONE_HOST_PORT.sub(lambda m: str(base + int(m.group(0)) - ONE_HOST_PORTS[0]),
                                 text)

    work = tmp_path / "work"
    for config in configs:
        (work / config).parent.mkdir(parents=True, exist_ok=True)
        (work / config).write_text(moved((ROOT / config).read_text()))
    shims = zkv_shim(tmp_path / "shims")
    addresses = [node_address("127.0.0.1", int(moved(str(port)))) for port in ports_of_requests]
    with background_nodes(work, shims, [moved(s.command) for s in starts]) as nodes:

        def converged() -> bool:
            nodes.check_running()
            return all(probe_ring(address) == ids for address in addresses)

        wait_until(converged, START_TIMEOUT, f"every node serving with ring {sorted(ids)}")
        for step in steps:
            if step not in starts:
                command = moved(step.command)
                run_step(step, f'PATH="{shims}:$PATH"; {command}', work, "configuration.md")
        nodes.stop()
    assert sorted(p.name for p in (work / "one-host-data").iterdir()) == sorted(ids)


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
    said = re.fullmatch(r"zkv: creating \.venv \(first run, ~(\d+) s\)\n", first.stderr.decode())
    assert said, first.stderr.decode()
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert f"installs zkv into it (it says so; about {said.group(1)} s)" in readme
    assert chatter.encode() not in first.stdout + first.stderr
    assert (tmp_path / ".venv" / ".zkv-installed").exists()
    again = subprocess.run(["bash", "-c", f"source {tmp_path}/bin/_venv.sh"], env=env,
                           capture_output=True, timeout=30, check=False)
    assert (again.returncode, again.stdout, again.stderr) == (0, b"", b"")


def test_the_readme_gives_the_suites_running_time_and_a_quick_run():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"bin/test\s+# the whole test suite: about \d+ minutes", readme)
    assert "bin/test tests/unit" in readme and ".venv/bin/python" in readme
