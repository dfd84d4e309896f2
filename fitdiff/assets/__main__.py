"""``python -m fitdiff.assets``: see :mod:`fitdiff.assets.cli`."""

from fitdiff.assets.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
