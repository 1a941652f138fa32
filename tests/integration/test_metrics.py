"""Each node's /metrics: every family the operator guide lists exists and moves with work."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import zmq
from prometheus_client.parser import text_string_to_metric_families

from zkv import native
from zkv.core.messages import ClientReply, ClientRequest, decode, encode
from zkv.net.eventlog import EVENT_LOG, EventLog, read_events
from zkv.net.runtime import MAX_POLL

from .harness import START_TIMEOUT, Cluster, wait_until

ROOT = Path(__file__).resolve().parents[2]
TABLE_HEADER = ("Metric", "Type", "Meaning")


def documented_families() -> dict[str, str]:
    """Every family the operator guide's Metrics table lists (README.md, or a page under
    docs/ if it moved there), with its documented type ('' when the table gives none).
    A name ending in ``*`` stands for at least one family with that prefix."""
    documented: dict[str, str] = {}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    for page in pages:
        in_table = False
        for line in page.read_text(encoding="utf-8").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not line.lstrip().startswith("|"):
                in_table = False
            elif tuple(cells[:3]) == TABLE_HEADER:
                in_table = True
            elif in_table and not set(cells[0]) <= set("-: "):
                for name in re.findall(r"`([A-Za-z_:*][A-Za-z0-9_:*]*)(?:\{[^}]*\})?`",
                                       cells[0]):
                    documented[name] = cells[1]
    return documented


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a node's /metrics, by (name, sorted labels)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    samples: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def families(url: str) -> set[str]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {f.name for f in text_string_to_metric_families(text)}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_documented_family_is_served(cluster3: Cluster) -> None:
    documented = documented_families()
    # The table is the promise; a parser that found almost nothing would prove nothing.
    assert len(documented) >= 15 and "zkv_requests" in documented, documented
    text = urllib.request.urlopen(cluster3.nodes["n1"].metrics_url, timeout=5).read().decode()
    served = {f.name: f.type for f in text_string_to_metric_families(text)}
    missing = [name for name in documented
               if not (any(f.startswith(name[:-1]) for f in served) if name.endswith("*")
                       else name in served)]
    assert not missing, f"documented but missing from /metrics: {missing}"
    wrong = {name: (kind, served[name]) for name, kind in documented.items()
             if kind and name in served and served[name] != kind}
    assert not wrong, f"documented type, served type: {wrong}"


def test_the_figures_move_with_operations(cluster3: Cluster) -> None:
    kv = cluster3.client(direct_reads=False)  # every get through a coordinator
    primary = cluster3.nodes[kv.locate("metered-0")[0]]
    before = scrape(primary.metrics_url)
    nodes = list(cluster3.nodes.values())
    served_before = [value(scrape(n.metrics_url), "zkv_direct_reads_total", result="served")
                     for n in nodes]
    direct = cluster3.client()  # the default
    for i in range(20):
        kv.put("metered-0", b"x" * 1000)
        kv.get("metered-0")  # through the primary as coordinator
        direct.get("metered-0")  # a quorum read straight from two replicas
    kv.put(f"metered-{len(before)}", b"y")
    with_ops = scrape(primary.metrics_url)
    served = [value(scrape(n.metrics_url), "zkv_direct_reads_total", result="served")
              for n in nodes]
    assert sum(served) - sum(served_before) == 40, (served_before, served)
    assert value(with_ops, "zkv_requests_total", op="put", status="ok") >= \
        value(before, "zkv_requests_total", op="put", status="ok") + 20
    assert value(with_ops, "zkv_request_latency_seconds_count", op="get") >= \
        value(before, "zkv_request_latency_seconds_count", op="get") + 20
    assert value(with_ops, "zkv_replica_latency_seconds_count", op="write") > \
        value(before, "zkv_replica_latency_seconds_count", op="write")
    assert value(with_ops, "zkv_members", status="alive") == 3
    # Twenty reads of one key written just before: the replica's reads come from the cache.
    assert value(with_ops, "zkv_record_cache_reads_total", result="hit") >= \
        value(before, "zkv_record_cache_reads_total", result="hit") + 20
    # The nodes run from this interpreter's environment: compiled exactly when it is.
    assert value(with_ops, "zkv_native") == int(native.native()), native.describe()

    def sampled() -> dict | None:  # gauges the loop samples about once a second
        now = scrape(primary.metrics_url)
        return now if value(now, "zkv_keys_stored") >= 1 and \
            value(now, "zkv_store_bytes") > 0 and value(now, "zkv_process_rss_bytes") > 0 \
            else None

    wait_until(sampled, 10 * MAX_POLL, "keys, bytes and memory to be sampled")


def test_a_quorum_failure_is_counted(cluster3: Cluster) -> None:
    node = cluster3.nodes["n1"]
    before = scrape(node.metrics_url)
    # A deadline too short to hear from every replica's fsync: most of these fail.
    sock = cluster3.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(node.address)
    statuses = []
    for i in range(20):
        sock.send(encode(ClientRequest(i + 1, "put", b"rushed-%d" % i, b"v", "all", 1)))
        assert sock.poll(int(START_TIMEOUT * 1000)), "no answer, not even unavailable"
        reply = decode(sock.recv())
        assert isinstance(reply, ClientReply)
        statuses.append(reply.status)
    sock.close()
    after = scrape(node.metrics_url)
    # Not reaching the level in time is answered "unavailable", or "unknown" once the
    # write may have landed somewhere; the README counts both as quorum failures.
    failures = statuses.count("unavailable") + statuses.count("unknown")
    assert failures > 0, statuses
    assert value(after, "zkv_quorum_failures_total", op="put") - \
        value(before, "zkv_quorum_failures_total", op="put") == failures


def test_the_event_log_rotates_by_size(tmp_path: Path) -> None:
    log = EventLog(tmp_path, "n1", max_bytes=2000)
    for i in range(100):
        log.append("tick", {"i": i, "pad": "x" * 50}, ts=float(i))
    log.close()
    assert (tmp_path / EVENT_LOG).stat().st_size <= 2000 + 200
    assert (tmp_path / (EVENT_LOG + ".1")).exists()
    kept = [e["fields"]["i"] for e in read_events(tmp_path)]
    assert kept == sorted(kept) and kept[-1] == 99 and len(kept) < 100
