"""Ring tokens: where a key (or a node's virtual node) sits on the hash ring.

Tokens come from BLAKE2b (stable across processes and runs, unlike ``hash()``).
The ring (``zkv.core.ring``) places nodes by them, and the LMDB store keeps
records in token order, so one ring segment's records are one range of keys.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

TOKEN_BITS = 64
TOKEN_SPACE = 1 << TOKEN_BITS


@lru_cache(maxsize=4096)  # one operation hashes its key several times (ring, store, digests)
def token(data: bytes) -> int:
    """Position of ``data`` on the ring, stable everywhere."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")
