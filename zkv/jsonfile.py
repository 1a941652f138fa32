"""JSON files that other processes read while they change: a cluster's
``cluster.json`` and control requests (``zkv.supervisor``), a node's ``node.json``
(``zkv.net.runtime``). Each is replaced whole, never written in place."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data``; a reader sees the old file or the new one, never
    half. The temporary file is named after the writer (pid and a random part), so
    two writers of one path never share it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
