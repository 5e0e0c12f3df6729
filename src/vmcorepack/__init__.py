"""vmcorepack: write kdump-compressed crash dumps the way makedumpfile does."""

from __future__ import annotations

__version__ = "0.1.0"
