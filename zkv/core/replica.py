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
  puts, read repair) is refused when ``v`` is below the promise, or below a
  stored record written by consensus. Otherwise it is acknowledged, and stored
  when ``v`` is above the stored version; below a plain put it is *superseded*
  (ordered just before that put, which overwrote it without reading it).
  Resends of the same version are acknowledged again, so coordinators may
  resend freely.
- **merge** (hand-off, anti-entropy) keeps the newer record, unless the promise
  fences it.

Why a promise must also fence merges and plain writes: a proposer that
prepared ``b`` chose its new state from what a quorum held at that moment; a
record below ``b`` that reached one of those replicas afterwards would be a
state the proposer never saw, and a later read could return it and then the
proposer's result, in an order no client history explains. Why a consensus
record keeps fencing once stored (its promise is gone): a write below it,
acknowledged as superseded, would be ordered before a change that was
evaluated without it; two compare-and-sets from one value would both succeed
(found by the simulator's CAS counter, seed 0 of the ``mixed`` scenario).
"""

from __future__ import annotations

from zkv.core.versions import Version
from zkv.storage.base import Store
from zkv.storage.record import Record


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


def merge(store: Store, key: bytes, record: Record) -> bool:
    """Keep whichever of the stored and incoming record is newer, unless a promise
    fences the incoming one; True if the stored record changed."""
    current = store.get(key)
    if current is not None and record.version <= current.version:
        return False
    promise = store.get_promise(key)
    if promise is not None:
        if record.version < promise:
            return False
        store.drop_promise(key)
    store.put(key, record)
    return True
