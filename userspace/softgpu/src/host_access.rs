//! The copy engine's access to memory the application imported by host pointer.
//!
//! The kernel device pins such pages (`pin_user_pages`), so they cannot go away while the
//! GPU uses them. The software device pins nothing: the application may unmap or
//! re-protect its memory while it is imported (undefined in Vulkan, but it must not crash
//! the driver). So the copy engine never dereferences an imported address: it reads and
//! writes it through the OS, on its own process, which fails on a page that is not mapped
//! (or, for a write, not writable) instead of raising a signal or an exception:
//! `process_vm_readv`/`writev` on Linux (`linux`), `ReadProcessMemory` /
//! `WriteProcessMemory` on Windows (`windows`). Both give the same three functions:
//! `read`, `write` and `check_mapped`.

#[cfg(not(windows))]
mod linux;
#[cfg(windows)]
mod windows;

#[cfg(not(windows))]
pub use linux::{check_mapped, read, write};
#[cfg(windows)]
pub use windows::{check_mapped, read, write};

/// A host address the copy engine could not read or write.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HostFault {
    /// The address.
    pub addr: u64,
}
