"""The ``zkv`` command against a real local cluster: CRUD, exit codes, status, config errors."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from zkv.cli import app

from .harness import (
    FAST_TIMERS,
    SupervisedCluster,
    command_overhead,
    free_base_port,
    running_cluster,
    wait_until,
    within_timeout,
    zkv,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisedCluster]:
    """One 3-node cluster for the tests that leave every node running."""
    with running_cluster(tmp_path_factory.mktemp("cli") / "cluster", nodes=3) as c:
        yield c


def test_crud_through_the_cli_gives_the_documented_exit_codes(cluster):
    run = cluster.run
    assert run("put", "fruit", "apple").returncode == 0
    got = run("get", "fruit")
    assert (got.returncode, got.stdout) == (0, b"apple")  # raw bytes, no newline off a tty

    missing = run("get", "no-such-key")
    assert missing.returncode == 1 and missing.stdout == b""
    assert missing.stderr == b"zkv: key not found: no-such-key\n"

    assert run("create", "fruit", "plum").returncode == 1  # exists
    assert run("get", "fruit").stdout == b"apple"
    assert run("create", "veg", "leek").returncode == 0
    assert run("update", "veg", "kale").returncode == 0
    assert run("get", "veg").stdout == b"kale"
    assert run("update", "nothing", "x").returncode == 1  # not found
    assert run("delete", "veg").returncode == 0
    assert run("get", "veg").returncode == 1
    assert run("delete", "veg").returncode == 1


def test_cas_swaps_only_from_the_expected_value_with_the_documented_exit_codes(cluster):
    run = cluster.run
    assert run("cas", "lock", "owner-1", "--expect-absent").returncode == 0
    taken = run("cas", "lock", "owner-2", "--expect-absent")
    assert taken.returncode == 1 and b"condition failed" in taken.stderr
    assert run("cas", "lock", "owner-2", "--expect", "someone-else").returncode == 1
    assert run("get", "lock").stdout == b"owner-1"  # the failed ones changed nothing
    assert run("cas", "lock", "-", "--expect", "owner-1", stdin=b"owner-2").returncode == 0
    assert run("get", "lock").stdout == b"owner-2"
    assert run("cas", "lock", "--delete", "--expect", "owner-2").returncode == 0
    assert run("get", "lock").returncode == 1
    both = run("cas", "lock", "x", "--expect", "a", "--expect-absent")
    assert both.returncode == 2 and b"exactly one" in both.stderr
    one = run("cas", "lock", "x", "--expect-absent", "--consistency", "one")
    assert one.returncode == 2 and b"consensus" in one.stderr


def test_a_dash_value_is_read_from_stdin_as_bytes(cluster):
    blob = bytes(range(256)) * 4
    assert cluster.run("put", "blob", "-", stdin=blob).returncode == 0
    assert cluster.run("get", "blob").stdout == blob


def test_every_consistency_level_reads_the_value(cluster):
    assert cluster.run("put", "levels", "v", "--consistency", "all").returncode == 0
    for level in ("one", "quorum", "all"):
        got = cluster.run("get", "levels", "--consistency", level)
        assert (got.returncode, got.stdout) == (0, b"v")


def test_seeds_come_from_the_flag_or_the_environment(cluster, tmp_path):
    seeds = ",".join(cluster.info()["seeds"])
    elsewhere = tmp_path / "not-a-cluster"
    assert zkv("put", "env", "1", "--seeds", seeds, "--data-dir", elsewhere).returncode == 0
    got = zkv("get", "env", "--data-dir", elsewhere, env={"ZKV_SEEDS": seeds})
    assert (got.returncode, got.stdout) == (0, b"1")


def test_bad_input_exits_2_with_one_line(cluster):
    cases = [
        ("put", "", "x"),  # empty key
        ("put", "k" * 2000, "x"),  # key over the 1 KiB limit
        ("get", "k", "--seeds", "not an address"),
        ("get", "k", "--consistency", "most"),
        ("put", "only-a-key"),  # missing VALUE
    ]
    for args in cases:
        result = cluster.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip(), args
    one_line = cluster.run("put", "", "x").stderr.decode()
    assert one_line.count("\n") == 1 and one_line.startswith("zkv: ")


def test_no_cluster_to_talk_to_is_a_usage_error(tmp_path):
    result = zkv("get", "k", "--data-dir", tmp_path / "nothing")
    assert result.returncode == 2
    assert b"--seeds" in result.stderr and b"ZKV_SEEDS" in result.stderr


def test_an_unreachable_cluster_exits_3_within_the_timeout():
    port = free_base_port(3)  # nothing listens there
    overhead = command_overhead()
    start = time.monotonic()
    result = zkv("get", "k", "--seeds", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert result.returncode == 3
    assert result.stderr.startswith(b"zkv: unavailable")
    # No answer at all: say where it asked, and that CurveZMQ clusters ignore unknown keys.
    assert f"tried tcp://127.0.0.1:{port}".encode() in result.stderr, result.stderr
    assert b"CurveZMQ" in result.stderr and b"ZKV_CURVE_KEY" in result.stderr
    assert b"get k:" in result.stderr and b"b'k'" not in result.stderr  # as typed, no repr
    assert time.monotonic() - start < within_timeout(0.5, overhead)


def test_locate_prints_three_distinct_nodes_primary_first(cluster):
    result = cluster.run("locate", "fruit")
    ids = result.stdout.decode().split()
    assert result.returncode == 0 and len(ids) == 3 and len(set(ids)) == 3
    assert set(ids) == {"node-1", "node-2", "node-3"}


def test_cluster_status_shows_every_node_with_keys_and_pid(cluster):
    assert cluster.run("put", "counted", "x").returncode == 0
    result = cluster.run("cluster", "status")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert lines[1].split() == ["NODE", "ADDRESS", "STATUS", "KEYS", "PID", "UPTIME", "RESTARTS",
                                "OPS", "FAILED", "CPU%", "MEM", "EPOCH", "RING", "STREAM"]
    info = cluster.info()
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.startswith("node-")}
    assert set(rows) == {"node-1", "node-2", "node-3"}
    for node in info["nodes"]:
        row = rows[node["id"]]
        assert row[1] == node["address"] and row[2] == "running"
        assert row[3].isdigit() and int(row[3]) >= 1  # every node replicates every key of 3
        assert row[4] == str(node["pid"])
        assert row[7].isdigit() and row[8].isdigit() and row[10].endswith("iB")
        assert row[11].isdigit() and row[12] == "normal"  # the node's epoch; in the ring
    assert len({row[11] for row in rows.values()}) == 1  # settled: one epoch everywhere
    assert sum(int(row[7]) for row in rows.values()) >= 1  # the put was coordinated somewhere


def test_cluster_status_watch_redraws_the_table_in_place_until_ctrl_c(cluster):
    """On a terminal (a pty here) --watch draws the plain table again every interval,
    moving the cursor back up over the last one; Ctrl-C ends it with exit 0."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zkv", "cluster", "status", "--data-dir", str(cluster.data_dir),
         "--watch", "--interval", "0.3"], stdin=slave, stdout=slave, stderr=slave,
        env={**os.environ, "COLUMNS": "200", "LINES": "50", "TERM": "xterm"},
        start_new_session=True)
    os.close(slave)
    output = bytearray()

    def drawn() -> int:
        while select.select([master], [], [], 0)[0]:
            try:
                output.extend(os.read(master, 65536))
            except OSError:
                break
        return output.count(b"redrawn every 0.3s")

    try:
        wait_until(lambda: drawn() >= 3, 20, "three frames of cluster status --watch")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drawn()
        os.close(master)
    text = output.decode(errors="replace")
    assert text.count("NODE    ADDRESS") >= 3 and "\x1b[1A" in text  # redrawn, in place
    assert all(text.count(f"{node}  tcp://") >= 3 for node in ("node-1", "node-2", "node-3"))


def test_cluster_status_refuses_watch_with_json(tmp_path):
    result = CliRunner().invoke(app, ["cluster", "status", "--data-dir", str(tmp_path),
                                      "--watch", "--json"])
    assert result.exit_code == 2 and "--watch" in result.output


def test_every_command_has_help():
    commands = [[], ["put"], ["get"], ["delete"], ["create"], ["update"], ["locate"], ["sim"],
                ["node"], ["node", "start"], ["node", "stop"], ["node", "kill"],
                ["node", "decommission"], ["node", "remove"], ["cluster"], ["cluster", "up"],
                ["cluster", "down"], ["cluster", "add"], ["cluster", "status"], ["keys"],
                ["keys", "generate"]]
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(app, [*command, "--help"], prog_name="zkv")
        assert result.exit_code == 0 and "Usage: zkv" in result.output, command


def test_a_bad_config_file_stops_the_node_with_one_line_naming_the_field(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text('id = "n1"\nport = 7400\n[timers]\nt_fail = "soon"\n')
    result = zkv("node", "start", "--config", config)
    assert result.returncode == 2
    assert result.stderr.decode() == (f"zkv: {config}: timers.t_fail: must be a number of "
                                      f"seconds greater than 0, got 'soon'\n")
    config.write_text('id = "n1"\nport = 7400\n')
    result = zkv("node", "start", "--config", config, "--port", "99999")  # flags are checked too
    assert result.returncode == 2
    assert result.stderr.startswith(b"zkv: command line: --port: must be an integer")


def test_a_node_started_from_a_config_file_serves_and_stops_on_sigterm(tmp_path):
    port = free_base_port(3)
    config = tmp_path / "solo.toml"
    config.write_text(f'id = "solo"\nport = {port}\ndata_dir = "{tmp_path / "data"}"\n'
                      f'seeds = ["127.0.0.1:{port}"]   # founds a cluster of one\n'
                      "[timers]\ngossip_interval = 0.1\nt_fail = 1\nt_remove = 4\n")
    proc = subprocess.Popen([sys.executable, "-m", "zkv", "node", "start", "--config", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        seeds = f"127.0.0.1:{port}"
        wait_until(lambda: zkv("put", "k", "v", "--seeds", seeds, "--timeout", "0.5")
                   .returncode == 0, 20, "the node to accept a put")
        assert zkv("get", "k", "--seeds", seeds).stdout == b"v"
        assert (tmp_path / "data" / "node.json").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_quorum_ops_fail_with_exit_3_when_two_replicas_are_down(tmp_path):
    # t_remove long enough that the dead replicas stay in the ring however slowly the
    # commands below run (then the key would move to live nodes and be available).
    with running_cluster(tmp_path / "cluster", 3, "--t-remove", "30") as c:
        assert c.run("put", "k", "before").returncode == 0
        replicas = c.run("locate", "k").stdout.decode().split()
        first, second = replicas[0], replicas[1]
        assert c.run("node", "kill", first, "--no-restart").returncode == 0
        assert c.run("node", "kill", second, "--no-restart").returncode == 0
        # `ready` is current health: nodes down, not ready (in cluster.json and status).
        wait_until(lambda: c.info()["ready"] is False, 30, "ready to turn false")
        status = c.run("cluster", "status")
        assert b"not ready" in status.stdout.splitlines()[0], status.stdout

        overhead = command_overhead()
        for args in (("get", "k"), ("put", "k", "lost?")):
            start = time.monotonic()
            got = c.run(*args, "--timeout", "0.5")
            assert got.returncode == 3, got
            assert args[0] != "get" or got.stderr.startswith(b"zkv: unavailable"), got
            # Each gave up within its timeout (plus start-up).
            assert time.monotonic() - start < within_timeout(0.5, overhead), args

        assert c.run("node", "start", first).returncode == 0
        assert c.run("node", "start", second).returncode == 0
        wait_until(lambda: c.run("get", "k", "--timeout", "1").returncode == 0, 30,
                   "quorum reads to work again")
        wait_until(lambda: c.info()["ready"] is True, 30, "ready again with every node back")
        # The put that failed may or may not have landed: either value is a correct answer.
        assert c.run("get", "k").stdout in (b"before", b"lost?")


def test_sim_prints_a_report_and_exits_0_when_it_passes():
    result = zkv("sim", "quick", "--seed", "1")
    assert result.returncode == 0, result.stdout
    assert b"seed=1" in result.stdout
    assert zkv("sim", "no-such-scenario").returncode == 2


def test_naming_a_node_the_cluster_lacks_is_a_usage_error(cluster):
    for command in (["node", "kill", "node-9"], ["node", "stop", "node-9"],
                    ["node", "start", "node-9"]):
        result = cluster.run(*command)
        assert result.returncode == 2, command
        assert result.stderr == (b"zkv: no node 'node-9' in this cluster "
                                 b"(nodes: node-1, node-2, node-3)\n")


def test_the_cli_refuses_a_second_cluster_in_the_same_directory(cluster):
    result = zkv("cluster", "up", "--nodes", "1", "--data-dir", cluster.data_dir, "--detach",
                 "--base-port", str(free_base_port(3)), *FAST_TIMERS)
    assert result.returncode == 2 and b"already running" in result.stderr


if os.name != "posix":  # pragma: no cover
    pytestmark = pytest.mark.skip("needs POSIX signals")


def test_keys_generate_writes_a_pair_and_refuses_to_overwrite_it(tmp_path):
    result = zkv("keys", "generate", "--out", tmp_path / "keys", "--name", "cluster")
    assert result.returncode == 0, result.stderr
    public, secret = tmp_path / "keys" / "cluster.key", tmp_path / "keys" / "cluster.key_secret"
    assert "curve" in public.read_text() and "secret-key" in secret.read_text()
    assert secret.stat().st_mode & 0o077 == 0
    again = zkv("keys", "generate", "--out", tmp_path / "keys", "--name", "cluster")
    assert again.returncode == 2 and b"refusing to overwrite" in again.stderr


def test_a_node_with_curve_and_a_bad_key_stops_with_one_line(tmp_path):
    config = tmp_path / "node.toml"
    (tmp_path / "authorized").mkdir()
    config.write_text(f'id = "n1"\n[security]\ncurve = true\n'
                      f'secret_key = "{tmp_path}/missing.key_secret"\n'
                      f'authorized_keys = "{tmp_path}/authorized"\n')
    result = zkv("node", "start", "--config", config)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"zkv: {config}: security.secret_key: ")


def test_hints_name_the_command_the_user_typed(tmp_path):
    """bin/zkv sets ZKV_PROG; every hint names it, not a bare ``zkv`` off the PATH."""
    env = dict(os.environ, ZKV_PROG="bin/zkv")
    for args in (["node", "kill", "node-1"], ["node", "stop", "node-1"]):
        done = subprocess.run([sys.executable, "-m", "zkv", *args, "--data-dir",
                               str(tmp_path / "none")], capture_output=True, env=env,
                              timeout=60)
        assert done.returncode != 0
        assert b"bin/zkv cluster up" in done.stderr, done.stderr


def test_without_a_supervisor_stop_kill_and_key_commands_give_the_documented_codes(tmp_path):
    with running_cluster(tmp_path / "cluster", 3) as c:
        assert c.run("put", "greeting", "hello").returncode == 0
        seeds = c.info()["seeds"]
        assert c.run("cluster", "down").returncode == 0
        stopped = c.run("node", "stop", "node-1")
        assert stopped.returncode == 0 and b"was not running" in stopped.stdout, stopped
        restartable = c.run("node", "kill", "node-1")  # nothing would restart it
        assert restartable.returncode == 3 and b"no supervisor" in restartable.stderr
        assert b"--no-restart" in restartable.stderr
        gone = c.run("node", "kill", "node-1", "--no-restart")
        assert gone.returncode == 1 and b"not running" in gone.stderr
        overhead = command_overhead()
        start = time.monotonic()
        got = c.run("get", "greeting")  # the default 2 s timeout: it must not wait for it
        assert got.returncode == 3, got
        assert time.monotonic() - start < 2 * overhead + 1.5
        assert b"no supervisor is running" in got.stderr
        assert all(seed.encode() in got.stderr for seed in seeds), got.stderr


def test_client_errors_show_keys_as_typed():
    from zkv.client import shown_key

    assert shown_key(b"greeting") == "greeting"
    assert shown_key("café".encode()) == "café"
    assert shown_key(b"bad\xff") == "bad\\xff"  # undecodable bytes, escaped


def test_bench_says_what_it_left_behind_and_cleans_up_on_request(cluster):
    args = ("bench", "--workload", "get", "--keys", "20", "--duration", "0.3", "--no-progress")
    left = cluster.run(*args)
    assert left.returncode == 0, left.stderr
    assert b"bench-00000000" in left.stderr and b"--cleanup" in left.stderr, left.stderr
    assert cluster.run("get", "bench-00000000").returncode == 0  # the run did leave them
    cleaned = cluster.run(*args, "--cleanup")
    assert cleaned.returncode == 0 and b"deleted" in cleaned.stderr, cleaned.stderr
    for i in (0, 10, 19):  # loaded by the run (a get workload loads every key first)
        assert cluster.run("get", f"bench-{i:08d}", "--timeout", "5").returncode == 1


def test_cluster_up_help_numbers_nodes_from_1_as_the_readme_does():
    result = CliRunner().invoke(app, ["cluster", "up", "--help"], prog_name="zkv",
                                terminal_width=200)
    assert "node-i (i from 1)" in result.output and "from 0" not in result.output


def test_sim_list_describes_every_scenario():
    from zkv.sim.scenarios import SCENARIOS

    listed = zkv("sim", "--list").stdout.decode().splitlines()
    described = {line.split()[0]: line.split(None, 1)[1:] for line in listed if line.strip()}
    for name in SCENARIOS:
        assert described.get(name) and len(described[name][0]) > 20, name


def test_a_split_brain_fail_says_it_is_the_documented_outcome():
    result = zkv("sim", "split-brain", "--seed", "4")  # a seed that reads a stale value
    first = result.stdout.decode().splitlines()[0]
    assert first.startswith("FAIL") and "expected outcome" in first, first
    assert "Removal policy" in first
