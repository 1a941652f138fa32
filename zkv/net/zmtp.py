"""A client's links to nodes over plain TCP, speaking ZeroMQ's wire (ZMTP 3.0) as a DEALER.

Why not a ZeroMQ socket: libzmq hands every message to and from its I/O thread.
For a client that sends a request and waits for the reply, those hand-offs cost
more CPU than the request itself (py-spy, one blocking put at a time: some 30 µs
of Python against 150 µs in all, the rest the I/O thread and its system calls)
and add a thread wake-up each way to the latency. Here the calling thread
writes and reads the socket itself. A node sees an ordinary DEALER: its ROUTER
reads the same bytes, so nodes keep ZeroMQ.

Only what a client needs is spoken: the NULL mechanism (no CurveZMQ: a cluster
that runs it keeps ZeroMQ's sockets, ``zkv.net.links``), the greeting and READY
handshake, data frames, PING answered with PONG, and ERROR. Like a DEALER with
``ZMQ_IMMEDIATE``, a link takes messages only once its handshake is done, and
reconnects by itself (after ``RECONNECT_IVL``) when the connection fails; what
it had not sent then is lost, as ZeroMQ drops a dead pipe's queue. A frame
longer than ``max_frame`` drops the connection, as ``ZMQ_MAXMSGSIZE`` does.
"""

from __future__ import annotations

import errno
import math
import select
import socket
import struct
import time

RECONNECT_IVL = 0.1  # seconds before a failed connection is tried again (ZeroMQ's default)
RESOLVE_EVERY = 5.0  # seconds a host name's address is reused (the calling thread resolves)
CONNECT_NORMAL = 0.05  # seconds a TCP connect takes at most unless a SYN is lost
SEND_BUFFER = 16 * 1024 * 1024  # bytes a link queues unsent before it refuses more (HWM)
READ_CHUNK = 256 * 1024

# ZMTP 3.0 (rfc.zeromq.org/spec/23): signature, version 3.0, mechanism NULL, as-server 0.
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + bytes(32)
_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
_SHORT_MAX = 255


def _command(body: bytes) -> bytes:
    return (bytes((_COMMAND, len(body))) if len(body) <= _SHORT_MAX
            else bytes((_COMMAND | _LONG,)) + struct.pack(">Q", len(body))) + body


READY = _command(b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER")
_OPENING = GREETING + READY  # all a DEALER says before its first message


class ProtocolError(Exception):
    """The other end does not speak ZMTP 3 with the NULL mechanism as zkv's nodes do."""


def encode_message(frames: list[bytes]) -> bytes:
    """One ZeroMQ message of ``frames`` (each a frame, MORE on all but the last)."""
    if len(frames) == 1 and len(frames[0]) <= _SHORT_MAX:  # a request: the common case
        return bytes((0, len(frames[0]))) + frames[0]
    out = []
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        n = len(frame)
        more = _MORE if i < last else 0
        out.append(bytes((more, n)) if n <= _SHORT_MAX
                   else bytes((more | _LONG,)) + struct.pack(">Q", n))
        out.append(frame)
    return b"".join(out)


class _Link:
    """One connection to one node, from TCP connect through the handshake to frames."""

    __slots__ = ("address", "host", "port", "born", "sock", "fd", "watch", "connecting", "ready",
                 "retry_at", "out", "inbuf", "greeted", "error", "resolved", "resolved_at")

    def __init__(self, address: str, now: float) -> None:
        self.address = address
        host, _, port = address.removeprefix("tcp://").rpartition(":")
        self.host = host.strip("[]")  # an IPv6 address is written in brackets
        self.port = int(port)
        self.born = now  # when it began connecting, or when a slow TCP connect ended
        self.sock: socket.socket | None = None
        self.fd = -1
        self.watch = select.poll()  # this socket alone, for a look before each send
        self.connecting = False  # TCP connect in progress
        self.ready = False  # handshake done: messages may go
        self.retry_at = now
        self.out = bytearray()
        self.inbuf = bytearray()
        self.greeted = False  # the other end's greeting read
        self.error = ""  # why the last connection ended, for tests and messages
        self.resolved: tuple | None = None  # getaddrinfo's first answer
        self.resolved_at = 0.0

    def connect(self, now: float) -> None:
        try:
            if self.resolved is None or now - self.resolved_at >= RESOLVE_EVERY:
                # Not on every reconnection: a node that is down is tried ten times a
                # second, and a slow name server would stall every call of the client.
                # IPv4 unless the address is an IPv6 one, as ZeroMQ without ZMQ_IPV6
                # (which nodes do not set): "localhost" is then 127.0.0.1, not ::1.
                family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
                self.resolved = socket.getaddrinfo(
                    self.host, self.port, family, socket.SOCK_STREAM)[0]
                self.resolved_at = now
            family, kind, proto, _, where = self.resolved
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self._failed(f"cannot connect: {exc}", now)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(where)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._failed(f"cannot connect: {errno.errorcode.get(code, code)}", now)
            return
        self.sock = sock
        self.fd = sock.fileno()
        self.watch = select.poll()
        self.watch.register(self.fd, select.POLLIN)
        self.connecting = code != 0
        self.out[:] = _OPENING
        self.inbuf.clear()
        self.greeted = self.ready = False

    def _failed(self, why: str, now: float) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.connecting = self.ready = self.greeted = False
        self.out.clear()
        self.inbuf.clear()
        self.error = why
        self.retry_at = now + RECONNECT_IVL

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.ready = False

    def events(self) -> int:
        """What to poll this link's socket for."""
        if self.connecting or self.out:
            return select.POLLIN | select.POLLOUT
        return select.POLLIN

    def flush(self, now: float) -> None:
        """Write what is queued, as far as the socket takes it."""
        sock = self.sock
        assert sock is not None
        if self.connecting:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._failed(f"cannot connect: {errno.errorcode.get(code, code)}", now)
                return
            self.connecting = False
            self.born = max(self.born, now - CONNECT_NORMAL)
        try:
            sent = sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed(f"connection lost: {exc}", now)
            return
        del self.out[:sent]

    def read(self, frames: list[bytes], max_frame: int, now: float) -> None:
        """Read what has arrived; complete data frames go to ``frames``."""
        sock = self.sock
        assert sock is not None
        ended = ""
        try:
            while True:
                chunk = sock.recv(READ_CHUNK)
                if not chunk:
                    ended = "the node closed the connection"
                    break
                self.inbuf += chunk
                if len(chunk) < READ_CHUNK:
                    break
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            ended = f"connection lost: {exc}"
        try:  # what came before the end still counts, and may say why it ended
            self._parse(frames, max_frame)
        except ProtocolError as exc:
            ended = str(exc)
        if ended:
            self._failed(ended, now)

    def _parse(self, frames: list[bytes], max_frame: int) -> None:
        buf = self.inbuf
        pos = 0
        if not self.greeted:
            if len(buf) < len(GREETING):
                return
            if buf[0] != 0xFF or not buf[9] & 0x01 or buf[10] < 3:
                raise ProtocolError(f"{self.address} does not speak ZMTP 3")
            if bytes(buf[12:32]).rstrip(b"\0") != b"NULL":
                raise ProtocolError(f"{self.address} wants the "
                                    f"{bytes(buf[12:32]).rstrip(bytes(1)).decode(errors='replace')}"
                                    " mechanism (a CurveZMQ cluster needs the client's key)")
            self.greeted = True
            pos = len(GREETING)
        end = len(buf)
        while end - pos >= 2:
            flags = buf[pos]
            if flags & _LONG:
                if end - pos < 9:
                    break
                size = int.from_bytes(buf[pos + 1:pos + 9], "big")
                start = pos + 9
            else:
                size = buf[pos + 1]
                start = pos + 2
            if size > max_frame:
                raise ProtocolError(f"{self.address} sent a frame of {size} bytes; "
                                    f"at most {max_frame} are read")
            if end - start < size:
                break
            body = bytes(buf[start:start + size])
            pos = start + size
            if flags & _COMMAND:
                self._command(body)
            else:
                frames.append(body)
        del buf[:pos]

    def _command(self, body: bytes) -> None:
        name = body[1:1 + body[0]] if body else b""
        if name == b"READY":
            self.ready = True
        elif name == b"PING":  # heartbeat: answer with its context (after a 2-byte TTL)
            self.out += _command(b"\x04PONG" + body[7:])
        elif name == b"ERROR":
            reason = body[6:6 + body[5]] if len(body) > 5 else b""
            raise ProtocolError(f"{self.address} refused the connection: "
                                f"{reason.decode(errors='replace')}")
        elif not self.ready:
            raise ProtocolError(f"{self.address} sent {name!r} before READY")


class ZmtpLinks:
    """The client's links, one per node address, over plain TCP (see the module docstring)."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._links: dict[str, _Link] = {}
        self._poller = select.poll()
        self._watched: dict[int, tuple[_Link, int]] = {}  # fd -> its link, the events polled
        # Whether a link may need the poller changed or a reconnection: not while every
        # link is connected with nothing queued, the common case, which skips ``_watch``.
        self._unsettled = True
        self._held: list[tuple[str, bytes]] = []  # frames read while sending or waiting

    def open(self, address: str) -> None:
        """Start connecting to ``address`` (nothing if a link to it exists)."""
        if address not in self._links:
            self._unsettled = True
            now = time.monotonic()
            link = self._links[address] = _Link(address, now)
            link.connect(now)

    def addresses(self) -> set[str]:
        return set(self._links)

    def born(self, address: str) -> float:
        """When the link to ``address`` began connecting; for a TCP connect that took
        longer than ``CONNECT_NORMAL`` (a lost SYN is sent again only after a second),
        as if it had begun that long before it ended, so the handshake gets the usual
        time after it."""
        return self._links[address].born

    def connecting(self, address: str) -> bool:
        """Whether the link to ``address`` is still in its TCP connect, with no error
        yet (a lost SYN is sent again after a second, then after three more)."""
        link = self._links.get(address)
        return link is not None and link.sock is not None and link.connecting

    def drop(self, address: str) -> None:
        link = self._links.pop(address, None)
        if link is not None:
            link.close()
            self._unsettled = True

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()
        for fd in self._watched:
            self._poller.unregister(fd)
        self._watched.clear()

    def send(self, address: str, frames: list[bytes]) -> bool:
        """Queue one message of ``frames`` to ``address`` and write it at once if the
        socket takes it; False if the link is not connected (its handshake not done)
        or holds ``SEND_BUFFER`` bytes unsent."""
        self.open(address)
        link = self._links[address]
        # Look first, as ZeroMQ's I/O thread would have: a node that went away has
        # closed the connection, and a request written into it would be lost.
        if not link.ready or link.watch.poll(0):
            self._progress(0.0)
            if not link.ready:
                return False
        if len(link.out) >= SEND_BUFFER:
            return False
        link.out += encode_message(frames)
        link.flush(time.monotonic())
        if link.out or link.sock is None:
            self._unsettled = True
        return link.sock is not None

    def ready(self, addresses: list[str]) -> bool:
        """Whether any of ``addresses`` is connected (after looking without waiting)."""
        links = [self._link(a) for a in addresses]
        if any(link.ready for link in links):
            return True
        self._progress(0.0)
        return any(link.ready for link in links)

    def wait_ready(self, addresses: list[str], seconds: float) -> bool:
        """Wait up to ``seconds`` for one of ``addresses`` to be connected."""
        links = [self._link(a) for a in addresses]
        end = time.monotonic() + seconds
        while True:
            if any(link.ready for link in links):
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._progress(left)

    def receive(self, seconds: float) -> list[tuple[str, bytes]]:
        """The frames that arrive within ``seconds``, with the address of their node:
        all that are already there at least, and at the first that arrive otherwise."""
        end = time.monotonic() + seconds
        while not self._held:
            self._progress(max(0.0, end - time.monotonic()))
            if time.monotonic() >= end:
                break
        got, self._held = self._held, []
        return got

    def trouble(self, addresses: list[str]) -> str:
        """Why the first of ``addresses`` that is not connected last failed ("" if none
        says): for an error message, such as a CurveZMQ node's demand for keys."""
        for address in addresses:
            link = self._links.get(address)
            if link is not None and not link.ready and link.error:
                return f"{address}: {link.error}"
        return ""

    def _link(self, address: str) -> _Link:
        self.open(address)
        return self._links[address]

    def _watch(self, now: float) -> float:
        """Keep the poller on each live socket, for what its link waits for (a closed
        socket's number goes first: a new socket may reuse it); reconnect the links
        that are due. Returns when the next reconnection is due."""
        poller, watched = self._poller, self._watched
        for fd, (link, _) in list(watched.items()):
            if link.sock is None or link.fd != fd or self._links.get(link.address) is not link:
                poller.unregister(fd)
                del watched[fd]
        retry = math.inf
        for link in self._links.values():
            if link.sock is None and now >= link.retry_at:
                link.connect(now)
            if link.sock is None:  # (a second test: compiled code trusts the first one)
                retry = min(retry, link.retry_at)
                continue
            mask = link.events()
            seen = watched.get(link.fd)
            if seen is None or seen[0] is not link or seen[1] != mask:
                poller.register(link.fd, mask)
                watched[link.fd] = (link, mask)
        self._unsettled = retry < math.inf or any(
            mask != select.POLLIN for _, mask in watched.values())
        return retry

    def _progress(self, seconds: float) -> None:
        """One poll of every link (reconnecting those due) for at most ``seconds``: writes
        what is queued, reads what arrived (held for ``receive``), moves handshakes on."""
        now = time.monotonic()
        retry = self._watch(now) if self._unsettled else math.inf
        wait = min(seconds, max(0.0, retry - now))
        watched = self._watched
        got = self._held
        for fd, mask in self._poller.poll(math.ceil(wait * 1000)):
            link = watched[fd][0]
            now = time.monotonic()
            if mask & select.POLLOUT or (link.connecting and mask & (select.POLLERR
                                                                      | select.POLLHUP)):
                link.flush(now)
            if link.sock is not None and mask & (select.POLLIN | select.POLLERR
                                                  | select.POLLHUP):
                frames: list[bytes] = []
                link.read(frames, self.max_frame, now)
                if link.out and link.sock is not None:
                    link.flush(now)  # a PONG, or what waited for the handshake
                got.extend((link.address, frame) for frame in frames)
            if link.sock is None or link.out or link.connecting or not link.ready:
                self._unsettled = True
