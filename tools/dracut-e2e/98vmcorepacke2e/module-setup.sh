#!/bin/bash
# Test-only dracut module of tools/dracut-e2e: in the capture kernel, in its first hook (cmdline: before dracut asks for a root),
# mount the harness's 9p output share, run the collector this initramfs holds (vmcorepack from
# dracut/99vmcorepack, or Debian's makedumpfile) on /proc/vmcore, optionally copy /proc/vmcore as
# ELF, and power off. Not for real systems: it never mounts a root.
check() { return 255; }
depends() { return 0; }
installkernel() { hostonly='' instmods virtio_pci 9p 9pnet_virtio; }
install() {
    inst_multiple awk cp cut sync sleep cat mkdir mount umount modprobe date
    inst_multiple -o dmesg kill
    # e2e_collector=makedumpfile (environment): the makedumpfile initramfs, for the comparison.
    if [[ ${e2e_collector-} == makedumpfile ]]; then
        # Debian's binary, also where kdump-tools' switch-over diverted it (the test root is that one).
        if [[ -x /usr/bin/makedumpfile.distrib ]]; then
            inst_binary /usr/bin/makedumpfile.distrib /usr/bin/makedumpfile || return 1
        else
            inst_binary makedumpfile || return 1
        fi
    fi
    inst_simple "$moddir/e2e-capture.sh" /sbin/e2e-capture
    inst_hook cmdline 00 "$moddir/e2e-hook.sh"
}
