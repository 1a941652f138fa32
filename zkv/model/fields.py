"""Reading several named attributes of an object in one C call.

The codec reads a message's fields to encode it and the version check reads the
fields that may hold versions, for every message a node handles: ``attrgetter``
with several names returns them as a tuple without a Python-level loop.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any


def fields_getter(names: tuple[str, ...]) -> Callable[[Any], tuple]:
    """A function of an object returning the tuple of its attributes ``names``."""
    if len(names) > 1:
        return attrgetter(*names)
    if names:
        name = names[0]
        return lambda value: (getattr(value, name),)  # attrgetter of one name is no tuple
    return lambda value: ()
