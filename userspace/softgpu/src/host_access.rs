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
//! whole run in one system call where they can. Whether a range may be imported at all
//! (the rules `GEM_USERPTR` applies to a host range) is the memory manager's
//! [`extmem::host_range`], which C drivers reach through libextmem as well.

use extmem_hw::HostVa;

#[cfg(not(windows))]
mod linux;
#[cfg(windows)]
mod windows;

#[cfg(not(windows))]
pub use linux::{read, read_raw, write, write_raw};
#[cfg(windows)]
pub use windows::{read, read_raw, write, write_raw};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: u64) -> HostVa {
        HostVa::new(addr)
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
        // Page 0 is never mapped.
        assert_eq!(read(at(16), &mut out), Err(HostFault { addr: at(16) }));
        assert_eq!(write(at(16), &out), Err(HostFault { addr: at(16) }));
    }

    #[test]
    fn a_read_only_page_is_not_written() {
        let text = b"constant data in a read-only mapping";
        let addr = at(text.as_ptr() as u64);
        assert_eq!(write(addr, b"x"), Err(HostFault { addr }));
        let mut out = [0u8; 8];
        read(addr, &mut out).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(&out, b"constant");
    }
}
