"""A local cluster: N node processes on 127.0.0.1, kept running, controlled from the CLI.

One concept per module, lowest first:

- ``zkv.cluster_dir`` (outside the package, since the client reads it too): the
  cluster directory's files (``cluster.json``, the lock, the control directory)
  and how to read them; ``ControlError``.
- ``zkv.probe`` (outside the package, below it): the health probe (is a node
  serving, and what ring does it see).
- ``ports``: the port layout (three ports per node from a base port).
- ``processes``: signalling and reaping processes by pid and create time, so
  that nobody ever signals a recycled pid.
- ``control``: what other processes do to a running cluster (control requests,
  ``cluster down``, kill a node, start a supervisor in the background).
- ``daemon``: the supervisor itself (``Supervisor``, ``ManagedNode``).

The names other code uses are importable from the package itself.
"""

from zkv.cluster_dir import (
    CLUSTER_FILE,
    CONTROL_DIR,
    LOCK_FILE,
    LOG_FILE,
    NODE_LOG,
    ControlError,
    cluster_connection,
    cluster_curve,
    find_node,
    program_name,
    read_cluster,
    recorded_layout,
    require_cluster,
    supervisor_running,
)
from zkv.jsonfile import write_json_atomic
from zkv.probe import probe_ring
from zkv.supervisor.control import kill_node, send_request, start_detached, stop_cluster
from zkv.supervisor.daemon import BACKOFF_FIRST, ManagedNode, Supervisor
from zkv.supervisor.ports import (
    DEFAULT_BASE_PORT,
    DEFAULT_NODES,
    HOST,
    PORTS_PER_NODE,
    check_layout,
    free_base_port,
    node_port,
    ports_in_use,
)
from zkv.supervisor.processes import (
    STOP_TIMEOUT,
    last_log_line,
    live_process,
    parent_death_signal,
    stop_popen,
    terminate_all,
)

__all__ = [
    "BACKOFF_FIRST", "CLUSTER_FILE", "CONTROL_DIR", "DEFAULT_BASE_PORT", "DEFAULT_NODES",
    "HOST", "LOCK_FILE", "LOG_FILE", "NODE_LOG", "PORTS_PER_NODE", "STOP_TIMEOUT",
    "ControlError", "ManagedNode",
    "Supervisor", "check_layout", "cluster_connection", "cluster_curve", "find_node",
    "free_base_port", "kill_node", "last_log_line", "live_process", "node_port",
    "parent_death_signal", "ports_in_use", "probe_ring", "program_name", "read_cluster",
    "recorded_layout", "require_cluster", "send_request", "start_detached", "stop_cluster",
    "stop_popen", "supervisor_running", "terminate_all", "write_json_atomic",
]
