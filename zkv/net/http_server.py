"""A node's HTTP server: ``/metrics`` for Prometheus, the dashboard and its JSON API.

One port (``metrics_port``, default ``port + 2``), bound to ``metrics_host``
(default: the node's ``host``). Read-only: GET and HEAD are served, any other
method gets 405, an unknown path 404. Everything the page needs (HTML, script,
style, icon) is package data under ``zkv/net/dashboard_assets``, loaded once at
start: no CDN, nothing fetched from anywhere but this node.

The server runs on its own threads (one per request, at most ``MAX_REQUESTS``
at a time; more get 503) and never calls into the node: ``/metrics`` reads the
metrics registry, the rest reads the views ``zkv.net.dashboard`` describes.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from zkv.net.dashboard import ApiError, Dashboard

MAX_REQUESTS = 32  # requests served at once; the rest are told to come back (503)
MAX_DRAINED = 64 * 1024  # bytes of a refused request's body read before closing
ASSETS = {  # name -> content type
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
JSON_TYPE = "application/json; charset=utf-8"
# The page may load and fetch from this node only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def load_assets() -> dict[str, bytes]:
    folder = resources.files("zkv.net").joinpath("dashboard_assets")
    return {name: folder.joinpath(name).read_bytes() for name in ASSETS}


class NodeHttpServer:
    """Serves until ``close``; raises OSError at start if the port cannot be bound."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 dashboard: Dashboard) -> None:
        self.registry = registry
        self.dashboard = dashboard
        self.assets = load_assets()
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self._httpd = _Server((host, port), _Handler)
        self._httpd.app = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.25},
                                        name="zkv-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self.dashboard.close()

    # -- routing (HTTP threads)

    def route(self, path: str, query: str) -> tuple[int, str, bytes, dict[str, str]]:
        """(status, content type, body, extra headers) for a GET of ``path``."""
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry), {}
        if path in ("/", "/index.html"):
            return 200, ASSETS["index.html"], self.assets["index.html"], {
                "Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
        if path.startswith("/assets/"):
            name = path[len("/assets/"):]
            if name in ASSETS and name != "index.html":
                return 200, ASSETS[name], self.assets[name], {"Cache-Control": "no-cache"}
        api: dict[str, Callable[[], dict[str, Any]]] = {
            "/api/status": self.dashboard.status,
            "/api/ring": self.dashboard.ring,
            "/api/node": self.dashboard.node,
            "/api/events": lambda: self.dashboard.events(query),
            "/api/locate": lambda: self.dashboard.locate(query),
        }
        handler = api.get(path)
        if handler is None:
            return _json(404, {"error": f"no such page: {path}; the API is /api/status, "
                                        "/api/ring, /api/events, /api/node and "
                                        "/api/locate?key=KEY (docs/dashboard.md)"})
        try:
            return _json(200, handler())
        except ApiError as exc:
            return _json(exc.status, {"error": str(exc)})


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes, dict[str, str]]:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return status, JSON_TYPE, data, {"Cache-Control": "no-store"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: NodeHttpServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the viewer went away mid-answer: nothing to say
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # seconds a connection may take to send its request

    def version_string(self) -> str:
        return "zkv"

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every other method, known or not: read-only server
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit():
            self.rfile.read(min(int(length), MAX_DRAINED))
        status, ctype, body, headers = _json(405, {
            "error": f"{self.command} is not allowed: the dashboard is read-only (GET, HEAD)"})
        self._send(status, ctype, body, {**headers, "Allow": "GET, HEAD"}, True)

    def _serve(self, with_body: bool) -> None:
        app = self.server.app
        if not app._slots.acquire(blocking=False):
            status, ctype, body, headers = _json(503, {"error": "too many requests at once"})
            self._send(status, ctype, body, {**headers, "Retry-After": "1"}, with_body)
            return
        try:
            parts = urllib.parse.urlsplit(self.path)
            try:
                status, ctype, body, headers = app.route(parts.path, parts.query)
            except Exception as exc:  # noqa: BLE001 - a bug: say so, keep serving
                self.log_error("dashboard error on %s: %r", self.path, exc)
                status, ctype, body, headers = _json(500, {"error": f"internal error: {exc!r}"})
            self._send(status, ctype, body, headers, with_body)
        finally:
            app._slots.release()

    def _send(self, status: int, ctype: str, body: bytes, headers: dict[str, str],
              with_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the node's log

    def log_error(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"zkv http: {format % args}\n")
