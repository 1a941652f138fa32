"""What a replica does with a record: keep the highest version, check conditions.

Writes are idempotent (the same version twice is accepted twice), so a
coordinator may resend freely and stabilization may push the same record again.
"""

from __future__ import annotations

from zkv.storage.base import Store
from zkv.storage.record import Record


def condition_holds(current: Record | None, condition: str) -> bool:
    """``absent``: no live value (create); ``present``: a live value (update)."""
    if condition == "absent":
        return current is None or current.tombstone
    if condition == "present":
        return current is not None and not current.tombstone
    return True


def apply_write(store: Store, key: bytes, record: Record, condition: str = "") -> bool:
    """Store ``record`` unless a newer one is there; False when the condition fails."""
    current = store.get(key)
    if current is not None and current.version == record.version:
        return True  # a resend of a write already applied
    if not condition_holds(current, condition):
        return False
    if current is None or record.version > current.version:
        store.put(key, record)
    return True


def merge(store: Store, key: bytes, record: Record) -> bool:
    """Keep whichever of the stored and incoming record is newer; True if stored changed."""
    current = store.get(key)
    if current is None or record.version > current.version:
        store.put(key, record)
        return True
    return False
