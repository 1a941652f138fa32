"""The health probe: does a node serve requests, and what ring does it see?

One question to one node over a short-lived DEALER socket, in the client
protocol (``zkv.core.messages``). It sits below the supervisor, which probes
its nodes with it (and the tests theirs), so that the supervisor speaks no wire
protocol of its own and needs neither the client library nor the runtime.
"""

from __future__ import annotations

from typing import Any

PROBE_TIMEOUT = 0.3
PROBE_MAX_FRAME = 1024 * 1024  # a ring of a few thousand members, or a "not found"


def probe_ring(address: str, timeout: float = PROBE_TIMEOUT,
               curve: Any = None) -> set[str] | None:
    """The node ids in the ring of the node at ``address`` if it serves requests and
    no ring change is under way there, else None.

    A node that restarted knows its old ring before it has rejoined, so a ring
    answer alone is not enough: a read at ``one`` must be answered too.
    ``curve``: the client ``CurveKeys`` of a cluster that runs CurveZMQ.
    """
    import zmq

    from zkv.core.messages import (
        ClientReply,
        ClientRequest,
        DecodeError,
        RingInfo,
        RingQuery,
        decode,
        encode,
    )

    def ask(sock: zmq.Socket, message: Any) -> Any:
        sock.send(encode(message))
        if not sock.poll(int(timeout * 1000)):
            return None
        return decode(sock.recv())

    sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, PROBE_MAX_FRAME)
    if curve is not None:
        curve.client(sock)
    try:
        sock.connect(address)
        info = ask(sock, RingQuery(1))
        if not isinstance(info, RingInfo) or not info.settled:
            return None
        probe = ask(sock, ClientRequest(2, "get", b"zkv-supervisor-probe", None, "one",
                                        int(timeout * 1000)))
        if not isinstance(probe, ClientReply) or probe.status not in ("ok", "not_found"):
            return None
    except (zmq.ZMQError, DecodeError):
        return None
    finally:
        sock.close(0)
    return {member[0] for member in info.members}


