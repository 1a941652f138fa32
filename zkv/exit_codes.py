"""Exit codes of ``zkv node start`` that its supervisors (ours, systemd) act on."""

EXIT_BAD_CONFIG = 2  # restarting cannot help: fix the config
# The data directory was decommissioned (its data moved to other nodes and the node left
# the cluster): neither the supervisor nor systemd restarts it.
EXIT_DECOMMISSIONED = 3
# A turn's writes were lost (the store full) and the store had no room to restart the node
# on it (``zkv.core.turn``); restarting with back-off is right, as space may be freed.
EXIT_HALTED = 4
