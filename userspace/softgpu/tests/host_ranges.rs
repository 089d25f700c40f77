//! The software device answers a host-pointer import of every kind of range as the kernel
//! device does: the table in `tests/guest/src/host_ranges.rs`, which the guest's `backends`
//! suite holds extmem-vgpu to, included here so that it lives once.
//!
//! Linux only (`/proc/self/maps`, memfds, tmpfs); the Windows rules are checked under
//! Wine by `VirtualQuery` in the unit tests.
#![cfg(not(windows))]

#[path = "../../../tests/guest/src/host_ranges.rs"]
mod host_ranges;

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use extmem::backend::{Backend, CopyEngine, GpuVm};
use extmem::exec::Command;
use extmem_hw::{GpuVa, HostVa};
use extmem_softgpu::SoftGpu;
use host_ranges::{HostRange, RangeKind, LEN, TABLE};

/// Held by each test for its whole run: a `Hole` range is an address just unmapped, which
/// the other test's mappings, made on another thread of this process, could fill.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `TMPFS_MAGIC` and `RAMFS_MAGIC` from `<linux/magic.h>`.
const IN_MEMORY_FS: [i128; 2] = [0x0102_1994, 0x8584_58f6];

/// `statfs`'s `f_type`, whose C type differs between architectures.
fn fs_type(dir: &Path) -> i128 {
    let info = rustix::fs::statfs(dir).unwrap_or_else(|e| panic!("statfs {}: {e}", dir.display()));
    i128::from(info.f_type)
}

#[test]
fn every_kind_of_host_range_gets_the_kernel_devices_answer() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let tmpfs = Path::new("/dev/shm");
    assert_eq!(fs_type(tmpfs), IN_MEMORY_FS[0], "/dev/shm is tmpfs");
    // Files that are written back: the target directory, on the workspace's disk.
    let disk = Path::new(env!("CARGO_TARGET_TMPDIR"));
    assert!(
        !IN_MEMORY_FS.contains(&fs_type(disk)),
        "{} must be on a filesystem that writes back (not tmpfs/ramfs) for the shared-file case",
        disk.display()
    );
    let mut gpu = SoftGpu::new().unwrap_or_else(|e| panic!("{e}"));
    let mut wrong = Vec::new();
    for case in TABLE {
        let dir = if case.kind == RangeKind::TmpfsFileShared {
            tmpfs
        } else {
            disk
        };
        let range =
            HostRange::new(case.kind, dir).unwrap_or_else(|e| panic!("{:?}: {e}", case.kind));
        wrong.extend(host_ranges::mismatches(&mut gpu, &range, &case));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(gpu.live_objects(), 0);
}

/// What a writable import is accepted for, the GPU can write: no accepted import loses
/// the device on its first write.
#[test]
fn the_gpu_writes_every_range_a_writable_import_accepts() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let mut gpu = SoftGpu::new().unwrap_or_else(|e| panic!("{e}"));
    let dirs = [
        Path::new("/dev/shm"),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    ];
    let va = GpuVa::new(1 << 36);
    for case in TABLE.iter().filter(|c| c.writable == 0) {
        let dir = dirs[usize::from(case.kind != RangeKind::TmpfsFileShared)];
        let range =
            HostRange::new(case.kind, dir).unwrap_or_else(|e| panic!("{:?}: {e}", case.kind));
        let (handle, _) = gpu
            .import_host(HostVa::new(range.addr()), LEN as u64, false, false)
            .unwrap_or_else(|e| panic!("{:?}: {e}", case.kind))
            .unwrap_or_else(|| panic!("a handle"));
        gpu.bind(handle, va, 0, LEN as u64, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let fill = Command::Fill {
            dst: va,
            size: LEN as u64,
            value: 0x5a5a_5a5a,
        };
        gpu.exec(&[fill])
            .unwrap_or_else(|e| panic!("{:?}: {e:?}", case.kind));
        // SAFETY: the range's own live mapping of LEN readable bytes.
        let bytes = unsafe { std::slice::from_raw_parts(range.addr() as *const u8, LEN) };
        assert!(bytes.iter().all(|b| *b == 0x5a), "{:?}", case.kind);
        gpu.unbind(va, LEN as u64).unwrap_or_else(|e| panic!("{e}"));
        gpu.close(handle);
    }
}
