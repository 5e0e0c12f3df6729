#!/bin/sh
# Capture stage of tools/dracut-e2e under dracut's /init: writes what tools/e2e's checks read
# (capture.env, dump.kdump or makedumpfile.kdump, vmcore.elf) to the 9p share "e2eout".
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
off() {
    sync
    umount /out 2>/dev/null
    echo "e2e-init: capture stage done, powering off"
    echo 1 > /proc/sys/kernel/sysrq
    echo o > /proc/sysrq-trigger
    sleep 60
}
start=$(meminfo MemAvailable)
echo "e2e-init: capture stage (dracut /init), MemAvailable $start kB"
for m in virtio_pci 9pnet_virtio 9p; do modprobe "$m" 2>/dev/null; done
mkdir -p /out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none e2eout /out || {
    echo "e2e-init: FAILED: mount e2eout"
    off
}
. /out/config.sh
env=/out/capture.env
{
    echo "kernel=$(uname -r)"
    echo "mem_total_kib=$(meminfo MemTotal)"
    echo "mem_available_kib=$start"
} > "$env"
# The collector this initramfs has: vmcorepack (dracut/99vmcorepack) or makedumpfile.
if command -v vmcorepack > /dev/null; then
    name=vmcorepack out=/out/dump.kdump args=$E2E_ARGS cmd=vmcorepack
else
    name=makedumpfile out=/out/makedumpfile.kdump args=$E2E_MAKEDUMPFILE_ARGS cmd=makedumpfile
fi
echo "collector=$name" >> "$env"
t0=$(cut -d' ' -f1 /proc/uptime)
# shellcheck disable=SC2086 # args is a word list
$cmd $args /proc/vmcore "$out" > "/out/$name.log" 2>&1 &
pid=$!
low=$start
while kill -0 "$pid" 2>/dev/null; do
    m=$(meminfo MemAvailable)
    [ "$m" -lt "$low" ] && low=$m
    sleep 0.5
done
wait "$pid"
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "e2e-capture: $name: exit $rc"
{
    echo "collector_rc=$rc"
    echo "collector_wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
    echo "mem_available_min_kib=$low"
} >> "$env"
if [ "${E2E_ELF_COPY:-1}" = 1 ]; then
    cp /proc/vmcore /out/vmcore.elf
    echo "e2e-capture: elfcopy: exit $?"
fi
dmesg > /out/capture.dmesg 2>/dev/null
off
