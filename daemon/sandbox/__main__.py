"""``python -m daemon.sandbox``."""

from daemon.sandbox import main

raise SystemExit(main())
