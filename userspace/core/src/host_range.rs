//! Whether a host range may be imported (`VK_EXT_external_memory_host`), by the rules
//! `GEM_USERPTR` applies on the kernel device: what `pin_user_pages(FOLL_LONGTERM)` would
//! refuse, asked of the OS without pinning or touching the pages.
//!
//! A driver whose kernel pins the range gets this answer from the kernel. A device that
//! pins nothing (extmem's software device, a CPU driver such as lavapipe through
//! libextmem) must ask the same question before it accepts a pointer, or a later device
//! write into a read-only page kills the process. [`check_importable`] answers it from
//! `/proc/self/maps` on Linux (`linux`, with the parsing in [`proc_maps`]) and from
//! `VirtualQuery` on Windows (`windows`); the answer holds only until the application
//! next maps, unmaps or protects memory.

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
pub use linux::check_importable;
#[cfg(windows)]
pub use windows::{check_importable, check_writable};

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
    #[cfg_attr(miri, ignore = "/proc/self/maps, which Miri does not emulate")]
    fn own_memory_is_importable_and_unmapped_or_wrapping_ranges_are_not() {
        let buf = std::vec![0u8; 8192];
        let addr = buf.as_ptr() as u64;
        assert_eq!(mapped(addr & !4095, 4096), Ok(()));
        assert_eq!(check_importable(at(addr & !4095), 4096, true), Ok(()));
        // Page 0 is never mapped.
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
    #[cfg_attr(miri, ignore = "/proc/self/maps, which Miri does not emulate")]
    fn a_read_only_page_is_importable_only_read_only() {
        let text = b"constant data in a read-only mapping";
        let page = text.as_ptr() as u64 & !4095;
        assert_eq!(mapped(page, 4096), Ok(()));
        assert_eq!(
            check_importable(at(page), 4096, true),
            Err(RangeRefusal::NotWritable { addr: at(page) })
        );
    }
}
