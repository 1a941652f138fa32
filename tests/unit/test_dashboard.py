"""The dashboard's parts without a cluster: the gossiped HTTP port, the ring drawing, and
the HTTP server's answers (404, 405, HEAD, limits, peers that vanish) over a real socket."""

from __future__ import annotations

import itertools
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import cbor2
import pytest
from prometheus_client import CollectorRegistry, Counter

from zkv.config import ConfigError, load_settings
from zkv.core import messages as m
from zkv.core.membership import Membership
from zkv.core.ring import TOKEN_SPACE, Ring
from zkv.net.dashboard import (
    Dashboard,
    DashboardFeed,
    MemberView,
    NodeView,
    PeerReports,
    describe,
    http_url,
    query_bytes,
    replica_points,
    ring_arcs,
)
from zkv.net.http_server import NodeHttpServer

NODES = ("n1", "n2", "n3", "n4", "n5")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- gossip


def test_a_member_with_the_default_http_port_sends_the_old_five_fields() -> None:
    row = m.MemberState("n1", "tcp://127.0.0.1:1", 1, 9, "alive")
    body = cbor2.loads(m.encode(m.Gossip("n1", [row])))
    assert body[2] == [["n1", "tcp://127.0.0.1:1", 1, 9, "alive"]]
    assert m.decode(m.encode(m.Gossip("n1", [row]))).members == [row]


def test_a_member_row_carries_its_http_port_as_a_sixth_field() -> None:
    row = m.MemberState("n1", "tcp://127.0.0.1:1", 1, 9, "alive", 7402)
    assert m.decode(m.encode(m.Gossip("n1", [row]))).members == [row]


def test_a_member_without_an_http_server_says_port_0() -> None:
    row = m.MemberState("n1", "tcp://127.0.0.1:1", 1, 9, "alive", 0)
    assert m.decode(m.encode(m.Gossip("n1", [row]))).members == [row]
    assert http_url(row.address, 0) is None
    assert http_url(row.address, None) == "http://127.0.0.1:3"
    assert http_url(row.address, 9000) == "http://127.0.0.1:9000"


@pytest.mark.parametrize("port", [65536, -1, "7402", True, None])
def test_a_bad_http_port_is_refused_by_the_codec(port: Any) -> None:
    frame = cbor2.dumps([m.KINDS[m.Gossip], "n1", [["n1", "tcp://h:1", 1, 9, "alive", port]],
                         0, 0, 0])
    with pytest.raises(m.DecodeError, match="http_port"):
        m.decode(frame)


def test_the_http_port_survives_heartbeats_goodbyes_and_refutations() -> None:
    me = m.MemberState("n1", "tcp://h:1", 1, 0, "alive", 7402)
    table = Membership(me, t_fail=1.0, t_remove=4.0, now=0.0)
    table.beat()
    table._refute(m.MemberState("n1", "tcp://h:1", 1, 50, "alive"))
    assert table.me.http_port == 7402 and table.me.heartbeat == 51
    table.leave()
    assert table.me.http_port == 7402
    table.merge([m.MemberState("n2", "tcp://h:4", 1, 1, "alive", 7405)], now=0.1)
    assert table.http_port("n2") == 7405 and table.http_port("n9") is None


def test_only_an_http_port_other_than_the_default_is_gossiped() -> None:
    def gossiped(**flags: Any) -> int | None:
        return load_settings(None, {"id": "n1", "port": 7400, **flags}).node.http_port

    assert gossiped() is None and gossiped(metrics_port=7402) is None
    assert gossiped(metrics_port=9100) == 9100 and gossiped(metrics_port=0) == 0


def test_the_http_server_binds_where_metrics_host_says() -> None:
    settings = load_settings(None, {"id": "n1", "host": "10.0.0.5"})
    assert settings.http_bind == "10.0.0.5"
    assert load_settings(None, {"id": "n1", "metrics_host": "0.0.0.0"}).http_bind == "0.0.0.0"
    for bad in ("*", "a host", 7):
        with pytest.raises(ConfigError, match="metrics-host"):
            load_settings(None, {"id": "n1", "metrics_host": bad})


# --------------------------------------------------------------------------- the ring


def test_the_arcs_cover_the_ring_once_each_with_the_owner_of_its_tokens() -> None:
    ring = Ring(NODES, 3, 64)
    arcs = ring_arcs(ring)
    assert sum(end - start for start, end, _ in arcs) == pytest.approx(1.0, abs=1e-5)
    for (_, end, _), (start, _, _) in itertools.pairwise(arcs):
        assert start == pytest.approx(end, abs=1e-6)
    for start, end, owner in arcs:
        middle = int(((start + end) / 2) % 1.0 * TOKEN_SPACE)
        assert ring.segment_replicas(ring.segment_at(middle))[0] == owner


def test_a_key_is_marked_where_its_replicas_start() -> None:
    ring = Ring(NODES, 3, 64)
    replicas = list(ring.locate(b"greeting"))
    points = replica_points(ring, b"greeting", replicas)
    assert len(points) == 3 and points == sorted(points, key=lambda p: (p - points[0]) % 1.0)


def test_query_parameters_keep_a_key_s_exact_bytes() -> None:
    assert query_bytes("key=a%2Bb+c&x=1", "key") == b"a+b c"
    assert query_bytes("key=%FF%00", "key") == b"\xff\x00"
    assert query_bytes("key", "key") == b"" and query_bytes("x=1", "key") is None


def test_timeline_lines_never_show_keys() -> None:
    line = describe("corrupt_record", {"count": 2, "keys": ["secret-key"]})
    assert "secret-key" not in line and "2" in line
    assert describe("member_status", {"node": "n3", "old": "alive", "new": "down"}) == \
        "sees n3 down (was alive)"


# --------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _view(node_id: str, http_port: int, peers: dict[str, int]) -> NodeView:
    members = [MemberView(node_id, f"tcp://127.0.0.1:{http_port - 2}", 1, "alive", "normal",
                          http_port)]
    members += [MemberView(n, f"tcp://127.0.0.1:{p - 2}", 1, "alive", "normal", p)
                for n, p in peers.items()]
    feed = DashboardFeed()
    feed.observe("member_status", {"node": "n9", "old": None, "new": "alive"})
    figures = feed._figures(_Metrics(), {"ops_in_flight": 0}, {"ranges": 0})
    return NodeView(node_id, members[0].address, http_port, 1, 1, time.time() - 5,
                    time.time(), 3, False, frozenset(NODES), None, 3, 64, 16, 1.0, "auto",
                    tuple(sorted(members, key=lambda v: v.node_id)), figures,
                    tuple(feed._events))


class _Metrics:
    keys_stored = 7
    bytes_stored = 4096
    cpu_percent = 1.0
    rss_bytes = 1 << 20


def _serve(view: NodeView | None) -> NodeHttpServer:
    feed = DashboardFeed()
    feed.view = view
    registry = CollectorRegistry()
    Counter("zkv_test", "a counter", registry=registry).inc()
    port = view.http_port if view is not None else 0
    return NodeHttpServer("127.0.0.1", port, registry, Dashboard(feed, PeerReports(0.5, fresh=0.0)))


def _get(url: str, method: str = "GET", data: bytes | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with NO_PROXY.open(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def two_nodes():
    """n1 serving, n2 its peer serving too, n3 a peer whose port is closed."""
    p1, p2, p3 = _free_port(), _free_port(), _free_port()
    n2 = _serve(_view("n2", p2, {"n1": p1}))
    n1 = _serve(_view("n1", p1, {"n2": p2, "n3": p3}))
    try:
        yield f"http://127.0.0.1:{p1}", n2
    finally:
        n1.close()
        n2.close()


def test_status_shows_every_member_with_peer_figures(two_nodes) -> None:
    base, _ = two_nodes
    status, headers, body = _get(base + "/api/status")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    members = {x["id"]: x for x in json.loads(body)["members"]}
    assert members["n1"]["self"] and members["n1"]["figures"]["keys"] == 7
    assert members["n2"]["answering"] is True and members["n2"]["figures"]["keys"] == 7
    assert members["n2"]["uptime"] >= 5
    assert members["n3"]["answering"] is False and members["n3"]["figures"] is None


def test_a_peer_that_vanishes_keeps_its_last_figures_marked_stale(two_nodes) -> None:
    base, n2 = two_nodes
    assert json.loads(_get(base + "/api/status")[2])["members"][1]["answering"] is True
    n2.close()
    n2_entry = json.loads(_get(base + "/api/status")[2])["members"][1]
    assert n2_entry["answering"] is False and n2_entry["figures"]["keys"] == 7
    assert n2_entry["stale"] is not None


def test_events_merge_every_node_s_newest_first(two_nodes) -> None:
    base, _ = two_nodes
    events = json.loads(_get(base + "/api/events?limit=10")[2])["events"]
    assert {e["node"] for e in events} == {"n1", "n2"}
    assert [e["ts"] for e in events] == sorted((e["ts"] for e in events), reverse=True)
    assert _get(base + "/api/events?limit=0")[0] == 400


def test_unknown_paths_are_404_and_writes_405(two_nodes) -> None:
    base, _ = two_nodes
    for path in ("/nope", "/api/nope", "/assets/../index.html", "/assets/missing.js"):
        assert _get(base + path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
        status, headers, body = _get(base + "/api/status", method, b"x=1")
        assert status == 405 and headers["Allow"] == "GET, HEAD", method
        assert "read-only" in json.loads(body)["error"]


def test_head_answers_the_headers_of_get_without_a_body(two_nodes) -> None:
    base, _ = two_nodes
    status, headers, body = _get(base + "/", "HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) == len(_get(base + "/")[2])
    assert "default-src 'none'" in headers["Content-Security-Policy"]


def test_the_page_its_assets_and_metrics_are_served(two_nodes) -> None:
    base, _ = two_nodes
    page = _get(base + "/")[2].decode()
    for asset in ("/assets/dashboard.js", "/assets/dashboard.css", "/assets/favicon.svg"):
        assert asset in page and _get(base + asset)[0] == 200
    assert "http://" not in page.replace("http://www.w3.org", "")  # nothing from elsewhere
    assert b"zkv_test_total 1.0" in _get(base + "/metrics")[2]


def test_locate_refuses_a_key_over_the_limit_with_a_clear_message(two_nodes) -> None:
    base, _ = two_nodes
    status, _, body = _get(base + "/api/locate?key=" + "k" * 17)
    assert status == 400
    assert json.loads(body)["error"] == "key of 17 bytes exceeds the 16-byte limit"
    assert _get(base + "/api/locate?key=")[0] == 400
    found = json.loads(_get(base + "/api/locate?key=greeting")[2])
    assert found["replicas"] == list(Ring(NODES, 3, 64).locate(b"greeting"))


def test_a_node_still_starting_says_so() -> None:
    server = _serve(None)
    try:
        status, _, body = _get(f"http://127.0.0.1:{server.port}/api/status")
        assert status == 503 and "starting" in json.loads(body)["error"]
    finally:
        server.close()


# --------------------------------------------------------------------------- the feed


class _FakeNode:
    """What ``DashboardFeed.publish`` reads of a node, mid-transition: n4 joining."""

    node_id, address, incarnation = "n1", "tcp://127.0.0.1:7400", 3

    def __init__(self) -> None:
        from types import SimpleNamespace as NS

        from zkv.core.config import NodeConfig

        self.config = NodeConfig("n1", self.address)
        self.ring = Ring(("n1", "n2", "n3"), 3, 8)
        self.cluster_map = NS(target=frozenset({"n1", "n2", "n3", "n4"}))
        row = m.MemberState("n2", "tcp://127.0.0.1:7403", 2, 5, "alive")
        self.membership = Membership(m.MemberState("n1", self.address, 3, 0, "alive"),
                                     1.0, 4.0, 0.0)
        self.membership.merge([row], 0.0)
        self.membership.check(2.0)  # n2 silent past t_fail: down

    def status(self) -> dict[str, Any]:
        return {"epoch": 7, "members": {
            "n1": {"state": "normal", "address": self.address},
            "n2": {"state": "normal", "address": "tcp://127.0.0.1:7403"},
            "n3": {"state": "normal", "address": "tcp://127.0.0.1:7406"},
            "n4": {"state": "joining", "address": "tcp://127.0.0.1:7409"}},
            "streaming": {"epoch": 7, "ranges_done": 1, "ranges": 4, "keys": 10, "bytes": 99,
                          "degraded_ranges": 0}}


def test_a_published_view_holds_rates_latencies_repairs_and_ring_places() -> None:
    feed = DashboardFeed()
    node = _FakeNode()
    feed.publish(node, _Metrics(), {"ops_in_flight": 2})
    for latency in (0.001, 0.002, 0.003, 0.1):
        feed.observe("coordinator_done", {"op": "get", "status": "ok", "latency": latency})
    feed.observe("coordinator_done", {"op": "put", "status": "unavailable", "latency": 2.0})
    feed.observe("anti_entropy", {"peer": "n2", "pushed": 3, "pulled": 1})
    feed.observe("anti_entropy", {"peer": "n3", "pushed": 0, "pulled": 0})  # not listed
    feed.observe("read_repair", {"key": b"k", "stale": ["n2"]})
    feed.publish(node, _Metrics(), {"ops_in_flight": 2})
    view = feed.view
    assert view is not None and view.transition and view.epoch == 7
    places = {v.node_id: (v.status, v.ring) for v in view.members}
    assert places == {"n1": ("alive", "normal"), "n2": ("down", "normal"),
                      "n3": ("unknown", "normal"), "n4": ("unknown", "joining")}
    fig = view.figures
    assert fig["ops_total"] == {"get": 4, "put": 1} and fig["failed_total"] == 1
    assert set(fig["ops_per_s"]) == {"get", "put"} and fig["failed_per_s"] > 0
    assert fig["latency_ms"]["p50"] == 3.0 and fig["latency_ms"]["p99"] == 2000.0
    assert fig["streaming"]["active"] and fig["in_flight"] == 2
    assert fig["repairs"]["anti_entropy_records"] == 4 and fig["repairs"]["read_repairs"] == 1
    assert [e["kind"] for e in view.events] == ["anti_entropy"]
    json.dumps(view.report())  # the API's answer is plain JSON
