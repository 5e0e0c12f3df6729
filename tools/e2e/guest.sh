#!/bin/sh
# Guest side of the e2e loop, run by the initramfs /init chrooted into the host's root
# (read-only 9p; for --arch arm64 a root of Debian arm64 packages, the repository mounted at its
# host path); /mnt is the writable output share holding config.sh (written by the host).
#   guest.sh first    build a memory mix, load the capture kernel (kexec -p), panic via sysrq
#   guest.sh capture  in the kdump kernel: vmcorepack, makedumpfile, ELF copy of /proc/vmcore
set -u
stage=$1
. /mnt/config.sh
# /usr/local/bin last: in the arm64 root it holds busybox applet links, used where nothing else is.
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin
export HOME=/tmp TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1
py=/usr/bin/python3
e2e=$E2E_REPO/tools/e2e
env_out=/mnt/$stage.env

note() { echo "e2e-$stage: $*"; }
kv() { echo "$1=$2" >> "$env_out"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

: > "$env_out"
kv kernel "$(uname -r)"
kv uptime_start_s "$(uptime_s)"
if grep -qw la57 /proc/cpuinfo; then kv cpu_la57 1; else kv cpu_la57 0; fi
kv machine "$(uname -m)"
kv page_size "$($py -c 'import os; print(os.sysconf("SC_PAGESIZE"))')"
kv cmdline "\"$(cat /proc/cmdline)\""
kv mem_total_kib "$(meminfo MemTotal)"
kv mem_available_kib "$(meminfo MemAvailable)"

if [ "$stage" = first ]; then
    kv crashkernel_reserved_bytes "$(cat /sys/kernel/kexec_crash_size)"
    if [ "$(uname -m)" = aarch64 ] && ! grep -q ' _text$' /proc/kallsyms; then
        # kexec-tools (2.0.25 to 2.0.29 at least) computes arm64's PAGE_OFFSET and the kernel text
        # PT_LOAD of the ELF core header from /proc/kallsyms' _text, which a kernel without
        # CONFIG_KALLSYMS_ALL (Debian's arm64 kernels) does not list: the vmcore then has a garbage
        # PT_LOAD. _text is the image start, SEGMENT_ALIGN (64 KiB) below _stext (arm64
        # vmlinux.lds.S), so add it to a copy laid over /proc/kallsyms for kexec's sake.
        $py -c '
import sys
syms = open("/proc/kallsyms").read()
stext = next(int(ln.split()[0], 16) for ln in syms.splitlines() if ln.split()[2:3] == ["_stext"])
sys.stdout.write(f"{stext - 0x10000:016x} T _text\n" + syms)
' > /tmp/kallsyms && mount --bind /tmp/kallsyms /proc/kallsyms
        kv kallsyms_text_added "$(head -n 1 /proc/kallsyms)"
    fi
    t0=$(uptime_s)
    # shellcheck disable=SC2086 # E2E_KEXEC_ARGS is a word list on purpose
    kexec -p $E2E_KEXEC_ARGS "$E2E_KERNEL" --initrd="$E2E_INITRD" --append="$E2E_CAPTURE_APPEND" > /mnt/kexec.log 2>&1
    kv kexec_rc $?
    kv kexec_crash_loaded "$(cat /sys/kernel/kexec_crash_loaded)"
    kv kexec_load_s "$(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { print b - a }')"

    note "memory mix: ${E2E_PAGECACHE_MB} MiB page cache, ${E2E_ANON_MB} MiB anonymous, ${E2E_TMPFS_MB} MiB tmpfs"
    t0=$(uptime_s)
    # Page cache: file contents read through the cache=loose 9p mount of the host root.
    tar cf - /usr/lib /usr/share 2>/dev/null | head -c "$((E2E_PAGECACHE_MB << 20))" > /dev/null
    # tmpfs (shmem): half random, half text (a tar of documentation).
    mkdir -p /tmp/mix
    dd if=/dev/urandom of=/tmp/mix/random.bin bs=1M count=$((E2E_TMPFS_MB / 2)) 2>/dev/null
    tar cf - /usr/share/doc 2>/dev/null | head -c "$(((E2E_TMPFS_MB - E2E_TMPFS_MB / 2) << 20))" > /tmp/mix/docs.tar
    # Anonymous user memory held by a live process: random, patterned and zero-filled pages.
    rm -f /tmp/anon.ready
    $py -c '
import os, sys, time
n = int(sys.argv[1]) << 20
q = n // 4 // 4096 * 4096
buf = bytearray(n)
buf[:q] = os.urandom(q)
pattern = (b"vmcorepack e2e anonymous page " * 137)[:4096]
buf[q : 3 * q] = pattern * (2 * q // 4096)
buf[3 * q :] = bytes(n - 3 * q)
open(sys.argv[2], "w").close()
time.sleep(86400)
' "$E2E_ANON_MB" /tmp/anon.ready &
    anon_pid=$!
    i=0
    while [ ! -e /tmp/anon.ready ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i + 1)); done
    kv anon_pid "$anon_pid"
    kv anon_rss_kib "$(awk '$1 == "VmRSS:" { print $2 }' /proc/$anon_pid/status)"
    kv mix_build_s "$(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { print b - a }')"
    for k in MemFree Cached Shmem AnonPages Buffers Slab; do kv "mix_$k" "$(meminfo $k)"; done
    if [ "$(cat /sys/kernel/kexec_crash_loaded)" != 1 ]; then
        note "no capture kernel loaded; not crashing"
        exit 1
    fi
    kv crash_uptime_s "$(uptime_s)"
    sync
    note "crashing through sysrq now"
    echo c > /proc/sysrq-trigger
    sleep 30
    note "still alive after sysrq c"
    exit 1
fi

# ---- capture kernel ----
kv vmcore_bytes "$(stat -c %s /proc/vmcore)"
run() {  # run NAME COMMAND...: measured, output in /mnt/NAME.{log,json}
    name=$1
    shift
    note "$name: $*"
    PEAKMEM_TIMEOUT=$E2E_STEP_TIMEOUT timeout -s KILL $((E2E_STEP_TIMEOUT + 60)) \
        $py "$e2e/peakmem.py" "/mnt/$name.json" -- "$@" > "/mnt/$name.log" 2>&1
    rc=$?
    kv "${name}_rc" $rc
    note "$name: exit $rc, $(tail -n 1 "/mnt/$name.log")"
}
# Which codecs and C extension the guest's vmcorepack has (an arm64 root's own python3).
# shellcheck disable=SC2086 # E2E_VMCOREPACK and E2E_ARGS are word lists on purpose
$E2E_VMCOREPACK -v > /mnt/vmcorepack-version.txt 2>&1
# shellcheck disable=SC2086
run vmcorepack $E2E_VMCOREPACK $E2E_ARGS /proc/vmcore /mnt/dump.kdump
if [ "$E2E_MAKEDUMPFILE" = 1 ]; then
    # shellcheck disable=SC2086
    run makedumpfile "${E2E_MAKEDUMPFILE_BIN:-makedumpfile}" $E2E_MAKEDUMPFILE_ARGS /proc/vmcore /mnt/makedumpfile.kdump
fi
if [ "$E2E_ELF_COPY" = 1 ]; then
    run elfcopy dd if=/proc/vmcore of=/mnt/vmcore.elf bs=1M
fi
dmesg > /mnt/capture.dmesg 2>&1
kv uptime_end_s "$(uptime_s)"
sync
