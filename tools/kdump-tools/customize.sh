#!/bin/sh
# mmdebstrap --customize-hook for the kdump-tools guest root (tools/kdump-tools/kdump_tools_e2e.py).
#   customize.sh ROOT WHEEL SWITCHOVER KERNEL_RELEASE
# ROOT: the Debian bookworm tree mmdebstrap built; WHEEL: vmcorepack's wheel (built from the
# worktree); SWITCHOVER: a shell file with the README's Debian switch-over commands, run as is.
set -eu
root=$1 wheel=$2 switchover=$3 release=$4
here=$(cd "$(dirname "$0")" && pwd)
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# vmcorepack into /opt/vmcorepack: a venv on Debian's numpy, zstandard, lz4, snappy and tqdm
# (README "Install": python3 -m venv /opt/vmcorepack && /opt/vmcorepack/bin/pip install ./vmcorepack;
# here offline, so the dependencies come from Debian's packages instead of PyPI wheels).
cp "$wheel" "$root/tmp/"
in_root python3 -m venv --system-site-packages /opt/vmcorepack
in_root /opt/vmcorepack/bin/pip install -q --no-index --no-deps "/tmp/$(basename "$wheel")"
rm -f "$root/tmp/$(basename "$wheel")"
in_root /opt/vmcorepack/bin/vmcorepack -v

# The README's switch-over commands for Debian's kdump-tools, verbatim.
cp "$switchover" "$root/tmp/switchover.sh"
in_root sh -eux /tmp/switchover.sh
rm -f "$root/tmp/switchover.sh"

# kdump-tools' documented configuration (README.Debian): USE_KDUMP=1 in /etc/default/kdump-tools;
# crashkernel= is on the kernel command line QEMU passes (no boot loader here).
sed -i 's/^USE_KDUMP=.*/USE_KDUMP=1/' "$root/etc/default/kdump-tools"
grep -q '^USE_KDUMP=1' "$root/etc/default/kdump-tools"

# The test's own glue: fstab, hostname, a serial console, no login prompts, the crash trigger in
# the first kernel and the ELF copy (for the host's checks) in the capture kernel.
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' > "$root/etc/fstab"
echo kdump-e2e > "$root/etc/hostname"
install -m 755 "$here/guest-crash.sh" "$root/usr/local/sbin/e2e-crash"
install -m 755 "$here/guest-elfcopy.sh" "$root/usr/local/sbin/e2e-elfcopy"
install -m 644 "$here/e2e-crash.service" "$here/e2e-elfcopy.service" "$root/etc/systemd/system/"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/systemd/system/kdump-tools-dump.service.wants"
ln -sf ../e2e-crash.service "$root/etc/systemd/system/multi-user.target.wants/e2e-crash.service"
ln -sf ../e2e-elfcopy.service "$root/etc/systemd/system/kdump-tools-dump.service.wants/e2e-elfcopy.service"
for unit in getty@tty1.service serial-getty@ttyS0.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done

# initramfs-tools' MODULES=most (and kdump-tools' switch to MODULES=dep, which would read the
# build host's devices in this chroot) replaced by the three modules the QEMU disk needs.
echo MODULES=list > "$root/etc/initramfs-tools/conf.d/e2e-modules"
printf 'virtio_pci\nvirtio_blk\next4\n' >> "$root/etc/initramfs-tools/modules"
in_root update-initramfs -u -k "$release"
# kdump-tools' kernel hook builds the capture initramfs /var/lib/kdump/initrd.img-RELEASE.
in_root /etc/kernel/postinst.d/kdump-tools "$release"
# kdump-tools' postinst made its vmlinuz/initrd.img links for `uname -r`, the build host's kernel.
in_root kdump-config symlinks "$release"
ls -l "$root/var/lib/kdump/"
