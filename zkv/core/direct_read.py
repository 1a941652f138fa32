"""Direct reads: a client reads a quorum of a key's replicas itself, no coordinator between.

A quorum get through a coordinator is four messages and two hops: the client's
request, the coordinator's read of a second replica and its answer, the reply.
When the client knows the ring, it can ask a read quorum of the key's replicas
directly (``DirectRead``): two messages to and from each. If every one of them
answers with the same version, that record is on a quorum and is the answer,
exactly as a coordinator's read phase would have decided it (a coordinator
writes back only when the replicas disagree). Otherwise the client asks a
coordinator as before (``FALLBACK``): when replicas disagree, when one does not
serve direct reads at that epoch, or when one stays silent for a while.

Why it is linearizable. A replica serves a direct read only at the epoch of its
own cluster map, only while that map is settled (no ring change under way), and
only for keys it is a replica of in that map; the client asks replicas of its
ring at the same epoch and needs all of a quorum to agree. Every write acknowledged
before the read began is on a quorum of the key's replicas of the epoch it
completed in. If that is the read's epoch, the two quorums intersect and the
read sees the write (or something newer) and disagrees or returns it. A write
of a later epoch completed only after the ring change that made that epoch had
fenced the read's epoch on a quorum of each old replica set (``cluster_map``), so
at most a minority of the key's replicas still serve that epoch and a quorum of
them cannot all agree to serve it. And a record all of a quorum hold is what
every later read returns (or something newer), as for a coordinated read. The
checker (``zkv.check``) tests this in the simulator: the ``direct-reads`` scenario,
and the routed clients of the randomized and membership runs, which read directly
as the library does by default (``Client(direct_reads=False)`` turns it off).
"""

from __future__ import annotations

from zkv.core.messages import DirectRecord
from zkv.model.record import Record

FALLBACK = "coordinate"  # ``DirectQuorum.on_reply``: ask a coordinator instead


class DirectQuorum:
    """One direct read in flight: the replicas asked and what they answered."""

    __slots__ = ("targets", "epoch", "until", "records")

    def __init__(self, targets: list[str], epoch: int, until: float) -> None:
        self.targets = targets  # addresses of a read quorum of the key's replicas
        self.epoch = epoch
        self.until = until  # when silence makes the client ask a coordinator
        self.records: dict[str, Record | None] = {}

    def on_reply(self, address: str, reply: DirectRecord
                 ) -> tuple[str, bytes | None] | str | None:
        """Take a replica's answer: the outcome (status, value) once all agree,
        ``FALLBACK`` when they cannot, None while answers are missing."""
        if address not in self.targets or address in self.records:
            return None
        if not reply.served:
            return FALLBACK
        record = reply.record
        version = record.version if record is not None else None
        for other in self.records.values():
            if (other.version if other is not None else None) != version:
                return FALLBACK
        self.records[address] = record
        if len(self.records) < len(self.targets):
            return None
        if record is None or record.tombstone:
            return "not_found", None
        return "ok", record.value

    def silent(self) -> list[str]:
        """The replicas that have not answered."""
        return [a for a in self.targets if a not in self.records]
