#!/usr/bin/env bash
# Runs the search index's kernel tests on an emulated Intel Sapphire Rapids, so the AMX tile
# kernel (crates/gallery/src/index_amx.rs) is checked against the portable kernel on a machine
# without AMX. It checks results, not speed: the emulator runs ~10-20 million instructions a
# second.
#
# How: Bochs 3.0 (Debian's source package) has a Sapphire Rapids CPU model with AMX, with two
# faults that amx_emulated/bochs-amx.patch mends:
# - it does not report XFD (extended feature disable), and Linux enables AMX for user space only
#   with XFD (arch/x86/kernel/fpu/xstate.c): the patch adds the CPUID bits, the IA32_XFD and
#   IA32_XFD_ERR MSRs, and the #NM fault an armed XFD raises at the first tile instruction
#   (which is how Linux gives a process its tile state);
# - its int8 tile products (tdpbssd, tdpbsud, tdpbusd) read the signed bytes as unsigned
#   (Bit32s of a Bit8u): a 16x64x16 tdpbssd gave 1,267,408 where the definition gives -1,840;
# - its XSAVE of the tile state (what Linux does at a context switch) wrote each tile's rows and
#   bytes per row in each other's places, saved 8 of the 16 rows of each tile, and reported the
#   tile data "in use" exactly when it was not: a thread switched out mid-kernel came back with
#   no tiles configured (SIGILL at the next tile instruction) or with its sums lost.
# Bochs is built without its "repeat speedups" (so not --enable-all-optimizations): with them
# the emulated machine corrupted memory (a test that grows an 8 MB vector crashed or answered
# wrong on the Tiger Lake model too, which has no AMX).
# Then Debian's kernel boots from an ISO with an initramfs holding busybox and the gallery's
# test binary, which runs with FACEGATE_EXPECT_AMX=1 (the tests fail unless the AMX kernel is
# found and chosen).
#
# Usage: scripts/amx_emulated.sh [test filter, default "index::tests::"]
# Needs root for apt-get (as on the project's machines); takes ~5 minutes to build Bochs, then
# the boot and the tests (see the printed timings). Work files in target/amx-emulated.
set -euo pipefail
filter="${1:-index::tests::}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/target/amx-emulated"
mkdir -p "$work"
cd "$work"
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

log "tools (apt): build tools, cpio, grub, xorriso, busybox"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q build-essential cpio grub-pc-bin \
    grub-common xorriso mtools busybox-static > apt.log

# Bochs 3.0's source from Debian's trixie sources, fetched through this machine's own Debian
# mirror (its apt configuration names it; no host is written here).
if [ ! -x bochs-3.0/bochs ]; then
    uri="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
    [ -n "$uri" ] || uri="$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)"
    mkdir -p apt/lists/partial apt/cache/archives/partial
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" \
        > apt/sources.list
    a=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache")
    log "Bochs 3.0 source (Debian trixie)"
    apt-get "${a[@]}" update > /dev/null
    apt-get "${a[@]}" source --download-only bochs=3.0+dfsg-1 > /dev/null 2>&1 || true
    tar xf bochs_3.0+dfsg.orig.tar.xz
    (cd bochs-3.0 && patch -p1 < "$root/scripts/amx_emulated/bochs-amx.patch")
    log "building Bochs with AVX-512 and AMX (a few minutes)"
    (cd bochs-3.0 && ./configure --enable-x86-64 --enable-cpu-level=6 --enable-avx \
        --enable-evex --enable-amx --enable-fast-function-calls --enable-handlers-chaining \
        --enable-trace-linking --enable-pci --with-nogui --disable-plugins > configure.log \
        && make -j"$(nproc)" > make.log)
fi

log "BIOS and kernel (Debian packages)"
if [ ! -f bios/usr/share/bochs/BIOS-bochs-latest ]; then
    apt-get download bochsbios > /dev/null 2>&1
    dpkg -x bochsbios_*.deb bios
fi
if [ ! -f kernel/vmlinuz ]; then
    pkg="$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64$' | awk '{print $1}' \
        | sort -V | tail -1)"
    apt-get download "$pkg" > /dev/null 2>&1
    dpkg -x "$pkg"_*.deb kernel-deb
    mkdir -p kernel && cp kernel-deb/boot/vmlinuz-* kernel/vmlinuz
fi

log "test binary (release, the gallery's unit tests)"
bin="$(cd "$root" && cargo test --release -p facegate-gallery --lib --no-run \
    --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
[ -x "$bin" ] || { echo "no test binary" >&2; exit 1; }

log "initramfs"
rm -rf initrd iso && mkdir -p initrd/bin initrd/proc initrd/sys initrd/dev initrd/tmp iso/boot/grub
cp /bin/busybox initrd/bin/
for c in sh mount poweroff cat grep sleep tr; do ln -sf busybox "initrd/bin/$c"; done
strip -o initrd/bin/gallery-tests "$bin"
# The binary's shared libraries at their own paths.
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "initrd$(dirname "$lib")" && cp -L "$lib" "initrd$lib"
done
cat > initrd/init <<EOF
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "=== cpu flags: \$(grep -m1 -o 'amx[a-z0-9_]*' /proc/cpuinfo | tr '\n' ' ')"
cd /tmp
# Twice: a context switch in the middle of a tile call is a matter of timing.
FACEGATE_EXPECT_AMX=1 /bin/gallery-tests --test-threads=1 '$filter' &&
    FACEGATE_EXPECT_AMX=1 /bin/gallery-tests --test-threads=1 '$filter'
echo "=== tests exit \$?"
sleep 1
poweroff -f
EOF
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc 2>/dev/null | gzip -1 > ../iso/boot/initrd.gz)
cp kernel/vmlinuz iso/boot/vmlinuz
# The kernel options: a serial console; clearcpuid=580 (FSRM): with it the kernel copies with
# short `rep movsb`, and under Bochs's Sapphire Rapids and Tiger Lake models a page-table entry
# of the direct map was found overwritten early in the boot (0x440: an endless page-fault loop
# in exc_page_fault); without FSRM it boots. The rest were tried on the way and kept because
# this set is the one that ran: acpi=off (the old BIOS's ACPI tables read as garbage),
# clearcpuid=517 (WAITPKG), idle=halt, no 5-level paging, no PCID, no GB pages, no transparent
# huge pages.
cat > iso/boot/grub/grub.cfg <<'EOF'
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
menuentry facegate-amx {
  linux /boot/vmlinuz console=ttyS0 loglevel=1 panic=-1 mitigations=off tsc=reliable lsm=capability nosmp acpi=off clearcpuid=517,580 split_lock_detect=off idle=halt no5lvl ibt=off nopcid noinvpcid nogbpages transparent_hugepage=never
  initrd /boot/initrd.gz
}
EOF
grub-mkrescue -o boot.iso iso > /dev/null 2>&1

cat > bochsrc <<EOF
megs: 256
cpu: model=sapphire_rapids, count=1, ips=200000000
romimage: file=$work/bios/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=$work/bochs-3.0/bios/vgabios-cirrus.bin-1.13.0
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path=$work/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$work/serial.out
display_library: nogui
log: $work/bochs.log
panic: action=fatal
error: action=ignore
info: action=ignore
clock: sync=none
EOF
log "booting the emulated Sapphire Rapids (output: $work/serial.out)"
rm -f serial.out
timeout 7200 bochs-3.0/bochs -q -f bochsrc > bochs.stdout 2>&1 &
emulator=$!
# With acpi=off the guest's poweroff only halts the CPU and Bochs runs on: stop it when the
# tests have reported (or the kernel has given up).
until grep -a -q -E "=== tests exit|Kernel panic|System halted" serial.out 2>/dev/null; do
    kill -0 "$emulator" 2>/dev/null || break
    sleep 5
done
sleep 2
kill "$emulator" 2>/dev/null || true
wait "$emulator" 2>/dev/null || true
grep -a -E "^=== |^test |test result" serial.out || true
grep -a -q "=== tests exit 0" serial.out && grep -a -q "test result: ok" serial.out
log "AMX kernel tests passed under emulation"
