"""The ``vmcorepack-mkfixture`` command: generate a synthetic vmcore, optionally pack it.

One command gives a matched (source, dump) pair::

    vmcorepack-mkfixture --size 4G --mix cache=0.1,anon=0.1,buddy=0.3 img.elf --pack 31 --codec zlib img.kdump

Only this module parses arguments and prints; the work is in
:mod:`vmcorepack.fixtures`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence

from vmcorepack import codecs, fixtures
from vmcorepack.errors import UsageError, VmcorepackError

EXIT_OK = 0
EXIT_FAILURE = 1


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    p = argparse.ArgumentParser(
        prog="vmcorepack-mkfixture",
        description="Generate a synthetic x86_64 or arm64 vmcore (ELF or raw) with a known page mix.",
    )
    p.add_argument("image", metavar="IMAGE", help="output image (raw images also get IMAGE.vmcoreinfo)")
    p.add_argument("dumpfile", metavar="DUMPFILE", nargs="?", help="kdump file to write with --pack")
    p.add_argument(
        "--size",
        default="64M",
        help="x86_64: physical address span; arm64: RAM from 0x40000000; K/M/G/T suffix (default 64M)",
    )
    p.add_argument("--arch", choices=sorted(fixtures.ARCH_PAGE_SIZES), default="x86_64", help="architecture")
    p.add_argument(
        "--page-size",
        default="4K",
        help="page size: 4K (x86_64, arm64), 16K or 64K (arm64)",
    )
    p.add_argument("--va-bits", type=int, default=48, help="arm64 VA_BITS (default 48)")
    p.add_argument(
        "--mix",
        default=None,
        help="page kinds: kind=fraction (with a dot) or kind=count, comma separated; the rest is zero pages "
        f"(kinds: {', '.join(k.name.lower() for k in fixtures.MIX_KINDS)})",
    )
    p.add_argument("--levels", type=int, choices=(4, 5), default=4, help="x86_64 paging levels (default 4)")
    p.add_argument(
        "--generation",
        choices=sorted(fixtures.PROFILES),
        default="6.1",
        help="struct page encoding: 6.1 (PG_slab, buddy -129) or 6.12 (page types << 24)",
    )
    p.add_argument("--format", dest="fmt", choices=("elf", "raw"), default="elf", help="output format")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--holes", default=None, help="memory holes START-END[,...] (hex or decimal); 'none' for none")
    p.add_argument("--no-kernel-text-alias", action="store_true", help="omit the kernel-text PT_LOAD")
    p.add_argument("--no-kaslr", action="store_true", help="fixed kernel, direct-map and vmemmap bases")
    p.add_argument("--no-gbpages", action="store_true", help="map the direct map without 1 GiB pages")
    p.add_argument("--cpus", type=int, default=2, help="number of NT_PRSTATUS notes (default 2)")
    p.add_argument("--zeroed", type=float, default=0.02, help="fraction of non-zero kinds with zero content")
    p.add_argument("--free-zeroed", action="store_true", help="free (buddy) pages have zero content")
    p.add_argument("--osrelease", default=None, help="OSRELEASE override")
    p.add_argument("--truth", default=None, metavar="FILE", help="save the per-pfn ground truth (.npz)")
    p.add_argument("--pack", type=int, default=None, metavar="LEVEL", help="also pack IMAGE into DUMPFILE")
    p.add_argument("--codec", default="none", help="codec for --pack (none, zlib, lzo, snappy, zstd)")
    p.add_argument("--workers", type=int, default=0, help="worker processes for --pack (default 0)")
    p.add_argument("-f", dest="force", action="store_true", help="overwrite existing files")
    p.add_argument("-D", dest="debug", action="store_true", help="show tracebacks")
    return p


def _parse_holes(text: str | None) -> tuple[tuple[int, int], ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    holes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, sep, b = part.partition("-")
        try:
            holes.append((int(a, 0), int(b, 0)))
        except ValueError as e:
            raise UsageError(f"invalid hole {part!r} (expected START-END)") from e
        if not sep:
            raise UsageError(f"invalid hole {part!r} (expected START-END)")
    return tuple(holes)


def run(args: argparse.Namespace) -> int:
    """Execute parsed arguments.

    Args:
        args: Parsed options.

    Returns:
        Exit status.
    """
    if args.pack is not None and not args.dumpfile:
        raise UsageError("--pack needs a DUMPFILE argument")
    if args.dumpfile and args.pack is None:
        raise UsageError("DUMPFILE given without --pack LEVEL")
    if args.pack is not None and not 0 <= args.pack <= 31:
        raise UsageError(f"dump level {args.pack} is out of range 0-31")
    if args.pack is not None:
        codecs.get_codec(args.codec)  # a missing codec fails before the image is written
    if not args.force and os.path.lexists(args.image):
        raise UsageError(f"{args.image} already exists (use -f to overwrite)")
    spec = fixtures.FixtureSpec(
        size_bytes=fixtures.parse_size(args.size),
        paging_levels=args.levels,
        generation=args.generation,
        mix=fixtures.parse_mix(args.mix) if args.mix is not None else None,
        seed=args.seed,
        holes=_parse_holes(args.holes),
        kernel_text_alias=not args.no_kernel_text_alias,
        fmt=args.fmt,
        kaslr=not args.no_kaslr,
        gbpages=not args.no_gbpages,
        nr_cpus=args.cpus,
        zeroed_fraction=args.zeroed,
        free_zeroed=args.free_zeroed,
        osrelease=args.osrelease,
        arch=args.arch,
        page_size=fixtures.parse_size(args.page_size),
        va_bits=args.va_bits,
    )
    t0 = time.monotonic()
    img = fixtures.build(spec, args.image)
    out = sys.stdout
    out.write(f"{img.path}: {spec.fmt}, {spec.size_bytes} bytes span, {time.monotonic() - t0:.2f} s\n")
    if img.vmcoreinfo_path is not None:
        out.write(f"VMCOREINFO: {img.vmcoreinfo_path} (vmcorepack --raw -i {img.vmcoreinfo_path} ...)\n")
    for kind in fixtures.PageKind:
        n = img.count(kind)
        if n:
            out.write(f"  {kind.name.lower():14s} {n:12d}\n")
    if args.truth:
        img.save_truth(args.truth)
        out.write(f"ground truth: {args.truth}\n")
    if args.pack is not None:
        t1 = time.monotonic()
        res = fixtures.pack_image(img, args.dumpfile, args.pack, args.codec, args.workers, args.force)
        expected = int(img.expected_second_bitmap(args.pack).sum())
        out.write(
            f"{args.dumpfile}: level {args.pack}, {args.codec}, {res.dumpable} pages "
            f"(expected {expected}), {res.file_size} bytes, {time.monotonic() - t1:.2f} s\n"
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    args = build_parser().parse_intermixed_args(argv)
    try:
        return run(args)
    except VmcorepackError as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"vmcorepack-mkfixture: {e}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("vmcorepack-mkfixture: interrupted\n")
        return EXIT_FAILURE
