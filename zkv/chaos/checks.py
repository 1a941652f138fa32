"""What a chaos run proves at the end: the history is safe and the data sits where it should.

Four verdicts, each a list of problems (empty = pass):

- **linearizability**: every key's history (the workload's ops plus the final
  reads) has a legal order (``zkv.check``);
- **lost writes**: the final quorum read of a key returned a value whose write
  had completed before some acknowledged write of that key began; the
  acknowledged write is then lost, whatever else happened. An ok conditional
  op (create, update, delete, cas) counts as a write only when its
  precondition was as required. (Linearizability implies this; it is checked
  on its own for a direct, readable report.)
- **the CAS counter**: its final value lies between the increments
  acknowledged and those plus the ones whose outcome is unknown
  (``counter_problem``).
- **placement**: once the cluster has settled, every key is stored on exactly
  its replica set (per the ring), and all of them hold the identical record.
  The stores are read straight from each node's LMDB, read-only.

The functions ``ring_views``, ``member_statuses``, ``admin_command`` and
``final_reads`` talk to the cluster; they run in a helper process that has
joined the client namespace (``zkv.chaos.run``).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zkv.chaos.workload import CounterTally, counter_value
from zkv.check import HistoryResult, Op, check_history, describe
from zkv.check.history import effect_deadline, show_value
from zkv.config import store_path
from zkv.core.ring import Ring
from zkv.model.record import Record
from zkv.storage.lmdb_store import read_records

CHECK_STEPS = 20_000_000  # search steps per key before the checker says "undecided"


# --------------------------------------------------------------------------- linearizability


def linearizability(ops: Iterable[Op], max_steps: int = CHECK_STEPS) -> HistoryResult:
    return check_history(ops, max_steps=max_steps)


# --------------------------------------------------------------------------- lost writes


@dataclass(frozen=True, slots=True)
class LostWrite:
    key: bytes
    write: Op  # the acknowledged write that is gone
    final: Op  # the final read that shows it
    why: str

    def explain(self) -> str:
        return (f"key {self.key!r}: acknowledged {describe(self.write)} is lost: final read "
                f"{describe(self.final)}; {self.why}")


def lost_writes(ops: Iterable[Op], finals: dict[bytes, Op]) -> list[LostWrite]:
    """Acknowledged writes that the final read of their key proves lost.

    The final read returned ``v``; the writes that could have left ``v`` (the
    ops that may have written ``v``: for absent the deletes, the cas that
    delete, and the initial state) all took effect by some time T. An
    acknowledged write of anything else that began after T would have to come
    after them, and nothing later writes ``v`` again, so the final read must
    not see ``v``. Whatever the kinds, an op counts as a write only where it may
    have written: an ok conditional op only when its precondition was as
    required (``may_write``), an unknown one always (its condition may hold when
    it takes effect), a failed one never.
    """
    by_key: dict[bytes, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    lost = []
    for key, final in sorted(finals.items()):
        history = by_key.get(key, [])
        value = final.value
        writers = [o for o in history if o is not final and may_write(o)
                   and written_value(o) == value]
        if value is None:
            latest = max((effect_deadline(o) for o in writers), default=-math.inf)
        else:
            if not writers:
                acked = [o for o in history if acked_write(o)]
                lost += [LostWrite(key, w, final, f"nobody wrote {value!r}") for w in acked[-1:]]
                continue
            latest = max(effect_deadline(o) for o in writers)
        for op in history:
            if acked_write(op) and op is not final and op.start > latest and \
                    written_value(op) != value:
                lost.append(LostWrite(key, op, final, "it began after every write of the "
                                      f"value read had completed (by {latest:.3f})"))
    return lost


def may_write(op: Op) -> bool:
    """Whether the op may have changed its key: a write that did not fail and,
    if ok and conditional, found its precondition as required (delete, update,
    cas: found; create: not found). (``zkv.sim.durability._may_write``.)"""
    if op.kind == "get" or op.outcome == "fail":
        return False
    if op.outcome != "ok" or op.kind == "put":
        return True
    return op.found is (op.kind != "create")


def acked_write(op: Op) -> bool:
    """An acknowledged op that wrote (certainly took effect as a write)."""
    return op.outcome == "ok" and may_write(op)


def written_value(op: Op) -> bytes | None:
    """The value a write leaves (None: absent, for a delete or a cas that deletes)."""
    return None if op.kind == "delete" else op.value


# --------------------------------------------------------------------------- the CAS counter


def counter_problem(tally: CounterTally, key: bytes, final: Op | None) -> str | None:
    """Why the counter's final value (``final``, its quorum read after settling)
    cannot come from the increments ``tally`` counted; None if it can."""
    if final is None:
        return f"CAS counter {key!r}: no final quorum read succeeded after settling"
    if tally.explains(final.value):
        return None
    count = counter_value(final.value)
    shown = show_value(final.value) if count is None else str(count)
    if count is not None and count < tally.acked:
        why = f"{tally.acked - count} acknowledged increment(s) lost"
    elif count is not None:
        why = f"{count - tally.acked - tally.unknown} increment(s) more than were attempted"
    else:
        why = "not a count"
    return (f"CAS counter {key!r}: final value {shown}, but {tally.acked} increments were "
            f"acknowledged and {tally.unknown} unknown (need {tally.acked} <= final <= "
            f"{tally.acked + tally.unknown}): {why}")


# --------------------------------------------------------------------------- placement


@dataclass(frozen=True, slots=True)
class PlacementProblem:
    key: bytes
    replicas: tuple[str, ...]
    holders: dict[str, Record]

    def explain(self) -> str:
        parts = []
        missing = [n for n in self.replicas if n not in self.holders]
        strays = [n for n in self.holders if n not in self.replicas]
        if missing:
            parts.append(f"missing on {', '.join(missing)}")
        if strays:
            parts.append(f"stray copies on {', '.join(strays)}")
        if len({r for r in self.holders.values()}) > 1:
            parts.append("records differ: " + "; ".join(
                f"{n}={_show_record(r)}" for n, r in sorted(self.holders.items())))
        return f"key {self.key!r} (replicas {', '.join(self.replicas)}): {', '.join(parts)}"


def _show_record(record: Record) -> str:
    v = record.version
    what = "tombstone" if record.tombstone else repr(record.value)
    return f"{what}@{v.wall_ms}.{v.counter}.{v.node_id}"


def read_stores(data_dirs: dict[str, Path]) -> dict[str, dict[bytes, Record]]:
    """Each node's records, read-only from its LMDB (nodes may be running)."""
    return {node: read_records(store_path(d)) for node, d in data_dirs.items()}


def placement(ring: Ring, stores: dict[str, dict[bytes, Record]]) -> list[PlacementProblem]:
    """Keys not held by exactly their replica set, or held with differing records."""
    keys = sorted({k for records in stores.values() for k in records})
    problems = []
    for key in keys:
        replicas = ring.locate(key)
        holders = {n: records[key] for n, records in stores.items() if key in records}
        if set(holders) != set(replicas) or len(set(holders.values())) > 1:
            problems.append(PlacementProblem(key, replicas, holders))
    return problems


# --------------------------------------------------------------------------- cluster probes


def ring_views(addresses: list[str], timeout: float = 0.5
               ) -> dict[str, tuple[tuple[str, ...], int, int] | None]:
    """Per node: (ring members, replicas, vnodes) if it answers a ring query and serves a
    read at ``one`` (a restarted node knows its old ring before it has rejoined), else None."""
    import zmq

    from zkv.core.messages import ClientReply, ClientRequest, RingInfo, RingQuery, decode, encode

    ctx: zmq.Context = zmq.Context.instance()
    views: dict[str, tuple[tuple[str, ...], int, int] | None] = {}
    for address in addresses:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        views[address] = None
        try:
            sock.connect(address)
            sock.send(encode(RingQuery(1)))
            if not sock.poll(int(timeout * 1000)):
                continue
            info = decode(sock.recv())
            if not isinstance(info, RingInfo):
                continue
            sock.send(encode(ClientRequest(2, "get", b"zkv-chaos-probe", None, "one",
                                           int(timeout * 1000))))
            if not sock.poll(int(timeout * 1000)):
                continue
            reply = decode(sock.recv())
            if isinstance(reply, ClientReply) and reply.status in ("ok", "not_found"):
                views[address] = (tuple(sorted(m[0] for m in info.members)), info.replicas,
                                  info.vnodes)
        except Exception:  # noqa: BLE001, S110 - an unreachable or confused node has no view
            pass
        finally:
            sock.close(0)
    return views


def member_statuses(addresses: dict[str, str], timeout: float = 0.5
                    ) -> dict[str, dict | None]:
    """Per node id: its ``status`` (epoch, membership, its map's members and their
    states), asked of every node at once; None where it did not answer in time."""
    import zmq

    from zkv.core.messages import AdminReply, AdminRequest, decode, encode

    ctx: zmq.Context = zmq.Context.instance()
    poller = zmq.Poller()
    sockets: dict[zmq.Socket, str] = {}
    statuses: dict[str, dict | None] = dict.fromkeys(addresses)
    try:
        for req_id, (node_id, address) in enumerate(addresses.items(), start=1):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sockets[sock] = node_id
            sock.connect(address)
            sock.send(encode(AdminRequest(req_id, "status", "")))
            poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        waiting = len(sockets)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for sock, _ in poller.poll(int(left * 1000) + 1):
                poller.unregister(sock)
                waiting -= 1
                try:
                    reply = decode(sock.recv())
                except Exception:  # noqa: BLE001 - a garbled answer is no answer
                    reply = None
                if isinstance(reply, AdminReply) and reply.status == "ok":
                    statuses[sockets[sock]] = reply.info
    finally:
        for sock in sockets:
            sock.close(0)
    return statuses


def admin_command(seeds: list[str], action: str, node_id: str, timeout: float
                  ) -> tuple[str, str]:
    """Send an operator's ``decommission`` or ``remove`` of ``node_id`` to the first of
    ``seeds`` that answers: (``pending`` | ``refused`` | ..., the reason), or
    (``unavailable``, why) if none did."""
    from zkv.client import Client
    from zkv.errors import InvalidRequest, Unavailable

    try:
        with Client(seeds, timeout=timeout) as client:
            reply = client.admin(action, node_id)
    except (Unavailable, InvalidRequest) as exc:
        return "unavailable", str(exc)
    return reply.status, reply.detail


def final_reads(seeds: list[str], keys: list[bytes], patience: float, timeout: float
                ) -> list[tuple[bytes, str, bytes | None, float, float]]:
    """A quorum read of every key, each retried until it succeeds or ``patience`` seconds
    have passed; every attempt as (key, outcome, value, start, end)."""
    from zkv.client import Client

    attempts = []
    deadline = time.monotonic() + patience
    with Client(seeds, timeout=timeout) as client:
        for key in keys:
            while True:
                start = time.monotonic()
                try:
                    value = client.get(key)
                    attempts.append((key, "ok", value, start, time.monotonic()))
                    break
                except Exception:  # noqa: BLE001 - a failed read is retried, and recorded
                    attempts.append((key, "fail", None, start, time.monotonic()))
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.1)
    return attempts
