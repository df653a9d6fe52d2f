"""``python -m ddformat``: the same command line as the ``ddformat`` script."""

from .cli import main

raise SystemExit(main())
