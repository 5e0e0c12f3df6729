"""Reading the crashed kernel's own data structures out of the dump (x86_64)."""

from __future__ import annotations
