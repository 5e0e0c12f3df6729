#!/bin/sh
# Build makedumpfile from a source tree with every page codec (zlib, LZO,
# snappy, zstd): the reference binary of the benchmarks and of the byte-identity
# tests of -p and -z (Debian 12's makedumpfile 1.7.2 has neither snappy nor zstd).
#
# Usage: benchmarks/build_makedumpfile.sh SRC [BUILD_DIR]
#   SRC        a makedumpfile source tree or git repository (for a repository,
#              the tree of $MAKEDUMPFILE_REF, default eb42d63 = tag v1.7.9)
#   BUILD_DIR  where to build (default .cache/makedumpfile-1.7.9); the binary
#              is BUILD_DIR/makedumpfile
#
# Needs (Debian): apt-get install gcc make libelf-dev libdw-dev libbz2-dev
# liblzo2-dev libsnappy-dev libzstd-dev zlib1g-dev
# No network: the source comes from a path.
set -eu
src=${1:?usage: build_makedumpfile.sh SRC [BUILD_DIR]}
out=${2:-.cache/makedumpfile-1.7.9}
ref=${MAKEDUMPFILE_REF:-eb42d63}
mkdir -p "$out"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$src" archive "$ref" | tar -x -C "$out"
else
    cp -R "$src"/. "$out"
fi
# LINKTYPE=dynamic: Debian ships no static libdw/libelf.
make -C "$out" -j"$(nproc)" USELZO=on USESNAPPY=on USEZSTD=on LINKTYPE=dynamic >"$out/build.log" 2>&1 ||
    { tail -20 "$out/build.log" >&2; exit 1; }
"$out/makedumpfile" -v
