"""Every message zkv sends, and the CBOR codec that checks each field.

A frame is the CBOR array ``[kind, field, ...]``, or a batch of them
(``join``). ``decode`` either returns a fully validated message or raises
``DecodeError`` with a reason; it never lets another exception out, so a
hostile frame costs a counter, not a node.

Messages are values, never changed once made, but not frozen dataclasses: those
cost three to four times as much to build (see ``zkv.core.actions``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import cbor2

from zkv.core.quorum import LEVELS
from zkv.model.fields import fields_getter
from zkv.model.record import Record
from zkv.model.versions import Version

MAX_FRAME = 64 * 1024 * 1024
MAX_BATCH = 256  # messages in one batch (``join``), and frames in one ZeroMQ message
# A batch frame is closed at this size; a larger message travels alone. (Frame caps:
# ``zkv.net.runtime.frame_limits``.)
JOIN_BYTES = 1024 * 1024

OPS = ("get", "put", "delete", "create", "update", "cas")
CONDITIONAL_OPS = ("delete", "create", "update", "cas")  # decided by per-key Paxos
MEMBER_STATUSES = ("alive", "left")
ADMIN_ACTIONS = ("decommission", "remove", "status")


class DecodeError(Exception):
    """A frame that is not a valid zkv message; the reason says which part."""


# --------------------------------------------------------------------------- messages


class Message:
    __slots__ = ()


@dataclass(slots=True, unsafe_hash=True)
class ClientRequest(Message):
    """A client's operation, sent to any node (ideally a replica of the key).

    ``expected`` is a cas's condition: the value the key must hold, None for
    "holds no value". A cas's ``value`` of None deletes."""

    req_id: int
    op: str
    key: bytes
    value: bytes | None
    consistency: str
    timeout_ms: int
    expected: bytes | None = None


@dataclass(slots=True, unsafe_hash=True)
class ClientReply(Message):
    """status: ok | not_found | exists | condition_failed | unavailable | unknown | invalid.

    ``unavailable``: refused or timed out before any replica could have applied a
    write; ``unknown``: a write that may or may not have taken effect (a client
    must not retry it elsewhere as if nothing happened)."""

    req_id: int
    status: str
    value: bytes | None
    detail: str


@dataclass(slots=True, unsafe_hash=True)
class RingQuery(Message):
    req_id: int


@dataclass(slots=True, unsafe_hash=True)
class RingInfo(Message):
    """What a client needs to route a key to its replicas itself."""

    req_id: int
    members: list  # [[node_id, address], ...] of nodes in the ring
    replicas: int
    vnodes: int
    epoch: int = 0  # of the node's cluster map
    settled: bool = True  # False while a ring change is under way


@dataclass(slots=True, unsafe_hash=True)
class DirectRead(Message):
    """A client reading one replica's record itself, as one of a read quorum it asks
    (``zkv.core.direct_read``); ``epoch``: of the ring the client chose replicas by."""

    req_id: int
    key: bytes
    epoch: int


@dataclass(slots=True, unsafe_hash=True)
class DirectRecord(Message):
    """A replica's answer to a DirectRead: its record of the key, or ``served`` False
    when it does not serve the key directly at that epoch (``epoch``: its own)."""

    req_id: int
    served: bool
    record: Record | None
    epoch: int


@dataclass(slots=True, unsafe_hash=True)
class ReadRequest(Message):
    """``epoch`` (here and in every replica request): the coordinator's cluster
    map epoch; a replica that has seen a newer one refuses with ``EpochRefused``."""

    op_id: int
    key: bytes
    epoch: int = 0


@dataclass(slots=True, unsafe_hash=True)
class ReadReply(Message):
    """The replica's record and its open Paxos promise (a write goes above it)."""

    op_id: int
    key: bytes
    record: Record | None
    promise: Version | None


@dataclass(slots=True, unsafe_hash=True)
class WriteRequest(Message):
    """Store ``record`` (a Paxos accept at ballot ``record.version``)."""

    op_id: int
    key: bytes
    record: Record
    epoch: int = 0


@dataclass(slots=True, unsafe_hash=True)
class WriteReply(Message):
    """``accepted`` False: refused by the promise ``conflict``."""

    op_id: int
    key: bytes
    accepted: bool
    conflict: Version | None


@dataclass(slots=True, unsafe_hash=True)
class Prepare(Message):
    """Paxos phase 1: promise to refuse anything below ``ballot`` for ``key``."""

    op_id: int
    key: bytes
    ballot: Version
    epoch: int = 0


@dataclass(slots=True, unsafe_hash=True)
class PrepareReply(Message):
    """``promised`` with the replica's record; else ``conflict`` is the ballot or
    version that the refused ballot did not exceed."""

    op_id: int
    key: bytes
    promised: bool
    record: Record | None
    conflict: Version | None


@dataclass(slots=True, unsafe_hash=True)
class EpochRefused(Message):
    """A replica request built on an older epoch than the replica has seen; carries
    the replica's map (``cluster_map`` encoding) so the coordinator retries on it."""

    op_id: int
    key: bytes
    epoch: int
    cluster_map: list | None


@dataclass(slots=True, unsafe_hash=True)
class Handoff(Message):
    """Records pushed to a replica (stabilization, anti-entropy); merged by version."""

    batch_id: int
    records: list  # [(key, Record), ...]


@dataclass(slots=True, unsafe_hash=True)
class HandoffAck(Message):
    batch_id: int


@dataclass(slots=True, unsafe_hash=True)
class SyncDigest(Message):
    """Anti-entropy: one hash per ring segment both nodes replicate, over the
    records written at or before ``horizon`` (wall-clock ms)."""

    round_id: int
    horizon: int
    digests: list  # [[segment_token, digest_bytes], ...]


@dataclass(slots=True, unsafe_hash=True)
class SyncKeys(Message):
    """Anti-entropy: the (key, version) list of a segment whose digests differ
    (records written at or before ``horizon``)."""

    round_id: int
    horizon: int
    segment: int
    entries: list  # [[key, Version], ...]


@dataclass(slots=True, unsafe_hash=True)
class SyncPull(Message):
    round_id: int
    keys: list  # [key, ...]


@dataclass(slots=True, unsafe_hash=True)
class MemberState:
    """One row of the gossip table. ``http_port``: where the member serves /metrics and
    the dashboard, at its address's host: None for the default (its request port + 2),
    0 for nowhere. It is on the wire only when not the default (a sixth field), so a
    node with the default port sends the five fields older nodes expect."""

    node_id: str
    address: str
    incarnation: int
    heartbeat: int
    status: str  # alive | left
    http_port: int | None = None


@dataclass(slots=True, unsafe_hash=True)
class Gossip(Message):
    """``epoch``: the sender's cluster map epoch; ``streamed``: the transition epoch
    whose gained ranges the sender has all streamed (0: none); ``instance``: the
    sender's data directory (see ``cluster_map``)."""

    sender: str
    members: list  # [MemberState, ...]
    epoch: int = 0
    streamed: int = 0
    instance: int = 0


@dataclass(slots=True, unsafe_hash=True)
class JoinRequest(Message):
    """``instance``: drawn when the node's data directory was made (see ``cluster_map``)."""

    member: MemberState
    instance: int = 0


@dataclass(slots=True, unsafe_hash=True)
class MapPrepare(Message):
    """Phase 1 of the instance deciding epoch ``slot``; ``base`` is epoch slot-1's map."""

    slot: int
    ballot: list  # [round, node_id]
    base: list


@dataclass(slots=True, unsafe_hash=True)
class MapPromise(Message):
    """``accepted``: the acceptor's accepted ballot and ``value`` (ok) or its promise
    (refused); ``epoch``: the acceptor's current map epoch."""

    slot: int
    ballot: list
    ok: bool
    accepted: list
    value: list | None
    epoch: int


@dataclass(slots=True, unsafe_hash=True)
class MapAccept(Message):
    slot: int
    ballot: list
    value: list


@dataclass(slots=True, unsafe_hash=True)
class MapAccepted(Message):
    slot: int
    ballot: list
    ok: bool
    epoch: int


@dataclass(slots=True, unsafe_hash=True)
class MapLearn(Message):
    """A decided map, to a node that is behind (or asked with ``MapQuery``)."""

    value: list


@dataclass(slots=True, unsafe_hash=True)
class MapQuery(Message):
    epoch: int  # the asker's


@dataclass(slots=True, unsafe_hash=True)
class StreamPull(Message):
    """A gainer asks a ring replica for its records in tokens ``first``..``last``
    (the page starting there); the replica first fences epochs below ``epoch``."""

    pull_id: int
    epoch: int
    first: int
    last: int


@dataclass(slots=True, unsafe_hash=True)
class StreamChunk(Message):
    """One page; ``next`` is the token to ask from for the following page, or None
    when the range is done."""

    pull_id: int
    records: list  # [(key, Record), ...]
    next: int | None


@dataclass(slots=True, unsafe_hash=True)
class AdminRequest(Message):
    """An operator's membership command: ``decommission`` or ``remove`` a node, or
    ``status``. Answered with an ``AdminReply``."""

    req_id: int
    action: str
    node_id: str


@dataclass(slots=True, unsafe_hash=True)
class AdminReply(Message):
    """status: ok | pending | refused | unavailable; ``info``: a JSON-able dict."""

    req_id: int
    status: str
    detail: str
    info: dict


@dataclass(slots=True, unsafe_hash=True)
class ErrorReply(Message):
    """Answer to a frame that could not be understood."""

    req_id: int
    reason: str


# --------------------------------------------------------------------------- field checks
# A check returns the value or raises DecodeError with a reason; the field name is
# added by the caller only when something is wrong (names cost time on the hot path).

Check = Callable[[Any], Any]


def _int(v: Any) -> int:
    if type(v) is not int:
        raise DecodeError("must be an integer")
    if not -(1 << 63) <= v < (1 << 64):
        raise DecodeError("is out of range")
    return v


def _nonneg(v: Any) -> int:
    if type(v) is not int:
        raise DecodeError("must be an integer")
    if not 0 <= v < (1 << 64):
        raise DecodeError("must not be negative" if v < 0 else "is out of range")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise DecodeError("must be a boolean")
    return v


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise DecodeError("must be bytes")
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise DecodeError("must be a string")
    return v


def _optional(check: Check) -> Check:
    def inner(v: Any) -> Any:
        return None if v is None else check(v)

    return inner


def _one_of(choices: tuple[str, ...]) -> Check:
    reason = "must be one of " + ", ".join(repr(c) for c in choices)

    def inner(v: Any) -> str:
        if v not in choices:
            raise DecodeError(reason)
        return v

    return inner


def _list_of(check: Check) -> Check:
    def inner(v: Any) -> list:
        if type(v) is not list:
            raise DecodeError("must be a list")
        out = []
        for i, item in enumerate(v):
            try:
                out.append(check(item))
            except DecodeError as exc:
                raise DecodeError(f"[{i}] {exc}") from None
        return out

    return inner


def _pair(first: Check, second: Check) -> Check:
    def inner(v: Any) -> tuple:
        if type(v) is not list or len(v) != 2:
            raise DecodeError("must be a pair")
        return first(v[0]), second(v[1])

    return inner


def _list(v: Any) -> list:
    if type(v) is not list:
        raise DecodeError("must be a list")
    return v


def _dict(v: Any) -> dict:
    if type(v) is not dict:
        raise DecodeError("must be a map")
    return v


def _ballot(v: Any) -> list:
    if type(v) is not list or len(v) != 2 or type(v[1]) is not str:
        raise DecodeError("must be [round, node_id]")
    return [_nonneg(v[0]), v[1]]


def _record(v: Any) -> Record:
    try:
        return Record.decode(v)
    except ValueError as exc:
        raise DecodeError(str(exc)) from None


def _version(v: Any) -> Version:
    if type(v) is not list or len(v) != 3:
        raise DecodeError("must be [wall_ms, counter, node_id]")
    return Version(_nonneg(v[0]), _nonneg(v[1]), _str(v[2]))


_MEMBER_STATUS = _one_of(MEMBER_STATUSES)


def _member(v: Any) -> MemberState:
    if type(v) is not list or len(v) not in (5, 6):
        raise DecodeError("must be a member of 5 fields (6 with an HTTP port)")
    node_id, address, incarnation, heartbeat, status = v[:5]
    if type(node_id) is not str or type(address) is not str:
        raise DecodeError("node_id and address must be strings")
    http_port = None
    if len(v) == 6:
        http_port = v[5]
        if type(http_port) is not int or not 0 <= http_port <= 65535:
            raise DecodeError("http_port must be a port number (0 to 65535, 0: none)")
    return MemberState(node_id, address, _nonneg(incarnation), _nonneg(heartbeat),
                       _MEMBER_STATUS(status), http_port)


# Each message's kind: the number that heads its CBOR array. A table rather than a class
# constant, which mypyc's compiled dataclasses would take for a field.
KINDS: dict[type[Message], int] = {
    ClientRequest: 1,
    ClientReply: 2,
    RingQuery: 3,
    RingInfo: 4,
    DirectRead: 5,
    DirectRecord: 6,
    ReadRequest: 10,
    ReadReply: 11,
    WriteRequest: 12,
    WriteReply: 13,
    Prepare: 14,
    PrepareReply: 15,
    EpochRefused: 16,
    Handoff: 20,
    HandoffAck: 21,
    SyncDigest: 22,
    SyncKeys: 23,
    SyncPull: 24,
    Gossip: 30,
    JoinRequest: 31,
    MapPrepare: 32,
    MapPromise: 33,
    MapAccept: 34,
    MapAccepted: 35,
    MapLearn: 36,
    MapQuery: 37,
    StreamPull: 38,
    StreamChunk: 39,
    AdminRequest: 41,
    AdminReply: 42,
    ErrorReply: 40,
}

_SCHEMA: dict[type[Message], tuple[Check, ...]] = {
    ClientRequest: (_nonneg, _one_of(OPS), _bytes, _optional(_bytes), _one_of(LEVELS),
                    _nonneg, _optional(_bytes)),
    ClientReply: (_nonneg, _str, _optional(_bytes), _str),
    RingQuery: (_nonneg,),
    RingInfo: (_nonneg, _list_of(_pair(_str, _str)), _nonneg, _nonneg, _nonneg, _bool),
    DirectRead: (_nonneg, _bytes, _nonneg),
    DirectRecord: (_nonneg, _bool, _optional(_record), _nonneg),
    ReadRequest: (_nonneg, _bytes, _nonneg),
    ReadReply: (_nonneg, _bytes, _optional(_record), _optional(_version)),
    WriteRequest: (_nonneg, _bytes, _record, _nonneg),
    WriteReply: (_nonneg, _bytes, _bool, _optional(_version)),
    Prepare: (_nonneg, _bytes, _version, _nonneg),
    PrepareReply: (_nonneg, _bytes, _bool, _optional(_record), _optional(_version)),
    EpochRefused: (_nonneg, _bytes, _nonneg, _optional(_list)),
    Handoff: (_nonneg, _list_of(_pair(_bytes, _record))),
    HandoffAck: (_nonneg,),
    SyncDigest: (_nonneg, _nonneg, _list_of(_pair(_nonneg, _bytes))),
    SyncKeys: (_nonneg, _nonneg, _nonneg, _list_of(_pair(_bytes, _version))),
    SyncPull: (_nonneg, _list_of(_bytes)),
    Gossip: (_str, _list_of(_member), _nonneg, _nonneg, _nonneg),
    JoinRequest: (_member, _nonneg),
    MapPrepare: (_nonneg, _ballot, _list),
    MapPromise: (_nonneg, _ballot, _bool, _list, _optional(_list), _nonneg),
    MapAccept: (_nonneg, _ballot, _list),
    MapAccepted: (_nonneg, _ballot, _bool, _nonneg),
    MapLearn: (_list,),
    MapQuery: (_nonneg,),
    StreamPull: (_nonneg, _nonneg, _nonneg, _nonneg),
    StreamChunk: (_nonneg, _list_of(_pair(_bytes, _record)), _optional(_nonneg)),
    AdminRequest: (_nonneg, _one_of(ADMIN_ACTIONS), _str),
    AdminReply: (_nonneg, _str, _str, _dict),
    ErrorReply: (_int, _str),
}
_BY_KIND: dict[int, type[Message]] = {kind: cls for cls, kind in KINDS.items()}
_FIELD_NAMES: dict[type[Message], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in _SCHEMA  # type: ignore[arg-type]
}  # (every message class is a dataclass; the base class cannot say so)
# Field types CBOR takes as they are (Version is a tuple, which CBOR writes as an array);
# the others hold records or members that ``_wire`` turns into lists first.
_AS_IS = frozenset({"bool", "bytes", "bytes | None", "dict", "int", "int | None", "str",
                    "Version", "Version | None"})


# Per class: its kind, the getter of its fields, and the positions of the fields that need ``_wire``.
_ENCODERS: dict[type[Message], tuple[int, Callable[[Any], tuple], tuple[int, ...]]] = {
    cls: (KINDS[cls], fields_getter(_FIELD_NAMES[cls]),
          tuple(i for i, f in enumerate(fields(cls))  # type: ignore[arg-type]
                if f.type not in _AS_IS))
    for cls in _SCHEMA
}


# --------------------------------------------------------------------------- codec


def _wire(v: Any) -> Any:
    if isinstance(v, Record):
        return v.encode()
    if isinstance(v, MemberState):
        row = [v.node_id, v.address, v.incarnation, v.heartbeat, v.status]
        return row if v.http_port is None else [*row, v.http_port]
    if isinstance(v, Version):
        return [v.wall_ms, v.counter, v.node_id]
    if isinstance(v, (list, tuple)):
        return [_wire(x) for x in v]
    return v


def encode(message: Message) -> bytes:
    cls = type(message)
    kind, get, wired = _ENCODERS[cls]
    body = [kind, *get(message)]
    for i in wired:
        body[i + 1] = _wire(body[i + 1])
    return cbor2.dumps(body)


def decode(frame: bytes) -> Message:
    """A validated message, or DecodeError saying what is wrong with the frame."""
    body = _load(frame)
    if _is_batch(body):
        raise DecodeError("a batch where one message belongs")
    return _message(body)


def join(frames: list[bytes]) -> bytes:
    """One frame carrying the messages ``frames`` encode (each from ``encode``):
    the CBOR array ``[BATCH, message, ...]``, made by concatenation, as an array's
    items follow its header. One frame instead of many saves ZeroMQ's per-frame
    work, which costs more than the encoding; a single message stays as it is."""
    if len(frames) == 1:
        return frames[0]
    n = len(frames) + 1
    if n < 24:
        head = bytes((0x80 | n,))
    elif n < 256:
        head = bytes((0x98, n))
    elif n < 65536:
        head = b"\x99" + n.to_bytes(2, "big")
    else:
        head = b"\x9a" + n.to_bytes(4, "big")
    return b"".join((head, _BATCH_ITEM, *frames))


def in_batches(frames: list[bytes], count: int, size: int) -> Iterator[list[bytes]]:
    """``frames`` in order, in groups to ``join``: at most ``count`` frames, and at
    most ``size`` bytes unless one frame alone is larger."""
    if len(frames) == 1:  # the common case under light load: no grouping to do
        yield frames
        return
    group: list[bytes] = []
    total = 0
    for frame in frames:
        if group and (len(group) >= count or total + len(frame) > size):
            yield group
            group, total = [], 0
        group.append(frame)
        total += len(frame)
    if group:
        yield group


def decode_batch(frame: bytes, limit: int) -> list[Message | DecodeError]:
    """The messages of a frame (a ``join``ed batch, or one message), each validated
    on its own: a malformed one is returned as its DecodeError, in its place.
    Raises DecodeError for a frame that is not one message or a batch of 1 to
    ``limit`` of them."""
    body = _load(frame)
    if not _is_batch(body):
        return [_message(body)]
    if not 1 < len(body) <= limit + 1:
        raise DecodeError(f"a batch holds 1 to {limit} messages, not {len(body) - 1}")
    out: list[Message | DecodeError] = []
    for item in body[1:]:
        try:
            if type(item) is not list or not item:
                raise DecodeError("a batch's message must be a non-empty CBOR array")
            if _is_batch(item):
                raise DecodeError("a batch inside a batch")
            out.append(_message(item))
        except DecodeError as exc:
            out.append(exc)
    return out


BATCH = 0  # the kind that heads a batch of messages in one frame (``join``)
_BATCH_ITEM = cbor2.dumps(BATCH)


def _is_batch(body: list) -> bool:
    return type(body[0]) is int and body[0] == BATCH


def _load(frame: bytes) -> list:
    if len(frame) > MAX_FRAME:
        raise DecodeError(f"frame of {len(frame)} bytes exceeds the {MAX_FRAME}-byte limit")
    try:
        body = cbor2.loads(frame)
    except Exception as exc:  # noqa: BLE001 - cbor2 raises several types on garbage
        raise DecodeError(f"not CBOR: {exc}") from None
    if not isinstance(body, list) or not body:
        raise DecodeError("frame must be a non-empty CBOR array")
    return body


def _message(body: list) -> Message:
    kind = body[0]
    cls = _BY_KIND.get(kind) if isinstance(kind, int) and not isinstance(kind, bool) else None
    if cls is None:
        raise DecodeError(f"unknown message kind {kind!r}")
    checks = _SCHEMA[cls]
    if len(body) != len(checks) + 1:
        raise DecodeError(f"{cls.__name__} needs {len(checks)} fields, got {len(body) - 1}")
    try:
        return cls(*[check(v) for check, v in zip(checks, body[1:])])
    except DecodeError:
        for check, v, name in zip(checks, body[1:], _FIELD_NAMES[cls]):
            try:
                check(v)
            except DecodeError as exc:
                raise DecodeError(f"{cls.__name__}.{name} {exc}") from None
        raise
