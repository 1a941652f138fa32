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

Why not a key pair per node: a node connects to peers it learns from gossip by
address only, so it would need each peer's public key to be distributed first
(through gossip that is itself meant to be protected); the shared cluster key
avoids that at the cost that every node can impersonate every other node, which
they can already do by their role in the protocol.
"""

from __future__ import annotations

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
    import os

    env = os.environ if environ is None else environ
    client, server = env.get(CLIENT_KEY_ENV), env.get(SERVER_KEY_ENV)
    if not client and not server:
        return None
    if not client or not server:
        raise KeyFileError(f"set both {CLIENT_KEY_ENV} (your .key_secret) and "
                           f"{SERVER_KEY_ENV} (the cluster's .key), or neither")
    return CurveKeys.from_files(client, server)
