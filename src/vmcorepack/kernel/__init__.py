"""Reading the crashed kernel's own data structures out of the dump.

``arch/`` holds one module per architecture (its page-table walk, address
layout, relocation and the VMCOREINFO keys it needs) and decides which one an
input needs; ``walk`` is what the rest reads kernel memory through;
``memmap`` finds and reads the struct page array on any of them.
"""

from __future__ import annotations
