"""The real store: LMDB on local disk, one write transaction per commit.

Guarantees:

- **Group commit.** ``put``/``remove``/``put_meta`` go into one write transaction,
  opened at the first write after a commit. Reads see those buffered writes at
  once. ``commit()`` commits that transaction; with ``sync=True`` it returns only
  after the data is on disk (one fdatasync of the data pages, then the meta page
  written through an O_DSYNC descriptor). A write is durable only after
  ``commit()``; ``close()`` discards uncommitted writes, which were never
  acknowledged.
- **Checksums.** Every record is stored as ``[format][crc32][CBOR payload]``, the
  CRC covering the stored key and the payload. A record that fails its checksum
  or does not decode counts as missing: ``get`` returns None and ``items`` skips
  it, never raising; each detection increments ``corrupt_reads`` and appends the
  key to ``corrupt_keys`` so the node can report and repair it.
- **Growth.** The map starts small and doubles, up to ``max_map_size``, whenever
  LMDB reports it full; the uncommitted writes are replayed into a fresh
  transaction. At ``max_map_size``, or when the disk is full, the operation
  raises ``StoreFull``: every write since the last commit is discarded, data
  committed earlier stays readable, and the store stays usable.
- **Record cache.** The records read or written last are also kept decoded in
  memory (``zkv.storage.record_cache``: 16,384 of them, 16 MiB of values at
  most), so a replica's read before each write and the reads of a hot key skip
  LMDB, the checksum and the decoding. Every write updates it as it is buffered
  and every discard clears it, so it never answers what the store would not.
- **Ring order.** A record is stored under its key's ring token (8 bytes,
  big-endian) followed by the key, so the records of one ring segment are one
  contiguous range (``token_range``): anti-entropy reads the segments it
  compares, not the whole store. ``items`` yields records in token order.
- **Long keys.** LMDB keys are limited to 511 bytes, zkv keys are not. A key of
  at most ``SHORT_KEY_MAX`` bytes follows its token as itself; a longer one as
  its first ``SHORT_KEY_MAX`` bytes plus a BLAKE2b-256 digest of the whole
  key, with the whole key inside the checksummed payload.

Not thread-safe: one thread (the node's loop) owns a store. LMDB forbids opening
the same environment twice in one process, and so does this module.
"""

from __future__ import annotations

import errno
import os
import resource
import struct
from collections import deque
from collections.abc import Iterator
from functools import lru_cache
from hashlib import blake2b
from pathlib import Path
from typing import NoReturn, Self
from zlib import crc32

import cbor2
import lmdb

from zkv.model.record import Record
from zkv.model.tokens import token
from zkv.model.versions import Version
from zkv.storage.base import StoreFull
from zkv.storage.record_cache import RecordCache

MiB = 1 << 20
GiB = 1 << 30

FORMAT = 2  # first byte of every stored value; bump when the payload or layout changes
_HEADER = struct.Struct(">BI")  # format, crc32(storage key + payload)
_TOKEN = 8  # the ring token that starts every storage key
_DIGEST = 32  # BLAKE2b-256 of a long key
SHORT_KEY_MAX = 511 - _TOKEN - _DIGEST  # LMDB's default key limit, less token and digest
_LONG_KEY_LEN = _TOKEN + SHORT_KEY_MAX + _DIGEST  # every long key's storage key has this length

_ITEMS_BATCH = 256  # records read per transaction by items()
_ITEMS_BATCH_BYTES = 4 * MiB  # ...or fewer, once their stored values reach this
CORRUPT_KEYS_KEPT = 1024
# The decoded records kept in memory (``zkv.storage.record_cache``): at most this many,
# holding at most this many bytes of values, none of a value above CACHE_MAX_VALUE.
# A node takes both from ``[memory] record_cache`` (entries: one per KiB of it).
CACHE_ENTRIES = 16_384
CACHE_BYTES = 16 * MiB
CACHE_MAX_VALUE = 64 * 1024

_RECORDS = b"records"
_META = b"meta"
_PROMISES = b"promises"  # Paxos promises by storage key (zkv.core.replica)
_INFO = b"info"  # this module's own settings, checked at open
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class CorruptMeta(Exception):
    """A meta value failed its checksum. Unlike a record, it cannot be repaired
    from other replicas, so the node should stop rather than guess."""


@lru_cache(maxsize=4096)  # a replica write reads, then writes, the same key
def storage_key(key: bytes) -> bytes:
    """The LMDB key under which ``key``'s record is stored."""
    prefix = token(key).to_bytes(_TOKEN, "big")
    if len(key) <= SHORT_KEY_MAX:
        return prefix + key
    return prefix + key[:SHORT_KEY_MAX] + blake2b(key, digest_size=_DIGEST).digest()


def _frame(skey: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(FORMAT, crc32(payload, crc32(skey))) + payload


def _unframe(skey: bytes | memoryview, raw: bytes | memoryview) -> memoryview | None:
    """The payload of a stored value, or None when its checksum or format is wrong."""
    if len(raw) < _HEADER.size:
        return None
    fmt, crc = _HEADER.unpack_from(raw)
    payload = memoryview(raw)[_HEADER.size:]
    if fmt != FORMAT or crc32(payload, crc32(skey)) != crc:
        return None
    return payload


def _errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, lmdb.DiskError):
        return errno.ENOSPC
    if isinstance(exc, OSError):
        return exc.errno
    # py-lmdb reports other errno values as a plain lmdb.Error("call: strerror").
    if isinstance(exc, lmdb.Error):
        for code in (*_DISK_FULL_ERRNOS, errno.EIO):
            if str(exc).endswith(os.strerror(code)):
                return code
    return None


def _page_align(size: int) -> int:
    page = os.sysconf("SC_PAGE_SIZE")
    return -(-size // page) * page


def _open_env(path: Path, map_size: int, sync: bool) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=4, map_size=map_size, sync=sync, metasync=sync,
                     writemap=False, readahead=False, lock=True)


class LmdbStore:
    """The store interface of ``zkv.storage.base`` on an LMDB environment at ``path``."""

    def __init__(self, path: str | Path, map_size: int = 64 * MiB,
                 max_map_size: int = 64 * GiB, sync: bool = True,
                 cache_entries: int = CACHE_ENTRIES, cache_bytes: int = CACHE_BYTES) -> None:
        if not 0 < map_size <= max_map_size:
            raise ValueError("map_size: must be positive and at most max_map_size")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.corrupt_reads = 0
        self.corrupt_keys: deque[bytes] = deque(maxlen=CORRUPT_KEYS_KEPT)
        self.commits = 0
        self.map_growths = 0
        self._max_map_size = _page_align(max_map_size)
        self._env = _open_env(self.path, _page_align(map_size), sync)
        try:
            if self._env.max_key_size() < _LONG_KEY_LEN:
                raise ValueError(f"LMDB's key limit {self._env.max_key_size()} is below "
                                 f"the {_LONG_KEY_LEN} bytes this store needs")
            self._records = self._env.open_db(_RECORDS)
            self._meta = self._env.open_db(_META)
            self._promises = self._env.open_db(_PROMISES)
            self._check_info()
        except BaseException:
            self._env.close()
            raise
        # LMDB raises the map to the data already on disk when that is larger.
        self._map_size: int = self._env.info()["map_size"]
        self._txn: lmdb.Transaction | None = None
        # Reads between two commits share one read transaction (``_reader``).
        self._rtxn: lmdb.Transaction | None = None
        # Writes of the open transaction, replayable after the map grows:
        # (database, storage key) -> stored value, or None for a delete.
        self._pending: dict[tuple[lmdb._Database, bytes], bytes | None] = {}
        # Whether any promise may be stored: nearly always none (only conditional writes
        # make them, and a write at or above one drops it), so replica reads and writes
        # skip the lookup. Set by every promise written, cleared when none is left.
        self._promised = self._entries(self._promises) > 0
        self._cache = RecordCache(cache_entries, cache_bytes, CACHE_MAX_VALUE)
        self._closed = False

    def _check_info(self) -> None:
        info = self._env.open_db(_INFO)
        expected = {b"format": b"%d" % FORMAT, b"short_key_max": b"%d" % SHORT_KEY_MAX}
        with self._env.begin(db=info, write=True) as txn:
            for name, value in expected.items():
                found = txn.get(name)
                if found is None:
                    txn.put(name, value)
                elif found != value:
                    raise ValueError(f"{self.path}: stored {name.decode()} is "
                                     f"{found.decode()}, this code writes {value.decode()}")

    # -- records ----------------------------------------------------------------

    def get(self, key: bytes) -> Record | None:
        """The stored record, or None when absent or corrupt (corrupt ones are counted)."""
        cache = self._cache
        if key in cache:
            return cache.get(key)
        if not key:
            return None
        cache.misses += 1
        skey = storage_key(key)
        txn = self._txn if self._txn is not None else self._reader()
        raw = txn.get(skey, db=self._records)
        if raw is None:
            cache.put(key, None)
            return None
        record = self._decode_get(key, skey, raw)
        if record is not None:  # (a corrupt record is read, and counted, every time)
            cache.put(key, record)
        return record

    def _decode_get(self, key: bytes, skey: bytes,
                    raw: bytes | memoryview | None) -> Record | None:
        if raw is None:
            return None
        found = self._decode(skey, raw)
        if found is None:
            self._count_corrupt(key)
            return None
        return found[1]

    def put(self, key: bytes, record: Record) -> None:
        """Buffer a write; raises StoreFull (discarding every uncommitted write) when
        the map cannot grow enough or the disk is full."""
        if not key:
            raise ValueError("LMDB cannot store an empty key")
        skey = storage_key(key)
        if len(key) <= SHORT_KEY_MAX:
            payload = cbor2.dumps(record.encode())
        else:
            payload = cbor2.dumps([key, *record.encode()])
        self._write(self._records, skey, _frame(skey, payload))
        self._cache.put(key, record)

    def remove(self, key: bytes) -> None:
        """Forget a key entirely; buffered like ``put``."""
        if key:
            self._write(self._records, storage_key(key), None)
            self._cache.put(key, None)

    def items(self) -> Iterator[tuple[bytes, Record]]:
        """Every (key, record) in token order, skipping (and counting) corrupt records.

        Reads a batch at a time, each in its own short transaction (the open write
        transaction when there is one, so buffered writes show), and holds nothing
        open between yields: the caller may write or commit while iterating. A key
        present throughout is yielded exactly once; one written or removed during
        the iteration may or may not be.
        """
        return self._scan(None, None)

    def token_range(self, first: int, last: int) -> Iterator[tuple[bytes, Record]]:
        """The records whose keys' ring tokens lie in ``first..last`` (both included),
        read like ``items``."""
        return self._scan(first.to_bytes(_TOKEN, "big"), last.to_bytes(_TOKEN, "big"))

    def _scan(self, start: bytes | None, last: bytes | None
              ) -> Iterator[tuple[bytes, Record]]:
        after: bytes | None = None
        while True:
            batch, after, done = self._read_batch(start, after, last)
            yield from batch
            if done:
                return

    def _read_batch(self, start: bytes | None, after: bytes | None, last: bytes | None
                    ) -> tuple[list[tuple[bytes, Record]], bytes | None, bool]:
        """Up to a batch of records from ``start`` on (or following ``after``), up to
        token ``last``; also the last storage key read and whether the end was reached."""
        out: list[tuple[bytes, Record]] = []
        count = size = 0
        own = self._txn is None
        txn = self._env.begin(buffers=True) if self._txn is None else self._txn
        try:
            cursor = txn.cursor(db=self._records)
            if after is not None:
                found = cursor.set_range(after)
                if found and cursor.key() == after:
                    found = cursor.next()
            elif start is not None:
                found = cursor.set_range(start)
            else:
                found = cursor.first()
            if not found:
                return out, after, True
            for skey, raw in cursor.iternext():
                if last is not None and bytes(skey[:_TOKEN]) > last:
                    return out, after, True
                if count >= _ITEMS_BATCH or size >= _ITEMS_BATCH_BYTES:
                    return out, after, False
                after = bytes(skey)
                count += 1
                size += len(raw)
                found_record = self._decode(after, raw)
                if found_record is None:
                    self._count_corrupt(after[_TOKEN:])
                else:
                    out.append(found_record)
            return out, after, True
        finally:
            if own:
                txn.abort()

    @property
    def cache(self) -> RecordCache:
        """The decoded records held in memory (for its counters)."""
        return self._cache

    def _decode(self, skey: bytes, raw: bytes | memoryview) -> tuple[bytes, Record] | None:
        """(key, record) from a stored value, or None if it is corrupt."""
        return _decode_stored(skey, raw)

    def _count_corrupt(self, key: bytes) -> None:
        self.corrupt_reads += 1
        self.corrupt_keys.append(key)

    def __len__(self) -> int:
        return self._entries(self._records)

    def _entries(self, db: lmdb._Database) -> int:
        txn = self._txn
        if txn is not None:
            return txn.stat(db)["entries"]
        with self._env.begin() as txn:
            return txn.stat(db)["entries"]

    # -- promises ---------------------------------------------------------------

    def get_promise(self, key: bytes) -> Version | None:
        """The key's promise; None when there is none, or when it fails its checksum
        (counted like a corrupt record)."""
        if not self._promised:
            return None
        skey = storage_key(key)
        txn = self._txn if self._txn is not None else self._reader()
        raw = txn.get(skey, db=self._promises)
        if raw is None:
            return None
        payload = _unframe(skey, raw)
        try:
            if payload is None:
                raise ValueError("bad frame")
            wall, counter, node = cbor2.loads(bytes(payload))
            if type(wall) is int and type(counter) is int and type(node) is str:
                return Version(wall, counter, node)
        except Exception:  # noqa: BLE001, S110 - any decoding failure means corrupt
            pass
        self._count_corrupt(key)
        return None

    def put_promise(self, key: bytes, ballot: Version) -> None:
        """Buffer a promise, like ``put``."""
        skey = storage_key(key)
        self._promised = True
        self._write(self._promises, skey, _frame(skey, cbor2.dumps(list(ballot))))

    def drop_promise(self, key: bytes) -> None:
        self._write(self._promises, storage_key(key), None)
        self._promised = self._entries(self._promises) > 0

    # -- meta -------------------------------------------------------------------

    def get_meta(self, name: str) -> bytes | None:
        """The value stored under ``name``; raises CorruptMeta if it fails its checksum."""
        skey = name.encode()
        txn = self._txn if self._txn is not None else self._reader()
        raw = txn.get(skey, db=self._meta)
        return None if raw is None else self._decode_meta(name, skey, raw)

    def _decode_meta(self, name: str, skey: bytes, raw: bytes | memoryview) -> bytes:
        payload = _unframe(skey, raw)
        if payload is None:
            raise CorruptMeta(f"{self.path}: meta {name!r} failed its checksum")
        return bytes(payload)

    def put_meta(self, name: str, value: bytes) -> None:
        """Buffer a meta write, like ``put``."""
        skey = name.encode()
        if not 0 < len(skey) <= SHORT_KEY_MAX:
            raise ValueError(f"meta name: must be 1 to {SHORT_KEY_MAX} bytes")
        self._write(self._meta, skey, _frame(skey, value))

    # -- transactions -----------------------------------------------------------

    def _write(self, db: lmdb._Database, skey: bytes, value: bytes | None) -> None:
        self._pending[(db, skey)] = value
        txn = self._txn
        if txn is None:
            txn = self._txn = self._env.begin(write=True, buffers=True)
        try:
            if value is None:
                txn.delete(skey, db=db)
            else:
                txn.put(skey, value, db=db)
        except lmdb.MapFullError:
            # LMDB has aborted the transaction; grow the map and write it again.
            self._abort_txn()
            self._replay_grown()
        except lmdb.Error as exc:  # e.g. spilling dirty pages to a full disk
            self._fail_write(exc)

    def commit(self) -> None:
        """Make every buffered write durable (one transaction; with ``sync=True``,
        returns only after the data is on disk). Raises StoreFull, discarding every
        write since the last commit, when the map or the disk is full."""
        self._end_reads()
        if self._txn is None:
            return
        while (txn := self._txn) is not None:
            self._txn = None  # a commit ends the transaction whether it succeeds or not
            try:
                txn.commit()
                break
            except lmdb.MapFullError:  # saving the free list can need a page
                self._replay_grown()
            except lmdb.Error as exc:
                self._fail_write(exc)
        self._pending.clear()
        self.commits += 1

    def _replay_grown(self) -> None:
        """Double the map and redo the pending writes in a new transaction, as often
        as needed; raise StoreFull (after discarding them) at ``max_map_size``."""
        while True:
            if self._map_size >= self._max_map_size:
                self._discard()
                raise StoreFull(f"{self.path}: store is at its maximum size of "
                                f"{self._max_map_size} bytes; uncommitted writes discarded")
            self._map_size = min(self._map_size * 2, self._max_map_size)
            self._end_reads()  # set_mapsize needs no transaction open in this process
            self._env.set_mapsize(self._map_size)
            self.map_growths += 1
            txn = self._txn = self._env.begin(write=True, buffers=True)
            try:
                for (db, skey), value in self._pending.items():
                    if value is None:
                        txn.delete(skey, db=db)
                    else:
                        txn.put(skey, value, db=db)
                return
            except lmdb.MapFullError:
                self._abort_txn()
            except lmdb.Error as exc:
                self._fail_write(exc)

    def _fail_write(self, exc: lmdb.Error) -> NoReturn:
        """Discard the uncommitted writes after LMDB failed to write them, and raise
        StoreFull if the disk is full, else ``exc``."""
        code = _errno_of(exc)
        # LMDB turns a short write (the usual sign of a full disk) into EIO.
        full = code in _DISK_FULL_ERRNOS or (code == errno.EIO and self._disk_looks_full())
        self._discard()
        if full:
            raise StoreFull(
                f"{self.path}: disk full ({exc}); uncommitted writes discarded") from exc
        raise exc

    def _disk_looks_full(self) -> bool:
        """Whether the disk (or this process's file size limit) has no room for the
        pending writes, with a margin for LMDB's page overhead."""
        need = 16 * MiB + 2 * sum(len(v) for v in self._pending.values() if v is not None)
        disk = os.statvfs(self.path)
        if disk.f_bavail * disk.f_frsize < need:
            return True
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return limit != resource.RLIM_INFINITY and (
            (self.path / "data.mdb").stat().st_size + need > limit)

    def _reader(self) -> lmdb.Transaction:
        """The read transaction of this turn: opening one per read cost more than the
        read (a replica read looks up the record and the promise). ``commit`` ends it,
        so no read misses a committed write; while a write transaction is open, reads
        go to that one instead (they must see its writes)."""
        txn = self._rtxn
        if txn is None:
            txn = self._rtxn = self._env.begin(buffers=True)
        return txn

    def _end_reads(self) -> None:
        txn, self._rtxn = self._rtxn, None
        if txn is not None:
            txn.abort()

    def _abort_txn(self) -> None:
        txn, self._txn = self._txn, None
        if txn is not None:
            txn.abort()

    def _discard(self) -> None:
        """Forget every write since the last commit."""
        self._cache.clear()  # it may hold some of them
        self._end_reads()
        self._abort_txn()
        self._pending.clear()
        self._promised = True  # a discarded drop may have been the last: look again

    def close(self) -> None:
        """Discard uncommitted writes (never acknowledged) and close the environment."""
        if self._closed:
            return
        self._closed = True
        self._discard()
        self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_stored(skey: bytes, raw: bytes | memoryview) -> tuple[bytes, Record] | None:
    """(key, record) from a stored value, or None if it is corrupt."""
    payload = _unframe(skey, raw)
    if payload is None:
        return None
    try:
        fields = cbor2.loads(payload)
        if len(skey) != _LONG_KEY_LEN:
            return bytes(skey[_TOKEN:]), Record.decode(fields)
        key = fields[0]
        if not (isinstance(key, bytes) and storage_key(key) == skey):
            return None
        return key, Record.decode(fields[1:])
    except Exception:  # noqa: BLE001 - a payload that passed its CRC yet does not decode
        return None


def read_records(path: str | Path, corrupt: list[bytes] | None = None) -> dict[bytes, Record]:
    """Every record of the store at ``path``, read in one read-only snapshot.

    Safe while the node that owns the store is running in another process: the
    environment is opened read-only, with LMDB's lock file, so the reader sees
    one committed state and never blocks or disturbs the writer. (LMDB forbids a
    second open in the process that holds the store open.)
    Corrupt records are left out; pass ``corrupt`` to collect their storage keys.
    A path that holds no store yet reads as empty.
    """
    path = Path(path)
    if not (path / "data.mdb").exists():
        return {}
    env = lmdb.open(str(path), readonly=True, lock=True, max_dbs=4, readahead=False,
                    create=False)
    try:
        with env.begin(buffers=True) as txn:
            try:
                records_db = env.open_db(_RECORDS, txn=txn, create=False)
            except lmdb.NotFoundError:
                return {}
            out: dict[bytes, Record] = {}
            for skey, raw in txn.cursor(db=records_db):
                found = _decode_stored(bytes(skey), raw)
                if found is None:
                    if corrupt is not None:
                        corrupt.append(bytes(skey))
                    continue
                out[found[0]] = found[1]
            return out
    finally:
        env.close()


def corrupt_record_on_disk(path: str | Path, key: bytes) -> None:
    """Flip one byte of ``key``'s stored payload (not its checksum), as a failing
    disk would. For tests; the store at ``path`` must be closed."""
    env = _open_env(Path(path), 64 * MiB, sync=True)
    try:
        records = env.open_db(_RECORDS)
        skey = storage_key(key)
        with env.begin(db=records, write=True) as txn:
            raw = txn.get(skey)
            if raw is None:
                raise KeyError(key)
            damaged = bytearray(raw)
            damaged[-1] ^= 0xFF  # the last payload byte; the header stays intact
            txn.put(skey, bytes(damaged))
    finally:
        env.close()
