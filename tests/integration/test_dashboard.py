"""The dashboard of a real 5-node cluster: its JSON API over plain HTTP, then the page in
a headless Debian chromium driven by selenium (skipped, with the reason, where either is
missing). One cluster serves the module; the test that kills a node runs last.

Screenshots are saved under ``$ZKV_ARTEFACTS`` (default: an ``artefacts`` directory in
pytest's temporary directory); the path is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from zkv.client import Client

from .harness import FAILURE_TIMERS, SupervisedCluster, cluster_up, command_overhead, wait_until

NODES = 5
KEY = "greeting"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1440,1000")
PAGE_TIMEOUT = 20.0  # seconds for the page to show what a test waits for
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[SupervisedCluster, bytes]]:
    """5 nodes under ``zkv cluster up`` (removal manual, so a killed node stays down);
    with what ``cluster up`` printed on stderr."""
    c, result = cluster_up(tmp_path_factory.mktemp("dashboard") / "cluster", NODES,
                           "--removal", "manual")
    try:
        assert result.returncode == 0, result.stderr.decode()
        c.info()
        # Ready means every node's ring holds all five; the dashboards show it within a
        # snapshot (half a second) and a round of peer answers.
        for n in range(1, NODES + 1):
            wait_until(lambda n=n: settled(get_json(http_base(c, f"node-{n}") + "/api/status")),
                       10, f"node-{n}'s dashboard to show the settled ring")
        yield c, result.stderr
    finally:
        try:
            c.run("cluster", "down", timeout=60)
        finally:
            c.kill_everything()


def http_base(c: SupervisedCluster, node_id: str) -> str:
    return c.node(node_id)["metrics"].removesuffix("/metrics")


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, data=b"x" if method == "POST" else None)
    try:
        with NO_PROXY.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def settled(status: dict[str, Any]) -> bool:
    """Every member alive, in the ring, answering with its figures; no ring change."""
    return not status["transition"] and len(status["members"]) == NODES and all(
        (m["status"], m["ring"], m["answering"]) == ("alive", "normal", True) and m["figures"]
        for m in status["members"])


def get_json(url: str) -> Any:
    status, _, body = get(url)
    assert status == 200, (url, status, body)
    return json.loads(body)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("ZKV_ARTEFACTS")
    path = Path(root) if root else tmp_path_factory.getbasetemp() / "artefacts"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {path}")
    return path


class Browser:
    """One headless chromium for the module; ``errors()`` is every console error so far."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="zkv-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*BROWSER_FLAGS, f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # The Debian driver, named: selenium never looks for (or downloads) one.
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.console: list[dict[str, Any]] = []

    def errors(self) -> list[dict[str, Any]]:
        self.console += self.driver.get_log("browser")
        return [e for e in self.console if e.get("level") == "SEVERE"]

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def rows(self) -> dict[str, dict[str, str | None]]:
        """The members table: node id -> its row's data attributes (read in one script,
        so a re-render between two reads cannot tear the answer)."""
        return self.driver.execute_script("""
            const out = {};
            for (const tr of document.querySelectorAll('#members tbody tr')) {
              out[tr.dataset.node] = {status: tr.dataset.status, rank: tr.dataset.rank || null,
                                      answering: tr.dataset.answering,
                                      ops: Number(tr.dataset.ops || 0)};
            }
            return out;""")

    def close(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: the browser tests need Debian's "
                    "chromium and chromium-driver (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    b = Browser()
    try:
        yield b
    finally:
        b.close()


class Load:
    """Puts from a background thread, so the page has operations to show."""

    def __init__(self, c: SupervisedCluster) -> None:
        self.client = Client.from_cluster_dir(c.data_dir, timeout=2.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            with contextlib.suppress(Exception):  # load only; the page is what is tested
                self.client.put(f"load-{i % 500}", b"v" * 100)
            i += 1
            self.stop.wait(0.01)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.close()


# --------------------------------------------------------------------------- the API


def test_cluster_up_prints_the_dashboard_url(cluster) -> None:
    c, stderr = cluster
    assert f"dashboard: {http_base(c, 'node-1')}/".encode() in stderr


def test_every_node_serves_the_whole_cluster(cluster) -> None:
    c, _ = cluster
    for i in (1, 3):
        status = get_json(http_base(c, f"node-{i}") + "/api/status")
        assert status["node"] == f"node-{i}" and settled(status)
        members = {m["id"]: m for m in status["members"]}
        assert sorted(members) == [f"node-{n}" for n in range(1, NODES + 1)]
        for m in members.values():
            assert (m["status"], m["ring"], m["incarnation"] > 0) == ("alive", "normal", True)
            assert m["http"] == http_base(c, m["id"]) + "/" and m["uptime"] >= 0
            assert {"keys", "bytes", "ops_per_s", "latency_ms", "failed_total", "streaming",
                    "repairs"} <= set(m["figures"])
        assert status["totals"]["members"] == {"alive": NODES}


def test_the_ring_json_draws_every_token_of_every_node(cluster) -> None:
    c, _ = cluster
    ring = get_json(http_base(c, "node-2") + "/api/ring")
    assert ring["nodes"] == [f"node-{n}" for n in range(1, NODES + 1)]
    assert {owner for _, _, owner in ring["arcs"]} == set(ring["nodes"])
    assert sum(b - a for a, b, _ in ring["arcs"]) == pytest.approx(1.0, abs=1e-4)
    assert ring["target"] is None and ring["target_arcs"] is None


def test_api_locate_names_the_replicas_the_client_finds(cluster) -> None:
    c, _ = cluster
    base = http_base(c, "node-4")
    with Client.from_cluster_dir(c.data_dir) as kv:
        for key in ("greeting", "user:1", "ключ", "a b+c/d?e"):
            found = get_json(f"{base}/api/locate?key={urllib.parse.quote(key)}")
            assert found["replicas"] == kv.locate(key), key
            assert found["key"] == key and len(found["points"]) == 3


def test_events_show_the_ring_forming_on_every_node(cluster) -> None:
    c, _ = cluster
    events = get_json(http_base(c, "node-1") + "/api/events?limit=500")["events"]
    everyone = {f"node-{n}" for n in range(1, NODES + 1)}
    assert {e["node"] for e in events if e["kind"] == "map_adopted"} == everyone
    # "ready" is logged by the runtime before the loop: read back from events.jsonl.
    assert {e["node"] for e in events if e["kind"] == "ready"} == everyone
    assert all({"ts", "node", "kind", "text"} <= set(e) for e in events)
    assert [e["ts"] for e in events] == sorted((e["ts"] for e in events), reverse=True)


def test_the_api_refuses_unknown_paths_writes_and_oversize_keys(cluster) -> None:
    c, _ = cluster
    base = http_base(c, "node-2")
    assert get(base + "/no/such/page")[0] == 404
    assert get(base + "/api/nothing")[0] == 404
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = get(base + "/api/status", method)
        assert (status, headers.get("Allow")) == (405, "GET, HEAD"), method
    status, _, body = get(base + "/api/locate?key=" + "k" * 1025)
    assert status == 400
    assert json.loads(body) == {"error": "key of 1025 bytes exceeds the 1024-byte limit"}
    assert get(base + "/metrics")[2].count(b"zkv_keys_stored") >= 1


# --------------------------------------------------------------------------- the page


def open_page(browser: Browser, c: SupervisedCluster) -> set[str]:
    """node-1's dashboard, once it shows every node alive (loaded once for the module)."""
    url = http_base(c, "node-1") + "/"
    if browser.driver.current_url != url:
        browser.driver.get(url)
    ids = {f"node-{n}" for n in range(1, NODES + 1)}
    wait_until(lambda: set(browser.rows()) == ids and all(
        r["status"] == "alive" and r["answering"] == "true" for r in browser.rows().values()),
        PAGE_TIMEOUT, "every node alive on the page")
    return ids


def test_the_page_shows_every_node_with_no_console_errors(cluster, browser, artefacts) -> None:
    c, _ = cluster
    ids = open_page(browser, c)
    arcs = {a.get_attribute("data-node") for a in browser.css("#arcs .arc")}
    assert arcs == ids
    assert browser.css("#events li[data-kind]"), "the timeline is empty"
    assert "5 members" in browser.css("#summary")[0].text
    browser.driver.save_screenshot(str(artefacts / "dashboard.png"))
    assert browser.errors() == []


def test_a_key_lookup_highlights_the_replicas_zkv_locate_prints(cluster, browser,
                                                                 artefacts) -> None:
    c, _ = cluster
    printed = c.run("locate", KEY)
    assert printed.returncode == 0, printed.stderr
    replicas = printed.stdout.decode().split()
    assert len(replicas) == 3
    open_page(browser, c)
    with Load(c):
        box, button = browser.css("#key")[0], browser.css("#locate")[0]
        box.clear()
        box.send_keys("k" * 1025)  # over max_key: said on the page, never asked for
        button.click()
        message = wait_until(lambda: "at most" in (t := browser.css("#locate-message")[0].text)
                             and t, PAGE_TIMEOUT, "the key-size message")
        assert "1,025 bytes" in message and "1,024 bytes" in message
        box.clear()
        box.send_keys(KEY)
        button.click()
        shown = wait_until(lambda: [li.get_attribute("data-node")
                                    for li in browser.css("#locate-result li[data-node]")],
                           PAGE_TIMEOUT, "the lookup's replicas")
        assert shown == replicas
        ranks = wait_until(lambda: {n: r["rank"] for n, r in browser.rows().items()
                                    if r["rank"]}, PAGE_TIMEOUT, "the replicas' rows marked")
        assert ranks == dict(zip(replicas, ("primary", "secondary", "tertiary")))
        for arc in browser.css("#arcs .arc"):
            dimmed = "dim" in arc.get_attribute("class")
            assert dimmed == (arc.get_attribute("data-node") not in replicas)
        # The load shows up as operations per second before the picture is taken.
        wait_until(lambda: sum(r["ops"] for r in browser.rows().values()) > 5,
                   PAGE_TIMEOUT, "operations per second on the page")
        browser.driver.save_screenshot(str(artefacts / "dashboard-locate.png"))
    assert browser.errors() == []


def test_a_killed_node_shows_down_within_t_fail_plus_2_s(cluster, browser, artefacts) -> None:
    c, _ = cluster
    victim = next(n for n in c.run("locate", KEY).stdout.decode().split() if n != "node-1")
    open_page(browser, c)
    slack = command_overhead()  # how loaded this machine is now (interpreter start-up)
    with Load(c):
        killed = c.run("node", "kill", victim, "--no-restart")
        assert killed.returncode == 0, killed.stderr
        since = time.monotonic()
        limit = FAILURE_TIMERS["t_fail"] + 2.0
        wait_until(lambda: browser.rows().get(victim, {}).get("status") == "down",
                   limit + slack, f"{victim} shown down")
        took = time.monotonic() - since
        print(f"\n{victim} shown down {took:.2f}s after its SIGKILL (t_fail + 2 s = {limit}s)")
        rows = browser.rows()
        assert rows[victim]["answering"] == "false"
        assert [n for n, r in rows.items() if r["status"] != "alive"] == [victim]
        before = browser.driver.find_element("tag name", "body").get_attribute("data-updated")
        wait_until(lambda: browser.driver.find_element("tag name", "body")
                   .get_attribute("data-updated") != before, PAGE_TIMEOUT,
                   "the page to go on updating")
        assert browser.css("#banner")[0].get_attribute("hidden") is not None
        browser.driver.save_screenshot(str(artefacts / "dashboard-node-down.png"))
    assert browser.errors() == []
