"""Errors the client library raises; each maps to one reply status of a node.

=================  ===========================================  ==============
error              when                                         node status
=================  ===========================================  ==============
``Unavailable``    the consistency level was not reached before  ``unavailable``,
                   the deadline, or no node answered in time;   ``unknown``
                   or a write's outcome is unknown
``KeyExists``      ``create`` of a key that holds a value        ``exists``
``KeyNotFound``    ``update`` or ``delete`` of a missing key     ``not_found``
``InvalidRequest`` a key, value or option the store refuses      ``invalid``
=================  ===========================================  ==============

A ``cas`` whose condition fails returns False (status ``condition_failed``)
rather than raising. An ``Unavailable`` write has an unknown outcome: it may have reached some
replicas and may still become visible. Every other error means nothing changed.
"""

from __future__ import annotations


class ZkvError(Exception):
    """Base of every error the zkv client raises."""


class Unavailable(ZkvError):
    """The consistency level could not be met in time (outcome of a write unknown)."""


class KeyExists(ZkvError):
    """``create`` found the key already holding a value; nothing was written."""


class KeyNotFound(ZkvError):
    """``update`` or ``delete`` found no value under the key; nothing was written."""


class InvalidRequest(ZkvError, ValueError):
    """The request breaks a limit or names an unknown option; it was not sent or not run."""


def error_for(op: str, key: str, status: str, detail: str) -> ZkvError | None:
    """The error a call of ``op`` on ``key`` (as the user typed it) raises for a reply
    status or a client outcome (``zkv.core.client_policy.OUTCOMES``); None when it
    returns (ok, a failed cas condition, a get of a missing key). The one table of them."""
    what = f"{op} {key}"
    if status in ("ok", "condition_failed") or (status == "not_found" and op == "get"):
        return None
    if status == "not_found":
        return KeyNotFound(f"{what}: the key holds no value")
    if status == "exists":
        return KeyExists(f"{what}: the key already holds a value")
    if status == "invalid":
        return InvalidRequest(f"{what}: {detail}")
    if status == "refused":
        return InvalidRequest(f"{what}: a node refused the request: {detail}")
    if status == "unknown":
        return Unavailable(f"{what}: outcome unknown: {detail}")
    return Unavailable(f"{what}: {detail or status}")  # unavailable, timeout
