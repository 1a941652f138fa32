"""What a replica does with a key: the acceptor of per-key Paxos, which is also
the register that plain quorum writes and reads use.

A record's version is its Paxos ballot: the stored record is the acceptor's
accepted value at the ballot ``record.version``. Besides it a replica keeps the
highest ballot it promised (``Store.get_promise``) while no record at or above
it is stored. The rules, which ``zkv.core.coordinator`` relies on:

- **prepare(b)** succeeds only when ``b`` exceeds both the promise and the
  stored version; the promise is then persisted (same group commit as records,
  before the reply leaves) and the reply carries the stored record.
- **accept** of a record at version ``v`` (every write: Paxos accepts, plain
  puts, read repair) is refused when ``v`` is below the promise or below the
  stored version, and stored otherwise. Resends of the same version are
  acknowledged again, so coordinators may resend freely. An acknowledged write
  is therefore stored on a quorum, never merely "superseded".
- **merge** (hand-off, anti-entropy) keeps the newer record, unless the promise
  fences it.

Why a promise must also fence merges and plain writes: a proposer that
prepared ``b`` chose its new state from what a quorum held at that moment; a
record below ``b`` that reached one of those replicas afterwards would be a
state the proposer never saw, and a later read could return it and then the
proposer's result, in an order no client history explains. Why no write is
acknowledged below a stored one (ABD acknowledges it as superseded): it would
be ordered before the newer state, though that state may be a change evaluated
without it; two compare-and-sets from one value both succeeded that way (the
simulator's CAS counter, seed 0 of the ``mixed`` scenario), and so did a delete
racing a put (seed 183).
"""

from __future__ import annotations

import enum

from zkv.model.record import Record
from zkv.model.versions import Version
from zkv.storage.base import Store


def read(store: Store, key: bytes) -> tuple[Record | None, Version | None]:
    """The stored record and the open promise (None when none is above the record)."""
    return store.get(key), store.get_promise(key)


def prepare(store: Store, key: bytes, ballot: Version
            ) -> tuple[bool, Record | None, Version | None]:
    """(promised, record, conflict): ``conflict`` is what ``ballot`` failed to exceed."""
    record = store.get(key)
    promise = store.get_promise(key)
    top = promise
    if record is not None and (top is None or record.version > top):
        top = record.version
    if top is not None and ballot <= top:
        return False, record, top
    store.put_promise(key, ballot)
    return True, record, None


def accept(store: Store, key: bytes, record: Record) -> Version | None:
    """Apply a write; returns None when acknowledged, else the promise refusing it."""
    current = store.get(key)
    if current is not None and current.version == record.version:
        return None  # a resend of a write already applied
    promise = store.get_promise(key)
    if promise is not None and record.version < promise:
        return promise
    if current is not None and record.version < current.version:
        return current.version
    if current is None or record.version > current.version:
        store.put(key, record)
        if promise is not None:
            store.drop_promise(key)  # a record at or above it supersedes it
    return None


class Merge(enum.Enum):
    STORED = "stored"  # the incoming record was newer and is stored
    KEPT = "kept"  # the stored record is as new or newer
    FENCED = "fenced"  # newer, but below an open promise: only a Paxos round may settle it


def merge(store: Store, key: bytes, record: Record) -> Merge:
    """Keep whichever of the stored and incoming record is newer, unless a promise
    fences the incoming one.

    A promise whose round never finished (its coordinator crashed, or its
    condition failed on an agreeing quorum) fences merges for good; the node
    settles such a key with a Paxos round of its own (``Node`` repairs keys
    that stay fenced), which writes the newest state above the promise."""
    current = store.get(key)
    if current is not None and record.version <= current.version:
        return Merge.KEPT
    promise = store.get_promise(key)
    if promise is not None:
        if record.version < promise:
            return Merge.FENCED
        store.drop_promise(key)
    store.put(key, record)
    return Merge.STORED
