#!/bin/busybox sh
# /init of the guest initramfs that extmem-qemu builds (qemu/src/guest_init.sh).
#
# Loads the kernel modules listed in /extmem/modules (dependency order), mounts the host root
# read-only over 9p at /newroot with fresh proc, sys, dev, tmp and run (the paths listed in
# /extmem/keep stay visible from the host even under /tmp or /run), then sources
# /extmem/plan.sh, whose steps run chrooted into the host root. When /extmem/guestroot exists
# (an arm64 guest on an x86_64 host), the root at /newroot is the runner's arm64 root, shared
# as "guestroot", and the host root goes to /hostroot, from which the paths in /extmem/keep
# (the workspace and target dir, which hold the programs) are bound in. Everything goes to the serial
# console; the runner reads the "@@extmem" marker lines:
#   @@extmem begin <kind> <name>           a step starts (kind: setup, ktap, plain, teardown)
#   @@extmem end <kind> <name> rc=<code>   it ended with that exit code
#   @@extmem fatal <message>               the guest cannot go on; it powers off
#   @@extmem done                          every step ran; the guest powers off

/bin/busybox --install -s /bin
export PATH=/bin

fatal() {
    echo "@@extmem fatal $*"
    poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

echo "@@extmem begin setup kernel-modules"
failed=0
while read -r module; do
    insmod "/lib/modules/$module" || {
        echo "insmod $module failed"
        failed=$((failed + 1))
    }
done < /extmem/modules
echo "@@extmem end setup kernel-modules rc=$failed"

ninep="trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose"
if [ -e /extmem/guestroot ]; then
    mount -t 9p -o "$ninep" guestroot /newroot || fatal "mounting the guest root over 9p failed"
    mount -t 9p -o "$ninep" hostroot /hostroot || fatal "mounting the host root over 9p failed"
else
    mount -t 9p -o "$ninep" hostroot /newroot || fatal "mounting the host root over 9p failed"
fi
mount -t proc proc /newroot/proc || fatal "mounting /proc in the host root failed"
mount -t sysfs sysfs /newroot/sys || fatal "mounting /sys in the host root failed"
mount -t devtmpfs devtmpfs /newroot/dev || fatal "mounting /dev in the host root failed"
mkdir -p /newroot/dev/shm /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm || fatal "mounting /dev/shm in the host root failed"
mount -t devpts devpts /newroot/dev/pts || fatal "mounting /dev/pts in the host root failed"
# The guest's /tmp and /run are its own, but the host's stay reachable (read-only) so
# that a workspace or target dir under them (CI may clone into /tmp) is still there.
if [ ! -e /extmem/guestroot ]; then
    mount --bind /newroot/tmp /hosttmp || fatal "keeping the host's /tmp failed"
    mount --bind /newroot/run /hostrun || fatal "keeping the host's /run failed"
fi
mount -t tmpfs tmpfs /newroot/tmp || fatal "mounting /tmp in the host root failed"
mount -t tmpfs tmpfs /newroot/run || fatal "mounting /run in the host root failed"
while read -r path; do
    if [ -e /extmem/guestroot ]; then
        # The runner made the mount point in the guest root (or it is on the new tmpfs).
        from="/hostroot$path"
    else
        case "$path" in
            /tmp/*) from="/hosttmp${path#/tmp}" ;;
            /run/*) from="/hostrun${path#/run}" ;;
            *) continue ;;
        esac
    fi
    mkdir -p "/newroot$path" && mount --bind "$from" "/newroot$path" \
        || fatal "keeping $path visible in the guest failed"
done < /extmem/keep

# run_step KIND NAME COMMAND...: runs COMMAND in the host root with a clean environment.
run_step() {
    kind=$1
    name=$2
    shift 2
    echo "@@extmem begin $kind $name"
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 RUST_BACKTRACE=1 chroot /newroot "$@" < /dev/null 2>&1
    echo "@@extmem end $kind $name rc=$?"
}

. /extmem/plan.sh

echo "@@extmem begin dmesg kernel-log"
dmesg
echo "@@extmem end dmesg kernel-log rc=$?"
echo "@@extmem done"
poweroff -f
