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
