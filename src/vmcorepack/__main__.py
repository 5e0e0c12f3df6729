"""``python -m vmcorepack``."""

from __future__ import annotations

from vmcorepack.cli import main

raise SystemExit(main())
