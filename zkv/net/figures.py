"""The main figures of one node, read from its /metrics page (for ``zkv cluster status``)."""

from __future__ import annotations

import urllib.request
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class NodeFigures:
    keys: int  # records held (values and tombstones)
    ops: int  # client operations coordinated, any outcome
    failed: int  # of those, answered unavailable (consistency level not reached)
    rejected: int  # malformed or forbidden frames refused
    cpu_percent: float
    rss_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def node_figures(url: str | None, timeout: float = 0.5) -> NodeFigures | None:
    """The figures of the node serving ``url``, or None if it does not answer."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode()
    except Exception:  # noqa: BLE001 - any failure means "unknown"
        return None
    ops = failed = 0.0
    single: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_labels, _, raw = line.rpartition(" ")
        try:
            value = float(raw)
        except ValueError:
            continue
        name, _, labels = name_labels.partition("{")
        if name == "zkv_requests_total":
            ops += value
            if 'status="unavailable"' in labels:
                failed += value
        elif not labels:
            single[name] = value
    return NodeFigures(
        keys=int(single.get("zkv_keys_stored", 0)),
        ops=int(ops),
        failed=int(failed),
        rejected=int(single.get("zkv_rejected_frames_total", 0)),
        cpu_percent=single.get("zkv_process_cpu_percent", 0.0),
        rss_bytes=int(single.get("zkv_process_rss_bytes", 0)),
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}B"
