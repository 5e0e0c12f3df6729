"""On-disk formats: ELF cores, kdump-compressed files, flattened streams (pure bytes)."""

from __future__ import annotations
