"""Everything one node process needs to start: the protocol config plus where it lives.

Port layout (one number to configure per node): the request ROUTER listens on
``port``, the gossip PUB on ``port + 1`` and the Prometheus metrics on
``port + 2``, unless ``metrics_port`` says otherwise.

Settings come from a TOML file (``load_settings``), from flags, or both; a flag
overrides the file. Every field is checked before a node starts, and the first
problem is raised as one ``ConfigError`` whose message names the file (or the
command line), the field and what is wrong with it.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zkv.core.config import REMOVAL_POLICIES, NodeConfig, timer_order
from zkv.core.quorum import LEVELS

# A node's data directory holds its LMDB environment (``store_path``), its event
# log (``zkv.net.eventlog``) and ``node.json``, where the runtime says who it is
# and how it is doing (``zkv.net.runtime``).
STORE_DIR = "store"
NODE_FILE = "node.json"


def store_path(data_dir: Path | str) -> Path:
    """Where a node keeps its LMDB environment inside its data directory."""
    return Path(data_dir) / STORE_DIR


def node_address(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"


def gossip_address(address: str) -> str:
    """The PUB endpoint that belongs to a node's request address (port + 1)."""
    head, _, port = address.rpartition(":")
    return f"{head}:{int(port) + 1}"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    node: NodeConfig
    host: str
    port: int
    data_dir: Path
    metrics_port: int | None = None  # None: port + 2; 0: no metrics server
    metrics_host: str | None = None  # where the HTTP server binds; None: host
    sync: bool = True  # fsync each group commit
    log_ops: bool = False  # write an event per replica read/write and per request too
    map_size: int = 64 * 1024 * 1024
    max_map_size: int = 64 * 1024 * 1024 * 1024
    record_cache: int = 16 * 1024 * 1024  # bytes of decoded records held (zkv.storage.record_cache)
    event_log_max_bytes: int = 64 * 1024 * 1024
    shutdown_grace: float = 2.0  # seconds to finish in-flight work after SIGTERM
    curve: bool = False  # CurveZMQ on every socket (see zkv.net.security)
    secret_key: Path | None = None  # the cluster's key pair (a zmq.auth .key_secret file)
    authorized_keys: Path | None = None  # directory of public keys (.key) allowed to connect

    @property
    def address(self) -> str:
        return node_address(self.host, self.port)

    @property
    def gossip_port(self) -> int:
        return self.port + 1

    @property
    def effective_metrics_port(self) -> int | None:
        if self.metrics_port == 0:
            return None
        return self.metrics_port if self.metrics_port is not None else self.port + 2

    @property
    def http_bind(self) -> str:
        """The address the HTTP server (metrics, dashboard) binds to."""
        return self.metrics_host if self.metrics_host is not None else self.host


# --------------------------------------------------------------------------- loading


class ConfigError(Exception):
    """A setting that cannot work: ``str()`` is one line naming source, field and problem."""

    def __init__(self, source: str, field_name: str, problem: str) -> None:
        super().__init__(f"{source}: {field_name}: {problem}")
        self.source = source
        self.field = field_name
        self.problem = problem


COMMAND_LINE = "command line"

_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_SIZE = re.compile(r"\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 1 << 10, "mib": 1 << 20,
          "gib": 1 << 30}
PORTS_PER_NODE = 3  # request (port), gossip (port + 1), metrics (port + 2)
MAX_PORT = 65536 - PORTS_PER_NODE
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7400


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if not _is_int(v) or not lo <= v <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}, got {_show(v)}")
        return v

    return parse


def _seconds(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 10**7:
        raise ValueError(f"must be a number of seconds greater than 0, got {_show(v)}")
    return float(v)


def _seconds_from(lo: float) -> Callable[[Any], float]:
    def parse(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < 10**7:
            raise ValueError(f"must be a number of seconds of at least {lo:g}, got {_show(v)}")
        return float(v)

    return parse


def _size_in(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        n: int | None = v if _is_int(v) else None
        if isinstance(v, str) and (m := _SIZE.fullmatch(v)):
            n = int(m.group(1)) * _UNITS[(m.group(2) or "b").lower()]
        if n is None:
            raise ValueError(f"must be a size in bytes (an integer, or a string such as "
                             f"\"64MiB\"), got {_show(v)}")
        if not lo <= n <= hi:
            raise ValueError(f"must be from {lo} to {hi} bytes, got {_show(v)}")
        return n

    return parse


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {_show(v)}")
        return v

    return parse


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {_show(v)}")
    return v


def is_node_id(v: Any) -> bool:
    """True for a string that a node's ``id`` setting accepts."""
    return isinstance(v, str) and _NODE_ID.fullmatch(v) is not None


def _node_id(v: Any) -> str:
    if not is_node_id(v):
        raise ValueError("must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a "
                         f"letter or digit), got {_show(v)}")
    return v


def _host(v: Any) -> str:
    if not isinstance(v, str) or not _HOST.fullmatch(v):
        raise ValueError(f"must be a host name or IPv4 address, got {_show(v)}")
    if v in ("0.0.0.0", "*"):
        raise ValueError("must be an address other nodes can reach, not a wildcard")
    return v


def _bind_host(v: Any) -> str:
    """Where a server listens: an address of this machine, or 0.0.0.0 for every one."""
    if v == "0.0.0.0":
        return v
    if not isinstance(v, str) or not _HOST.fullmatch(v):
        raise ValueError(f"must be a host name, an IPv4 address or 0.0.0.0, got {_show(v)}")
    return v


def _data_dir(v: Any) -> Path:
    if isinstance(v, Path):
        v = str(v)
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"must be a directory path, got {_show(v)}")
    path = Path(v).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} exists and is not a directory")
    return path


def _optional_path(v: Any) -> Path | None:
    if v is None or v == "":
        return None
    if isinstance(v, Path):
        return v
    if not isinstance(v, str):
        raise ValueError(f"must be a path, got {_show(v)}")
    return Path(v).expanduser()


def parse_address(v: Any) -> str:
    """``tcp://host:port`` from that form or from a bare ``host:port``."""
    if not isinstance(v, str):
        raise ValueError(f"must be an address like tcp://10.0.0.1:7400, got {_show(v)}")
    text = v.strip()
    rest = text.removeprefix("tcp://")
    host, sep, port = rest.rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be an address like tcp://10.0.0.1:7400, got {_show(v)}")
    return node_address(host, int(port))


def _seeds(v: Any) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)):
        raise ValueError('must be a list of addresses like ["tcp://10.0.0.1:7400"], '
                         f"got {_show(v)}")
    out: list[str] = []
    for i, item in enumerate(v):
        try:
            out.append(parse_address(item))
        except ValueError as exc:
            raise ValueError(f"entry {i + 1} {exc}") from None
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class SettingField:
    """One setting: where it sits in the file, its flag, how it is checked, its default."""

    path: str  # as written in the file: "port", "timers.t_fail"
    parse: Callable[[Any], Any]  # raises ValueError(problem)
    default: Any
    doc: str

    @property
    def key(self) -> str:
        """The name used in ``overrides`` (the last part of ``path``)."""
        return self.path.rpartition(".")[2]

    @property
    def section(self) -> str:
        return self.path.rpartition(".")[0]

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


_D = NodeConfig("-", "-")
_S = NodeSettings(_D, "-", 0, Path("-"))
_REQUIRED = object()
_BY_ID = object()  # default computed from id
FIELDS: tuple[SettingField, ...] = (
    SettingField("id", _node_id, _REQUIRED, "node id, unique in the cluster"),
    SettingField("host", _host, DEFAULT_HOST, "address other nodes and clients reach this node at"),
    SettingField("port", _int_in(1, MAX_PORT), DEFAULT_PORT,
                 "request port; gossip uses port+1, metrics port+2"),
    SettingField("data_dir", _data_dir, _BY_ID, "LMDB data, event log (default zkv-data/<id>)"),
    SettingField("seeds", _seeds, (), "addresses of nodes to join through; the node whose own "
                 "address is the first seed founds a new cluster if it has never been in one"),
    SettingField("metrics_port", _int_in(0, 65535), None,
                 "HTTP port of /metrics and the dashboard (default port+2; 0 turns both off)"),
    SettingField("metrics_host", _bind_host, None,
                 "address the HTTP server of /metrics and the dashboard binds to (default: "
                 "host; 0.0.0.0 for every interface); other nodes reach it at host"),
    SettingField("replicas", _int_in(1, 32), _D.replicas, "copies of each key (N)"),
    SettingField("vnodes", _int_in(1, 4096), _D.vnodes, "ring tokens per node"),
    SettingField("consistency", _choice(*LEVELS), _D.consistency,
                 "level used when a request does not name one"),
    SettingField("fast_puts", _bool, _D.fast_puts,
                 "a key's primary writes a put without reading a quorum first when it "
                 "remembers the key's version (one round trip instead of two)"),
    SettingField("timers.gossip_interval", _seconds, _D.gossip_interval,
                 "seconds between gossip rounds"),
    SettingField("timers.t_fail", _seconds, _D.t_fail,
                 "seconds without a heartbeat before a node counts as down"),
    SettingField("timers.t_remove", _seconds, _D.t_remove,
                 "seconds without a heartbeat before a node is removed from the ring "
                 "(a majority decision; see membership.removal)"),
    SettingField("timers.anti_entropy_interval", _seconds, _D.anti_entropy_interval,
                 "seconds between anti-entropy rounds"),
    SettingField("timers.tombstone_grace", _seconds, _D.tombstone_grace,
                 "seconds a tombstone is kept at the latest"),
    SettingField("timers.retry_interval", _seconds, _D.retry_interval,
                 "seconds before an unanswered replica request or hand-off is resent"),
    SettingField("timers.default_timeout", _seconds, _D.default_timeout,
                 "deadline of a request that does not carry its own"),
    SettingField("timers.shutdown_grace", _seconds, _S.shutdown_grace,
                 "seconds to finish in-flight work after SIGTERM"),
    SettingField("limits.max_key", _size_in(1, 64 * 1024), _D.max_key, "largest key, bytes"),
    SettingField("limits.max_value", _size_in(0, 32 * 1024 * 1024), _D.max_value,
                 "largest value, bytes"),
    SettingField("limits.max_version_ahead", _seconds_from(1.0), _D.max_version_ahead,
                 "seconds a version's wall time may be ahead of this node's clock; a peer "
                 "message with one further ahead is refused (keep clocks closer than this)"),
    SettingField("membership.removal", _choice(*REMOVAL_POLICIES), _D.removal,
                 "auto: a node silent for t_remove is removed by a majority decision; "
                 "manual: only `zkv node remove` removes a dead node"),
    SettingField("durability.sync", _bool, _S.sync, "fsync each group commit before acknowledging"),
    SettingField("logging.log_ops", _bool, _S.log_ops,
                 "also log every replica read and write and every request in events.jsonl "
                 "(for tests and debugging: a line per operation costs more than the operation)"),
    SettingField("durability.map_size", _size_in(1 << 20, 1 << 40), _S.map_size,
                 "initial LMDB map size (it grows on demand)"),
    SettingField("durability.max_map_size", _size_in(1 << 20, 1 << 44), _S.max_map_size,
                 "largest the LMDB map may grow"),
    SettingField("memory.record_cache", _size_in(0, 1 << 40), _S.record_cache,
                 "bytes of recently used records kept decoded in memory, so reads and "
                 "writes of a key skip LMDB (at most one entry per KiB of it); 0: none"),
    SettingField("security.curve", _bool, _S.curve,
                 "encrypt and authenticate every socket with CurveZMQ"),
    SettingField("security.secret_key", _optional_path, None,
                 "the cluster key pair, a .key_secret file from `zkv keys generate`"),
    SettingField("security.authorized_keys", _optional_path, None,
                 "directory of public .key files allowed to connect (clients and the "
                 "cluster key)"),
)
_FIELD_BY_KEY = {f.key: f for f in FIELDS}
_FIELD_BY_PATH = {f.path: f for f in FIELDS}
SECTIONS = tuple(dict.fromkeys(f.section for f in FIELDS if f.section))


def _unknown(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name.rpartition(".")[2], known, n=1)
    return f"unknown field (did you mean {close[0]}?)" if close else "unknown field"


def _read_file(path: Path) -> dict[str, tuple[Any, str]]:
    """Parsed values by key, each with the name it was written under."""
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(source, "-", f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(source, "-", "is not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "-", f"not valid TOML: {exc}") from None

    flat: list[tuple[str, Any]] = []
    top_names = [f.path for f in FIELDS if not f.section] + list(SECTIONS)
    for name, value in doc.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(source, name, f"must be a table ([{name}]), got {_show(value)}")
            known = [f.key for f in FIELDS if f.section == name]
            for sub, subvalue in value.items():
                if f"{name}.{sub}" not in _FIELD_BY_PATH:
                    raise ConfigError(source, f"{name}.{sub}", _unknown(sub, known))
                flat.append((f"{name}.{sub}", subvalue))
        elif name in _FIELD_BY_PATH:
            flat.append((name, value))
        elif name in _FIELD_BY_KEY:  # e.g. t_fail at the top level: say where it belongs
            raise ConfigError(source, name, f"belongs in the [{_FIELD_BY_KEY[name].section}] "
                                            "section")
        else:
            raise ConfigError(source, name, _unknown(name, top_names))

    out: dict[str, tuple[Any, str]] = {}
    for name, value in flat:
        spec = _FIELD_BY_PATH[name]
        try:
            out[spec.key] = (spec.parse(value), name)
        except ValueError as exc:
            raise ConfigError(source, name, str(exc)) from None
    return out


def load_settings(path: str | Path | None = None,
                  overrides: Mapping[str, Any] | None = None) -> NodeSettings:
    """Settings from a TOML file (optional) and flags; a flag that is not None wins.

    ``overrides`` uses the field names without their section (``t_fail``,
    ``max_value``, ``sync``...). Raises ``ConfigError`` for the first field that
    is unknown, of the wrong type, out of range, or inconsistent with another.
    """
    values: dict[str, tuple[Any, str, str]] = {}  # key -> (value, source, field name)
    file_source = str(path) if path is not None else COMMAND_LINE
    if path is not None:
        for key, (value, name) in _read_file(Path(path)).items():
            values[key] = (value, file_source, name)
    for key, raw in (overrides or {}).items():
        if raw is None:
            continue
        spec = _FIELD_BY_KEY.get(key)
        if spec is None:
            raise ConfigError(COMMAND_LINE, key, "unknown setting")
        if key == "seeds" and isinstance(raw, str):  # a flag: comma-separated
            raw = [part for part in raw.split(",") if part.strip()]
        try:
            values[key] = (spec.parse(raw), COMMAND_LINE, spec.flag)
        except ValueError as exc:
            raise ConfigError(COMMAND_LINE, spec.flag, str(exc)) from None

    def get(key: str) -> Any:
        return values[key][0]

    def fail(key: str, problem: str) -> ConfigError:
        spec = _FIELD_BY_KEY[key]
        _, source, name = values.get(key, (None, file_source, spec.path))
        return ConfigError(source, name, problem)

    for spec in FIELDS:
        if spec.key in values:
            continue
        if spec.default is _REQUIRED:
            where = f"set {spec.path} in the file or pass {spec.flag}" if path is not None \
                else f"pass {spec.flag} or --config FILE"
            raise ConfigError(file_source, spec.path if path is not None else spec.flag,
                              f"is required ({where})")
        default = Path("zkv-data") / get("id") if spec.default is _BY_ID else spec.default
        values[spec.key] = (default, file_source, spec.path)

    port, metrics_port = get("port"), get("metrics_port")
    if metrics_port in (port, port + 1):
        raise fail("metrics_port", f"must differ from port ({port}) and the gossip port "
                                   f"({port + 1})")
    timers = timer_order(get("gossip_interval"), get("t_fail"), get("t_remove"))
    if timers is not None:
        raise fail(*timers)
    if get("map_size") > get("max_map_size"):
        raise fail("map_size", f"must not exceed max_map_size ({get('max_map_size')})")
    if get("curve"):
        _check_security(get, fail)
    address = node_address(get("host"), port)

    node = NodeConfig(
        node_id=get("id"),
        address=address,
        seeds=get("seeds"),
        replicas=get("replicas"),
        vnodes=get("vnodes"),
        consistency=get("consistency"),
        fast_puts=get("fast_puts"),
        gossip_interval=get("gossip_interval"),
        t_fail=get("t_fail"),
        t_remove=get("t_remove"),
        removal=get("removal"),
        anti_entropy_interval=get("anti_entropy_interval"),
        retry_interval=get("retry_interval"),
        default_timeout=get("default_timeout"),
        tombstone_grace=get("tombstone_grace"),
        max_key=get("max_key"),
        max_value=get("max_value"),
        max_version_ahead=get("max_version_ahead"),
        http_port=None if metrics_port in (None, port + 2) else metrics_port,
    )
    try:
        node.validate()
    except ValueError as exc:  # a rule the checks above missed: still one clear line
        name, _, problem = str(exc).partition(": ")
        raise ConfigError(file_source, name, problem or str(exc)) from None
    return NodeSettings(
        node=node,
        host=get("host"),
        port=port,
        data_dir=get("data_dir"),
        metrics_port=metrics_port,
        metrics_host=get("metrics_host"),
        sync=get("sync"),
        log_ops=get("log_ops"),
        map_size=get("map_size"),
        max_map_size=get("max_map_size"),
        record_cache=get("record_cache"),
        shutdown_grace=get("shutdown_grace"),
        curve=get("curve"),
        secret_key=get("secret_key"),
        authorized_keys=get("authorized_keys"),
    )


def _check_security(get: Callable[[str], Any], fail: Callable[[str, str], ConfigError]) -> None:
    """With curve on, both key settings must name usable files, checked before start."""
    from zkv.keys import KeyFileError, load_keypair

    secret, authorized = get("secret_key"), get("authorized_keys")
    if secret is None:
        raise fail("secret_key", "is required when security.curve is true")
    if authorized is None:
        raise fail("authorized_keys", "is required when security.curve is true")
    try:
        load_keypair(secret)
    except KeyFileError as exc:
        raise fail("secret_key", str(exc)) from None
    if not authorized.is_dir():
        raise fail("authorized_keys", f"{str(authorized)!r} is not a directory")
    if not any(authorized.glob("*.key")):
        raise fail("authorized_keys", f"{str(authorized)!r} holds no public .key file")
