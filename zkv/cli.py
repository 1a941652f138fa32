"""The ``zkv`` command: run nodes and local clusters, read and write keys, run the simulator.

Exit codes, for every command:

    0  success
    1  key not found, or a condition failed (create of an existing key, update or
       delete of a missing one; kill of a node that is not running; a ring
       change that did not finish within its --timeout)
    2  usage or input error (bad flag, bad config file, key or value too large, a
       membership change the cluster refuses)
    3  unavailable or timed out (consistency level not reached, no node answered,
       no supervisor running)

Errors go to stderr as one line starting with ``zkv:``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import typer

from zkv import supervisor as sup
from zkv.config import ConfigError, load_settings, parse_address
from zkv.core.config import Removal, timer_order
from zkv.core.quorum import Consistency
from zkv.keys_cli import keys_app
from zkv.net.figures import human_bytes, node_figures

OK, FAILED, USAGE, UNAVAILABLE = 0, 1, 2, 3
DEFAULT_DATA_DIR = Path("zkv-data")

_TYPER: dict[str, Any] = {
    "no_args_is_help": True,
    "add_completion": False,
    "rich_markup_mode": None,  # plain help and plain usage errors
    "pretty_exceptions_enable": False,
    "context_settings": {"help_option_names": ["-h", "--help"]},
}

app = typer.Typer(
    name="zkv",
    help="zkv: a fault-tolerant distributed key-value store.\n\n"
         "Exit codes: 0 success; 1 key not found or condition failed; 2 usage or input "
         "error; 3 unavailable or timed out.",
    **_TYPER,
)
node_app = typer.Typer(help="Run one node; start, stop and kill nodes of a local cluster; "
                            "decommission or remove a node from the ring.", **_TYPER)
cluster_app = typer.Typer(help="A local cluster of node processes under a supervisor: up, "
                               "down, status, add nodes.", **_TYPER)
app.add_typer(node_app, name="node")
app.add_typer(cluster_app, name="cluster")
app.add_typer(keys_app, name="keys")


def die(message: str, code: int) -> NoReturn:
    """Print one line to stderr and exit with ``code``."""
    typer.echo(f"zkv: {message}", err=True)
    raise typer.Exit(code)


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"zkv {version('zkv')}")
        except PackageNotFoundError:
            typer.echo("zkv (not installed)")
        raise typer.Exit(OK)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """zkv: a fault-tolerant distributed key-value store."""


# --------------------------------------------------------------------------- shared options

DATA_DIR_HELP = "Cluster directory (holds cluster.json)."
NODE_ID_HELP = "Node id, as in cluster.json (node-1, ...)."
VALUE_HELP = "The value; '-' reads it from stdin (bytes)."
SeedsOption = typer.Option(
    None, "--seeds", envvar="ZKV_SEEDS",
    help="Comma-separated node addresses (host:port or tcp://host:port). Default: "
         "$ZKV_SEEDS, else the nodes in --data-dir's cluster.json.")
DataDirOption = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d", help=DATA_DIR_HELP)
ConsistencyOption = typer.Option(Consistency.quorum, "--consistency", "-c",
                                 help="Replicas that must answer: one, quorum or all.")
TimeoutOption = typer.Option(2.0, "--timeout", "-t", min=0.001,
                             help="Seconds before giving up (exit 3).")


def _control(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a supervisor operation, turning its ControlError into a one-line exit."""
    try:
        return fn(*args, **kwargs)
    except sup.ControlError as exc:
        die(str(exc), exc.code)


def resolve_seeds(seeds: str | None, data_dir: Path) -> list[str]:
    """Addresses to reach the cluster: --seeds/ZKV_SEEDS, else the cluster directory's nodes."""
    if seeds:
        out = []
        for part in seeds.split(","):
            if not part.strip():
                continue
            try:
                out.append(parse_address(part))
            except ValueError as exc:
                die(f"--seeds: {exc}", USAGE)
        if not out:
            die("--seeds: give at least one node address", USAGE)
        return out
    cluster = _control(sup.read_cluster, data_dir)
    if cluster is None:
        die(f"no cluster to talk to: pass --seeds HOST:PORT, set ZKV_SEEDS, or point "
            f"--data-dir at a cluster directory (there is no {data_dir / sup.CLUSTER_FILE})",
            USAGE)
    # Nodes that are up (or coming back) first; a stopped node would only cost a timeout.
    addresses = [n["address"] for n in cluster["nodes"]
                 if n.get("address") and n.get("status") not in ("stopped", "decommissioned")]
    addresses = addresses or list(cluster.get("seeds") or [])
    if not addresses:
        die(f"{data_dir / sup.CLUSTER_FILE} names no node", USAGE)
    if not sup.supervisor_running(data_dir) and not any(
            sup.live_process(n.get("pid"), n.get("pid_create_time")) for n in cluster["nodes"]):
        die(f"no supervisor is running in {data_dir} and none of its nodes runs "
            f"({data_dir / sup.CLUSTER_FILE} is left from an earlier run; its seeds: "
            f"{', '.join(addresses)}); start it with: {sup.program_name()} cluster up "
            f"--data-dir {data_dir}", UNAVAILABLE)
    return addresses


def _silence_hint(seeds: str | None, data_dir: Path, addresses: list[str], curve: Any) -> str:
    """Why no node may have answered, for a timeout with no answer at all."""
    hints = [f"tried {', '.join(addresses)}"]
    if not seeds and not sup.supervisor_running(data_dir):
        hints.append(f"no supervisor is running in {data_dir}")
    if curve is None:
        hints.append("if the cluster uses CurveZMQ, pass the --data-dir of the `--curve` "
                     "cluster or set ZKV_CURVE_KEY and ZKV_SERVER_KEY (a client without an "
                     "authorized key gets no answer)")
    else:
        hints.append("if the client key is not in the nodes' authorized_keys, they do not "
                     "answer it")
    return "; ".join(hints)


def read_value(value: str) -> bytes:
    """VALUE as bytes; ``-`` reads all of stdin."""
    if value == "-":
        return sys.stdin.buffer.read()
    return os.fsencode(value)


def key_bytes(key: str) -> bytes:
    if not key:
        die("KEY must not be empty", USAGE)
    return os.fsencode(key)


def run_client(seeds: str | None, data_dir: Path, consistency: Consistency, timeout: float,
               key: str, action: Any) -> Any:
    """Call ``action(client)`` and map each zkv error to its exit code."""
    import zmq

    from zkv.client import Client
    from zkv.errors import InvalidRequest, KeyExists, KeyNotFound, Unavailable, ZkvError
    from zkv.keys import KeyFileError, curve_from_env

    addresses = resolve_seeds(seeds, data_dir)
    try:
        # $ZKV_CURVE_KEY/$ZKV_SERVER_KEY, else the keys of a `cluster up --curve` cluster
        # in --data-dir when the addresses are its nodes'.
        curve = curve_from_env() or _control(sup.cluster_curve, data_dir, addresses)
    except KeyFileError as exc:
        die(str(exc), USAGE)
    try:
        with Client(addresses, timeout=timeout, consistency=consistency.value,
                    curve=curve) as client:
            return action(client)
    except KeyNotFound:
        die(f"key not found: {key}", FAILED)
    except KeyExists:
        die(f"key exists: {key}", FAILED)
    except InvalidRequest as exc:
        die(f"invalid request: {exc}", USAGE)
    except Unavailable as exc:
        silent = "no answer" in str(exc) and "last answer" not in str(exc)
        hint = f" ({_silence_hint(seeds, data_dir, addresses, curve)})" if silent else ""
        die(f"unavailable: {exc}{hint}", UNAVAILABLE)
    except ZkvError as exc:
        die(str(exc), UNAVAILABLE)
    except (OSError, zmq.ZMQError) as exc:
        die(f"cannot reach the cluster: {exc}", UNAVAILABLE)


# --------------------------------------------------------------------------- key commands


@app.command()
def put(
    key: str = typer.Argument(..., metavar="KEY", help="The key."),
    value: str = typer.Argument(..., metavar="VALUE", help=VALUE_HELP),
    seeds: str | None = SeedsOption,
    data_dir: Path = DataDirOption,
    consistency: Consistency = ConsistencyOption,
    timeout: float = TimeoutOption,
) -> None:
    """Store VALUE under KEY (prints OK)."""
    kb, vb = key_bytes(key), read_value(value)
    run_client(seeds, data_dir, consistency, timeout, key, lambda c: c.put(kb, vb))
    typer.echo("OK")


@app.command()
def get(
    key: str = typer.Argument(..., metavar="KEY", help="The key."),
    seeds: str | None = SeedsOption,
    data_dir: Path = DataDirOption,
    consistency: Consistency = ConsistencyOption,
    timeout: float = TimeoutOption,
) -> None:
    """Print KEY's value to stdout as raw bytes (plus a newline on a terminal); exit 1 if absent."""
    kb = key_bytes(key)
    value = run_client(seeds, data_dir, consistency, timeout, key, lambda c: c.get(kb))
    if value is None:
        die(f"key not found: {key}", FAILED)
    out = sys.stdout.buffer
    out.write(value)
    if sys.stdout.isatty():
        out.write(b"\n")
    out.flush()


@app.command()
def delete(
    key: str = typer.Argument(..., metavar="KEY", help="The key."),
    seeds: str | None = SeedsOption,
    data_dir: Path = DataDirOption,
    consistency: Consistency = ConsistencyOption,
    timeout: float = TimeoutOption,
) -> None:
    """Remove KEY's value; exit 1 if it holds none."""
    kb = key_bytes(key)
    run_client(seeds, data_dir, consistency, timeout, key, lambda c: c.delete(kb))
    typer.echo("OK")


@app.command()
def create(
    key: str = typer.Argument(..., metavar="KEY", help="The key."),
    value: str = typer.Argument(..., metavar="VALUE", help=VALUE_HELP),
    seeds: str | None = SeedsOption,
    data_dir: Path = DataDirOption,
    consistency: Consistency = ConsistencyOption,
    timeout: float = TimeoutOption,
) -> None:
    """Store VALUE under KEY only if KEY holds no value; exit 1 if it does."""
    kb, vb = key_bytes(key), read_value(value)
    run_client(seeds, data_dir, consistency, timeout, key, lambda c: c.create(kb, vb))
    typer.echo("OK")


@app.command()
def update(
    key: str = typer.Argument(..., metavar="KEY", help="The key."),
    value: str = typer.Argument(..., metavar="VALUE", help=VALUE_HELP),
    seeds: str | None = SeedsOption,
    data_dir: Path = DataDirOption,
    consistency: Consistency = ConsistencyOption,
    timeout: float = TimeoutOption,
) -> None:
    """Replace KEY's value only if it holds one; exit 1 if it does not."""
    kb, vb = key_bytes(key), read_value(value)
    run_client(seeds, data_dir, consistency, timeout, key, lambda c: c.update(kb, vb))
    typer.echo("OK")


@app.command()
def cas(
    key: str = typer.Argument(..., metavar="KEY", help="The key."),
    value: str | None = typer.Argument(None, metavar="[VALUE]", help=VALUE_HELP),
    expect: str | None = typer.Option(None, "--expect", metavar="OLD",
                                      help="The value KEY must hold ('-' reads stdin)."),
    expect_absent: bool = typer.Option(False, "--expect-absent",
                                       help="KEY must hold no value."),
    delete_value: bool = typer.Option(False, "--delete", help="Delete KEY instead of VALUE."),
    seeds: str | None = SeedsOption,
    data_dir: Path = DataDirOption,
    consistency: Consistency = ConsistencyOption,
    timeout: float = TimeoutOption,
) -> None:
    """Compare-and-set: store VALUE (or --delete) only if KEY holds OLD (--expect) or
    nothing (--expect-absent); exit 1 if it held something else, 3 if the outcome
    is unknown. Decided by consensus among KEY's replicas."""
    if (expect is None) == (not expect_absent):
        die("give exactly one of --expect OLD and --expect-absent", USAGE)
    if (value is None) == (not delete_value):
        die("give exactly one of VALUE and --delete", USAGE)
    if value == "-" and expect == "-":
        die("VALUE and --expect cannot both read stdin", USAGE)
    kb = key_bytes(key)
    vb = None if value is None else read_value(value)
    eb = None if expect is None else read_value(expect)
    swapped = run_client(seeds, data_dir, consistency, timeout, key,
                         lambda c: c.cas(kb, eb, vb))
    if not swapped:
        die(f"condition failed: {key} does not hold the expected value", FAILED)
    typer.echo("OK")


@app.command()
def locate(
    key: str = typer.Argument(..., metavar="KEY", help="The key."),
    seeds: str | None = SeedsOption,
    data_dir: Path = DataDirOption,
    timeout: float = TimeoutOption,
) -> None:
    """Print the ids of KEY's replicas, one per line, primary first."""
    kb = key_bytes(key)
    ids = run_client(seeds, data_dir, Consistency.quorum, timeout, key, lambda c: c.locate(kb))
    for node_id in ids:
        typer.echo(node_id)


# --------------------------------------------------------------------------- node commands


@node_app.command("start")
def node_start(
    node: str | None = typer.Argument(
        None, metavar="ID",
        help="With --data-dir of a local cluster (and no --config/--port): ask its supervisor "
             "to start this node again. Otherwise the same as --id."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file; flags "
                                                                "override it."),
    id_: str | None = typer.Option(None, "--id", help="Node id, unique in the cluster."),
    host: str | None = typer.Option(None, "--host", help="Address peers and clients reach "
                                                            "this node at [127.0.0.1]."),
    port: int | None = typer.Option(None, "--port", help="Request port; gossip uses port+1, "
                                                            "metrics port+2 [7400]."),
    data_dir: Path | None = typer.Option(None, "--data-dir", "-d",
                                            help="Node data directory [zkv-data/ID]; for the "
                                                 "supervisor form, the cluster directory "
                                                 "[zkv-data]."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated addresses of "
                                                              "nodes to join through."),
    metrics_port: int | None = typer.Option(None, "--metrics-port",
                                               help="Metrics port [port+2]; 0 turns it off."),
    replicas: int | None = typer.Option(None, "--replicas", help="Copies of each key [3]."),
    vnodes: int | None = typer.Option(None, "--vnodes", help="Ring tokens per node [64]."),
    consistency: Consistency | None = typer.Option(None, "--consistency",
                                                      help="Default level [quorum]."),
    gossip_interval: float | None = typer.Option(None, "--gossip-interval",
                                                    help="Seconds between gossip rounds [0.2]."),
    t_fail: float | None = typer.Option(None, "--t-fail", help="Seconds without heartbeat "
                                                                  "before down [2]."),
    t_remove: float | None = typer.Option(None, "--t-remove", help="Seconds without "
                                                                      "heartbeat before removal "
                                                                      "from the ring [8]."),
    removal: Removal | None = typer.Option(None, "--removal",
                                           help="auto: a node silent for t_remove is removed "
                                                "from the ring by a majority; manual: only "
                                                "'zkv node remove' removes it [auto]."),
    retry_interval: float | None = typer.Option(
        None, "--retry-interval", help="Seconds before an unanswered replica request or "
                                       "hand-off is resent [0.1]."),
    anti_entropy_interval: float | None = typer.Option(
        None, "--anti-entropy-interval", help="Seconds between anti-entropy rounds [5]."),
    default_timeout: float | None = typer.Option(
        None, "--default-timeout", help="Deadline of a request that carries none, seconds "
                                        "[2]."),
    tombstone_grace: float | None = typer.Option(
        None, "--tombstone-grace", help="Seconds a tombstone is kept at the latest [86400]."),
    shutdown_grace: float | None = typer.Option(
        None, "--shutdown-grace", help="Seconds to finish in-flight work after SIGTERM [2]."),
    max_version_ahead: float | None = typer.Option(
        None, "--max-version-ahead", help="Seconds a version may be ahead of this node's "
                                          "clock before a peer message is refused [60]."),
    max_key: str | None = typer.Option(None, "--max-key", help="Largest key [1KiB]."),
    max_value: str | None = typer.Option(None, "--max-value", help="Largest value [1MiB]."),
    sync: bool | None = typer.Option(None, "--sync/--no-sync",
                                        help="fsync each group commit before acknowledging "
                                             "[--sync]."),
    log_ops: bool | None = typer.Option(None, "--log-ops/--no-log-ops",
                                           help="Also log every replica read and write and "
                                                "every request in events.jsonl [--no-log-ops]."),
    map_size: str | None = typer.Option(None, "--map-size", help="Initial LMDB map size "
                                                                    "[64MiB]."),
    max_map_size: str | None = typer.Option(None, "--max-map-size",
                                            help="Largest the LMDB map may grow [64GiB]."),
    curve: bool | None = typer.Option(None, "--curve/--no-curve",
                                      help="CurveZMQ on every socket [--no-curve]."),
    secret_key: Path | None = typer.Option(None, "--secret-key",
                                           help="Cluster key pair (.key_secret file)."),
    authorized_keys: Path | None = typer.Option(None, "--authorized-keys",
                                                help="Directory of public keys allowed to "
                                                     "connect."),
) -> None:
    """Run one node in the foreground (until SIGTERM or Ctrl-C), or start a cluster node again.

    \b
    zkv node start --config conf/node-1.toml
    zkv node start --id n1 --port 7400 --data-dir /var/lib/zkv --seeds 10.0.0.2:7400
    zkv node start node-2 --data-dir zkv-data      # under the cluster's supervisor
    """
    standalone = any(v is not None for v in (config, id_, host, port, seeds))
    if node is not None and not standalone:
        cluster_dir = data_dir if data_dir is not None else DEFAULT_DATA_DIR
        if not (cluster_dir / sup.CLUSTER_FILE).exists():
            die(f"no cluster in {cluster_dir} (no {sup.CLUSTER_FILE}); to run a node on its "
                f"own, give --config or --port", USAGE)
        answer = _control(sup.send_request, cluster_dir, "start", node)
        if answer.get("already"):
            typer.echo(f"{node} is already running (pid {answer.get('pid')})")
        else:
            typer.echo(f"started {node} (pid {answer.get('pid')})")
        return
    if node is not None and id_ is not None and node != id_:
        die(f"node id given twice: {node!r} and --id {id_!r}", USAGE)
    overrides = {
        "id": id_ if id_ is not None else node, "host": host, "port": port,
        "data_dir": data_dir, "seeds": seeds, "metrics_port": metrics_port,
        "replicas": replicas, "vnodes": vnodes,
        "consistency": consistency.value if consistency is not None else None,
        "gossip_interval": gossip_interval, "t_fail": t_fail, "t_remove": t_remove,
        "removal": removal.value if removal is not None else None,
        "retry_interval": retry_interval, "anti_entropy_interval": anti_entropy_interval,
        "default_timeout": default_timeout, "tombstone_grace": tombstone_grace,
        "shutdown_grace": shutdown_grace, "max_version_ahead": max_version_ahead,
        "max_key": max_key, "max_value": max_value, "sync": sync, "log_ops": log_ops,
        "map_size": map_size,
        "max_map_size": max_map_size,
        "curve": curve, "secret_key": secret_key, "authorized_keys": authorized_keys,
    }
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        die(str(exc), USAGE)
    from zkv.net.runtime import serve

    metrics = settings.effective_metrics_port
    typer.echo(f"zkv: node {settings.node.node_id} on {settings.address}, data in "
               f"{settings.data_dir}" + (f", metrics on :{metrics}" if metrics else ""), err=True)
    raise typer.Exit(serve(settings))


@node_app.command("kill")
def node_kill(
    node: str = typer.Argument(..., metavar="ID", help=NODE_ID_HELP),
    data_dir: Path = DataDirOption,
    no_restart: bool = typer.Option(False, "--no-restart",
                                    help="Tell the supervisor to leave it down."),
) -> None:
    """SIGKILL a cluster node by its recorded pid; it is restarted unless --no-restart.

    Exits 1 if the node is not running, 3 if no supervisor runs to restart it (with
    --no-restart no supervisor is needed)."""
    if not no_restart and not sup.supervisor_running(data_dir):
        _control(sup.find_node, _control(sup.require_cluster, data_dir), node)
        die(f"no supervisor is running for {data_dir}, so nothing would restart {node}; "
            f"to kill it anyway: {sup.program_name()} node kill {node} --no-restart", UNAVAILABLE)
    pid = _control(sup.kill_node, data_dir, node, restart=not no_restart)
    after = (f"it stays down until: {sup.program_name()} node start {node}" if no_restart
             else "the supervisor will restart it")
    typer.echo(f"killed {node} (pid {pid}); {after}")


@node_app.command("stop")
def node_stop(
    node: str = typer.Argument(..., metavar="ID", help=NODE_ID_HELP),
    data_dir: Path = DataDirOption,
) -> None:
    """Stop a cluster node gracefully (SIGTERM); the supervisor leaves it down."""
    if sup.supervisor_running(data_dir):
        answer = _control(sup.send_request, data_dir, "stop", node,
                          timeout=sup.STOP_TIMEOUT + 5)
        typer.echo(f"{node} was not running" if answer.get("already") else f"stopped {node}")
        return
    record = _control(sup.find_node, _control(sup.require_cluster, data_dir), node)
    proc = sup.live_process(record.get("pid"), record.get("pid_create_time"))
    if proc is None:
        typer.echo(f"{node} was not running (no supervisor is running)")
        return
    sup.terminate_all([proc], sup.STOP_TIMEOUT)
    typer.echo(f"stopped {node} (no supervisor was running)")


# --------------------------------------------------------------------------- membership

STATUS_TIMEOUT = 1.0  # seconds a node gets to answer a status query
ADMIN_TIMEOUT = 5.0  # seconds for some node to take a membership command
WATCH_INTERVAL = 0.2  # seconds between looks at a ring change under way
RESEND_AFTER = 3.0  # a command the map does not show yet is sent again after this long
RATE_SAMPLE = 0.5  # seconds between cluster status's two looks at streaming
CHANGE_TIMEOUT_HELP = ("Seconds to wait for the change to finish; past them exit 1 (the "
                       "cluster goes on with it).")
ProgressOption = typer.Option(True, "--progress/--no-progress",
                              help="Show a progress bar (on a terminal).")


def _node_views(records: list[dict], curve: Any,
                timeout: float = STATUS_TIMEOUT) -> dict[str, dict]:
    """Each running node's own view of the cluster (``Client.node_status``) by node id,
    asked in parallel; nodes that are not running or do not answer in time are left out."""
    import zmq

    from zkv.client import Client

    live = [r for r in records if r.get("address")
            and sup.live_process(r.get("pid"), r.get("pid_create_time")) is not None]

    def ask(record: dict) -> dict | None:
        try:
            with Client([record["address"]], timeout=timeout, curve=curve) as client:
                return client.node_status(record["address"])
        except zmq.ZMQError:
            return None

    if not live:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(live))) as pool:
        views = list(pool.map(ask, live))
    return {r["id"]: v for r, v in zip(live, views) if v is not None}


def _newest(views: dict[str, dict]) -> dict | None:
    """The view holding the newest cluster map."""
    return max(views.values(), key=lambda v: v["epoch"], default=None)


def _streaming(views: dict[str, dict], epoch: int | None) -> dict | None:
    """What the gainers of the ring change at ``epoch`` have streamed, summed over them;
    None when no node streams for that epoch (or no epoch is known)."""
    gainers = [v["streaming"] for v in views.values()
               if v["streaming"]["epoch"] == epoch and v["streaming"]["ranges"]]
    if not gainers:
        return None
    summed = {k: sum(g[k] for g in gainers) for k in ("ranges_done", "ranges", "keys", "bytes")}
    return {"epoch": epoch, "nodes": len(gainers), **summed}


@contextmanager
def _progress(show: bool, label: str) -> Iterator[Callable[[int, int | None, str], None]]:
    """``update(done, total, detail)`` of a progress bar on stderr, shown only when
    ``show`` and stderr is a terminal (the bar is gone once the block ends)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not show or not console.is_terminal:
        yield lambda done, total, detail: None
        return
    columns = (TextColumn(label), BarColumn(), TextColumn("{task.fields[detail]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=None, detail="")

        def update(done: int, total: int | None, detail: str) -> None:
            bar.update(task, completed=done, total=total, detail=detail)

        yield update


def _membership_change(action: str, node_id: str, data_dir: Path, timeout: float,
                       as_json: bool, show: bool) -> None:
    """Send ``action`` (decommission or remove) of ``node_id`` to a live node of the
    local cluster, then wait until no live node's map lists it and, for a
    decommission, its process has exited."""
    from zkv.client import Client
    from zkv.errors import InvalidRequest, Unavailable

    started = time.monotonic()
    deadline = started + timeout
    cluster = _control(sup.require_cluster, data_dir)
    record = _control(sup.find_node, cluster, node_id)
    curve = _control(sup.cluster_curve, data_dir, cluster=cluster)
    operator = _control(sup.cluster_curve, data_dir, cluster=cluster, admin=True)
    live = [r for r in cluster["nodes"] if r.get("address")
            and sup.live_process(r.get("pid"), r.get("pid_create_time")) is not None]
    if not live:
        die(f"no node of the cluster in {data_dir} is running; start it with: "
            f"{sup.program_name()} cluster up --data-dir {data_dir}", UNAVAILABLE)
    newest = _newest(_node_views(live, curve))
    epoch_before = newest["epoch"] if newest else None
    # The node itself first (it knows whether it can go), then the others.
    order = [r["address"] for r in sorted(live, key=lambda r: (r["id"] != node_id, r["id"]))]

    def send(limit: float) -> Any:
        with Client(order, timeout=limit, curve=operator) as client:
            return client.admin(action, node_id)

    if action == "remove" and sup.live_process(record.get("pid"),
                                               record.get("pid_create_time")) is None:
        # Its process is gone, but the cluster counts it alive until t_fail has passed
        # without a heartbeat, and refuses to remove a live node: wait for that.
        with _progress(show and not as_json, f"remove {node_id}") as update:
            while any(v["members"].get(node_id, {}).get("status") == "alive"
                      for v in _node_views(live, curve).values()):
                update(0, None, f"waiting for the cluster to notice that {node_id} is down")
                if time.monotonic() >= deadline:
                    die(f"the cluster still counts {node_id} alive after {timeout:g}s", FAILED)
                time.sleep(WATCH_INTERVAL)
    try:
        reply = send(ADMIN_TIMEOUT)
    except (Unavailable, InvalidRequest) as exc:
        die(str(exc), UNAVAILABLE)
    if reply.status == "refused":
        die(f"cannot {action} {node_id}: {reply.detail}", USAGE)
    if reply.status != "pending":
        die(f"{action} {node_id}: the node answered {reply.status}"
            + (f": {reply.detail}" if reply.detail else ""), UNAVAILABLE)

    streamed: dict[int, tuple[int, int]] = {}  # transition epoch -> most (keys, bytes) seen
    resend_at = time.monotonic() + RESEND_AFTER
    epoch = epoch_before or 0
    with _progress(show and not as_json, f"{action} {node_id}") as update:
        while True:
            cluster = _control(sup.require_cluster, data_dir)
            record = _control(sup.find_node, cluster, node_id)
            views = _node_views(cluster["nodes"], curve)
            newest = _newest(views)
            epoch = max(epoch, newest["epoch"] if newest else 0)
            listed = any(node_id in v["members"] for v in views.values())
            out = not listed and any(i != node_id for i in views)
            if action != "decommission" or record.get("status") == "decommissioned":
                exited = True
            else:  # without a supervisor, nobody restarts it: gone is gone
                exited = (not sup.supervisor_running(data_dir) and
                          sup.live_process(record.get("pid"), record.get("pid_create_time"))
                          is None)
            stream = _streaming(views, epoch)
            if stream:
                keys, size = streamed.get(epoch, (0, 0))
                streamed[epoch] = (max(keys, stream["keys"]), max(size, stream["bytes"]))
            if out and exited:
                break
            state = (newest or {}).get("members", {}).get(node_id, {}).get("state")
            if out:
                phase = f"out of the ring; waiting for {node_id} to exit"
            elif stream:
                phase = f"epoch {epoch}: {_describe_stream(stream)}"
            elif state in (None, "normal"):
                phase = f"epoch {epoch}: waiting for the cluster to take the {action}"
            else:
                phase = f"epoch {epoch}: {node_id} {state}"
            if stream:
                update(stream["ranges_done"], stream["ranges"], phase)
            elif streamed or out:  # streaming is over: a full bar
                update(1, 1, phase)
            else:
                update(0, None, phase)
            now = time.monotonic()
            if now >= deadline:
                die(f"{action} of {node_id} did not finish within {timeout:g}s ({phase}); the "
                    f"cluster goes on with it: see {sup.program_name()} cluster status", FAILED)
            if state == "normal" and now >= resend_at:
                # Only the node that took the command proposes it; were that one restarted
                # meanwhile, the command would be lost. A second copy is the same change.
                resend_at = now + RESEND_AFTER
                try:
                    send(STATUS_TIMEOUT)
                except (Unavailable, InvalidRequest):
                    pass
            time.sleep(WATCH_INTERVAL)

    seconds = time.monotonic() - started
    keys_streamed = sum(k for k, _ in streamed.values()) if streamed else None
    bytes_streamed = sum(b for _, b in streamed.values()) if streamed else None
    if as_json:
        typer.echo(json.dumps({"node": node_id, "action": action, "epoch_before": epoch_before,
                               "epoch_after": epoch, "seconds": round(seconds, 2),
                               "keys_streamed": keys_streamed,
                               "bytes_streamed": bytes_streamed}))
        return
    moved = (f"; {keys_streamed} keys ({human_bytes(bytes_streamed or 0)}) streamed"
             if keys_streamed is not None else "")
    if action == "decommission":
        typer.echo(f"decommissioned {node_id}: its ranges are on the other nodes, it is out "
                   f"of the ring (epoch {epoch_before} -> {epoch}) and its process has exited"
                   f"{moved}; {seconds:.1f}s")
    else:
        typer.echo(f"removed {node_id} from the ring (epoch {epoch_before} -> {epoch}); its "
                   f"ranges were copied from the surviving replicas{moved}; {seconds:.1f}s")


@node_app.command("decommission")
def node_decommission(
    node: str = typer.Argument(..., metavar="ID", help=NODE_ID_HELP),
    data_dir: Path = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end: "
                                                       "node, epochs before and after, "
                                                       "seconds, keys and bytes streamed "
                                                       "(as last seen; null if not seen)."),
    timeout: float = typer.Option(300.0, "--timeout", "-t", min=0.1, help=CHANGE_TIMEOUT_HELP),
    progress: bool = ProgressOption,
) -> None:
    """Take a live node out of the cluster for good: the others stream its ranges from
    their replicas, the ring drops it, and its process exits (the supervisor does not
    restart it, and cluster up leaves it out).

    Returns once no live node's map lists it and its process has exited. Exit 0 then;
    1 if that takes longer than --timeout (the change goes on); 2 if the cluster refuses
    (the reason is printed: fewer nodes would remain than the replicas of a key, the node
    is not in the ring, ...); 3 if no node answers.

    \b
    zkv node decommission node-2
    """
    _membership_change("decommission", node, data_dir, timeout, as_json, progress)


@node_app.command("remove")
def node_remove(
    node: str = typer.Argument(..., metavar="ID", help=NODE_ID_HELP),
    data_dir: Path = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
    timeout: float = typer.Option(300.0, "--timeout", "-t", min=0.1, help=CHANGE_TIMEOUT_HELP),
    progress: bool = ProgressOption,
) -> None:
    """Declare a dead node gone: the ring drops it, and the nodes that take over its ranges
    copy them from the surviving replicas. (With --removal auto, the default, the cluster
    does this by itself once a node has been silent for t_remove.)

    Returns once no live node's map lists it. Exit 0 then; 1 past --timeout; 2 if the
    cluster refuses (the node is alive: decommission it instead; too few nodes would
    remain; it is not in the ring); 3 if no node answers.

    \b
    zkv node kill node-3 --no-restart && zkv node remove node-3
    """
    _membership_change("remove", node, data_dir, timeout, as_json, progress)


# --------------------------------------------------------------------------- cluster commands


@cluster_app.command("up")
def cluster_up(
    nodes: int | None = typer.Option(None, "--nodes", "-n", min=1, max=100,
                                     help="Number of nodes [as many as DATA_DIR's last run "
                                          "had, 'cluster add' included; else 5]."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d",
                                  help="Cluster directory: cluster.json and node-i/ data."),
    base_port: int | None = typer.Option(None, "--base-port", "-p",
                                         help="node-i (i from 1) uses ports base+3(i-1) .. "
                                              "base+3(i-1)+2 [DATA_DIR's last base port, "
                                              "else 7400]."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background; return once "
                                                        "the ring has converged, print seeds."),
    timeout: float = typer.Option(60.0, "--timeout", help="With --detach: seconds to wait for "
                                                          "the cluster to be ready (exit 3)."),
    gossip_interval: float | None = typer.Option(None, "--gossip-interval",
                                                    help="Node timer, seconds [0.2]."),
    t_fail: float | None = typer.Option(None, "--t-fail", help="Node timer, seconds [2]."),
    t_remove: float | None = typer.Option(None, "--t-remove", help="Node timer, seconds "
                                                                      "[8]."),
    removal: Removal | None = typer.Option(None, "--removal",
                                           help="auto: a node silent for t_remove is removed "
                                                "from the ring; manual: only 'zkv node remove' "
                                                "removes it [auto]."),
    replicas: int | None = typer.Option(None, "--replicas", help="Copies of each key [3]."),
    sync: bool | None = typer.Option(None, "--sync/--no-sync", help="fsync each commit "
                                                                       "[--sync]."),
    log_ops: bool | None = typer.Option(None, "--log-ops/--no-log-ops",
                                           help="Nodes also log every operation "
                                                "[--no-log-ops]."),
    curve: bool = typer.Option(False, "--curve", help="Encrypt and authenticate every socket "
                                                      "with CurveZMQ, on keys made in "
                                                      "DATA_DIR/keys (kept for later runs)."),
    daemon: bool = typer.Option(False, "--daemon", hidden=True,
                                help="Set by --detach for the background supervisor."),
) -> None:
    """Start NODES nodes on 127.0.0.1 under a supervisor that restarts any that dies.

    In the foreground, Ctrl-C stops the whole cluster. Data survives in
    DATA_DIR/node-i, so a later cluster up starts where this one stopped: the
    same nodes (those 'cluster add' added too) on the same ports, except the
    decommissioned ones. With --curve, zkv commands given the same --data-dir
    use the cluster's client key by themselves.
    """
    node_flags: list[str] = []
    for flag, value in (("--gossip-interval", gossip_interval), ("--t-fail", t_fail),
                        ("--t-remove", t_remove), ("--replicas", replicas),
                        ("--removal", removal.value if removal is not None else None)):
        if value is not None:
            node_flags += [flag, str(value)]
    if sync is not None:
        node_flags.append("--sync" if sync else "--no-sync")
    if log_ops is not None:
        node_flags.append("--log-ops" if log_ops else "--no-log-ops")
    if sup.supervisor_running(data_dir):
        info = _control(sup.read_cluster, data_dir) or {}
        die(f"a cluster is already running in {data_dir} (supervisor pid "
            f"{info.get('supervisor_pid', '?')}); stop it with: {sup.program_name()} cluster "
            f"down --data-dir {data_dir}", USAGE)
    last_nodes, last_base_port, retired = sup.recorded_layout(
        _control(sup.read_cluster, data_dir))
    nodes = nodes or last_nodes or sup.DEFAULT_NODES
    base_port = base_port or last_base_port or sup.DEFAULT_BASE_PORT
    try:  # the same checks a node makes, before any process starts
        load_settings(None, {"id": "node-1", "port": base_port, "gossip_interval": gossip_interval,
                             "t_fail": t_fail, "t_remove": t_remove, "replicas": replicas})
    except ConfigError as exc:
        die(str(exc), USAGE)
    _control(sup.check_layout, nodes, base_port)
    hint = "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"
    prog = sup.program_name()  # bin/zkv sets it, so hints say bin/zkv
    keys = None
    if curve:  # made here, so a problem shows before anything starts
        from zkv.keys import KeyFileError, LocalKeys

        try:
            keys = LocalKeys.of_cluster(data_dir).ensure()
        except (OSError, KeyFileError) as exc:
            die(f"cannot make the cluster's keys in {data_dir}: {exc}", USAGE)

    if detach:
        argv = ["--nodes", str(nodes), "--data-dir", str(data_dir.resolve()),
                "--base-port", str(base_port), "--daemon", *node_flags]
        if curve:
            argv.append("--curve")
        info = _control(sup.start_detached, data_dir, argv, timeout)
        secured = f", CurveZMQ with keys in {keys.directory}" if keys is not None else ""
        running = sum(1 for n in info["nodes"] if n.get("status") != "decommissioned")
        typer.echo(f"zkv: {running} nodes up in {data_dir} (supervisor pid "
                   f"{info['supervisor_pid']}, log {data_dir / sup.LOG_FILE}{secured}); stop "
                   f"with: {prog} cluster down{hint}", err=True)
        dashboard = _dashboard_url(info["nodes"])
        if dashboard:
            typer.echo(f"zkv: dashboard: {dashboard} (every node serves one on its port+2)",
                       err=True)
        typer.echo(",".join(info["seeds"]))
        return

    def on_ready(s: sup.Supervisor) -> None:
        dashboard = _dashboard_url([n.record() for n in s.nodes])
        anywhere = f"  export ZKV_SEEDS={','.join(s.seeds)}"
        if keys is not None:
            anywhere += (f"\n  export ZKV_CURVE_KEY={keys.client_secret} "
                         f"ZKV_SERVER_KEY={keys.cluster_public}")
        typer.echo(f"\nzkv: cluster ready{' (CurveZMQ)' if keys else ''}. From another "
                   f"terminal in this directory:\n"
                   f"  {prog} put hello world{hint}\n  {prog} get hello{hint}\n"
                   f"  {prog} cluster status{hint}\n"
                   f"{anywhere}   # to use it from anywhere\n"
                   + (f"Dashboard: {dashboard} (in a browser)\n" if dashboard else "")
                   + "Ctrl-C stops the cluster.\n")

    supervisor = sup.Supervisor(data_dir, nodes, base_port, node_flags, curve=curve,
                                retired=retired)
    code = _control(supervisor.run, None if daemon else on_ready)
    raise typer.Exit(code)


def _dashboard_url(records: list[dict]) -> str | None:
    """A local cluster's dashboard: the HTTP port of its first node still in it."""
    for record in records:
        url = record.get("metrics")
        if url and record.get("status") != "decommissioned":
            return url.removesuffix("metrics")
    return None


@cluster_app.command("down")
def cluster_down(data_dir: Path = DataDirOption) -> None:
    """Stop the supervisor and every node of the cluster (SIGTERM, then SIGKILL stragglers)."""
    if _control(sup.stop_cluster, data_dir):
        typer.echo(f"cluster in {data_dir} stopped")
    else:
        typer.echo(f"nothing was running in {data_dir}")


@cluster_app.command("add")
def cluster_add(
    nodes: int = typer.Option(1, "--nodes", "-n", min=1, max=100, help="How many nodes to add."),
    data_dir: Path = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
    timeout: float = typer.Option(120.0, "--timeout", "-t", min=0.1, help=CHANGE_TIMEOUT_HELP),
    progress: bool = ProgressOption,
) -> None:
    """Add nodes to the running local cluster: its supervisor starts them with the next ids
    and ports (node-N+1, ... on the layout of cluster up), they join through the running
    nodes and stream the ranges they gain.

    Returns once every running node serves with a ring that holds them and no ring change
    is under way. Exit 0 then; 1 if that takes longer than --timeout (the join goes on);
    2 if no supervisor runs for DATA_DIR or a port the new nodes need is in use.

    \b
    zkv cluster add --nodes 2
    """
    prog = sup.program_name()
    cluster = _control(sup.require_cluster, data_dir)
    if not sup.supervisor_running(data_dir):
        die(f"no supervisor is running for {data_dir}, so there is nothing to add nodes to; "
            f"start the cluster with: {prog} cluster up --data-dir {data_dir} --detach", USAGE)
    curve = _control(sup.cluster_curve, data_dir, cluster=cluster)
    started = time.monotonic()
    deadline = started + timeout
    newest = _newest(_node_views(cluster["nodes"], curve))
    epoch_before = newest["epoch"] if newest else None
    answer = _control(sup.send_request, data_dir, "add", "", count=nodes)
    added: list[str] = answer["ids"]
    wanted = set(added)
    label = f"adding {', '.join(added)}"
    with _progress(progress and not as_json, label) as update, \
            ThreadPoolExecutor(max_workers=16) as pool:
        while True:
            cluster = _control(sup.require_cluster, data_dir)
            running = [r for r in cluster["nodes"] if r.get("status") == "running"]
            rings = list(pool.map(lambda r: sup.probe_ring(r["address"], curve=curve), running))
            holding = sum(1 for ring in rings if ring is not None and wanted <= ring)
            up = wanted <= {r["id"] for r in running}
            if up and holding == len(running):
                break
            views = _node_views(cluster["nodes"], curve)
            newest = _newest(views)
            stream = _streaming(views, newest["epoch"]) if newest else None
            phase = f"{holding}/{len(running)} nodes serve with them in the ring"
            if newest:
                phase += f"; epoch {newest['epoch']}"
            if stream:
                phase += f": {_describe_stream(stream)}"
            update(holding, len(running), phase)
            if time.monotonic() >= deadline:
                die(f"{label} did not finish within {timeout:g}s ({phase}); the cluster goes "
                    f"on with it: see {prog} cluster status --data-dir {data_dir}", FAILED)
            time.sleep(WATCH_INTERVAL)
    newest = _newest(_node_views(cluster["nodes"], curve))
    ring = sorted(rings[0]) if rings and rings[0] else []
    seconds = time.monotonic() - started
    if as_json:
        typer.echo(json.dumps({"added": added, "addresses": answer["addresses"],
                               "epoch_before": epoch_before,
                               "epoch_after": newest["epoch"] if newest else None,
                               "ring": ring, "seconds": round(seconds, 2)}))
        return
    after = f" -> {newest['epoch']}" if newest else ""
    typer.echo(f"added {', '.join(added)}: every running node serves with them in the ring "
               f"({len(ring)} nodes, epoch {epoch_before}{after}); {seconds:.1f}s")


def _uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@cluster_app.command("status")
def cluster_status(
    data_dir: Path = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    watch: bool = typer.Option(False, "--watch", "-w",
                               help="Redraw the table in place every --interval seconds "
                                    "until Ctrl-C."),
    interval: float = typer.Option(1.0, "--interval", min=0.1,
                                   help="Seconds between two redraws with --watch."),
) -> None:
    """A table of the cluster's nodes: address, status, keys held, PID, uptime, restarts;
    from each node's metrics: operations coordinated, how many failed (unavailable), CPU and
    memory; and from the nodes' cluster maps: each node's epoch, its state in the newest
    map (RING: normal, joining, leaving, removing; down when it is in the ring but not
    alive; decommissioned once it left; - when not in the map) and the ranges it has
    streamed of those it gains in a ring change under way (STREAM).

    Below the table: the streaming under way (keys, bytes, rate, ETA), and "ranges
    degraded: N" when a node streamed ranges from fewer than a read quorum.

    With --watch the same table is redrawn in place (the streaming rate measured from
    one look to the next) until Ctrl-C, which exits 0."""
    if watch and as_json:
        die("--watch redraws a table on the terminal; it does not combine with --json "
            "(run --json in a loop for a stream of snapshots)", USAGE)
    if watch:
        _watch_status(data_dir, interval)
        return
    status = _status_snapshot(data_dir)
    if as_json:
        cluster, supervised = status["cluster"], status["supervised"]
        typer.echo(json.dumps({"supervisor_running": supervised,
                               "supervisor_pid": cluster.get("supervisor_pid") if supervised
                               else None, "ready": cluster.get("ready", False) and supervised,
                               "seeds": cluster.get("seeds", []), "epoch": status["epoch"],
                               "streaming": status["stream"],
                               "ranges_degraded": status["degraded"],
                               "nodes": status["rows"]}, indent=2))
        return
    for line in _status_lines(data_dir, status):
        typer.echo(line)


def _status_snapshot(data_dir: Path, before: dict | None = None) -> dict:
    """One look at the cluster: what ``cluster status`` prints. A streaming rate needs
    two looks: the ``before`` snapshot (``--watch``), else a second look RATE_SAMPLE
    seconds later."""
    cluster = _control(sup.require_cluster, data_dir)
    supervised = sup.supervisor_running(data_dir)
    records = cluster["nodes"]
    curve = _control(sup.cluster_curve, data_dir, cluster=cluster)
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(records)))) as pool:
        pending = [pool.submit(node_figures, r.get("metrics")) for r in records]
        views = _node_views(records, curve)
        sampled = time.monotonic()
        figures = [f.result() for f in pending]
    newest = _newest(views)
    epoch = newest["epoch"] if newest else None
    members = newest["members"] if newest else {}
    stream = _streaming(views, epoch) if newest else None
    if stream and stream["ranges_done"] < stream["ranges"]:  # a second look, for a rate
        if before is not None:
            if before["stream"]:
                stream = _with_rate(before["stream"], stream, sampled - before["sampled"])
        else:
            time.sleep(RATE_SAMPLE)
            later = _streaming(_node_views(records, curve), epoch)
            if later:
                stream = _with_rate(stream, later, time.monotonic() - sampled)
    now = time.time()
    rows = []
    for record, fig in zip(records, figures):
        status = record.get("status", "?")
        alive = sup.live_process(record.get("pid"), record.get("pid_create_time")) is not None
        if status in ("running", "stopping") and not alive:
            status = "dead"
        started = record.get("started_at")
        view = views.get(record.get("id"))
        member = members.get(record.get("id"))
        streaming = view["streaming"] if view else None
        rows.append({
            "node": record.get("id"), "address": record.get("address"), "status": status,
            "keys": fig.keys if fig else None, "pid": record.get("pid") if alive else None,
            "uptime": _uptime(now - started) if alive and started else "-",
            "restarts": record.get("restarts", 0),
            "metrics": fig.as_dict() if fig else None,
            "epoch": view["epoch"] if view else None,
            "ring": _ring_state(record, alive, member),
            "map_state": member["state"] if member else None,
            "liveness": member["status"] if member else None,
            "streaming": streaming if streaming and streaming["epoch"] == epoch
            and streaming["ranges"] else None,
            "degraded_ranges": streaming["degraded_ranges"] if streaming else None,
        })
    degraded = sum(r["degraded_ranges"] or 0 for r in rows)
    return {"cluster": cluster, "supervised": supervised, "epoch": epoch, "stream": stream,
            "rows": rows, "degraded": degraded, "sampled": sampled}


def _status_lines(data_dir: Path, status: dict) -> list[str]:
    """The plain ``cluster status`` text of a snapshot: the head line, the table, and
    the streaming and degraded lines when there are any."""
    cluster, epoch, stream = status["cluster"], status["epoch"], status["stream"]
    if status["supervised"]:
        health = ("ready" if cluster.get("ready")
                  else "not ready (a member is not running, or the rings disagree)")
        head = f"supervisor pid {cluster.get('supervisor_pid')}, {health}"
    else:
        head = "no supervisor running (statuses as last recorded)"
    lines = [f"cluster {data_dir}: {head}; seeds {','.join(cluster.get('seeds', []))}"
             + (f"; epoch {epoch}" if epoch is not None else "")]
    table = [("NODE", "ADDRESS", "STATUS", "KEYS", "PID", "UPTIME", "RESTARTS", "OPS", "FAILED",
              "CPU%", "MEM", "EPOCH", "RING", "STREAM")]
    for r in status["rows"]:
        m, st = r["metrics"], r["streaming"]
        table.append((r["node"], r["address"], r["status"],
                      "-" if r["keys"] is None else str(r["keys"]), str(r["pid"] or "-"),
                      r["uptime"], str(r["restarts"]),
                      *((str(m["ops"]), str(m["failed"]), f"{m['cpu_percent']:.0f}",
                         human_bytes(m["rss_bytes"])) if m else ("-",) * 4),
                      "-" if r["epoch"] is None else str(r["epoch"]), r["ring"],
                      f"{st['ranges_done']}/{st['ranges']}" if st else "-"))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    if stream:
        lines.append(f"streaming (epoch {epoch}): {_describe_stream(stream)}")
    if status["degraded"]:
        lines.append(f"ranges degraded: {status['degraded']} (streamed from fewer than a read "
                     f"quorum of their replicas: writes only the lost replicas held are gone)")
    return lines


def _watch_status(data_dir: Path, interval: float) -> None:
    """Redraw the status in place (rich's Live) every ``interval`` seconds until Ctrl-C,
    which ends it as a success. Lines wider than the terminal are cut, not wrapped, so
    the table keeps its shape."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    def frame(status: dict) -> Text:
        lines = _status_lines(data_dir, status)
        lines.append(f"{time.strftime('%H:%M:%S')}: redrawn every {interval:g}s; Ctrl-C stops")
        return Text("\n".join(lines), no_wrap=True, overflow="ellipsis")

    try:
        status = _status_snapshot(data_dir)
        with Live(frame(status), console=Console(highlight=False), auto_refresh=False) as live:
            while True:
                time.sleep(max(0.0, status["sampled"] + interval - time.monotonic()))
                status = _status_snapshot(data_dir, status)
                live.update(frame(status), refresh=True)
    except KeyboardInterrupt:
        pass


def _ring_state(record: dict, alive: bool, member: dict | None) -> str:
    """A node's RING cell: its state in the newest map, down, decommissioned, or -."""
    if record.get("status") == "decommissioned":
        return "decommissioned"
    if member is None:
        return "-"
    if member["state"] == "normal" and (not alive or member["status"] in ("down", "removed")):
        return "down"
    return member["state"]


def _with_rate(first: dict, second: dict, seconds: float) -> dict:
    """``second`` with keys/s and, from the ranges finished meanwhile, an ETA."""
    out = dict(second)
    if seconds > 0 and first["epoch"] == second["epoch"]:
        out["keys_per_s"] = round(max(0, second["keys"] - first["keys"]) / seconds, 1)
        finished = second["ranges_done"] - first["ranges_done"]
        if finished > 0:
            left = second["ranges"] - second["ranges_done"]
            out["eta_s"] = round(left * seconds / finished, 1)
    return out


def _describe_stream(stream: dict) -> str:
    text = (f"{stream['ranges_done']}/{stream['ranges']} ranges on {stream['nodes']} "
            f"node{'s' if stream['nodes'] != 1 else ''}, {stream['keys']} keys, "
            f"{human_bytes(stream['bytes'])}")
    if stream.get("keys_per_s") is not None:
        text += f", {stream['keys_per_s']:.0f} keys/s"
    if stream.get("eta_s") is not None:
        text += f", ETA {stream['eta_s']:.0f}s"
    return text


# --------------------------------------------------------------------------- simulator


@app.command()
def sim(
    scenario: str = typer.Argument("quick", metavar="SCENARIO", help="Scenario name (see --list)."),
    seed: int = typer.Option(1, "--seed", "-s", help="Seed; the same seed replays exactly."),
    list_: bool = typer.Option(False, "--list", help="List the scenarios and exit."),
) -> None:
    """Run a simulator scenario (virtual time, injected faults) and print its report.

    Exit 1 if the report shows a failure (lost write, linearizability violation,
    a crash of the core, or a key that could not be read back), or if the checker
    could not decide linearizability within its budget (UNDECIDED: not proven).
    """
    from zkv.sim.scenarios import SCENARIOS, format_report, run_scenario

    if list_:
        for name, fn in SCENARIOS.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            typer.echo(f"{name}" + (f"  {doc[0]}" if doc else ""))
        return
    if scenario not in SCENARIOS:
        die(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}", USAGE)
    report = run_scenario(scenario, seed)
    typer.echo(format_report(report))
    raise typer.Exit(OK if report.ok else FAILED)


# --------------------------------------------------------------------------- chaos


@app.command()
def chaos(
    duration: float = typer.Option(60.0, "--duration", min=1, help="Seconds of faults and "
                                                                  "workload."),
    nodes: int | None = typer.Option(None, "--nodes", "-n", min=3, max=100,
                                     help="Start an own cluster of NODES nodes (stopped at the "
                                          "end); without it, attach to --data-dir's cluster."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", "-d",
        help="Attach: the running cluster's directory [zkv-data]. With --nodes: where to put "
             "the cluster [a temporary directory, removed if the run passes]."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Directory for history.jsonl, faults.jsonl, "
                                         "summary.json [zkv-chaos/RUN, or DATA_DIR/chaos/RUN "
                                         "when attached]."),
    clients: int = typer.Option(4, "--clients", min=1, max=64,
                                help="Client processes doing get/put/delete and "
                                     "create/update/cas."),
    keys: int = typer.Option(6, "--keys", min=1, help="Keys in use at any moment."),
    conditional: float = typer.Option(0.3, "--conditional", min=0.0, max=1.0,
                                      metavar="RATIO",
                                      help="Share of the writes that would be puts done as "
                                           "create, update or cas instead (deletes stay)."),
    counter_workers: int = typer.Option(2, "--counter-workers", min=0, max=64,
                                        help="Extra processes incrementing one counter key by "
                                             "read-then-cas; 0: no counter."),
    key_lifetime: float = typer.Option(20.0, "--key-lifetime", min=1,
                                       help="Seconds before a key is retired for a fresh one "
                                            "(keeps each key's history checkable)."),
    max_down: int = typer.Option(2, "--max-down", min=1,
                                 help="Most replicas of any key under a fault at once."),
    faults: str | None = typer.Option(None, "--faults",
                                      help="Comma-separated kinds: kill, pause, partition, "
                                           "loss, slow, join, decommission, wipe, remove "
                                           "(membership: the last four); all: every kind the "
                                           "set-up allows [kill, pause and, in network "
                                           "namespaces, partition, loss, slow]."),
    network: str = typer.Option("auto", "--network",
                                help="auto, netns (each node its own host in a network "
                                     "namespace: needs root, ip, nft, tc) or loopback."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the fault schedule and "
                                                          "workload [random]."),
    timeout: float = typer.Option(1.0, "--timeout", "-t", min=0.05,
                                  help="Client timeout per operation, seconds."),
    settle_timeout: float = typer.Option(60.0, "--settle-timeout", min=1,
                                         help="Seconds the cluster gets to converge after the "
                                              "faults stop."),
    gossip_interval: float = typer.Option(0.1, "--gossip-interval",
                                          help="Own cluster's node timer, seconds."),
    t_fail: float = typer.Option(1.0, "--t-fail", help="Own cluster's node timer, seconds."),
    t_remove: float = typer.Option(8.0, "--t-remove", help="Own cluster's node timer, "
                                                           "seconds; keep it above the longest "
                                                           "fault (6 s), the timing assumption "
                                                           "the nemesis keeps to."),
    keep: bool = typer.Option(False, "--keep", help="Keep an own cluster's directory even "
                                                   "when the run passes."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="Show a progress bar."),
) -> None:
    """Run a workload under injected faults, then check the history (Jepsen-style).

    Client processes do get/put/delete/create/update/cas on a few contended keys,
    and counter processes increment one key by read-then-cas, while a nemesis
    kills (SIGKILL), pauses (SIGSTOP/SIGCONT) and, when each node runs in its own
    network namespace, partitions, drops and slows nodes; with --faults membership
    it also joins, decommissions, wipes and removes nodes, one ring change at a
    time (the checks then use the ring as it ends). Then the faults stop,
    the cluster settles, every key is read at quorum, and the run checks that
    every key's history is linearizable, no acknowledged write was lost, the
    counter ends between its acknowledged increments and those plus the unknown
    ones, and every key sits on exactly its replica set with identical records.

    Exit 0 if all of that held, 1 on any violation (the smallest failing key
    history is printed), 2 if the run could not start.

    \b
    zkv chaos --nodes 5 --duration 60          # an own cluster, stopped at the end
    zkv chaos --data-dir zkv-data --duration 600  # a cluster from zkv cluster up
    """
    from zkv.chaos import run as chaos_run
    from zkv.chaos.nemesis import parse_kinds

    try:
        kinds = parse_kinds(faults) if faults else None
    except ValueError as exc:
        die(f"--faults: {exc}", USAGE)
    if timer_order(gossip_interval, t_fail, t_remove) is not None:
        die("timers: need --gossip-interval < --t-fail < --t-remove", USAGE)
    options = chaos_run.ChaosOptions(
        duration=duration, nodes=nodes, data_dir=data_dir, out=out, clients=clients, keys=keys,
        conditional=conditional, counter_workers=counter_workers, key_lifetime=key_lifetime,
        max_down=max_down, kinds=kinds, network=network, seed=seed,
        timeout=timeout, settle_timeout=settle_timeout,
        node_flags=("--gossip-interval", str(gossip_interval), "--t-fail", str(t_fail),
                    "--t-remove", str(t_remove)),
        keep=keep, progress=progress)
    code = chaos_run.run_and_exit_code(options, fail=lambda message: die(message, USAGE))
    raise typer.Exit(code)


# --------------------------------------------------------------------------- bench


class Transport(str, Enum):
    zmtp = "zmtp"
    zeromq = "zeromq"


class Workload(str, Enum):
    put = "put"
    get = "get"
    mixed = "mixed"
    delete = "delete"
    create = "create"
    cas = "cas"
    counter = "counter"


@app.command()
def bench(
    workload: Workload = typer.Option(Workload.put, "--workload", "-w",
                                      help="put, get (keys loaded first), mixed (half gets, "
                                           "half puts), delete, create (fresh keys), cas, or "
                                           "counter (every client increments one key)."),
    clients: int = typer.Option(1, "--clients", min=1, max=1024,
                                help="Concurrent clients (spread over processes)."),
    duration: float = typer.Option(5.0, "--duration", min=0.1, help="Seconds of load."),
    keys: int = typer.Option(10_000, "--keys", min=1, help="Distinct keys (uniform)."),
    value_size: int = typer.Option(100, "--value-size", min=0, help="Bytes per value."),
    consistency: Consistency = ConsistencyOption,
    pipeline: int = typer.Option(1, "--pipeline", min=1, max=4096,
                                 help="Requests in flight per client."),
    processes: int = typer.Option(0, "--processes", min=0,
                                  help="Generator processes [min(clients, CPUs)]."),
    timeout: float = typer.Option(2.0, "--timeout", "-t", min=0.001,
                                  help="Per-operation timeout, seconds."),
    transport: Transport | None = typer.Option(
        None, "--transport",
        help="The clients' links: zmtp (ZeroMQ's wire on plain sockets, the default "
             "without CurveZMQ) or zeromq (ZeroMQ's sockets)."),
    direct_reads: bool = typer.Option(
        True, "--direct-reads/--no-direct-reads",
        help="Quorum gets read two replicas directly (the library's default), or go "
             "through a coordinator (see docs/performance.md)."),
    seeds: str | None = SeedsOption,
    data_dir: Path | None = typer.Option(
        None, "--data-dir", "-d",
        help="Attach to this cluster directory [zkv-data]; with --nodes, where to put the "
             "own cluster [a temporary directory, removed afterwards]."),
    nodes: int | None = typer.Option(None, "--nodes", "-n", min=1, max=100,
                                     help="Start an own local cluster of NODES nodes for the "
                                          "run (stopped at the end)."),
    sync: bool = typer.Option(True, "--sync/--no-sync",
                              help="With --nodes: fsync each group commit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="Show a progress bar (on a terminal)."),
    cleanup: bool = typer.Option(False, "--cleanup",
                                 help="Against an existing cluster: delete the bench-NNNNNNNN "
                                      "keys (and the counter key) afterwards."),
    plot: Path | None = typer.Option(None, "--plot", metavar="FILE",
                                     help="Also draw the latency by percentile and the "
                                          "throughput over the run into FILE (.png, .svg or "
                                          ".pdf)."),
) -> None:
    """Load a cluster through the client library and report ops/s and latency.

    Against an existing cluster the keys it writes stay there (it says which at the end);
    --cleanup deletes them.

    \b
    zkv bench --nodes 3 --workload put --clients 32 --pipeline 32
    zkv bench --data-dir zkv-data --workload mixed --clients 8 --json
    """
    from zkv import bench as zb

    if plot is not None and (plot.suffix.lower() not in (".png", ".svg", ".pdf")
                             or not plot.parent.is_dir()):
        die(f"--plot {plot}: give a .png, .svg or .pdf file in an existing directory", USAGE)
    options = zb.BenchOptions(
        workload=workload.value, clients=clients, duration=duration, keys=keys,
        value_size=value_size, consistency=consistency.value, pipeline=pipeline,
        timeout=timeout, processes=processes,
        transport=transport.value if transport is not None else None,
        direct_reads=direct_reads)
    cluster = None
    try:
        if nodes is not None:
            if seeds:
                die("--nodes starts an own cluster; do not combine it with --seeds", USAGE)
            cluster = zb.LocalCluster(nodes, data_dir, sync=sync)
            options.seeds = cluster.seeds
            options.node_pids = [p.pid for p in zb.local_cluster_processes(cluster.data_dir)]
        else:
            options.seeds = resolve_seeds(seeds, data_dir or DEFAULT_DATA_DIR)
            if not seeds:
                options.node_pids = [p.pid for p in zb.local_cluster_processes(
                    data_dir or DEFAULT_DATA_DIR)]
        result = _bench_with_progress(zb, options, progress and not as_json)
    except zb.BenchError as exc:
        die(str(exc), UNAVAILABLE)
    finally:
        if cluster is not None:
            cluster.stop()
    result["options"]["nodes"] = nodes
    if nodes is None and cleanup:
        deleted, failed = zb.cleanup(options)
        result["cleanup"] = {"deleted": deleted, "failed": failed}
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(zb.format_table(result))
    if plot is not None:
        from zkv import plots

        title = zb.format_table(result).splitlines()[0]
        typer.echo(f"zkv: plot: {plots.save(plots.bench_figure(result, title), plot)}",
                   err=True)
    if nodes is None and cleanup:
        typer.echo(f"zkv: --cleanup deleted {deleted:,} bench keys"
                   + (f"; {failed:,} deletes failed (run it again)" if failed else ""), err=True)
    elif nodes is None:
        offer = ("" if options.workload in ("create", "cas") else
                 "; add --cleanup to delete them after a run")
        typer.echo(f"zkv: the run left {zb.left_behind(options)} in the cluster{offer}",
                   err=True)


def _bench_with_progress(zb: Any, options: Any, show: bool) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not show or not console.is_terminal:
        return zb.run(options)
    columns = (TextColumn("bench"), BarColumn(), TextColumn("{task.fields[rate]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("bench", total=options.duration, rate="")

        def update(ops: int, elapsed: float) -> None:
            rate = f"{ops / elapsed:,.0f} ops/s" if elapsed > 0 else ""
            bar.update(task, completed=min(elapsed, options.duration), rate=rate)

        return zb.run(options, update)


def main() -> None:
    app(prog_name="zkv")


if __name__ == "__main__":
    main()
