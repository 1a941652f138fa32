"""``python -m zkv``: the same as the ``zkv`` command."""

from zkv.cli import main

main()
