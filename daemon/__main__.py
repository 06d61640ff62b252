"""``python -m daemon`` is ``mapillaryd``."""

from daemon.cli import main

raise SystemExit(main())
