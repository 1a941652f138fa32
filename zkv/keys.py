"""CurveZMQ key files: making them, reading them, and the set a local cluster keeps.

The configuration, the client, the supervisor and the node runtime all read key
files, so this module sits below them all and imports nothing from zkv. How a
node uses the keys (one cluster key, client keys, the ZAP authenticator, peers
known by their key) is told in ``zkv.net.security``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


class KeyFileError(Exception):
    """A key file or directory that cannot be used; ``str()`` says why."""


def generate(out_dir: Path | str, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (both halves, mode 0600)
    into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public, secret = (out / f"{name}.key"), (out / f"{name}.key_secret")
    for path in (public, secret):
        if path.exists():
            raise KeyFileError(f"{path} exists; refusing to overwrite a key")
    pub, sec = zmq.auth.create_certificates(out, name)
    Path(sec).chmod(0o600)
    return Path(pub), Path(sec)


def _read_certificate(path: Path | str) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read a key from {str(path)!r}: {exc}") from None


def load_keypair(path: Path | str) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file."""
    public, secret = _read_certificate(path)
    if not secret:
        raise KeyFileError(f"{str(path)!r} holds no secret key (give the .key_secret file)")
    return public, secret


def load_public(path: Path | str) -> bytes:
    """The public key from a ``.key`` or ``.key_secret`` file."""
    public, _ = _read_certificate(path)
    if not public:
        raise KeyFileError(f"{str(path)!r} holds no public key")
    return public


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """One side's key pair and the public key of the servers it connects to."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, key_secret_file: Path | str, server_key_file: Path | str) -> CurveKeys:
        public, secret = load_keypair(key_secret_file)
        return cls(public, secret, load_public(server_key_file))

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client (before it connects)."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server_public

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (before it binds)."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_server = True


CLIENT_KEY_ENV = "ZKV_CURVE_KEY"  # the client's .key_secret file
SERVER_KEY_ENV = "ZKV_SERVER_KEY"  # the cluster's public .key file


def curve_from_env(environ: dict[str, str] | None = None) -> CurveKeys | None:
    """The command-line client's keys, from ``ZKV_CURVE_KEY`` and ``ZKV_SERVER_KEY``;
    None when neither is set."""
    env = os.environ if environ is None else environ
    client, server = env.get(CLIENT_KEY_ENV), env.get(SERVER_KEY_ENV)
    if not client and not server:
        return None
    if not client or not server:
        raise KeyFileError(f"set both {CLIENT_KEY_ENV} (your .key_secret) and "
                           f"{SERVER_KEY_ENV} (the cluster's .key), or neither")
    return CurveKeys.from_files(client, server)


LOCAL_KEYS_DIR = "keys"  # inside a local cluster's directory


@dataclass(frozen=True, slots=True)
class LocalKeys:
    """The key files of a local cluster (``zkv cluster up --curve``) in ``directory``:
    ``cluster.key``/``cluster.key_secret`` (the nodes'), ``client.key``/
    ``client.key_secret`` (the CLI's and the supervisor's), and ``authorized/``
    holding both public keys (the nodes' ``authorized_keys``)."""

    directory: Path

    @classmethod
    def of_cluster(cls, cluster_dir: Path | str) -> LocalKeys:
        return cls(Path(cluster_dir).resolve() / LOCAL_KEYS_DIR)

    @property
    def cluster_secret(self) -> Path:
        return self.directory / "cluster.key_secret"

    @property
    def cluster_public(self) -> Path:
        return self.directory / "cluster.key"

    @property
    def client_secret(self) -> Path:
        return self.directory / "client.key_secret"

    @property
    def authorized(self) -> Path:
        return self.directory / "authorized"

    def ensure(self) -> LocalKeys:
        """Make whatever key is missing; keys already there are kept (a cluster that
        restarts keeps its keys, and clients keep working)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self.authorized.mkdir(exist_ok=True)
        for name in ("cluster", "client"):
            public = self.directory / f"{name}.key"
            secret = self.directory / f"{name}.key_secret"
            if not secret.exists():
                public.unlink(missing_ok=True)
                generate(self.directory, name)
            copy = self.authorized / public.name
            if not copy.exists() or copy.read_bytes() != public.read_bytes():
                copy.write_bytes(public.read_bytes())
        return self

    def node_flags(self) -> list[str]:
        """The ``zkv node start`` flags that run a node on these keys."""
        return ["--curve", "--secret-key", str(self.cluster_secret),
                "--authorized-keys", str(self.authorized)]

    def client(self) -> CurveKeys:
        """The client pair, connecting to servers of the cluster key."""
        return CurveKeys.from_files(self.client_secret, self.cluster_public)
