"""The ``vmcorepack`` command: makedumpfile's command line, plus our raw-image mode.

Only this module prints, parses arguments, draws progress bars or exits.
Library errors become one line ``vmcorepack: FILE: what (at offset 0x…)`` and
exit status 1; ``-D`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from vmcorepack import __version__, codecs, erase, pipeline, sources, streams, sysmem, userfilter, writer
from vmcorepack.constants import DISKDUMP_SIGNATURE, KDUMP_SIGNATURE, MAX_DUMP_LEVEL
from vmcorepack.erase import ErasePlan
from vmcorepack.errors import FilterError, IncompleteDumpError, OutputError, UsageError, VmcorepackError
from vmcorepack.formats import flat
from vmcorepack.kernel import arch, program

if TYPE_CHECKING:
    from vmcorepack import info as dumpinfo
    from vmcorepack import verify as dumpverify

EXIT_OK = 0
EXIT_FAILURE = 1
#: ``--verify``: the dump is complete and every page equals the source's.
EXIT_VERIFY_OK = EXIT_OK
#: ``--verify``: a mismatch or a damaged dump (or any failure to run).
EXIT_VERIFY_FAILED = EXIT_FAILURE
#: ``--verify``: every page the dump holds is right, but it is incomplete (cut by
#: -L, a full disk or a kill): usable, not whole.  2 is free for this since usage
#: errors exit with 1 (cli._Parser).
EXIT_VERIFY_INCOMPLETE = 2

# makedumpfile --message-level bits.
ML_PROGRESS = 1
ML_COMMON = 2
ML_ERROR = 4
ML_DEBUG = 8
ML_REPORT = 16


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with the width worked out here.

    Left to itself, argparse imports shutil to ask for the terminal width,
    and shutil imports bz2, lzma and fnmatch, since argparse builds a
    formatter for each ``add_argument``: ``build_parser()`` took a median
    7.4 ms with that and 3.7 ms without (``benchmarks/imports.py --against``).
    The width is found as shutil would: $COLUMNS, else the terminal on
    stdout, else 80.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


@functools.cache
def _columns() -> int:
    return _terminal_width(sys.__stdout__) or 80


def _terminal_width(stream: TextIO | None) -> int:
    """Columns as shutil finds them: $COLUMNS, else the terminal on ``stream``; 0 when neither says.

    A zero, negative or unparsable value falls through: a serial console and
    a terminal under ``script`` report 0 columns.
    """
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(stream.fileno()).columns if stream else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return max(columns, 0)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`UsageError`: one line, exit status 1, as for every failure.

    argparse itself prints the whole usage (a dozen lines) and exits with 2.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (vmcorepack -h lists the options)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (makedumpfile's option names)."""
    p = _Parser(
        prog="vmcorepack",
        formatter_class=_HelpFormatter,
        description="Write kdump-compressed dumps (makedumpfile-compatible) from ELF vmcores and raw images.",
        epilog=(
            "forms: vmcorepack [-c|-l|-p|-z] [-d LEVEL] VMCORE DUMPFILE; "
            "vmcorepack -F [options] VMCORE > STREAM; vmcorepack -R DUMPFILE < STREAM. "
            "Exit status: 0 success, 1 failure (one line on stderr); "
            "--verify also 2 when the dump is sound but incomplete."
        ),
    )
    comp = p.add_mutually_exclusive_group()
    for c in codecs.CODECS.values():
        if c.option:
            comp.add_argument(c.option, dest="codec", action="store_const", const=c.name, help=c.help)
    fast = codecs.FAST_ZLIB
    p.add_argument(fast.option, dest="fast_zlib", action="store_true", help=fast.help)
    p.add_argument("-d", dest="dump_level", default="0", metavar="LEVEL", help="dump level 0-31 (default 0)")
    p.add_argument("-f", dest="force", action="store_true", help="overwrite an existing DUMPFILE")
    p.add_argument("-L", dest="limit", type=parse_size, default=None, metavar="SIZE", help="cap the output size")
    p.add_argument("-F", dest="flat", action="store_true", help="write a flattened stream to stdout")
    p.add_argument(
        "-R", dest="rearrange", action="store_true", help="rebuild DUMPFILE from a flattened stream on stdin"
    )
    p.add_argument("--split", action="store_true", help="write VMCORE as DUMPFILE1 DUMPFILE2 ... (split parts)")
    p.add_argument("--reassemble", action="store_true", help="merge split parts DUMPFILE1 ... into DUMPFILE")
    p.add_argument(
        "--splitblock-size", type=int, default=None, metavar="KiB", help="split balancing granularity (default 1 GiB)"
    )
    p.add_argument("-i", dest="vmcoreinfo", metavar="VMCOREINFO", help="take VMCOREINFO from this text file")
    p.add_argument("--raw", action="store_true", help="VMCORE is a raw physical-memory image")
    p.add_argument(
        "--phys-start",
        type=lambda s: int(s, 0),
        default=0,
        metavar="ADDR",
        help="physical address of a raw image's first byte",
    )
    p.add_argument("--page-size", type=int, default=None, help="page size of a raw image without VMCOREINFO")
    p.add_argument("--message-level", type=int, default=7, metavar="N", help="makedumpfile message bits (default 7)")
    p.add_argument("--show-stats", action="store_true", help="print the page-count report")
    p.add_argument("--dry-run", action="store_true", help="do everything but write the dump")
    p.add_argument(
        "--num-threads", type=int, default=None, metavar="N", help="worker processes (makedumpfile spelling)"
    )
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: online CPUs)")
    p.add_argument(
        "--dedup",
        action="store_true",
        help="pages equal to an earlier page of the same chunk share its data (smaller file; not makedumpfile's bytes)",
    )
    p.add_argument("--cyclic-buffer", type=int, default=None, metavar="KiB", help="bitmap buffer per cycle, KiB")
    p.add_argument("--non-mmap", action="store_true", help="read the input with read() only")
    p.add_argument(
        "--mmap",
        action="store_true",
        help="read through mmap windows (default: mmap for scattered pages of regular files, read() for /proc/vmcore)",
    )
    p.add_argument(
        "-b", dest="block_order", type=int, default=None, help="accepted for compatibility (write cache order)"
    )
    p.add_argument("--work-dir", default=None, help="accepted for compatibility (bitmaps stay in memory)")
    p.add_argument("--check-params", action="store_true", help="only check the command line")
    p.add_argument("-D", dest="debug", action="store_true", help="debug output and tracebacks")
    p.add_argument("-v", dest="version", action="store_true", help="print the version")
    p.add_argument(
        "-x", dest="vmlinux", default=None, help="with --config: take symbols and types from VMLINUX's DWARF (drgn)"
    )
    p.add_argument(
        "--config",
        dest="filter_config",
        metavar="FILE",
        default=None,
        help="erase data as makedumpfile.conf(5) FILE says (types from the dump's BTF, or -x VMLINUX)",
    )
    p.add_argument(
        "--filter",
        dest="filters",
        metavar="FILE.py",
        action="append",
        default=[],
        help="run a Python filter (erase data, keep or drop pages; README: Filters); repeatable",
    )
    p.add_argument("-g", dest="gen_vmcoreinfo", default=None, help="not supported: needs a vmlinux")
    p.add_argument("--dump-dmesg", action="store_true", help="write the kernel log of VMCORE to LOGFILE")
    p.add_argument("--partial-dmesg", action="store_true", help="with --dump-dmesg: only since the last dmesg -C")
    p.add_argument("-E", dest="elf", action="store_true", help="write an ELF core (no compression) instead")
    p.add_argument("--info", action="store_true", help="describe DUMPFILE (or all its split parts)")
    p.add_argument("--json", action="store_true", help="with --info: print JSON")
    p.add_argument("--plot", metavar="PNG", default=None, help="with --info: draw physical memory by page kind")
    p.add_argument(
        "--source",
        metavar="VMCORE",
        default=None,
        help="with --plot: tell kept and excluded pages apart (kernel, page cache, user, free)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="compare DUMPFILE... with its source: --verify DUMP SOURCE; exit status 0 complete and equal, "
        "1 a mismatch or error, 2 incomplete (every page it holds is equal, some were never written)",
    )
    p.add_argument(
        "--stream-codec", choices=streams.WRITE_CODECS, default=None, help="with -F: compress the stream (lz4, zstd)"
    )
    p.add_argument("files", nargs="*", metavar="FILE")
    return p


def parse_size(text: str) -> int:
    """Parse a size with an optional K/M/G/T suffix (makedumpfile's memparse).

    Args:
        text: For example ``512M``.

    Returns:
        Bytes.
    """
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip()
    try:
        if t and t[-1].lower() in mult:
            return int(t[:-1], 0) * mult[t[-1].lower()]
        return int(t, 0)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}") from e


def parse_level(text: str) -> list[int]:
    """Parse ``-d`` (a level or a comma list of fallback levels).

    Args:
        text: The option value.

    Returns:
        The levels.

    Raises:
        UsageError: Not integers in 0-31.
    """
    levels = []
    for part in text.split(","):
        try:
            v = int(part)
        except ValueError as e:
            raise UsageError(f"invalid dump level {part!r}") from e
        if not 0 <= v <= MAX_DUMP_LEVEL:
            raise UsageError(f"dump level {v} is out of range 0-{MAX_DUMP_LEVEL}")
        levels.append(v)
    return levels


def format_report(res: pipeline.PackResult) -> str:
    """Format makedumpfile's ``--show-stats`` report (``print_report``).

    Args:
        res: The run's result.

    Returns:
        The report text.
    """
    c = res.counts
    excluded = c.excluded
    original = res.original_pages
    remaining = original - excluded
    shrink = remaining * 100 // original if original else 0
    lines = [
        f"Original pages  : 0x{original:016x}",
        f"  Excluded pages   : 0x{excluded:016x}",
        f"    Pages filled with zero  : 0x{c.zero:016x}",
        f"    Non-private cache pages : 0x{c.cache:016x}",
        f"    Private cache pages     : 0x{c.cache_private:016x}",
        f"    User process data pages : 0x{c.user:016x}",
        f"    Free pages              : 0x{c.free:016x}",
        f"    Hwpoison pages          : 0x{c.hwpoison:016x}",
        f"    Offline pages           : 0x{c.offline:016x}",
        f"    Extension filter pages  : 0x{c.extension:016x}",
        f"  Remaining pages  : 0x{remaining:016x}",
        f"  (The number of pages is reduced to {shrink}%.)",
        f"Memory Hole     : 0x{res.memory_hole:016x}",
        "--------------------------------------------------",
        f"Total pages     : 0x{res.max_mapnr:016x}",
        f"Write bytes     : {res.file_size}",
    ]
    return "\n".join(lines) + "\n"


class _Progress:
    """Renders the library's progress callback (:class:`pipeline.Progress`).

    On a terminal whose width is known: a tqdm bar per phase.  Anywhere else
    (a pipe, a log, or a terminal reporting 0 columns, as a serial console or
    ``script`` does, where tqdm draws nothing): makedumpfile's lines, as its
    print_progress writes them when it may not return the carriage -- the phase padded
    to 50 columns, then ``[%3u.%u %%]`` of tenths of a percent rounded down --
    at most one a second (its ``time(NULL)`` check), and always the line that
    ends a phase.  makedumpfile's spinner and ETA are left out.
    """

    #: Seconds between two lines (makedumpfile: a change of time(NULL)).
    INTERVAL = 1.0

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.bar: Any = None
        self.phase = ""
        self.ended = False
        self.last = -self.INTERVAL
        self.columns = _terminal_width(stream) if stream.isatty() else 0

    def __call__(self, done: int, total: int, phase: str = pipeline.PHASE_COPY) -> None:
        if not self.enabled:
            return
        if done == 0 or phase != self.phase:
            # A pass starts at 0 (the next --split part copies again).
            self.close()
            self.phase = phase
            self.ended = False
        if self.columns:
            if self.bar is None:
                from tqdm import tqdm

                unit = "page" if phase == pipeline.PHASE_COPY else "pfn"
                # nrows: a terminal of 0 rows (a fresh pty) makes tqdm hide every
                # bar; one bar at position 0 needs no more than a few.
                self.bar = tqdm(
                    total=total, unit=unit, desc=phase, file=self.stream, unit_scale=True, ncols=self.columns, nrows=24
                )
            self.bar.update(done - self.bar.n)
            return
        now = time.monotonic()
        if done >= total:
            if self.ended:
                return
            self.ended = True
        elif now - self.last < self.INTERVAL:
            return
        self.last = now
        permille = done * 1000 // total if done < total else 1000
        self.stream.write(f"{phase:<50}: [{permille // 10:3d}.{permille % 10} %]\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _err(msg: str) -> None:
    sys.stderr.write(f"vmcorepack: {msg}\n")


def _open_source(args: argparse.Namespace, path: str) -> sources.Source:
    """Open an input of any kind and refuse, before anything is written, a machine we cannot walk."""
    source = _open_any(args, path)
    try:
        arch.for_source(source)
    except VmcorepackError:
        source.close()
        raise
    return source


def _open_any(args: argparse.Namespace, path: str) -> sources.Source:
    if args.raw:
        return sources.open_raw(path, args.phys_start, args.page_size, args.vmcoreinfo, _mmap_choice(args))
    sources.check_input(path)
    try:
        with open(path, "rb") as f:
            prefix = f.read(16)
    except OSError:
        prefix = b""
    if prefix[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE) or flat.is_flat_header(prefix) or streams.detect(prefix):
        # An existing dump: re-filter and/or recompress it (makedumpfile's
        # flag_refiltering), the new level OR-ed with the recorded one.
        from vmcorepack import refilter  # kdump inputs only: it loads the reader

        return refilter.KdumpSource(path)
    return sources.open_elf(path, args.vmcoreinfo, _mmap_choice(args))


def _check_outputs(paths: Sequence[str], force: bool) -> None:
    """Refuse unusable output paths before the input is read, as makedumpfile opens its output first."""
    for path in paths:
        writer.check_output_path(path, force)


def _mmap_choice(args: argparse.Namespace) -> bool | None:
    if args.non_mmap:
        return False
    return True if args.mmap else None


def _workers(args: argparse.Namespace) -> int:
    n: int | None = args.workers if args.workers is not None else args.num_threads
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # One CPU (a capture kernel booted with nr_cpus=1): a worker would only
        # add its own memory (26 MiB in-process against 51 MiB with one worker
        # in the QEMU capture kernel of tools/e2e).
        n = n if n > 1 else 0
    if n < 0:
        raise UsageError("the number of workers must be >= 0")
    return _budget_workers(n)


def _budget_workers(n: int) -> int:
    """Ask for no more workers than memory holds: services pass --num-threads=$(nproc) however small the reservation."""
    found = sysmem.available_kib()
    if n == 0 or found is None:
        return n
    avail, where, what = found
    mine = sysmem.meminfo_kib("VmRSS", "/proc/self/status") or 0
    fit = sysmem.workers_that_fit(n, avail, mine)
    if fit < n:
        need = (sysmem.BASE_KIB + n * sysmem.WORKER_KIB - mine) >> 10
        _err(
            f"warning: {where}: {n} workers need about {need} MiB and {avail >> 10} MiB are available "
            f"({what}); using {fit or 'no'} worker{'' if fit == 1 else 's'}"
            + (" (pages compressed in this process)" if fit == 0 else "")
        )
    return fit


def _run_dmesg(args: argparse.Namespace, msg_level: int) -> int:
    """``--dump-dmesg [--partial-dmesg] VMCORE LOGFILE`` (makedumpfile's checks and messages)."""
    from vmcorepack import dmesg  # only this mode needs the log parser

    if not args.dump_dmesg:
        # check_param_for_creating_dumpfile: --partial-dmesg needs --dump-dmesg.
        raise UsageError("--partial-dmesg needs --dump-dmesg")
    if args.dry_run:
        raise UsageError("--dry-run cannot be used with --dump-dmesg")
    if args.flat or args.rearrange or args.raw or len(args.files) != 2:
        raise UsageError("usage: --dump-dmesg [--partial-dmesg] VMCORE LOGFILE")
    if args.check_params:
        return EXIT_OK
    _check_outputs(args.files[1:], args.force)
    with _open_source(args, args.files[0]) as source:
        try:
            log = dmesg.extract(source, partial=args.partial_dmesg)
        except dmesg.CorruptLogError as e:
            # makedumpfile keeps the records before the corruption, then fails.
            _write_log(args.files[1], e.partial, args.force)
            raise
    _write_log(args.files[1], log.text, args.force)
    if msg_level & ML_COMMON:
        sys.stdout.write(f"The dmesg log is saved to {args.files[1]}.\n")
        sys.stdout.write("vmcorepack Completed.\n")
    return EXIT_OK


def _write_log(path: str, text: bytes, force: bool) -> None:
    fd = writer.create_output_file(path, force)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(text)
    except OSError as e:
        raise OutputError(path, f"write failed: {e.strerror}") from e
    finally:
        os.close(fd)


def _run_elf(args: argparse.Namespace, levels: list[int], msg_level: int) -> int:
    """``-E [-d LEVEL] [-F] VMCORE DUMPFILE``: an ELF core, as makedumpfile writes it."""
    from vmcorepack import elfout

    # check_param_for_creating_dumpfile: no compression, threads or --split with -E.
    if args.codec:
        raise UsageError("-E writes uncompressed ELF: it cannot be combined with -c, -l, -p or -z")
    if args.num_threads:
        raise UsageError("--num-threads cannot be used with ELF format (-E)")
    if getattr(args, "split", False):
        raise UsageError("options for splitting the dump cannot be used with ELF format (-E)")
    if getattr(args, "limit", None) is not None:
        raise UsageError("-L is not supported with -E")
    if args.rearrange:
        raise UsageError("-R rebuilds a stream; it takes no -E")
    if args.flat:
        if len(args.files) != 1:
            raise UsageError("-E -F takes exactly one VMCORE (the stream goes to stdout)")
        if sys.stdout.isatty() and not args.dry_run:
            raise UsageError("-F writes a binary stream: redirect stdout to a file or a pipe")
    elif len(args.files) != 2:
        raise UsageError("expected VMCORE DUMPFILE")
    if args.check_params:
        return EXIT_OK
    if not args.flat and not args.dry_run:
        # makedumpfile's --dry-run opens no output.
        _check_outputs(args.files[1:], args.force)
    out_stream = sys.stderr if args.flat else sys.stdout
    prog = _Progress(sys.stderr, bool(msg_level & ML_PROGRESS) and not args.dry_run)
    cycle = args.cyclic_buffer * 1024 * 8 if args.cyclic_buffer else pipeline.DEFAULT_CYCLE_PFNS
    target: str | int = sys.stdout.fileno() if args.flat else args.files[1]
    t0 = time.monotonic()
    with _open_source(args, args.files[0]) as source:
        try:
            res = elfout.pack_elf(
                source,
                target,
                levels[0],
                force=args.force,
                progress=prog if prog.enabled else None,
                flat=args.flat,
                dry_run=args.dry_run,
                cycle_pfns=cycle,
            )
        finally:
            prog.close()
    _summary(out_stream, msg_level, args, res, f"ELF, {res.dumpable} pages of data", t0)
    return EXIT_OK


def _summary(
    out_stream: TextIO, msg_level: int, args: argparse.Namespace, res: pipeline.PackResult, what: str, t0: float
) -> None:
    """Write the closing lines as makedumpfile does: the report (level 16), then where the dump went (level 2)."""
    if msg_level & ML_REPORT:
        out_stream.write(format_report(res))
    if msg_level & ML_COMMON:
        if not args.dry_run:
            where = "stdout" if args.flat else args.files[1]
            out_stream.write(
                f"The dumpfile is saved to {where}: {what}, {res.file_size} bytes, {time.monotonic() - t0:.2f} s.\n"
            )
        out_stream.write("vmcorepack Completed.\n")


def format_version() -> str:
    """Format ``-v`` as makedumpfile's ``print_version()`` does, naming each codec's implementation.

    Returns:
        The version line, one ``NAME<TAB>enabled (how)`` or ``NAME<TAB>disabled (what to install)``
        line per codec, and whether the C extension is loaded.
    """
    from vmcorepack import native

    lines = [f"vmcorepack: version {__version__} (makedumpfile-compatible)"]
    for c in codecs.encoders().values():
        if c.option:
            ok, how = codecs.status(c.name)
            lines.append(f"{c.name}\t{'enabled' if ok else 'disabled'} ({how})")
    if native.module() is not None:
        loops = ", ".join(c.name for c in codecs.encoders().values() if codecs.page_loop(c, 4096) is not None)
        ext = f"loaded (page loops for {loops})"
    elif native.built():
        ext = "built, disabled by VMCOREPACK_NATIVE=0 (Python page loops)"
    else:
        ext = "not built (Python page loops; reinstall with gcc, python3-dev and zlib1g-dev for speed)"
    lines.append(f"C extension\t{ext}")
    return "\n".join(lines) + "\n"


def _filters(args: argparse.Namespace, source: sources.Source) -> tuple[ErasePlan, userfilter.PageDecisions | None]:
    """Resolve ``--config`` and run ``--filter``s against the dump's kallsyms and BTF, or ``-x``'s DWARF."""
    mem = arch.for_source(source).walker(source)
    if args.vmlinux:
        from vmcorepack.kernel import dwarf

        prog = dwarf.program(mem, args.vmlinux, args.files[0])
    else:
        try:
            prog = program.from_dump(mem)
        except LookupError as e:
            raise FilterError(f"{args.filter_config or args.filters[0]}: {e}; give the debug vmlinux with -x") from e
    targets = erase.load(args.filter_config, prog) if args.filter_config else []
    more, pages = userfilter.run(args.filters, prog)
    return erase.ErasePlan(prog, targets + more), pages


def run(args: argparse.Namespace) -> int:
    """Execute parsed arguments.

    Args:
        args: Parsed options.

    Returns:
        Exit status.
    """
    if args.version:
        sys.stdout.write(format_version())
        return EXIT_OK
    if args.gen_vmcoreinfo:
        raise UsageError("-g needs a vmlinux with DWARF: not supported (use the VMCOREINFO note or -i)")
    if args.vmlinux and not (args.filter_config or args.filters):
        raise UsageError("-x is only used with --config or --filter (VMCOREINFO gives everything else)")
    if (args.filter_config or args.filters) and (args.split or args.elf):
        raise UsageError("--config and --filter cannot be used with --split or -E")
    msg_level = args.message_level | (ML_REPORT if args.show_stats else 0)
    levels = parse_level(args.dump_level)
    if args.info or args.verify or args.plot:
        return _run_inspect(args)
    if args.dump_dmesg or args.partial_dmesg:
        return _run_dmesg(args, msg_level)
    if args.elf:
        return _run_elf(args, levels, msg_level)
    if args.rearrange:
        if len(args.files) != 1:
            raise UsageError("-R takes exactly one DUMPFILE (the stream comes on stdin)")
        if args.check_params:
            return EXIT_OK
        from vmcorepack import reader

        size = reader.reassemble_flat(
            streams.open_decompressed(sys.stdin.buffer, "<stdin>")[0], args.files[0], args.force
        )
        if msg_level & ML_COMMON:
            sys.stdout.write(f"The dumpfile is saved to {args.files[0]} ({size} bytes).\n")
        return EXIT_OK
    if args.reassemble:
        if len(args.files) < 3:
            raise UsageError("--reassemble takes DUMPFILE1 DUMPFILE2 ... DUMPFILE")
        if args.check_params:
            return EXIT_OK
        from vmcorepack import split

        size = split.reassemble(args.files[:-1], args.files[-1], args.force)
        if msg_level & ML_COMMON:
            sys.stdout.write(f"The dumpfile is saved to {args.files[-1]} ({size} bytes).\n")
        return EXIT_OK
    if args.split:
        # makedumpfile's check_param_for_creating_dumpfile: --split writes
        # regular files only, and its --num-threads does not combine with it.
        if args.flat:
            raise UsageError("-F cannot be used with --split")
        if args.num_threads is not None:
            raise UsageError("--num-threads cannot be used with --split (use --workers)")
        if len(args.files) < 3:
            raise UsageError("--split takes VMCORE DUMPFILE1 DUMPFILE2 ...")
        if args.splitblock_size is not None and args.splitblock_size <= 0:
            raise UsageError("--splitblock-size must be a positive number of KiB")
    elif args.flat:
        if len(args.files) != 1:
            raise UsageError("-F takes exactly one VMCORE (the stream goes to stdout)")
    elif len(args.files) != 2:
        raise UsageError("expected VMCORE DUMPFILE")
    codec = args.codec or "none"
    if args.fast_zlib:
        if codec != "zlib":
            raise UsageError("--fast-zlib goes with -c (it is another encoder of zlib pages)")
        codec = "fast-zlib"
    codecs.get_codec(codec)
    if args.stream_codec is not None:
        streams.require(args.stream_codec)
    if args.check_params:
        return EXIT_OK
    if not args.flat and not args.dry_run:
        # makedumpfile's --dry-run opens no output.
        _check_outputs(args.files[1:], args.force)
    out_stream = sys.stderr if args.flat else sys.stdout
    source = _open_source(args, args.files[0])
    if source.recorded_level:
        levels = [lv | source.recorded_level for lv in levels]
    cycle = args.cyclic_buffer * 1024 * 8 if args.cyclic_buffer else pipeline.DEFAULT_CYCLE_PFNS
    prog = _Progress(sys.stderr, bool(msg_level & ML_PROGRESS) and not args.dry_run)
    opts = pipeline.PackOptions(
        dump_level=levels[0],
        codec=codec,
        workers=_workers(args),
        flat=args.flat,
        cycle_pfns=cycle,
        dry_run=args.dry_run,
        dedup=args.dedup,
        force=args.force,
        limit=args.limit,
        cyclic_buffer_given=args.cyclic_buffer is not None,
        work_dir=args.work_dir is not None,
        progress=prog if prog.enabled else None,
    )
    if args.filter_config or args.filters:
        opts.erase, opts.pages = _filters(args, source)
    if args.flat and sys.stdout.isatty() and not args.dry_run:
        raise UsageError("-F writes a binary stream: redirect stdout to a file or a pipe")
    target: str | int = sys.stdout.fileno() if args.flat else args.files[1]
    cpipe = _stream_pipe(args)
    target = cpipe.write_fd if cpipe is not None else target
    t0 = time.monotonic()
    if args.split:
        try:
            from vmcorepack import split

            block = args.splitblock_size or split.DEFAULT_SPLITBLOCK_KIB
            parts = split.pack_split(source, args.files[1:], opts, block)
        finally:
            prog.close()
            source.close()
        for part in parts:
            for w in part.warnings:
                _err(f"warning: {w}")
        if msg_level & ML_COMMON:
            for path, part in zip(args.files[1:], parts, strict=True):
                out_stream.write(f"The dumpfile is saved to {path} ({part.file_size} bytes).\n")
            out_stream.write("vmcorepack Completed.\n")
        return EXIT_OK
    try:
        res = _pack_levels(source, target, opts, levels, args, out_stream)
        if cpipe is not None:
            cpipe.finish()
    finally:
        prog.close()
        source.close()
    for w in res.warnings:
        _err(f"warning: {w}")
    if res.unreadable:
        first = ", ".join(f"{p:#x}" for p in sorted(res.unreadable)[:8])
        _err(f"warning: {len(res.unreadable)} pages could not be read from {args.files[0]} and were left out ({first})")
    what = f"{res.dumpable} pages ({res.zero_pages} zero, {res.compressed_pages} compressed, {res.raw_pages} raw)"
    _summary(out_stream, msg_level, args, res, what, t0)
    return EXIT_OK


def _pack_levels(
    source: sources.Source,
    target: str | int,
    opts: pipeline.PackOptions,
    levels: list[int],
    args: argparse.Namespace,
    msg: TextIO,
) -> pipeline.PackResult:
    """Pack at the first level; after ENOSPC or -L, retry at the next (makedumpfile ``-d DL1,DL2``)."""
    for i, level in enumerate(levels):
        opts.dump_level = level
        try:
            return pipeline.pack(source, target, opts)
        except IncompleteDumpError as e:
            if not e.disk_full or i + 1 == len(levels) or not isinstance(target, str):
                raise
            msg.write(f"vmcorepack: {e}; retrying at dump level {levels[i + 1]}\n")
            os.unlink(target)
            opts.force = True
    raise AssertionError("unreachable")


def _on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM ends the run like ^C: workers stop, the dump is marked incomplete.
    raise KeyboardInterrupt


def _stream_pipe(args: argparse.Namespace) -> streams.CompressingPipe | None:
    """With ``-F --stream-codec``: a pipe compressed by a thread of this process into stdout.

    The workers keep writing stream records in turn, now into the pipe, so one
    compressor sees them in order (see streams.CompressingPipe).
    """
    if args.stream_codec is None:
        return None
    if not args.flat:
        raise UsageError("--stream-codec needs -F (it compresses the flattened stream)")
    if args.dry_run:
        return None
    return streams.CompressingPipe(args.stream_codec, sys.stdout.fileno())


def format_info(info: dumpinfo.DumpInfo) -> str:
    """Format ``--info`` as text.

    Args:
        info: The description.

    Returns:
        The report.
    """
    h = info.header
    p = info.pages
    bs = h.block_size
    kept_bytes = (p.kept + p.zero) * bs
    status = [codecs.codec_for_flags(h.status).name if h.status & codecs.CODEC_FLAGS else "raw"]
    if info.incomplete:
        status.append("INCOMPLETE")
    lines = [f"File            : {part.path} ({part.container}, {part.size} bytes)" for part in info.parts]
    lines += [
        f"Signature       : {h.signature.decode('latin-1')!r}, header_version {h.header_version}",
        f"Kernel          : {info.kernel_release or 'unknown'} {h.utsname.get('version', '')}".rstrip(),
        f"Machine         : {h.utsname.get('machine', '') or 'unknown'}, nodename {h.utsname.get('nodename', '')}",
        f"Crash time      : {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(h.tv_sec)) if h.tv_sec else 'unknown'}",
        f"Status          : {h.status:#x} ({', '.join(status)})",
        f"Block size      : {bs}",
        f"Dump level      : {h.dump_level}",
        f"max_mapnr       : {h.max_mapnr:#x} ({h.max_mapnr} pfns)",
        f"nr_cpus         : {h.nr_cpus}",
        f"phys_base       : {h.phys_base:#x}",
        f"Sub header      : sub_hdr_size {h.sub_hdr_size}, bitmap_blocks {h.bitmap_blocks}, "
        f"VMCOREINFO {h.offset_vmcoreinfo:#x}+{h.size_vmcoreinfo}, notes {h.offset_note:#x}+{h.size_note}, "
        f"erase info {h.offset_eraseinfo:#x}+{h.size_eraseinfo}",
    ]
    if h.split or len(info.parts) > 1:
        lines += [
            f"Split part      : [{part.start_pfn:#x}, {part.end_pfn:#x}) {part.descriptors} descriptors  {part.path}"
            for part in info.parts
        ]
    lines += [
        f"Pages           : {p.ram} RAM, {p.dumpable} with a descriptor",
        f"  kept (stored) : {p.kept}",
        f"  kept (zero)   : {p.zero}",
        f"  excluded      : {p.excluded}",
        f"  holes         : {p.holes}",
    ]
    if p.missing:
        lines.append(f"  missing       : {p.missing}")
    mix = ", ".join(f"{k} {v}" for k, v in sorted(info.codec_mix.items(), key=lambda kv: -kv[1]))
    lines += [
        f"Descriptors     : {mix}",
        f"Stored          : {info.stored_bytes} bytes for {kept_bytes} bytes of kept pages "
        f"(ratio {info.compression_ratio:.3f})",
    ]
    return "\n".join(lines) + "\n"


def _verify_verdict(report: dumpverify.VerifyReport) -> int:
    """Print the findings and the verdict of ``--verify``; return its exit status."""
    for f in report.findings:
        sys.stdout.write(f"{f}\n")
    if not report.consistent:
        verdict = "FAILED"
    elif report.incomplete:
        verdict = "INCOMPLETE"
    else:
        verdict = "OK"
    compared = f"{report.pages_checked} pages compared with {report.source_path}"
    if report.incomplete:
        flag = "flagged incomplete" if report.flagged_incomplete else "not flagged incomplete"
        compared = (
            f"{report.pages_checked} of {report.pages_expected} pages compared with {report.source_path} "
            f"({report.missing_pages} never written; the dump is {flag})"
        )
    sys.stdout.write(
        f"verify {verdict}: {compared}, "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s), "
        f"2nd bitmap {'recomputed exactly' if report.filter_checked else 'not recomputed'}, "
        f"{report.seconds:.2f} s\n"
    )
    if not report.consistent:
        _err(f"verification failed at pfn {', '.join(f'{p:#x}' for p in report.first_bad_pfns()) or '-'}")
        return EXIT_VERIFY_FAILED
    return EXIT_VERIFY_INCOMPLETE if report.incomplete else EXIT_VERIFY_OK


def _run_inspect(args: argparse.Namespace) -> int:
    """``--info [--json] [--plot PNG [--source VMCORE]]`` and ``--verify DUMPFILE... SOURCE``."""
    from vmcorepack import info as dumpinfo
    from vmcorepack import verify as dumpverify

    if args.plot:
        dumpinfo.require_plot()
    if args.verify:
        if len(args.files) < 2:
            raise UsageError("--verify takes DUMPFILE [DUMPFILE...] SOURCE")
        if args.check_params:
            return EXIT_OK
        src = _open_source(args, args.files[-1])
        prog = _Progress(sys.stderr, bool(args.message_level & ML_PROGRESS))
        try:
            workers = _budget_workers(args.workers if args.workers is not None else 2)
            report = dumpverify.verify(args.files[:-1], src, workers=workers, progress=prog if prog.enabled else None)
        finally:
            prog.close()
            src.close()
        return _verify_verdict(report)
    if not args.files:
        raise UsageError("--info takes DUMPFILE [DUMPFILE...] (all parts of a split dump)")
    if args.check_params:
        return EXIT_OK
    desc = dumpinfo.dump_info(args.files)
    if args.json:
        import json  # --info --json only

        sys.stdout.write(json.dumps(desc.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(format_info(desc))
    if args.plot:
        plot_src = _open_source(args, args.source) if args.source else None
        try:
            pmap = dumpinfo.page_map(args.files, plot_src)
        finally:
            if plot_src is not None:
                plot_src.close()
        dumpinfo.render_map(desc, pmap, args.plot)
        if not args.json:
            unit = "page" if pmap.group == 1 else f"{pmap.group} pages"
            sys.stdout.write(f"Map             : {args.plot} (1 pixel = {unit})\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        _err(str(e))
        return EXIT_FAILURE
    old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(args)
    except VmcorepackError as e:
        if args.debug:
            import traceback  # --debug only

            traceback.print_exc()
        _err(str(e))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_FAILURE
    except BrokenPipeError:
        _err(str(OutputError("<stdout>", "broken pipe: the reader of the stream went away")))
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, old_term)
