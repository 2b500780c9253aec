"""``python -m app.cli``: the same as the ``hookline`` command."""

from app.cli.main import main

raise SystemExit(main())
