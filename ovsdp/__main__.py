"""``python -m ovsdp``: the same as the ``ovsdp`` command."""

from .cli import main

raise SystemExit(main())
