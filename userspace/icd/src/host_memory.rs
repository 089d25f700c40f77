//! Writes into CPU mappings of device memory (the staging chunks of `vkCmdUpdateBuffer`).

use extmem_hw::HostVa;

/// Copies `data` to `dst`.
///
/// # Safety
/// `dst` must be the start of `data.len()` bytes inside a live, writable CPU mapping that
/// nothing else is writing: the callers pass a staging chunk the recording owns, at an
/// offset its [`crate::commands::StagingCursor`] reserved (so the range fits the chunk).
pub unsafe fn write(dst: HostVa, data: &[u8]) {
    let Ok(addr) = usize::try_from(dst.get()) else {
        return;
    };
    // SAFETY: per the caller's guarantee, `[dst, dst + data.len())` is mapped, writable
    // and not aliased by any Rust reference; `data` is a separate slice (application
    // memory or ours), so the ranges do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
}
