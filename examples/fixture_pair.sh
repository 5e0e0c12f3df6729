#!/bin/sh
# A matched pair for a dump reader's test suite: a synthetic 6.12 kernel image with
# 5-level paging and every page kind, its dump at -d 31 with zstd, and a check that
# every page of the dump equals the image.
set -eu
out=${1:-fixture-out}
mkdir -p "$out"
vmcorepack-mkfixture --size 512M --generation 6.12 --levels 5 --seed 42 \
    --mix cache=0.1,anon=0.1,buddy=0.2,thp=0.05,hugetlb=0.02,slab=0.05,hwpoison=3,offline=5 \
    --truth "$out/truth.npz" -f "$out/image.vmcore" --pack 31 --codec zstd "$out/image.kdump"
vmcorepack --verify "$out/image.kdump" "$out/image.vmcore"
vmcorepack --info --json "$out/image.kdump" > "$out/info.json"
vmcorepack --dump-dmesg --help >/dev/null
ls -l "$out"
