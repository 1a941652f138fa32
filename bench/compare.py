"""Side by side: zkv against etcd (and Redis as a reference), one generator, one run.

    .venv/bin/python bench/compare.py                          # 32 clients, put+get, 10 s
    .venv/bin/python bench/compare.py --clients 1,32 --duration 5 --systems etcd,zkv

Starts, on 127.0.0.1 only, a 3-member etcd cluster (Debian's ``etcd-server``
provides ``etcd``), a 3-node zkv cluster (``zkv.bench.LocalCluster``, quorum,
fsync on) and, as a single-node reference, ``redis-server`` with ``appendonly
yes`` and ``appendfsync always``. All are up at once and take turns cell by
cell (etcd, zkv, Redis for puts, then the same for gets), so a change in the
rest of the machine's load hits them alike; an idle system costs about 0.02
cores. ``--sequential`` runs each alone instead. Every system is driven by the
same generator: N client processes, each its own OS process with one
connection, doing blocking puts (100-byte values) and then gets over a key
space, first ``--warmup`` seconds unmeasured, then ``--duration`` seconds
measured. Before the gets every key is loaded once (untimed).

How each system is spoken to:

- zkv: its wire on a plain socket per node (``--zkv-client raw``, the default: ZMTP
  3.0 as a DEALER, each request to the key's primary), or ``zkv.client.Client``
  (``--zkv-client library``, blocking calls, which costs the generator about 1.6
  times the CPU per request; ``zeromq``: the library over ZeroMQ's sockets, as a
  CurveZMQ client runs); quorum writes and reads;
- etcd: the gRPC gateway's HTTP/JSON API (``/v3/kv/put``, ``/v3/kv/range``,
  base64 keys and values) over one keep-alive HTTP/1.1 connection per
  client (a prepared request on a plain socket, ``--etcd-http raw``, or the
  standard ``http.client``, which costs the generator far more CPU per
  request); client i talks to member i mod 3 (followers forward to the leader).
  A range is linearizable (etcd's default), a put is a Raft commit with fsync;
- Redis: a minimal RESP client on one socket (SET / GET).

Per system x workload x client count one JSON line goes to
``bench/results/compare-STAMP.jsonl``; the Markdown table (system, workload,
clients, ops/s, p50, p99, errors, ratio zkv/etcd, generator, server and
other cores, load average) to ``compare-STAMP.md``. The generator's own CPU
(psutil, all client processes), the servers' CPU and the rest of the machine's
busy CPU ("other": other people's processes, plus kernel threads such as disk
flushing that no process is charged for) are measured over each cell, so a
reader can see whether the generator or somebody else's work was the limit.

If ``etcd`` is not installed the comparison is skipped: a message says so and
the exit status is 0 (nothing is written). Redis is optional: without
``redis-server`` its rows are left out with a note. Every process and
temporary directory the script starts is removed at the end, also on Ctrl-C or
SIGTERM; etcd and Redis also get SIGTERM if the script itself dies.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import itertools
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zkv import bench as zb
from zkv import supervisor as sup
from zkv.net.zmtp import GREETING, READY, encode_message
from zkv.supervisor import free_base_port

HOST = "127.0.0.1"
SYSTEMS = ("etcd", "zkv", "redis")
WORKLOADS = ("put", "get")
MAX_ERROR_SAMPLES = 5
START_TIMEOUT = 60.0


class CompareError(Exception):
    """The comparison could not run; the message says why."""


class Skip(Exception):
    """A system is not available here; the message says why."""


def key_name(i: int) -> str:
    return zb.key_name(i)


# --------------------------------------------------------------------------- client adapters
# Each adapter runs inside one client process: put(key, value) and get(key) -> bytes | None.


class ZkvLibraryAdapter:
    """zkv through its client library (``--zkv-client library``, or ``zeromq`` for the
    library over ZeroMQ's sockets, as a CurveZMQ client runs). Its routing, retries and
    checks cost the generator about 1.6 times the CPU per request of ``ZkvRawAdapter``
    (and over ZeroMQ's sockets 1.8 times), CPU the servers lack on shared cores."""

    def __init__(self, spec: dict, index: int, timeout: float) -> None:
        from zkv.client import Client

        transport = "zeromq" if spec.get("client") == "zeromq" else "zmtp"
        self.client = Client(spec["seeds"], timeout=timeout, consistency="quorum",
                             transport=transport,
                             direct_reads=spec.get("direct_reads", True))
        self.client.ring()  # learn the ring first: requests go straight to replicas

    def put(self, key: str, value: bytes) -> None:
        self.client.put(key, value)

    def get(self, key: str) -> bytes | None:
        return self.client.get(key)

    def close(self) -> None:
        self.client.close()


class ZkvRawAdapter:
    """zkv's wire on plain sockets (the default), as etcd's adapter speaks HTTP: ZMTP 3.0
    with the NULL mechanism as a DEALER, one request at a time to the key's primary (the
    library's ``Router`` picks it from the ring a node reports); a get reads a quorum
    of replicas directly first, as the library does. No retries: an error counts as
    one. What it uses of zkv is looked up once, as etcd's adapter prepares its
    requests once."""

    def __init__(self, spec: dict, index: int, timeout: float) -> None:
        from zkv.core import messages
        from zkv.core.client_policy import Router
        from zkv.core.direct_read import FALLBACK, DirectQuorum

        self.m = messages
        self.fallback, self.quorum = FALLBACK, DirectQuorum
        self.timeout = timeout
        self.conns: dict[str, ZmtpDealer] = {}
        self.router = Router(list(spec["seeds"]), direct_reads=spec.get("direct_reads", True))
        self.ids = itertools.count(1)
        seed = spec["seeds"][index % len(spec["seeds"])]
        info = self._call(seed, messages.RingQuery(next(self.ids)))
        if not isinstance(info, messages.RingInfo) or not self.router.learn(
                info, time.monotonic()):
            raise RuntimeError(f"no ring from {seed}: {info!r}")

    def _call(self, address: str, request: Any) -> Any:
        self._send(address, self.m.encode(request))
        return self._recv(address, request.req_id)

    def _send(self, address: str, frame: bytes) -> None:
        conn = self.conns.get(address)
        if conn is None:
            conn = self.conns[address] = ZmtpDealer(address, self.timeout)
        try:
            conn.send(frame)
        except BaseException:
            self.conns.pop(address).close()
            raise

    def _recv(self, address: str, req_id: int) -> Any:
        m = self.m
        conn = self.conns[address]
        try:
            while True:  # replies to earlier requests that timed out are skipped
                for reply in m.decode_batch(conn.recv(), m.MAX_BATCH):
                    if type(reply) is m.ErrorReply or getattr(reply, "req_id", None) == req_id:
                        return reply
        except BaseException:
            self.conns.pop(address).close()
            raise

    def _op(self, op: str, key: str, value: bytes | None) -> bytes | None:
        kb = key.encode()
        address = self.router.route(kb, time.monotonic())[0]
        request = self.m.ClientRequest(next(self.ids), op, kb, value, "quorum",
                                       int(self.timeout * 1000))
        reply = self._call(address, request)
        status = getattr(reply, "status", None)
        if status == "ok":
            return reply.value
        if status == "not_found":
            return None
        raise RuntimeError(f"{op}: {status or type(reply).__name__} {reply!r}"[:200])

    def put(self, key: str, value: bytes) -> None:
        self._op("put", key, value)

    def get(self, key: str) -> bytes | None:
        """As the library reads (``zkv.core.direct_read``): a quorum of the key's
        replicas directly, a coordinator when they do not agree."""
        m, router = self.m, self.router
        kb = key.encode()
        epoch = router.epoch
        targets = router.direct_targets(kb, "quorum", time.monotonic())
        if targets is not None:
            quorum = self.quorum(targets, epoch, 0.0)
            req_id = next(self.ids)
            frame = m.encode(m.DirectRead(req_id, kb, epoch))
            for address in targets:
                self._send(address, frame)
            for address in targets:
                reply = self._recv(address, req_id)
                result = router.direct_reply(quorum, address, reply) \
                    if type(reply) is m.DirectRecord else self.fallback
                if type(result) is tuple:
                    return result[1]
                if result == self.fallback:
                    break  # the other answer, if any, is skipped as a stale reply
        return self._op("get", key, None)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()


def zkv_adapter(spec: dict, index: int, timeout: float) -> Any:
    """The adapter ``spec["client"]`` names: ``raw`` (the default), ``library`` or
    ``zeromq``."""
    kind = ZkvRawAdapter if spec.get("client", "raw") == "raw" else ZkvLibraryAdapter
    return kind(spec, index, timeout)


class ZmtpDealer:
    """A blocking ZeroMQ DEALER on a plain TCP socket: ``zkv.net.zmtp``'s handshake and
    framing, one request and its reply at a time, for the least CPU a generator can
    spend (the library's links are non-blocking, reconnect, and poll many nodes)."""

    def __init__(self, address: str, timeout: float) -> None:
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.sock.sendall(GREETING + READY)
        while len(self.buf) < len(GREETING):
            self._fill()
        greeting = bytes(self.buf[:len(GREETING)])
        del self.buf[:len(GREETING)]
        if greeting[0] != 0xFF or greeting[9] != 0x7F or greeting[10] < 3:
            raise ConnectionError(f"{address} does not speak ZMTP 3: {greeting[:12]!r}")
        flags, body = self._frame()
        if not flags & 0x04 or not body.startswith(b"\x05READY"):
            raise ConnectionError(f"{address} sent no READY: {body[:20]!r}")

    def send(self, payload: bytes) -> None:
        """One message of one frame."""
        self.sock.sendall(encode_message([payload]))

    def recv(self) -> bytes:
        """The next message's single frame (commands are skipped)."""
        while True:
            flags, body = self._frame()
            if flags & 0x04:
                continue
            if flags & 0x01:
                raise ConnectionError("a multi-frame message where one frame was expected")
            return body

    def _frame(self) -> tuple[int, bytes]:
        buf = self.buf
        while True:
            have = len(buf)
            if have >= 2:
                flags = buf[0]
                if not flags & 0x02:
                    start, size = 2, buf[1]
                elif have >= 9:
                    start, size = 9, int.from_bytes(buf[1:9], "big")
                else:
                    start, size = 0, 0
                if start and have >= start + size:
                    body = bytes(buf[start:start + size])
                    del buf[:start + size]
                    return flags, body
            self._fill()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the node closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


class EtcdAdapter:
    """etcd v3 through its gRPC gateway (HTTP/1.1 JSON) on one keep-alive connection.

    ``spec["http"]`` picks the HTTP client: ``raw`` (default) writes each request
    as one prepared buffer and reads the reply by its Content-Length (or chunks) on
    a plain socket; ``http.client`` uses the standard library's HTTPConnection,
    which costs the generator several times more CPU per request.
    """

    def __init__(self, spec: dict, index: int, timeout: float) -> None:
        endpoints = spec["endpoints"]
        self.host, self.port = endpoints[index % len(endpoints)]
        self.timeout = timeout
        self.raw = spec.get("http", "raw") == "raw"
        self.conn: Any = None
        self.buf = b""
        self.headers = {"Content-Type": "application/json"}
        self._b64: dict[str, str] = {}
        self._value_b64: dict[bytes, str] = {}
        self._head = (b"POST %%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json"
                      b"\r\nContent-Length: %%d\r\n\r\n" % (self.host.encode(), self.port))

    def _connection(self) -> Any:
        if self.conn is None:
            if self.raw:
                conn = socket.create_connection((self.host, self.port), timeout=self.timeout)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buf = b""
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conn = conn
        return self.conn

    def _key(self, key: str) -> str:
        k = self._b64.get(key)
        if k is None:
            k = self._b64[key] = base64.b64encode(key.encode()).decode()
        return k

    def _post(self, path: str, body: str) -> dict:
        conn = self._connection()
        try:
            if self.raw:
                data = body.encode()
                conn.sendall(self._head % (path.encode(), len(data)) + data)
                status, data = self._response(conn)
            else:
                conn.request("POST", path, body, self.headers)
                response = conn.getresponse()
                status, data = response.status, response.read()
        except BaseException:
            self.close()  # a fresh connection for the next request
            raise
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:200].decode(errors='replace')}")
        return json.loads(data)

    def _recv(self, conn: socket.socket) -> None:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("etcd closed the connection")
        self.buf += chunk

    def _response(self, conn: socket.socket) -> tuple[int, bytes]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._recv(conn)
        head = self.buf[:end].lower()
        self.buf = self.buf[end + 4:]
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17:stop if stop >= 0 else None])
            while len(self.buf) < length:
                self._recv(conn)
            body, self.buf = self.buf[:length], self.buf[length:]
            return status, body
        if b"transfer-encoding: chunked" not in head:
            raise RuntimeError("etcd reply without a length")
        parts = []
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                self._recv(conn)
            size = int(self.buf[:eol].split(b";")[0], 16)
            while len(self.buf) < eol + 2 + size + 2:
                self._recv(conn)
            parts.append(self.buf[eol + 2:eol + 2 + size])
            self.buf = self.buf[eol + 2 + size + 2:]
            if size == 0:
                return status, b"".join(parts)

    def put(self, key: str, value: bytes) -> None:
        v = self._value_b64.get(value)
        if v is None:
            v = self._value_b64[value] = base64.b64encode(value).decode()
        self._post("/v3/kv/put", f'{{"key":"{self._key(key)}","value":"{v}"}}')

    def get(self, key: str) -> bytes | None:
        reply = self._post("/v3/kv/range", f'{{"key":"{self._key(key)}"}}')
        kvs = reply.get("kvs")
        if not kvs:
            return None
        return base64.b64decode(kvs[0].get("value", ""))

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


class RespError(Exception):
    pass


class RedisAdapter:
    """A minimal RESP client: one socket, one command at a time."""

    def __init__(self, spec: dict, index: int, timeout: float) -> None:
        self.sock = socket.create_connection((HOST, spec["port"]), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def _command(self, *args: bytes) -> Any:
        self.sock.sendall(b"*%d\r\n" % len(args) +
                          b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
        line = self.reader.readline()
        kind = line[:1]
        if kind == b"+":
            return line[1:-2]
        if kind == b"$":
            n = int(line[1:-2])
            return None if n < 0 else self.reader.read(n + 2)[:-2]
        if kind == b":":
            return int(line[1:-2])
        if kind == b"-":
            raise RespError(line[1:-2].decode(errors="replace"))
        raise RespError(f"unexpected reply {line[:60]!r}")

    def put(self, key: str, value: bytes) -> None:
        self._command(b"SET", key.encode(), value)

    def get(self, key: str) -> bytes | None:
        return self._command(b"GET", key.encode())

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


ADAPTERS = {"zkv": zkv_adapter, "etcd": EtcdAdapter, "redis": RedisAdapter}


# --------------------------------------------------------------------------- client processes


@dataclass
class CellOptions:
    workload: str
    clients: int
    duration: float
    keys: int
    value_size: int
    timeout: float
    warmup: float = 0.0
    seed: int = 1


def _client_process(system: str, spec: dict, index: int, options: CellOptions,
                    barrier: Any, results: Any) -> None:
    """One client: connect, load its share of keys (gets), wait for the others, run."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; no tracebacks
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        adapter = ADAPTERS[system](spec, index, options.timeout)
        rng = random.Random(options.seed * 1_000_003 + index)
        value = rng.randbytes(options.value_size)
        preload_failed = 0
        if options.workload == "get":
            for i in range(index, options.keys, options.clients):
                try:
                    adapter.put(key_name(i), value)
                except Exception:  # noqa: BLE001 - counted
                    preload_failed += 1
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        barrier.abort()
        results.put({"index": index, "fatal": f"{type(exc).__name__}: {exc}"})
        return
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        return
    keys = options.keys
    randrange = rng.randrange
    clock = time.perf_counter
    op = adapter.put if options.workload == "put" else adapter.get
    args = (value,) if options.workload == "put" else ()
    warmup_errors = 0
    warm_end = time.monotonic() + options.warmup
    while time.monotonic() < warm_end:  # the same load, not measured
        try:
            op(key_name(randrange(keys)), *args)
        except Exception:  # noqa: BLE001 - counted apart
            warmup_errors += 1
    proc = psutil.Process()
    cpu0 = proc.cpu_times()
    latencies = array("d")
    errors = 0
    not_found = 0
    samples: list[str] = []
    t_start = time.monotonic()
    end = t_start + options.duration
    while time.monotonic() < end:
        key = key_name(randrange(keys))
        t0 = clock()
        try:
            got = op(key, *args)
            latencies.append(clock() - t0)
            if options.workload == "get" and got is None:
                not_found += 1
        except Exception as exc:  # noqa: BLE001 - every failure is counted
            errors += 1
            if len(samples) < MAX_ERROR_SAMPLES:
                samples.append(f"{type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - t_start
    cpu1 = proc.cpu_times()
    with contextlib.suppress(Exception):  # closing is best effort
        adapter.close()
    results.put({"index": index, "latencies": latencies.tobytes(), "errors": errors,
                 "not_found": not_found, "samples": samples, "elapsed": elapsed,
                 "preload_failed": preload_failed, "warmup_errors": warmup_errors,
                 "cpu": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)})


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


def _busy(times: Any) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def run_cell(system: str, server: Any, options: CellOptions) -> dict:
    """Drive ``server`` with ``options.clients`` client processes; returns the JSON row."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(options.clients + 1)
    results = ctx.Queue()
    spec = server.spec()
    procs = [ctx.Process(target=_client_process,
                         args=(system, spec, i, options, barrier, results), daemon=True)
             for i in range(options.clients)]
    collected: list[dict] = []
    server_procs = server.processes()
    try:
        # SIGINT (Ctrl-C reaches the whole process group) stays blocked until every
        # client has set its own handling: the parent then gets it and stops them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for p in procs:
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            barrier.wait(timeout=START_TIMEOUT + options.keys / 200)
        except threading.BrokenBarrierError:
            pass
        time.sleep(options.warmup)
        load0 = os.getloadavg()
        t0 = time.monotonic()
        srv0, machine0 = zb.cpu_seconds(server_procs), psutil.cpu_times()
        deadline = t0 + options.duration + options.timeout + 30
        sampled = False
        srv1 = machine1 = None
        t1 = t0
        while len(collected) < options.clients and time.monotonic() < deadline:
            if not sampled and time.monotonic() >= t0 + options.duration:
                srv1, machine1, t1 = zb.cpu_seconds(server_procs), psutil.cpu_times(), time.monotonic()
                sampled = True
            try:
                collected.append(results.get(timeout=0.05))
            except Exception:  # noqa: BLE001 - queue.Empty
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
        if not sampled:
            srv1, machine1, t1 = zb.cpu_seconds(server_procs), psutil.cpu_times(), time.monotonic()
        load1 = os.getloadavg()
    finally:
        if len(collected) < options.clients:  # interrupted or failed: stop them now
            for p in procs:
                if p.is_alive():
                    p.terminate()
        deadline = time.monotonic() + 5
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
    fatal = [r["fatal"] for r in collected if "fatal" in r]
    if fatal:
        raise CompareError(f"{system}: a client could not start: {fatal[0]}")
    if len(collected) < options.clients:
        raise CompareError(f"{system}: only {len(collected)} of {options.clients} clients "
                           "reported")
    elapsed = max(r["elapsed"] for r in collected)
    values: list[float] = []
    for r in collected:
        lat = array("d")
        lat.frombytes(r["latencies"])
        values.extend(lat)
    values.sort()
    errors = sum(r["errors"] for r in collected)
    gen_cpu = sum(r["cpu"] for r in collected)
    window = max(t1 - t0, 1e-9)
    server_cores = (srv1 - srv0) / window
    machine_cores = (_busy(machine1) - _busy(machine0)) / window
    gen_cores = gen_cpu / elapsed if elapsed else 0.0
    ms = 1000.0
    return {
        "system": system, "version": server.version, "members": server.members,
        "workload": options.workload, "clients": options.clients,
        "client_processes": options.clients, "duration_s": options.duration,
        "keys": options.keys, "value_size": options.value_size,
        "elapsed_s": round(elapsed, 3),
        "ops": len(values),
        "ops_per_s": round(len(values) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(values, 0.50) * ms, 3),
        "p95_ms": round(_percentile(values, 0.95) * ms, 3),
        "p99_ms": round(_percentile(values, 0.99) * ms, 3),
        "max_ms": round((values[-1] if values else 0.0) * ms, 3),
        "errors": errors,
        "not_found": sum(r["not_found"] for r in collected),
        "preload_failed": sum(r["preload_failed"] for r in collected),
        "warmup_s": options.warmup,
        "warmup_errors": sum(r["warmup_errors"] for r in collected),
        "error_samples": [s for r in collected for s in r["samples"]][:MAX_ERROR_SAMPLES],
        "generator": {"processes": options.clients, "cpu_s": round(gen_cpu, 3),
                      "cores_used": round(gen_cores, 2),
                      "cpu_us_per_op": round(gen_cpu / len(values) * 1e6, 1) if values else 0},
        "servers": {"processes": len(server_procs), "cores_used": round(server_cores, 2),
                    "cpu_us_per_op": round(server_cores * window / len(values) * 1e6, 1)
                    if values else 0},
        "machine_busy_cores": round(machine_cores, 2),
        "other_cores": round(max(0.0, machine_cores - server_cores - gen_cores), 2),
        "loadavg_start": [round(x, 2) for x in load0],
        "loadavg_end": [round(x, 2) for x in load1],
        "settings": server.settings,
        "machine": zb.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- the servers


def _wait_port(port: int, popen: subprocess.Popen, deadline: float, what: str) -> None:
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise CompareError(f"{what} exited with code {popen.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise CompareError(f"{what} did not listen on port {port} in time")


def _spawn(cmd: list[str], log: Path, popens: list[subprocess.Popen]) -> subprocess.Popen:
    """Start ``cmd`` in its own session (Ctrl-C is ours to handle), logging to ``log``,
    SIGTERMed by the kernel if this script dies; remembered in ``popens`` at once."""
    with open(log, "ab") as out:
        popen = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, preexec_fn=sup.parent_death_signal())
    popens.append(popen)
    return popen


@dataclass
class Server:
    workdir: Path
    members: int = 3
    version: str = ""
    settings: dict = field(default_factory=dict)
    popens: list[subprocess.Popen] = field(default_factory=list)
    grace: float = 10.0  # seconds from SIGTERM to SIGKILL when stopping

    def processes(self) -> list[psutil.Process]:
        out = []
        for p in self.popens:
            try:
                out.append(psutil.Process(p.pid))
            except psutil.Error:
                pass
        return out

    def stop(self) -> None:
        for p in self.popens:
            if p.poll() is None:
                p.terminate()
        for p in self.popens:
            sup.stop_popen(p, self.grace)


@dataclass
class Etcd(Server):
    http: str = "raw"
    # A member's graceful stop waits seconds for peers that are stopping too; the data
    # is thrown away, so the members get SIGKILL after a second.
    grace: float = 1.0

    def start(self, binary: str) -> None:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        first = (out.stdout or out.stderr).splitlines()[:1]
        self.version = first[0].replace("etcd Version:", "etcd").strip() if first else "etcd"
        base = free_base_port(2 * self.members)
        client = [base + i for i in range(self.members)]
        peer = [base + self.members + i for i in range(self.members)]
        names = [f"m{i}" for i in range(self.members)]
        cluster = ",".join(f"{n}=http://{HOST}:{p}" for n, p in zip(names, peer))
        token = f"compare-{os.getpid()}-{time.time_ns():x}"
        for i, name in enumerate(names):
            cmd = [binary, "--name", name, "--data-dir", str(self.workdir / name),
                   "--listen-client-urls", f"http://{HOST}:{client[i]}",
                   "--advertise-client-urls", f"http://{HOST}:{client[i]}",
                   "--listen-peer-urls", f"http://{HOST}:{peer[i]}",
                   "--initial-advertise-peer-urls", f"http://{HOST}:{peer[i]}",
                   "--initial-cluster", cluster, "--initial-cluster-token", token,
                   "--initial-cluster-state", "new",
                   "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]
            _spawn(cmd, self.workdir / f"{name}.log", self.popens)
        self.client_ports = client
        self.settings = {"api": f"grpc-gateway HTTP/JSON, keep-alive HTTP/1.1 ({self.http})",
                         "reads": "linearizable range", "fsync": "on (etcd default)"}
        deadline = time.monotonic() + START_TIMEOUT
        for i, port in enumerate(client):
            _wait_port(port, self.popens[i], deadline, f"etcd member {names[i]}")
        while time.monotonic() < deadline:  # a leader and a committed write
            try:
                EtcdAdapter(self.spec(), 0, 2.0).put("compare-ready", b"1")
                return
            except Exception:  # noqa: BLE001 - not ready yet
                for i, p in enumerate(self.popens):
                    if p.poll() is not None:
                        raise CompareError(f"etcd member {names[i]} exited with code "
                                           f"{p.returncode}; see its log") from None
                time.sleep(0.2)
        raise CompareError("etcd did not accept a write in time")

    def spec(self) -> dict:
        return {"endpoints": [(HOST, p) for p in self.client_ports], "http": self.http}


class Redis(Server):
    def start(self, binary: str) -> None:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        words = out.stdout.split()
        version = next((w[2:] for w in words if w.startswith("v=")), "")
        self.version = f"redis {version}".strip()
        self.members = 1
        self.port = free_base_port(1)
        cmd = [binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.workdir),
               "--appendonly", "yes", "--appendfsync", "always", "--save", "",
               "--daemonize", "no", "--protected-mode", "yes"]
        popen = _spawn(cmd, self.workdir / "redis.log", self.popens)
        self.settings = {"api": "RESP, one socket", "appendonly": "yes",
                         "appendfsync": "always", "nodes": 1}
        _wait_port(self.port, popen, time.monotonic() + START_TIMEOUT, "redis-server")

    def spec(self) -> dict:
        return {"port": self.port}


@dataclass
class Zkv(Server):
    client: str = "raw"  # the generator's way to the nodes: raw or library (zkv_adapter)
    direct_reads: bool = True  # quorum gets read the replicas directly (the library's default)

    def start(self, nodes: int) -> None:
        self.version = "zkv " + _git_describe()
        self.cluster = zb.LocalCluster(nodes, data_dir=self.workdir, sync=True,
                                       timeout=START_TIMEOUT)
        api = {"raw": "ZMTP on a plain socket to the key's primary, blocking",
               "library": "zkv.client.Client, blocking",
               "zeromq": "zkv.client.Client over ZeroMQ sockets, blocking"}[self.client]
        self.settings = {"api": api, "consistency": "quorum", "sync": True,
                         "direct_reads": self.direct_reads}

    def spec(self) -> dict:
        return {"seeds": list(self.cluster.seeds), "client": self.client,
                "direct_reads": self.direct_reads}

    def processes(self) -> list[psutil.Process]:
        return zb.local_cluster_processes(self.workdir, supervisor=True)

    def stop(self) -> None:
        if (self.workdir / sup.CLUSTER_FILE).exists():
            try:
                sup.stop_cluster(self.workdir)
            except sup.ControlError as exc:
                print(f"compare: stopping zkv: {exc}", file=sys.stderr)
        # Interrupted while starting, the supervisor may run without a cluster file yet:
        # stop every process whose command line names this run's own data directory.
        mine = str(self.workdir.resolve())
        left = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info.get("cmdline") or []
            if proc.pid != os.getpid() and any(a == mine or a.startswith(mine + os.sep)
                                               for a in cmdline):
                left.append(proc)
        if left:
            sup.terminate_all(left, sup.STOP_TIMEOUT)


def _git_describe() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


# --------------------------------------------------------------------------- report


def markdown(rows: list[dict], args: argparse.Namespace, notes: list[str]) -> str:
    m = zb.machine()
    versions = {}
    for r in rows:
        versions.setdefault(r["system"], (r["version"], r["members"]))
    loads = [r["loadavg_end"][0] for r in rows] + [r["loadavg_start"][0] for r in rows]
    others = [r["other_cores"] for r in rows]
    first = rows[0].get("loadavg_before_run") if rows else None
    before = f"Load average before the run: {first[0]:.2f} (1 min). " if first else ""
    clients = "/".join(str(n) for n in sorted({r["clients"] for r in rows}))
    order = ("Each system alone, one after the other" if args.sequential else
             "All systems up at once, taking turns cell by cell")
    sys_text = "; ".join(f"{v} ({n} {'member' if n == 1 else 'members'})"
                         for v, n in versions.values())
    lines = [
        (f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, loopback, "
         f"{time.strftime('%Y-%m-%d')}. Systems: {sys_text}. {order}; same "
         f"generator: one OS process per client, blocking puts then gets, "
         f"{args.value_size}-byte values, {args.keys} keys, {args.duration:g} s per cell "
         f"after {args.warmup:g} s of the same load, "
         "fsync on everywhere (etcd default, zkv sync = true and quorum, "
         "Redis appendfsync always)."),
        "",
        f"{before}Load average (1 min, counting this run's own {clients} client processes "
        f"and servers) during the cells: {min(loads):.2f}-{max(loads):.2f}; "
        f"the rest of the machine (other people's processes, kernel threads; not these "
        f"servers, not the generator) used {min(others):.2f}-{max(others):.2f} cores "
        "during the cells. µs/op: CPU time per completed operation."
        if rows else "",
        "",
        ("| system | workload | clients | ops/s | p50 ms | p99 ms | errors | zkv/etcd "
         "| generator cores (µs/op) | server cores (µs/op) | other cores |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    etcd = {(r["workload"], r["clients"]): r["ops_per_s"] for r in rows if r["system"] == "etcd"}
    for r in rows:
        ratio = ""
        if r["system"] == "zkv" and etcd.get((r["workload"], r["clients"])):
            ratio = f"{r['ops_per_s'] / etcd[(r['workload'], r['clients'])]:.2f}x"
        g = r["generator"]
        label = f"{r['system']} ({r['members']})" if r["system"] != "redis" else "redis (1, ref.)"
        lines.append(f"| {label} | {r['workload']} | {r['clients']} | {r['ops_per_s']:,.0f} "
                     f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {ratio} "
                     f"| {g['cores_used']:.2f} ({g['cpu_us_per_op']:.0f}) "
                     f"| {r['servers']['cores_used']:.2f} ({r['servers']['cpu_us_per_op']:.0f}) "
                     f"| {r['other_cores']:.2f} |")
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in allowed]
    if bad:
        raise SystemExit(f"--{what}: unknown {', '.join(bad)} (choose from {', '.join(allowed)})")
    return names


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default="etcd,zkv,redis",
                   help="run in this order (default etcd,zkv,redis; redis is skipped "
                        "with a note when redis-server is missing)")
    p.add_argument("--workloads", default="put,get")
    p.add_argument("--clients", default="32", help="client counts, e.g. 1,8,32")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds of the same load before each cell's measured window")
    p.add_argument("--sequential", action="store_true",
                   help="run each system alone, started and stopped in turn (default: all "
                        "systems up at once, taking turns cell by cell, so that a change in "
                        "the machine's other load hits them alike; an idle system costs "
                        "about 0.02 cores)")
    p.add_argument("--members", type=int, default=3, help="etcd members and zkv nodes")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--timeout", type=float, default=5.0, help="per-operation timeout")
    p.add_argument("--etcd", default=shutil.which("etcd") or "",
                   help="etcd binary (default: etcd on PATH)")
    p.add_argument("--etcd-http", choices=("raw", "http.client"), default="raw",
                   help="etcd's HTTP client in the generator: raw (a prepared request on a "
                        "keep-alive socket, the default) or the standard http.client")
    p.add_argument("--zkv-client", choices=("raw", "library", "zeromq"), default="raw",
                   help="how the generator speaks to zkv: raw (its wire, ZMTP, on a plain "
                        "socket, as etcd gets raw HTTP; the default), the zkv.client library "
                        "(about 1.6 times the generator's CPU), or the library over ZeroMQ's "
                        "sockets (zeromq, as CurveZMQ clients run)")
    p.add_argument("--zkv-direct-reads", action=argparse.BooleanOptionalAction, default=True,
                   help="zkv's quorum gets read two replicas directly, as the library does by "
                        "default (zkv/core/direct_read.py); --no-zkv-direct-reads: through a "
                        "coordinator")
    p.add_argument("--redis-server", default=shutil.which("redis-server") or "")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--tmp-dir", type=Path, default=None,
                   help="where the systems keep their data (default: the system temp dir; "
                        "all systems share it, so they share one disk)")
    args = p.parse_args(argv)
    systems = _names(args.systems, SYSTEMS, "systems")
    workloads = _names(args.workloads, WORKLOADS, "workloads")
    client_counts = _ints(args.clients)
    if not client_counts or min(client_counts) < 1:
        raise SystemExit("--clients: give positive counts")
    notes: list[str] = []
    if "etcd" in systems and not (args.etcd and os.access(args.etcd, os.X_OK)):
        print("compare: skipped: no etcd binary found (Debian: apt-get install etcd-server; "
              "or pass --etcd PATH); nothing was run or written", file=sys.stderr)
        return 0
    if "redis" in systems and not (args.redis_server and os.access(args.redis_server, os.X_OK)):
        systems.remove("redis")
        notes.append("Redis: skipped, no redis-server found (Debian: apt-get install "
                     "redis-server).")
        print(f"compare: {notes[-1]}", file=sys.stderr)

    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in background
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    jsonl = args.out / f"compare-{stamp}.jsonl"
    md = args.out / f"compare-{stamp}.md"
    if args.tmp_dir is not None:
        args.tmp_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="zkv-compare-", dir=args.tmp_dir))
    rows: list[dict] = []
    running: dict[str, Server] = {}
    load_before = [round(x, 2) for x in os.getloadavg()]
    status = 0

    def start(system: str) -> Server:
        sysdir = workdir / system
        sysdir.mkdir()
        print(f"compare: starting {system} ...", file=sys.stderr, flush=True)
        if system == "etcd":
            server: Server = Etcd(sysdir, members=args.members, http=args.etcd_http)
        elif system == "redis":
            server = Redis(sysdir, members=1)
        else:
            server = Zkv(sysdir, members=args.members, client=args.zkv_client,
                         direct_reads=args.zkv_direct_reads)
        running[system] = server  # before it starts: stopped again whatever happens
        if system == "etcd":
            server.start(args.etcd)
        elif system == "redis":
            server.start(args.redis_server)
        else:
            server.start(args.members)
        return server

    def stop(system: str) -> None:
        server = running[system]
        server.stop()
        del running[system]

    def cell(system: str, workload: str, clients: int) -> None:
        options = CellOptions(workload, clients, args.duration, args.keys, args.value_size,
                              args.timeout, args.warmup)
        row = run_cell(system, running[system], options)
        row["order"] = "sequential" if args.sequential else "interleaved"
        row["loadavg_before_run"] = load_before
        rows.append(row)
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"compare: {system:5} {workload:3} {clients:3} clients: "
              f"{row['ops_per_s']:9,.0f} ops/s  p50 {row['p50_ms']:.2f} ms  "
              f"p99 {row['p99_ms']:.2f} ms  errors {row['errors']}  "
              f"generator {row['generator']['cores_used']:.2f} cores  "
              f"servers {row['servers']['cores_used']:.2f}  "
              f"others {row['other_cores']:.2f}  load {row['loadavg_end'][0]:.2f}",
              file=sys.stderr, flush=True)
        for sample in row["error_samples"]:
            print(f"compare:   error: {sample}", file=sys.stderr)

    try:
        if args.sequential:  # each system alone on the machine, one after the other
            for system in systems:
                start(system)
                for workload in workloads:
                    for clients in client_counts:
                        cell(system, workload, clients)
                stop(system)
        else:  # all up at once; the systems take turns cell by cell
            for system in systems:
                start(system)
            for workload in workloads:
                for clients in client_counts:
                    for system in systems:
                        cell(system, workload, clients)
    except KeyboardInterrupt:
        print("compare: interrupted; stopping what was started", file=sys.stderr)
        status = 130
    except (CompareError, zb.BenchError, sup.ControlError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for system in list(running):
            stop(system)
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if rows:
        md.write_text(markdown(rows, args, notes))
        print(f"compare: wrote {jsonl} and {md}", file=sys.stderr)
        print(md.read_text())
    return status


if __name__ == "__main__":
    sys.exit(main())
