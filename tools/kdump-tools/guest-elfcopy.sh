#!/bin/sh
# Capture kernel (e2e-elfcopy.service, before kdump-tools-dump.service): record MemAvailable at
# the start of the capture and copy /proc/vmcore as an ELF file for the host's page-for-page checks.
set -u
mkdir -p /var/e2e
cp /proc/meminfo /var/e2e/capture-meminfo
echo "e2e-capture: MemAvailable $(awk '/MemAvailable/ {print $2}' /proc/meminfo) kB" > /dev/console
cp /proc/vmcore /var/e2e/vmcore.elf
echo "e2e-capture: elfcopy: exit $?" > /dev/console
sync
