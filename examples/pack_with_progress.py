"""Pack a vmcore through the library, with a progress callback and the page report.

Usage: python examples/pack_with_progress.py VMCORE DUMPFILE [LEVEL] [CODEC]
"""

from __future__ import annotations

import sys

from vmcorepack.pipeline import PackOptions, pack
from vmcorepack.sources import open_elf


def main() -> int:
    """Pack argv[1] into argv[2] and print the summary."""
    vmcore, dumpfile = sys.argv[1], sys.argv[2]
    level = int(sys.argv[3]) if len(sys.argv) > 3 else 31
    codec = sys.argv[4] if len(sys.argv) > 4 else "lzo"

    def progress(done: int, total: int) -> None:
        # The library never prints: the caller decides how progress looks.
        sys.stderr.write(f"\r{done}/{total} pages")

    with open_elf(vmcore) as src:
        res = pack(src, dumpfile, PackOptions(dump_level=level, codec=codec, workers=2, progress=progress))
    sys.stderr.write("\n")
    c = res.counts
    print(f"kept {res.dumpable} of {res.ram_pages} RAM pages; {res.zero_pages} zero, {res.compressed_pages} compressed")
    print(f"excluded: cache {c.cache}, private cache {c.cache_private}, user {c.user}, free {c.free}")
    print(f"{res.file_size} bytes in {res.seconds:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
