"""Build the optional C page loop (vmcorepack._native); everything else is in pyproject.toml.

The extension needs a C compiler and Debian's zlib1g-dev (its LZO1X-1 encoder
is our own, _lzo1x.h).  libsnappy, libzstd and libdeflate are loaded with
dlopen() when it runs, so their headers are not needed; without them the
Python loop does those codecs.
Without them the build still succeeds (``optional=True``) and vmcorepack uses
its pure-Python page loop, which writes the same bytes more slowly.
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vmcorepack._native",
            ["src/vmcorepack/_native.c"],
            depends=["src/vmcorepack/_lzo1x.h"],
            libraries=["z", "dl"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
