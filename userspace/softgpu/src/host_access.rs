//! The copy engine's access to memory the application imported by host pointer.
//!
//! The kernel device pins such pages (`pin_user_pages`), so they cannot go away while the
//! GPU uses them. The software device pins nothing: the application may unmap or
//! re-protect its memory while it is imported (undefined in Vulkan, but it must not crash
//! the driver). So the copy engine never dereferences an imported address: it reads and
//! writes it through the OS, on its own process, which fails on a page that is not mapped
//! (or, for a write, not writable) instead of raising a signal or an exception:
//! `process_vm_readv`/`writev` on Linux (`linux`), `ReadProcessMemory` /
//! `WriteProcessMemory` on Windows (`windows`). Both give the same functions: `read` and
//! `write` (and `read_raw`/`write_raw` on memory other processes may share), which move a
//! whole run in one system call where they can; and `check_importable`, the rules
//! `GEM_USERPTR` applies to a host range.

use core::fmt;

use extmem_hw::HostVa;

use crate::error::OsError;

#[cfg(not(windows))]
mod linux;
#[cfg(not(windows))]
pub mod proc_maps;
#[cfg(windows)]
mod windows;

#[cfg(not(windows))]
pub use linux::{check_importable, read, read_raw, write, write_raw};
#[cfg(windows)]
pub use windows::{check_importable, read, read_raw, write, write_raw};

/// A host address the copy engine could not read or write: every byte before it, from
/// the start of the access, has been moved; none from it on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HostFault {
    /// The first byte not moved.
    pub addr: HostVa,
}

/// The start of `[addr, addr + len)` as an address of this process, if the whole range
/// fits its address space.
fn range_start(addr: HostVa, len: usize) -> Result<usize, HostFault> {
    usize::try_from(addr.get())
        .ok()
        .filter(|start| start.checked_add(len).is_some())
        .ok_or(HostFault { addr })
}

/// The fault of a move from `addr` that stopped after `done` bytes.
fn fault_after(addr: HostVa, done: usize) -> HostFault {
    let at = u64::try_from(done)
        .ok()
        .and_then(|d| addr.checked_add(d))
        .unwrap_or(addr);
    HostFault { addr: at }
}

/// Why a host range cannot be imported: what `pin_user_pages(FOLL_LONGTERM)` refuses on
/// the kernel device, each with the first address it applies to. The kernel answers all
/// of them with `EFAULT`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RangeRefusal {
    /// Nothing is mapped there (a hole, or past the end of the address space).
    Unmapped {
        /// The first unmapped address.
        addr: HostVa,
    },
    /// The mapping there cannot be read (`PROT_NONE`, a guard page).
    NotReadable {
        /// Where it starts in the range.
        addr: HostVa,
    },
    /// A writable import, and the mapping there is read-only.
    NotWritable {
        /// Where it starts in the range.
        addr: HostVa,
    },
    /// A writable import of a shared mapping of a file whose filesystem tracks dirty pages
    /// (mm/gup.c `writable_file_mapping_allowed()`): a regular file on disk, 9p, NFS; on
    /// Windows a view of a file (not the pagefile) that writes go back to.
    SharedFileMapping {
        /// Where it starts in the range.
        addr: HostVa,
    },
    /// The OS could not say what is mapped there.
    Os(OsError),
}

impl fmt::Display for RangeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeRefusal::Unmapped { addr } => write!(f, "nothing is mapped at {addr}"),
            RangeRefusal::NotReadable { addr } => {
                write!(f, "the mapping at {addr} is not readable")
            }
            RangeRefusal::NotWritable { addr } => {
                write!(
                    f,
                    "the mapping at {addr} is not writable, and the import is"
                )
            }
            RangeRefusal::SharedFileMapping { addr } => write!(
                f,
                "the mapping at {addr} is a shared mapping of a file that is written back, \
                 which a writable import may not pin"
            ),
            RangeRefusal::Os(os) => write!(f, "{os}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: u64) -> HostVa {
        HostVa::new(addr)
    }

    /// `check_importable` for a read-only import.
    fn mapped(addr: u64, len: u64) -> Result<(), RangeRefusal> {
        check_importable(at(addr), len, false)
    }

    #[test]
    fn reads_and_writes_own_memory_and_faults_on_unmapped_pages() {
        let mut buf = vec![0u8; 8192];
        buf[100] = 7;
        let addr = buf.as_ptr() as u64;
        let mut out = [0u8; 4];
        read(at(addr + 99), &mut out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(out, [0, 7, 0, 0]);
        write(at(addr + 200), &[1, 2, 3]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(&buf[200..203], &[1, 2, 3]);
        assert_eq!(mapped(addr & !4095, 4096), Ok(()));
        // Page 0 is never mapped.
        assert_eq!(read(at(16), &mut out), Err(HostFault { addr: at(16) }));
        assert_eq!(write(at(16), &out), Err(HostFault { addr: at(16) }));
        assert_eq!(mapped(0, 4096), Err(RangeRefusal::Unmapped { addr: at(0) }));
        // A range that wraps names its start.
        assert_eq!(
            mapped(u64::MAX - 10, 4096),
            Err(RangeRefusal::Unmapped {
                addr: at(u64::MAX - 10)
            })
        );
    }

    #[test]
    fn a_read_only_page_is_not_written() {
        let text = b"constant data in a read-only mapping";
        let addr = at(text.as_ptr() as u64);
        assert_eq!(write(addr, b"x"), Err(HostFault { addr }));
        let mut out = [0u8; 8];
        read(addr, &mut out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(&out, b"constant");
        let page = addr.get() & !4095;
        assert_eq!(mapped(page, 4096), Ok(()));
        assert_eq!(
            check_importable(at(page), 4096, true),
            Err(RangeRefusal::NotWritable { addr: at(page) })
        );
    }
}
