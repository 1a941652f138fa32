"""Each node its own host: Linux network namespaces joined by a bridge.

The lab is a set of namespaces this process creates and always deletes:

- a *hub* namespace holding a bridge ``br0`` with the address ``SUBNET.254``;
  the supervisor and every client process (workload, probes, final reads) run
  in it;
- one namespace per node, holding ``eth0`` (one end of a veth pair whose other
  end, ``vI``, is a port of the bridge) with the address ``SUBNET.I``; a node
  that joins later (``zkv cluster add``, the ``join`` fault) gets the next one
  (``add_host``), made before the supervisor starts it.

The subnet exists only inside these namespaces: nothing is routed to or from
the machine's own namespace, so no packet of a test ever leaves them.

Network faults act between nodes only (clients always reach every node), in
the hub, on the bridge:

- drop rules (``nft``, table ``bridge zkv_chaos``) for partitions and for
  random loss (``numgen random``) on every link of one node;
- ``tc`` on both ends of a node's veth: ``netem`` delay where the kernel has it,
  else a ``tbf`` rate limit (a slow link: queueing delay under load).

``support()`` says why the lab cannot run here (not root, a tool or a kernel
feature missing), so callers can skip with a clear reason.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psutil

from zkv import supervisor as sup
from zkv.config import node_address

NETNS_DIR = Path("/run/netns")
PREFIX = "zkvc"  # every namespace this module creates: zkvc<owner pid>x<token>-<role>
DEFAULT_SUBNET = "10.213.7"  # a /24 that exists only inside the lab's namespaces
HUB_HOST = 254
BRIDGE = "br0"
NFT_TABLE = "zkv_chaos"
NFT_CHAIN = "links"
CLONE_NEWNET = 0x40000000


class LabError(Exception):
    """A namespace, link, rule or qdisc could not be set up; says which command failed."""


def _run(cmd: list[str], stdin: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


@functools.cache
def support() -> str | None:
    """None when namespaces, veths, a bridge and nft rules work here; else why not."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install {package})"
    sweep_stale()
    probe = f"{PREFIX}{os.getpid()}xprobe"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "-n", probe, "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "netns", "exec", probe, "nft", "-f", "-"],
             stdin=f"add table bridge {NFT_TABLE}\n")
    except (LabError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot build a network namespace lab here: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@functools.cache
def has_netem() -> bool:
    """Whether the kernel has the netem qdisc (many minimal kernels lack sch_netem)."""
    probe = f"{PREFIX}{os.getpid()}xnetem"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "-n", probe, "link", "set", "lo", "up"])
        return _run(["tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "netem",
                     "delay", "1ms"], check=False).returncode == 0
    except (LabError, OSError, subprocess.SubprocessError):
        return False
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)


def sweep_stale() -> list[str]:
    """Delete lab namespaces left by a process that died without cleaning up."""
    removed: list[str] = []
    try:
        names = sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return removed
    for name in names:
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX):].split("x", 1)[0]
        if owner.isdigit() and psutil.pid_exists(int(owner)):
            continue
        if subprocess.run(["ip", "netns", "del", name], capture_output=True).returncode == 0:
            removed.append(name)
    return removed


def enter(namespace: str) -> None:
    """Move the calling thread (call it first thing in a fresh process) into ``namespace``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {namespace}: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class Lab:
    """The namespaces of one run; ``create()`` builds them, ``destroy()`` always removes them."""

    nodes: int
    subnet: str = DEFAULT_SUBNET
    token: str = field(default_factory=lambda: f"{os.getpid()}x{secrets.token_hex(3)}")
    created: list[str] = field(default_factory=list)
    rules: dict[str, list[str]] = field(default_factory=dict)  # fault id -> nft rules
    shaped: dict[str, int] = field(default_factory=dict)  # fault id -> node index
    netem: bool = False

    @property
    def hub(self) -> str:
        return f"{PREFIX}{self.token}-hub"

    @property
    def node_ns_prefix(self) -> str:
        return f"{PREFIX}{self.token}-n"

    def node_ns(self, index: int) -> str:
        """Namespace of node ``index`` (1-based)."""
        return f"{self.node_ns_prefix}{index}"

    def host(self, index: int) -> str:
        return f"{self.subnet}.{index}"

    @property
    def hub_host(self) -> str:
        return f"{self.subnet}.{HUB_HOST}"

    # ----------------------------------------------------------------- set-up

    def create(self) -> Lab:
        if not 1 <= self.nodes < HUB_HOST:
            raise LabError(f"a lab holds 1 to {HUB_HOST - 1} nodes, not {self.nodes}")
        try:
            self._add_ns(self.hub)
            _run(["ip", "-n", self.hub, "link", "set", "lo", "up"])
            _run(["ip", "-n", self.hub, "link", "add", BRIDGE, "type", "bridge"])
            _run(["ip", "-n", self.hub, "addr", "add", f"{self.hub_host}/24", "dev", BRIDGE])
            _run(["ip", "-n", self.hub, "link", "set", BRIDGE, "up"])
            for i in range(1, self.nodes + 1):
                self.add_host(i)
            self._nft(f"add table bridge {NFT_TABLE}\n"
                      f"add chain bridge {NFT_TABLE} {NFT_CHAIN} "
                      "{ type filter hook forward priority 0; policy accept; }\n")
            self.netem = has_netem()
        except BaseException:
            self.destroy()
            raise
        return self

    def add_host(self, index: int) -> None:
        """The namespace of node ``index`` (1-based), linked to the bridge; nothing if
        it exists. A run may add nodes up to host number 253."""
        ns = self.node_ns(index)
        if ns in self.created:
            return
        if not 1 <= index < HUB_HOST:
            raise LabError(f"a lab holds hosts 1 to {HUB_HOST - 1}, not {index}")
        self._add_ns(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.hub, "link", "add", f"v{index}", "type", "veth", "peer",
              "name", "eth0", "netns", ns])
        _run(["ip", "-n", self.hub, "link", "set", f"v{index}", "master", BRIDGE, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{self.host(index)}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def _add_ns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.created.append(name)

    def destroy(self) -> None:
        """Delete every namespace this lab made (links, rules and qdiscs go with them)."""
        while self.created:
            name = self.created.pop()
            subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def __enter__(self) -> Self:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ----------------------------------------------------------------- faults

    def partition(self, fault_id: str, side: list[int], rest: list[int]) -> None:
        """Drop all traffic between the nodes of ``side`` and those of ``rest``."""
        rules = []
        for a in side:
            for b in rest:
                for src, dst in ((a, b), (b, a)):
                    rules.append(f"ip saddr {self.host(src)} ip daddr {self.host(dst)} drop")
        self._set_rules(fault_id, rules)

    def loss(self, fault_id: str, node: int, percent: int) -> None:
        """Drop ``percent`` % of the packets between ``node`` and every other node, at random."""
        me = self.host(node)
        chance = "" if percent >= 100 else f"numgen random mod 100 < {max(0, percent)} "
        self._set_rules(fault_id, [f"ip saddr {me} {chance}drop", f"ip daddr {me} {chance}drop"])

    def slow(self, fault_id: str, node: int, delay_ms: int, rate_kbit: int) -> None:
        """Slow every link of ``node``: netem delay if the kernel has it, else a rate limit."""
        if self.netem:
            spec = ["netem", "delay", f"{delay_ms}ms", f"{max(1, delay_ms // 4)}ms"]
        else:
            spec = ["tbf", "rate", f"{rate_kbit}kbit", "burst", "4kb", "latency", "2s"]
        _run(["tc", "-n", self.hub, "qdisc", "replace", "dev", f"v{node}", "root", *spec])
        _run(["tc", "-n", self.node_ns(node), "qdisc", "replace", "dev", "eth0", "root", *spec])
        self.shaped[fault_id] = node

    def clear(self, fault_id: str) -> None:
        """Undo one fault's rules or shaping."""
        if self.rules.pop(fault_id, None) is not None:
            self._render_rules()
        node = self.shaped.pop(fault_id, None)
        if node is not None:
            for ns, dev in ((self.hub, f"v{node}"), (self.node_ns(node), "eth0")):
                subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"],
                               capture_output=True)

    def clear_all(self) -> None:
        for fault_id in list(self.rules) + list(self.shaped):
            self.clear(fault_id)

    def _set_rules(self, fault_id: str, rules: list[str]) -> None:
        self.rules[fault_id] = rules
        self._render_rules()

    def _render_rules(self) -> None:
        """Replace the chain's rules with every active fault's, in one nft transaction."""
        script = [f"flush chain bridge {NFT_TABLE} {NFT_CHAIN}"]
        for rules in self.rules.values():
            script += [f"add rule bridge {NFT_TABLE} {NFT_CHAIN} {rule}" for rule in rules]
        self._nft("\n".join(script) + "\n")

    def _nft(self, script: str) -> None:
        _run(["ip", "netns", "exec", self.hub, "nft", "-f", "-"], stdin=script)


# --------------------------------------------------------------------------- supervisor


class NetnsSupervisor(sup.Supervisor):
    """The ordinary supervisor, with node ``i`` run in its namespace at its own address.

    It runs in the hub namespace itself, so its readiness probes reach the nodes.
    Node ``i`` (1-based, those added later too) runs in namespace ``NS_PREFIX + i``
    at ``SUBNET.i``; an added node's namespace must exist first (``Lab.add_host``).
    """

    def __init__(self, data_dir: Path, nodes: int, ns_prefix: str, subnet: str,
                 base_port: int, node_flags: list[str]) -> None:
        super().__init__(data_dir, nodes, base_port, node_flags)
        self.ns_prefix = ns_prefix
        self.subnet = subnet
        self.nodes = []
        self.by_id = {}
        self._place(nodes)
        self.seeds = [n.address for n in self.nodes[:2]]

    def _place(self, count: int) -> list[str]:
        """Append ``count`` nodes, each on its own host; their ids."""
        first = len(self.nodes)
        seeds = [n.address for n in self.nodes if n.popen is not None][:3]
        added = []
        for i in range(first, first + count):
            node_id = f"node-{i + 1}"
            port = sup.node_port(self.base_port, i)
            host = f"{self.subnet}.{i + 1}"
            node = sup.ManagedNode(node_id, port, self.data_dir / node_id,
                                   seeds or [node_address(f"{self.subnet}.1",
                                                          sup.node_port(self.base_port, 0))],
                                   host)
            self.nodes.append(node)
            self.by_id[node_id] = node
            added.append(node_id)
        return added

    def add_nodes(self, count: object) -> dict:
        """``cluster add`` in the lab: the next hosts, whose namespaces the lab made."""
        if type(count) is not int or count < 1:
            return {"ok": False, "code": 2, "error": "add: the count must be at least 1"}
        first = len(self.nodes) + 1
        missing = [i for i in range(first, first + count)
                   if not (NETNS_DIR / f"{self.ns_prefix}{i}").exists()]
        if missing:
            return {"ok": False, "code": 2, "error": f"add: no namespace for host {missing[0]} "
                                                     "(Lab.add_host makes it)"}
        ids = self._place(count)
        for node_id in ids:
            node = self.by_id[node_id]
            node.data_dir.mkdir(parents=True, exist_ok=True)
            self._spawn(node)
        self._say(f"added {', '.join(ids)}; joining through {', '.join(node.seeds)}")
        self._write_state()
        return {"ok": True, "ids": ids, "addresses": [self.by_id[i].address for i in ids]}

    def node_command(self, node: sup.ManagedNode) -> list[str]:
        index = self.nodes.index(node) + 1
        return ["ip", "netns", "exec", f"{self.ns_prefix}{index}", *super().node_command(node)]


def supervisor_command(lab: Lab, data_dir: Path, base_port: int,
                       node_flags: list[str]) -> list[str]:
    """The command that runs a NetnsSupervisor for ``lab`` inside its hub namespace."""
    return ["ip", "netns", "exec", lab.hub, sys.executable, "-m", "zkv.chaos.netns",
            "--data-dir", str(data_dir), "--base-port", str(base_port),
            "--nodes", str(lab.nodes), "--ns-prefix", lab.node_ns_prefix,
            "--subnet", lab.subnet, "--", *node_flags]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zkv.chaos.netns",
                                description="Supervise nodes that each run in a namespace.")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--ns-prefix", required=True, help="node i runs in namespace PREFIX<i>")
    p.add_argument("--subnet", required=True, help="node i runs at SUBNET.<i>")
    p.add_argument("node_flags", nargs="*")
    args = p.parse_args(argv)
    supervisor = NetnsSupervisor(args.data_dir, args.nodes, args.ns_prefix, args.subnet,
                                 args.base_port, args.node_flags)
    try:
        return supervisor.run()
    except sup.ControlError as exc:
        print(f"zkv: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
