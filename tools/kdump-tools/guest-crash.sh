#!/bin/sh
# First kernel (e2e-crash.service, after kdump-tools.service): check that kdump-tools loaded the
# capture kernel, build a memory mix (page cache, anonymous memory of a live process, free memory)
# and panic through sysrq, as an administrator's test of kdump would.
set -u
say() { echo "e2e-first: $*" > /dev/console; }
loaded=$(cat /sys/kernel/kexec_crash_loaded 2>/dev/null || echo missing)
say "kexec_crash_loaded=$loaded"
say "$(kdump-config status 2>&1 | tr '\n' ' ')"
if [ "$loaded" != 1 ]; then
    say "FAILED: kdump-tools did not load the capture kernel"
    systemctl --no-block poweroff
    exit 1
fi
mb=${E2E_PAGECACHE_MB:-128}
dd if=/dev/urandom of=/var/tmp/e2e-pagecache bs=1M count="$mb" status=none
cat /var/tmp/e2e-pagecache > /dev/null
python3 -c "
import time
a = bytearray(${E2E_ANON_MB:-96} << 20)
for i in range(0, len(a), 4096):
    a[i] = (i >> 12) % 251 + 1
print('e2e-first: anon ready', flush=True)
time.sleep(3600)
" > /dev/console &
sleep 20
sync
say "crashing through sysrq"
echo 1 > /proc/sys/kernel/sysrq
echo c > /proc/sysrq-trigger
