"""python -m autotune: the yat-autotune command line."""

from autotune.cli import main

raise SystemExit(main())
