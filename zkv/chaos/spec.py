"""What a chaos run is asked to do (``ChaosOptions``), and the same resolved against
the machine and the cluster (``ChaosSpec``): the seed drawn, the network and the
fault kinds the set-up allows, and where the output goes."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from zkv.chaos import netns
from zkv.chaos.nemesis import DEFAULT_KINDS, FAULT_KINDS, MEMBERSHIP_FAULTS, NETWORK_FAULTS

# Quick failure detection; t_remove stays above the longest fault (see nemesis.py).
FAST_TIMERS = ("--gossip-interval", "0.1", "--t-fail", "1", "--t-remove", "8")


class ChaosError(Exception):
    """The run could not be carried out (bad options, no cluster); not a verdict."""


@dataclass
class ChaosOptions:
    duration: float = 60.0
    nodes: int | None = None  # start a cluster of this many nodes; None: attach to data_dir
    data_dir: Path | None = None  # attach: the cluster's directory; own: where to put it
    out: Path | None = None  # history, faults and summary (default: zkv-chaos/RUN)
    clients: int = 4
    keys: int = 6  # keys in use at any moment
    conditional: float = 0.3  # share of the would-be puts done as create/update/cas
    counter_workers: int = 2  # processes incrementing the CAS counter (0: no counter)
    key_lifetime: float = 20.0  # seconds before a key's slot moves to a fresh key
    max_down: int = 2
    # None: kill, pause and (in a lab) the network faults; every kind (FAULT_KINDS)
    # means every kind the set-up allows (membership faults only on an own cluster)
    kinds: tuple[str, ...] | None = None
    network: str = "auto"  # auto | netns | loopback (netns only for a cluster it starts)
    seed: int | None = None
    timeout: float = 1.0  # client timeout per op
    settle_timeout: float = 60.0
    node_flags: tuple[str, ...] = FAST_TIMERS
    subnet: str = netns.DEFAULT_SUBNET
    keep: bool = False  # keep an own cluster's directory even when the run passes
    progress: bool = True


@dataclass(frozen=True)
class ChaosSpec:
    """One run's options resolved: everything it does is decided here, before any
    process starts (the seed replays the workload and the fault schedule)."""

    options: ChaosOptions
    seed: int
    own: bool  # a cluster this run starts (and ends), not one it attaches to
    network: str  # netns | loopback
    kinds: tuple[str, ...]  # the fault kinds the nemesis injects
    out: Path
    notes: tuple[str, ...] = ()  # what the set-up could not do, for the report


def resolve(opts: ChaosOptions) -> ChaosSpec:
    """``opts`` checked and resolved; ChaosError when they cannot be carried out."""
    if opts.duration <= 0 or opts.clients < 1 or opts.keys < 1 or opts.max_down < 1:
        raise ChaosError("duration, clients, keys and max_down must be positive")
    if not 0.0 <= opts.conditional <= 1.0:
        raise ChaosError("the conditional share must be between 0 and 1")
    if opts.counter_workers < 0:
        raise ChaosError("counter workers must not be negative")
    seed = opts.seed if opts.seed is not None else secrets.randbelow(2**31)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{seed}"
    own = opts.nodes is not None
    network = _network(opts, own)
    kinds = _kinds(opts, network, own)
    out = Path(opts.out) if opts.out else (
        Path("zkv-chaos") / run_id if own else Path(opts.data_dir or "zkv-data") / "chaos" / run_id)
    notes = []
    if network == "loopback" and set(FAULT_KINDS) - set(kinds) >= set(NETWORK_FAULTS):
        reason = netns.support() if own else "the cluster was not started by zkv chaos"
        notes.append(f"network faults off: nodes share 127.0.0.1 ({reason or 'loopback'})")
    return ChaosSpec(opts, seed, own, network, kinds, out, tuple(notes))


def _network(opts: ChaosOptions, own: bool) -> str:
    if opts.network not in ("auto", "netns", "loopback"):
        raise ChaosError(f"network must be auto, netns or loopback, not {opts.network!r}")
    if opts.network == "loopback":
        return "loopback"
    if not own:
        if opts.network == "netns":
            raise ChaosError("--netns needs a cluster that zkv chaos starts itself (--nodes N)")
        return "loopback"
    reason = netns.support()
    if reason is None:
        return "netns"
    if opts.network == "netns":
        raise ChaosError(f"cannot use network namespaces: {reason}")
    return "loopback"


def _kinds(opts: ChaosOptions, network: str, own: bool) -> tuple[str, ...]:
    if opts.kinds is None or set(opts.kinds) == set(FAULT_KINDS):
        allowed = DEFAULT_KINDS if opts.kinds is None else FAULT_KINDS
        # Membership faults change an attached cluster for good: only when named.
        return tuple(k for k in allowed if (network == "netns" or k not in NETWORK_FAULTS)
                     and (own or k not in MEMBERSHIP_FAULTS))
    if network != "netns":
        wanted = [k for k in opts.kinds if k in NETWORK_FAULTS]
        if wanted:
            raise ChaosError(f"{wanted[0]} faults need the nodes in network namespaces "
                             "(a cluster started by zkv chaos, as root, with ip/nft/tc)")
    return tuple(opts.kinds)
