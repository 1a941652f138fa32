"""Exit codes of ``zkv node start`` that its supervisors (ours, systemd) act on."""

EXIT_BAD_CONFIG = 2  # restarting cannot help: fix the config
# The data directory was decommissioned (its data moved to other nodes and the node left
# the cluster): neither the supervisor nor systemd restarts it.
EXIT_DECOMMISSIONED = 3
