"""``python -m cli``: the ``imagine`` command."""

from cli.main import main

raise SystemExit(main())
