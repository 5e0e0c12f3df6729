"""``python -m vmcorepack``."""

from __future__ import annotations

from vmcorepack.launch import main

raise SystemExit(main())
