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
directory (``zkv.keys.LocalKeys``): a cluster pair, one client pair, and an
``authorized/`` directory holding both public keys; the CLI and
``Client.from_cluster_dir`` find the client pair there.
"""

from __future__ import annotations

from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from zkv.keys import CurveKeys, KeyFileError, load_keypair, load_public


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
