#!/bin/sh
# Debian kdump-tools saving a dump through vmcorepack under QEMU, checked on the host (README.md,
# "End-to-end: Debian's kdump-tools").  tools/kdump-tools/run.sh [--compression none|lz4] [--crashkernel 384M]
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
exec "$repo/.venv/bin/python" "$repo/tools/kdump-tools/kdump_tools_e2e.py" "$@"
