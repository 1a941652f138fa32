"""CurveZMQ for every zkv socket: encryption, and authentication by public key.

The model (one cluster key, many client keys):

- All nodes of a cluster share one key pair, the *cluster key*
  (``zkv keys generate --name cluster``). Each node serves its ROUTER and its
  gossip PUB as a CURVE server with it, and its DEALERs and SUB connect to
  other nodes as CURVE clients with the same pair, naming the cluster public
  key as the server's. A node therefore never needs to know which public key
  belongs to which peer address, and gossip can stay as it is.
- Every node runs a ZAP authenticator (``zmq.auth.thread.ThreadAuthenticator``)
  that admits only the public keys in its ``authorized_keys`` directory. That
  directory holds the cluster public key (so nodes admit each other) and one
  public key per client; a client removed from it is refused on its next
  connection.
- A client connects with its own key pair and the cluster public key
  (``Client(..., curve=CurveKeys.from_files(...))``). A client without CURVE, or
  with a key that is not authorized, gets no answer: its requests time out.

**Peers are peers by key.** Admission says nothing about *role*: whoever
connects may claim any node id, so a client key holder could speak as
``node-2`` (gossip that a node left, a replica write at version 2^64-1). So the
ZAP handler names every connection by its public key (ZeroMQ's authenticated
``User-Id``, the key's Z85 text, attached to every frame that connection
delivers), and a node takes a frame as peer traffic only when that User-Id is
the cluster key's (``NodeSecurity.peer_user_id``); from any other key it is a
client's, whatever it claims, and a client may send ``ClientRequest`` and
``RingQuery`` only (``zkv.net.runtime``).

Why the User-Id and not a separate peer socket that only the cluster key may
connect to: a second socket needs a fourth port per node, and every layout that
assumes three (``base + 3i`` in the supervisor, chaos, bench and the tests, the
systemd units, firewall rules) would change with it, while the User-Id is one
comparison per ZeroMQ message (a batch of up to 256 protocol messages) on the
socket that already exists. What a separate socket would also give for free,
the runtime does itself: clients cannot disturb peers' connections. Peers used
to connect under their node id as routing identity with ``ROUTER_HANDOVER``;
a client connecting as ``node-2`` then took that identity over, and ZeroMQ
leaves the connection it took it from open but unread, so node-2 could no
longer reach this node at all (until it restarted). Peers now connect under
identities ZeroMQ makes up and name themselves in each batch's first frame,
and handover is off, so no client can take over a connection. What the
shared socket still costs: a client's frames may be as large as a peer's (see
``zkv.net.runtime.frame_limits``).

Why not a key pair per node: a node connects to peers it learns from gossip by
address only, so it would need each peer's public key to be distributed first
(through gossip that is itself meant to be protected); the shared cluster key
avoids that at the cost that every node can impersonate every other node, which
they can already do by their role in the protocol.

A local cluster (``zkv cluster up --curve``) keeps its keys in the cluster
directory (``LocalKeys``): a cluster pair, one client pair, and an
``authorized/`` directory holding both public keys; the CLI and
``Client.from_cluster_dir`` find the client pair there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


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


def _read_certificate(path: Path | str) -> tuple[bytes | None, bytes | None]:
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


class NodeSecurity:
    """A node's CURVE set-up: the cluster key and a running ZAP authenticator."""

    def __init__(self, ctx: zmq.Context, secret_key: Path, authorized_keys: Path) -> None:
        public, secret = load_keypair(secret_key)
        authorized = Path(authorized_keys)
        known = {_public_or_none(p) for p in authorized.glob("*.key")}
        if public not in known:
            raise KeyFileError(f"the cluster public key of {str(secret_key)!r} is not in "
                               f"{str(authorized)!r}; nodes could not reach each other")
        self.keys = CurveKeys(public, secret, public)
        # What ZeroMQ reports as a frame's User-Id when the cluster key sent it.
        self.peer_user_id = public.decode("ascii")
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(authorized))

    def server(self, sock: zmq.Socket) -> None:
        self.keys.server(sock)

    def client(self, sock: zmq.Socket) -> None:
        self.keys.client(sock)

    def close(self) -> None:
        self.auth.stop()


def _public_or_none(path: Path) -> bytes | None:
    try:
        return load_public(path)
    except KeyFileError:
        return None


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
