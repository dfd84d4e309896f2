"""``python -m fitdiff.quickstart [...]`` runs the pipeline; ``python -m fitdiff.quickstart tables [...]`` the full tables."""

import sys

from fitdiff.quickstart.cli import main, tables_main

if __name__ == "__main__":
    if sys.argv[1:2] == ["tables"]:
        raise SystemExit(tables_main(sys.argv[2:]))
    raise SystemExit(main(sys.argv[1:]))
