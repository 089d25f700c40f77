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
//! whole run in one system call where they can, and `check_mapped`.

use extmem_hw::HostVa;

#[cfg(not(windows))]
mod linux;
#[cfg(windows)]
mod windows;

#[cfg(not(windows))]
pub use linux::{check_mapped, read, read_raw, write, write_raw};
#[cfg(windows)]
pub use windows::{check_mapped, read, read_raw, write, write_raw};

/// A host address the copy engine could not read or write: every byte before it, from
/// the start of the access, has been moved; none from it on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HostFault {
    /// The first byte not moved.
    pub addr: HostVa,
}

#[cfg(test)]
mod tests {
    use super::*;
    use extmem_uapi::errno;

    fn at(addr: u64) -> HostVa {
        HostVa::new(addr)
    }

    /// The errno of `check_mapped`'s failure.
    fn mapped(addr: u64, len: u64) -> Result<(), i32> {
        check_mapped(at(addr), len).map_err(|e| e.errno)
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
        assert_eq!(mapped(0, 4096), Err(errno::ENOMEM));
        // A wrapping range: msync refuses its unaligned start (EINVAL) before it could
        // wrap; Windows checks the arithmetic itself.
        let wrapping = if cfg!(windows) {
            errno::EFAULT
        } else {
            errno::EINVAL
        };
        assert_eq!(mapped(u64::MAX - 10, 4096), Err(wrapping));
    }

    #[test]
    fn a_read_only_page_is_not_written() {
        let text = b"constant data in a read-only mapping";
        let addr = at(text.as_ptr() as u64);
        assert_eq!(write(addr, b"x"), Err(HostFault { addr }));
        let mut out = [0u8; 8];
        read(addr, &mut out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(&out, b"constant");
        assert_eq!(mapped(addr.get() & !4095, 4096), Ok(()));
    }
}
