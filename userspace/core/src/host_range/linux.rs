//! The host-range rule on Linux, from `/proc/self/maps`: what `pin_user_pages(FOLL_LONGTERM)`
//! would refuse, asked of the text the kernel prints rather than of the page tables, since
//! nothing here may pin (or touch) the application's pages.

use std::string::String;
use std::sync::OnceLock;

use rustix::fs::MemfdFlags;

use extmem_hw::HostVa;

use super::proc_maps::{fs_type_of, parse_mapping, DevNum};
use super::RangeRefusal;
use crate::error::OsError;

/// Filesystems whose files a writable long-term pin may map shared: they keep no dirty
/// pages to write back and have no `page_mkwrite`, so `vma_needs_dirty_tracking()` is
/// false for them (shmem and its mounts, ramfs, hugetlbfs).
const PINNABLE_SHARED_FS: [&str; 3] = ["tmpfs", "ramfs", "hugetlbfs"];

/// The device of the kernel's internal shmem mount, which memfds, shared anonymous
/// memory and SysV segments live on (and which no mountinfo lists): the device of a memfd
/// of our own, asked once.
fn internal_shmem_dev() -> Option<DevNum> {
    static DEV: OnceLock<Option<DevNum>> = OnceLock::new();
    *DEV.get_or_init(|| {
        let fd = rustix::fs::memfd_create("extmem-host-range-probe", MemfdFlags::CLOEXEC).ok()?;
        let stat = rustix::fs::fstat(&fd).ok()?;
        Some(DevNum {
            major: rustix::fs::major(stat.st_dev),
            minor: rustix::fs::minor(stat.st_dev),
        })
    })
}

/// Whether a writable long-term pin of a shared mapping of a file on `dev` is allowed.
/// `mountinfo` is read only for a device that is not the internal shmem mount; a device
/// no mount lists (a dma-buf, a DRM node's pseudo-file, a mount of another namespace) is
/// refused, which is what the kernel answers for the ones it cannot pin.
fn shared_writable_pinnable(dev: DevNum) -> Result<bool, OsError> {
    if internal_shmem_dev() == Some(dev) {
        return Ok(true);
    }
    let mountinfo = read_proc("/proc/self/mountinfo")?;
    Ok(fs_type_of(&mountinfo, dev).is_some_and(|fs| PINNABLE_SHARED_FS.contains(&fs)))
}

fn read_proc(path: &'static str) -> Result<String, OsError> {
    std::fs::read_to_string(path).map_err(|e| OsError {
        call: path,
        errno: e.raw_os_error().unwrap_or(extmem_uapi::errno::EIO),
    })
}

/// Whether `[addr, addr + len)` may be imported, as `GEM_USERPTR` on the kernel device
/// answers for a plain user range (`pin_user_pages(FOLL_LONGTERM)`, mm/gup.c
/// `check_vma_flags()`): every byte mapped and readable; for a `writable` import every
/// mapping also writable, and not a shared mapping of a file whose filesystem tracks
/// dirty pages (`writable_file_mapping_allowed()`: a regular file on a disk filesystem,
/// 9p, NFS...), while anonymous, private, memfd and tmpfs mappings are fine. Read from
/// `/proc/self/maps`, one read per import.
pub fn check_importable(addr: HostVa, len: u64, writable: bool) -> Result<(), RangeRefusal> {
    let end = addr
        .checked_add(len)
        .ok_or(RangeRefusal::Unmapped { addr })?
        .get();
    let maps = read_proc("/proc/self/maps").map_err(RangeRefusal::Os)?;
    let mut at = addr.get();
    for mapping in maps.lines().filter_map(parse_mapping) {
        if at >= end {
            break;
        }
        if mapping.end <= at {
            continue;
        }
        let here = HostVa::new(at);
        if mapping.start > at {
            return Err(RangeRefusal::Unmapped { addr: here });
        }
        if !mapping.readable {
            return Err(RangeRefusal::NotReadable { addr: here });
        }
        if writable && !mapping.writable {
            return Err(RangeRefusal::NotWritable { addr: here });
        }
        let file_backed = mapping.inode != 0;
        if writable
            && mapping.shared
            && file_backed
            && !shared_writable_pinnable(mapping.dev).map_err(RangeRefusal::Os)?
        {
            return Err(RangeRefusal::SharedFileMapping { addr: here });
        }
        at = mapping.end;
    }
    if at < end {
        return Err(RangeRefusal::Unmapped {
            addr: HostVa::new(at),
        });
    }
    Ok(())
}
