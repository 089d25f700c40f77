//! Host ranges of every kind an application may hand to a host-pointer import, and the
//! errno `GEM_USERPTR` answers for each, read-only and writable: the one table both
//! devices are held to. extmem-softgpu's host test (`tests/host_ranges.rs`, which includes
//! this file) runs it against the software device; the answers are those of the kernel
//! driver, whose `pin_user_pages(FOLL_LONGTERM)` follows mm/gup.c `check_vma_flags()`.
//!
//! Only `std`, `rustix`, `extmem`, `extmem_hw` and `extmem_uapi`, so that both crates can
//! compile it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use extmem::backend::Backend;
use extmem_hw::HostVa;
use extmem_uapi::errno::EFAULT;
use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};

/// A kind of host range.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RangeKind {
    /// `MAP_PRIVATE | MAP_ANONYMOUS`, read-write: what `malloc` returns.
    AnonymousReadWrite,
    /// Anonymous, `PROT_READ` only.
    AnonymousReadOnly,
    /// A memfd mapped `MAP_SHARED`, read-write (shmem: nothing to write back).
    MemfdShared,
    /// A regular file on tmpfs mapped `MAP_SHARED`, read-write.
    TmpfsFileShared,
    /// A regular file on a filesystem that writes pages back (ext4 on the host) mapped
    /// `MAP_SHARED`, read-write: a long-term writable pin would race writeback.
    WritebackFileShared,
    /// A regular file mapped `MAP_PRIVATE`, read-write (copy-on-write: private pages).
    FilePrivate,
    /// Anonymous, `PROT_NONE`.
    ProtNone,
    /// Nothing mapped (reserved, then unmapped).
    Hole,
}

/// What the kernel device answers for one kind: 0 for an accepted import, else the errno.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Expected {
    /// The kind of range.
    pub kind: RangeKind,
    /// A read-only import (`FLAG_READ_ONLY`).
    pub read_only: i32,
    /// A writable import.
    pub writable: i32,
}

/// The table. A writable import needs every page readable and writable, and no shared
/// mapping of a file that is written back (`writable_file_mapping_allowed()`); a read-only
/// one needs every page readable. Holes and `PROT_NONE` fail either way. All refusals are
/// `EFAULT` (`EOPNOTSUPP` is only for fsdax files, which neither machine has).
pub const TABLE: [Expected; 8] = [
    Expected {
        kind: RangeKind::AnonymousReadWrite,
        read_only: 0,
        writable: 0,
    },
    Expected {
        kind: RangeKind::AnonymousReadOnly,
        read_only: 0,
        writable: EFAULT,
    },
    Expected {
        kind: RangeKind::MemfdShared,
        read_only: 0,
        writable: 0,
    },
    Expected {
        kind: RangeKind::TmpfsFileShared,
        read_only: 0,
        writable: 0,
    },
    Expected {
        kind: RangeKind::WritebackFileShared,
        read_only: 0,
        writable: EFAULT,
    },
    Expected {
        kind: RangeKind::FilePrivate,
        read_only: 0,
        writable: 0,
    },
    Expected {
        kind: RangeKind::ProtNone,
        read_only: EFAULT,
        writable: EFAULT,
    },
    Expected {
        kind: RangeKind::Hole,
        read_only: EFAULT,
        writable: EFAULT,
    },
];

/// Pages in every range.
pub const PAGES: usize = 4;
/// Bytes in every range.
pub const LEN: usize = PAGES * 4096;

/// A range of one kind, unmapped (and its file removed) on drop.
#[derive(Debug)]
pub struct HostRange {
    ptr: *mut u8,
    /// Whether `ptr` is still mapped (a hole is not).
    mapped: bool,
    /// The file it maps, removed on drop.
    path: Option<PathBuf>,
}

fn os(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// A new file of [`LEN`] bytes in `dir`, named for `kind`.
fn sized_file(dir: &Path, kind: RangeKind) -> io::Result<(File, PathBuf)> {
    let path = dir.join(format!("extmem-host-range-{kind:?}-{}", std::process::id()));
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.set_len(LEN as u64)?;
    Ok((file, path))
}

impl HostRange {
    /// A range of `kind`; a file kind creates its file in `dir`, which must be on tmpfs
    /// for [`RangeKind::TmpfsFileShared`] and on a filesystem that writes back for
    /// [`RangeKind::WritebackFileShared`].
    pub fn new(kind: RangeKind, dir: &Path) -> io::Result<Self> {
        let rw = ProtFlags::READ | ProtFlags::WRITE;
        let anonymous = |prot| {
            // SAFETY: a fresh anonymous mapping at an address the kernel picks.
            unsafe {
                rustix::mm::mmap_anonymous(std::ptr::null_mut(), LEN, prot, MapFlags::PRIVATE)
            }
            .map_err(os)
        };
        let mut path = None;
        let ptr = match kind {
            RangeKind::AnonymousReadWrite | RangeKind::Hole => anonymous(rw)?,
            RangeKind::AnonymousReadOnly => anonymous(ProtFlags::READ)?,
            RangeKind::ProtNone => anonymous(ProtFlags::empty())?,
            RangeKind::MemfdShared => {
                let fd = rustix::fs::memfd_create("extmem-host-range", MemfdFlags::CLOEXEC)
                    .map_err(os)?;
                rustix::fs::ftruncate(&fd, LEN as u64).map_err(os)?;
                // SAFETY: a fresh shared mapping of our own memfd.
                unsafe { rustix::mm::mmap(std::ptr::null_mut(), LEN, rw, MapFlags::SHARED, &fd, 0) }
                    .map_err(os)?
            }
            RangeKind::TmpfsFileShared
            | RangeKind::WritebackFileShared
            | RangeKind::FilePrivate => {
                let (file, at) = sized_file(dir, kind)?;
                path = Some(at);
                let flags = if kind == RangeKind::FilePrivate {
                    MapFlags::PRIVATE
                } else {
                    MapFlags::SHARED
                };
                // SAFETY: a fresh mapping of our own file, which nobody else truncates.
                unsafe { rustix::mm::mmap(std::ptr::null_mut(), LEN, rw, flags, &file, 0) }
                    .map_err(os)?
            }
        };
        let mut range = Self {
            ptr: ptr.cast(),
            mapped: true,
            path,
        };
        if kind == RangeKind::Hole {
            // SAFETY: our own fresh mapping; nothing refers to it.
            unsafe { rustix::mm::munmap(ptr, LEN) }.map_err(os)?;
            range.mapped = false;
        }
        Ok(range)
    }

    /// Its first byte, page-aligned.
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for HostRange {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: our own mapping; nothing refers to it past this point.
            let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), LEN) };
        }
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Imports `range` into `backend` read-only and writable, each probed and pinned, and
/// describes every answer that differs from `expected` (0 for an import, else the errno).
pub fn mismatches<B: Backend + ?Sized>(
    backend: &mut B,
    range: &HostRange,
    expected: &Expected,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (read_only, want) in [(true, expected.read_only), (false, expected.writable)] {
        for probe in [true, false] {
            let ptr = HostVa::new(range.addr());
            let got = match backend.import_host(ptr, LEN as u64, read_only, probe) {
                Ok(Some((handle, _))) => {
                    backend.close(handle);
                    0
                }
                Ok(None) => 0,
                Err(e) => e.errno,
            };
            if got != want {
                wrong.push(format!(
                    "{:?} read_only={read_only} probe={probe}: {got} (table: {want})",
                    expected.kind
                ));
            }
        }
    }
    wrong
}
