"""`python -m server.cli …` is `tessera-server …` (the supervisor starts its workers so)."""

from server.cli.server import main

raise SystemExit(main())
