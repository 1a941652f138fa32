"""The request path's metrics, kept as plain numbers, read as Prometheus text."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from zkv.net.metrics import NodeMetrics


def _samples(metrics: NodeMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _counters() -> dict[str, int]:
    return dict.fromkeys(
        ("rejected_frames", "checksum_failures", "handoff_records", "dropped_messages",
         "step_errors", "withheld_messages", "fast_puts", "fast_put_refused",
         "ops_in_flight", "membership_refused", "record_cache_hits",
         "record_cache_misses", "direct_served", "direct_refused"), 0)


def test_requests_latencies_and_quorum_failures_are_exported_by_op_and_outcome() -> None:
    metrics = NodeMetrics(_counters)
    for latency, status in ((0.0004, "ok"), (0.003, "ok"), (0.3, "unavailable")):
        metrics.observe_event("coordinator_done", {"op": "put", "status": status,
                                                   "latency": latency})
    metrics.observe_event("coordinator_done", {"op": "get", "status": "unknown",
                                               "latency": 0.001})
    got = _samples(metrics)
    assert got[("zkv_requests_total", (("op", "put"), ("status", "ok")))] == 2
    assert got[("zkv_requests_total", (("op", "put"), ("status", "unavailable")))] == 1
    assert got[("zkv_quorum_failures_total", (("op", "put"),))] == 1
    assert got[("zkv_quorum_failures_total", (("op", "get"),))] == 1
    bucket = "zkv_request_latency_seconds_bucket"
    assert got[(bucket, (("le", "0.0005"), ("op", "put")))] == 1
    assert got[(bucket, (("le", "0.005"), ("op", "put")))] == 2
    assert got[(bucket, (("le", "+Inf"), ("op", "put")))] == 3
    assert got[("zkv_request_latency_seconds_count", (("op", "put"),))] == 3
    assert abs(got[("zkv_request_latency_seconds_sum", (("op", "put"),))] - 0.3034) < 1e-9
    assert ("zkv_requests_total", (("op", "delete"), ("status", "ok"))) not in got


def test_a_turn_adds_its_commit_time_once_for_each_replica_answer() -> None:
    metrics = NodeMetrics(_counters)
    metrics.observe_event("replica_write", {})
    metrics.observe_event("replica_write", {})
    metrics.observe_event("replica_read", {})
    metrics.end_turn(0.004)
    got = _samples(metrics)
    assert got[("zkv_replica_latency_seconds_count", (("op", "write"),))] == 2
    assert got[("zkv_replica_latency_seconds_count", (("op", "read"),))] == 1
    assert got[("zkv_replica_latency_seconds_bucket", (("le", "0.002"), ("op", "write")))] == 0
