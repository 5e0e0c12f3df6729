"""vmcorepack: write kdump-compressed crash dumps the way makedumpfile does."""

from __future__ import annotations

import os

# numpy's bundled OpenBLAS starts a spinning thread per CPU at import; nothing
# here does linear algebra, and in perf those threads took 0.11 s of CPU from
# the page workers of a 4 GiB run.  Only a default: the caller's setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
