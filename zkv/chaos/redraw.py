"""``python -m zkv.chaos.redraw RUN_DIR``: draw a finished chaos run's report again
(``zkv.chaos.plots.report_from_dir``), e.g. after the plots changed. A module of
its own, so that ``-m`` runs a module the package has not imported already."""

from __future__ import annotations

import sys
from pathlib import Path

from zkv.chaos.plots import report_from_dir


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m zkv.chaos.redraw RUN_DIR", file=sys.stderr)
        return 2
    print(report_from_dir(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
