"""The ``zkv`` command: run nodes and local clusters, read and write keys, run the simulator.

Exit codes, for every command:

    0  success
    1  key not found, or a condition failed (create of an existing key, update or
       delete of a missing one; kill or stop of a node that is not running)
    2  usage or input error (bad flag, bad config file, key or value too large)
    3  unavailable or timed out (consistency level not reached, no node answered,
       no supervisor running)

Errors go to stderr as one line starting with ``zkv:``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import typer

from zkv import supervisor as sup
from zkv.config import ConfigError, load_settings, parse_address
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
node_app = typer.Typer(help="Run one node, or start, stop and kill nodes of a local cluster.",
                       **_TYPER)
cluster_app = typer.Typer(help="A local cluster of node processes under a supervisor.", **_TYPER)
app.add_typer(node_app, name="node")
app.add_typer(cluster_app, name="cluster")
app.add_typer(keys_app, name="keys")


class Consistency(str, Enum):
    one = "one"
    quorum = "quorum"
    all = "all"


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
                 if n.get("address") and n.get("status") != "stopped"]
    addresses = addresses or list(cluster.get("seeds") or [])
    if not addresses:
        die(f"{data_dir / sup.CLUSTER_FILE} names no node", USAGE)
    return addresses


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

    from zkv.net.security import KeyFileError, curve_from_env

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
        die(f"unavailable: {exc}", UNAVAILABLE)
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
    max_key: str | None = typer.Option(None, "--max-key", help="Largest key [1KiB]."),
    max_value: str | None = typer.Option(None, "--max-value", help="Largest value [1MiB]."),
    sync: bool | None = typer.Option(None, "--sync/--no-sync",
                                        help="fsync each group commit before acknowledging "
                                             "[--sync]."),
    map_size: str | None = typer.Option(None, "--map-size", help="Initial LMDB map size "
                                                                    "[64MiB]."),
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
        "max_key": max_key, "max_value": max_value, "sync": sync, "map_size": map_size,
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
    """SIGKILL a cluster node by its recorded pid; it is restarted unless --no-restart."""
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
        die(f"{node} is not running", FAILED)
    sup.terminate_all([proc], sup.STOP_TIMEOUT)
    typer.echo(f"stopped {node} (no supervisor was running)")


# --------------------------------------------------------------------------- cluster commands


@cluster_app.command("up")
def cluster_up(
    nodes: int = typer.Option(sup.DEFAULT_NODES, "--nodes", "-n", min=1, max=100,
                              help="Number of nodes."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", "-d",
                                  help="Cluster directory: cluster.json and node-i/ data."),
    base_port: int = typer.Option(sup.DEFAULT_BASE_PORT, "--base-port", "-p",
                                  help="Node i (from 0) uses ports base+3i .. base+3i+2."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background; return once "
                                                        "the ring has converged, print seeds."),
    timeout: float = typer.Option(60.0, "--timeout", help="With --detach: seconds to wait for "
                                                          "the cluster to be ready (exit 3)."),
    gossip_interval: float | None = typer.Option(None, "--gossip-interval",
                                                    help="Node timer, seconds [0.2]."),
    t_fail: float | None = typer.Option(None, "--t-fail", help="Node timer, seconds [2]."),
    t_remove: float | None = typer.Option(None, "--t-remove", help="Node timer, seconds "
                                                                      "[8]."),
    replicas: int | None = typer.Option(None, "--replicas", help="Copies of each key [3]."),
    sync: bool | None = typer.Option(None, "--sync/--no-sync", help="fsync each commit "
                                                                       "[--sync]."),
    curve: bool = typer.Option(False, "--curve", help="Encrypt and authenticate every socket "
                                                      "with CurveZMQ, on keys made in "
                                                      "DATA_DIR/keys (kept for later runs)."),
    daemon: bool = typer.Option(False, "--daemon", hidden=True,
                                help="Set by --detach for the background supervisor."),
) -> None:
    """Start NODES nodes on 127.0.0.1 under a supervisor that restarts any that dies.

    In the foreground, Ctrl-C stops the whole cluster. Data survives in
    DATA_DIR/node-i, so a later cluster up starts where this one stopped.
    With --curve, zkv commands given the same --data-dir use the cluster's
    client key by themselves.
    """
    node_flags: list[str] = []
    for flag, value in (("--gossip-interval", gossip_interval), ("--t-fail", t_fail),
                        ("--t-remove", t_remove), ("--replicas", replicas)):
        if value is not None:
            node_flags += [flag, str(value)]
    if sync is not None:
        node_flags.append("--sync" if sync else "--no-sync")
    try:  # the same checks a node makes, before any process starts
        load_settings(None, {"id": "node-1", "port": base_port, "gossip_interval": gossip_interval,
                             "t_fail": t_fail, "t_remove": t_remove, "replicas": replicas})
    except ConfigError as exc:
        die(str(exc), USAGE)
    if sup.supervisor_running(data_dir):
        info = _control(sup.read_cluster, data_dir) or {}
        die(f"a cluster is already running in {data_dir} (supervisor pid "
            f"{info.get('supervisor_pid', '?')}); stop it with: {sup.program_name()} cluster "
            f"down --data-dir {data_dir}", USAGE)
    _control(sup.check_layout, nodes, base_port)
    hint = "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"
    prog = sup.program_name()  # bin/zkv sets it, so hints say bin/zkv
    keys = None
    if curve:  # made here, so a problem shows before anything starts
        from zkv.net.security import KeyFileError, LocalKeys

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
        typer.echo(f"zkv: {nodes} nodes up in {data_dir} (supervisor pid "
                   f"{info['supervisor_pid']}, log {data_dir / sup.LOG_FILE}{secured}); stop "
                   f"with: {prog} cluster down{hint}", err=True)
        typer.echo(",".join(info["seeds"]))
        return

    def on_ready(s: sup.Supervisor) -> None:
        anywhere = f"  export ZKV_SEEDS={','.join(s.seeds)}"
        if keys is not None:
            anywhere += (f"\n  export ZKV_CURVE_KEY={keys.client_secret} "
                         f"ZKV_SERVER_KEY={keys.cluster_public}")
        typer.echo(f"\nzkv: cluster ready{' (CurveZMQ)' if keys else ''}. From another "
                   f"terminal in this directory:\n"
                   f"  {prog} put hello world{hint}\n  {prog} get hello{hint}\n"
                   f"  {prog} cluster status{hint}\n"
                   f"{anywhere}   # to use it from anywhere\n"
                   f"Ctrl-C stops the cluster.\n")

    supervisor = sup.Supervisor(data_dir, nodes, base_port, node_flags, curve=curve)
    code = _control(supervisor.run, None if daemon else on_ready)
    raise typer.Exit(code)


@cluster_app.command("down")
def cluster_down(data_dir: Path = DataDirOption) -> None:
    """Stop the supervisor and every node of the cluster (SIGTERM, then SIGKILL stragglers)."""
    if _control(sup.stop_cluster, data_dir):
        typer.echo(f"cluster in {data_dir} stopped")
    else:
        typer.echo(f"nothing was running in {data_dir}")


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
) -> None:
    """A table of the cluster's nodes: address, status, keys held, PID, uptime, restarts, and
    from each node's metrics: operations coordinated, how many failed (unavailable), CPU and
    memory."""
    cluster = _control(sup.require_cluster, data_dir)
    supervised = sup.supervisor_running(data_dir)
    records = cluster["nodes"]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(records)))) as pool:
        figures = list(pool.map(lambda r: node_figures(r.get("metrics")), records))
    now = time.time()
    rows = []
    for record, fig in zip(records, figures):
        status = record.get("status", "?")
        alive = sup.live_process(record.get("pid"), record.get("pid_create_time")) is not None
        if status in ("running", "stopping") and not alive:
            status = "dead"
        started = record.get("started_at")
        rows.append({
            "node": record.get("id"), "address": record.get("address"), "status": status,
            "keys": fig.keys if fig else None, "pid": record.get("pid") if alive else None,
            "uptime": _uptime(now - started) if alive and started else "-",
            "restarts": record.get("restarts", 0),
            "metrics": fig.as_dict() if fig else None,
        })
    if as_json:
        typer.echo(json.dumps({"supervisor_running": supervised,
                               "supervisor_pid": cluster.get("supervisor_pid") if supervised
                               else None, "ready": cluster.get("ready", False) and supervised,
                               "seeds": cluster.get("seeds", []), "nodes": rows}, indent=2))
        return
    if supervised:
        head = (f"supervisor pid {cluster.get('supervisor_pid')}, "
                f"{'ready' if cluster.get('ready') else 'starting'}")
    else:
        head = "no supervisor running (statuses as last recorded)"
    typer.echo(f"cluster {data_dir}: {head}; seeds {','.join(cluster.get('seeds', []))}")
    table = [("NODE", "ADDRESS", "STATUS", "KEYS", "PID", "UPTIME", "RESTARTS", "OPS", "FAILED",
              "CPU%", "MEM")]
    for r in rows:
        m = r["metrics"]
        table.append((r["node"], r["address"], r["status"],
                      "-" if r["keys"] is None else str(r["keys"]), str(r["pid"] or "-"),
                      r["uptime"], str(r["restarts"]),
                      *((str(m["ops"]), str(m["failed"]), f"{m['cpu_percent']:.0f}",
                         human_bytes(m["rss_bytes"])) if m else ("-",) * 4)))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        typer.echo("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


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
                                           "loss, slow; or all [every kind the set-up allows]."),
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
    network namespace, partitions, drops and slows nodes. Then the faults stop,
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
    if not gossip_interval < t_fail < t_remove:
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
) -> None:
    """Load a cluster through the client library and report ops/s and latency.

    \b
    zkv bench --nodes 3 --workload put --clients 32 --pipeline 32
    zkv bench --data-dir zkv-data --workload mixed --clients 8 --json
    """
    from zkv import bench as zb

    options = zb.BenchOptions(
        workload=workload.value, clients=clients, duration=duration, keys=keys,
        value_size=value_size, consistency=consistency.value, pipeline=pipeline,
        timeout=timeout, processes=processes)
    cluster = None
    try:
        if nodes is not None:
            if seeds:
                die("--nodes starts an own cluster; do not combine it with --seeds", USAGE)
            cluster = zb.LocalCluster(nodes, data_dir, sync=sync)
            options.seeds = cluster.seeds
        else:
            options.seeds = resolve_seeds(seeds, data_dir or DEFAULT_DATA_DIR)
        result = _bench_with_progress(zb, options, progress and not as_json)
    except zb.BenchError as exc:
        die(str(exc), UNAVAILABLE)
    finally:
        if cluster is not None:
            cluster.stop()
    result["options"]["nodes"] = nodes
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(zb.format_table(result))


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
