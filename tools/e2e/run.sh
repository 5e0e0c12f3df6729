#!/bin/sh
# Run the whole kdump-under-QEMU loop and print the verification report (see README.md, "End-to-end").
#   tools/e2e/run.sh [--kernel 6.1|6.12|7.x] [--paging 4|5] [--crashkernel 256M] [--args "-l -d 31"] [--keep-fixture DIR]
#   tools/e2e/run.sh --arch arm64 [--flavour arm64-16k] --kernel 6.1|6.12|7.3 [--cpu max,lpa2=off,pauth-impdef=on]
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
exec "$repo/.venv/bin/python" "$repo/tools/e2e/kdump_qemu.py" "$@"
