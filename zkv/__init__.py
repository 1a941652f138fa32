"""zkv: a fault-tolerant distributed key-value store."""

from zkv import native as _native

_native.load()
