"""Packing a source into a kdump file: cycles, chunks and workers.

The run has makedumpfile's shape (docs/kdump-format.md §10):

1. For each cycle of pfns, build the 2nd bitmap and count the dumpable pages;
   the packed 2nd bitmap is kept (one bit per pfn) and nothing else.
2. Write the headers and both bitmaps.
3. Cut the dumpable pfns into chunks and hand them to workers.  A worker reads
   its pages from the source itself, detects zero pages with one numpy pass,
   compresses the rest, then takes its turn at the sequencer: the turn gives
   the data offset (end of the previous chunk's data), and the worker writes
   its data and its page_desc entries itself.  Page data never passes through
   the main process, which only hands out work and collects counts.

Output is the same whatever the number of workers: offsets are handed out in
chunk order and every chunk's bytes depend only on its pages.

The modules, lowest first: :mod:`~vmcorepack.pack.options` (options, results,
progress phases, chunk size), :mod:`~vmcorepack.pack.encoding` (one chunk's
pages to descriptors and data), :mod:`~vmcorepack.pack.bitmaps` (the bitmap
pass and chunk cutting), :mod:`~vmcorepack.pack.sequencer` (cross-worker
ordering), :mod:`~vmcorepack.pack.workers`, :mod:`~vmcorepack.pack.repair`
(a cut-short file) and :mod:`~vmcorepack.pack.dump` (a whole run).
"""
