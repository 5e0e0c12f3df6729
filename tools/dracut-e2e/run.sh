#!/bin/sh
# vmcorepack in a dracut-built capture initramfs under QEMU (README.md, "dracut").
#   tools/dracut-e2e/run.sh [--collector vmcorepack|makedumpfile] [--crashkernel 256M] [--sizes] [--bisect LO:HI]
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
exec "$repo/.venv/bin/python" "$repo/tools/dracut-e2e/dracut_e2e.py" "$@"
