//! `extmem_host_range_importable`: the host-range rule for drivers with no kernel to pin.
//!
//! A GPU driver's `import_host` callback asks its kernel to pin the range
//! (`GEM_USERPTR`), and the kernel refuses unmapped, unreadable and, for a writable
//! import, read-only pages with `EFAULT`. A CPU driver (Mesa's lavapipe) pins nothing and
//! reads and writes the application's pages directly, so it must ask the same question
//! before it accepts a pointer, or a later GPU write into a read-only page kills the
//! process. The answer is the memory manager's own rule
//! (`extmem::host_range::check_importable`, from `/proc/self/maps`, which extmem's
//! software device applies too), offered here so C drivers do not each re-implement it.

use core::ffi::{c_int, c_void};

use extmem::backend::errno;
use extmem::host_range::{self, RangeRefusal};
use extmem_hw::HostVa;

/// The errno `GEM_USERPTR` answers for `refusal`: `EFAULT` for every page it will not pin,
/// the OS's own errno when `/proc/self/maps` could not be read.
fn errno_of(refusal: RangeRefusal) -> c_int {
    match refusal {
        RangeRefusal::Unmapped { .. }
        | RangeRefusal::NotReadable { .. }
        | RangeRefusal::NotWritable { .. }
        | RangeRefusal::SharedFileMapping { .. } => errno::EFAULT,
        RangeRefusal::Os(os) => os.errno,
    }
}

/// Whether `[ptr, ptr + size)` could be imported as host memory, by the rules a kernel's
/// `pin_user_pages` applies: every page mapped and readable and, if `writable`, writable
/// (and not a shared mapping of a file that is written back). Returns 0, or `EFAULT` for
/// a range it refuses (an errno of the OS if the process's mappings could not be read).
///
/// For a driver with no kernel to pin pages (a CPU driver such as lavapipe): call it from
/// the backend's `import_host` and return what it returns. It only reads the process's
/// memory map: nothing is pinned, and the answer holds only until the application next
/// maps, unmaps or protects memory. A NULL `ptr` or an empty range is refused.
#[no_mangle]
pub extern "C" fn extmem_host_range_importable(
    ptr: *const c_void,
    size: u64,
    writable: bool,
) -> c_int {
    if ptr.is_null() || size == 0 {
        return errno::EFAULT;
    }
    let start = HostVa::new(ptr as usize as u64);
    match host_range::check_importable(start, size, writable) {
        Ok(()) => 0,
        Err(refusal) => errno_of(refusal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_heap_is_importable_and_holes_and_read_only_pages_are_not() {
        let page = 4096_usize;
        let buffer = vec![0_u8; 4 * page];
        let aligned = buffer
            .as_ptr()
            .wrapping_add(page - (buffer.as_ptr() as usize) % page);
        let len = u64::try_from(2 * page).unwrap_or(u64::MAX);
        assert_eq!(extmem_host_range_importable(aligned.cast(), len, true), 0);
        assert_eq!(
            extmem_host_range_importable(core::ptr::null(), len, false),
            errno::EFAULT
        );
        assert_eq!(
            extmem_host_range_importable(aligned.cast(), 0, false),
            errno::EFAULT
        );
        // Page 0 is never mapped.
        let low = 4096_usize as *const c_void;
        assert_eq!(
            extmem_host_range_importable(low, 4096, false),
            errno::EFAULT
        );
        // The program's own code: readable, never writable.
        let code = extmem_host_range_importable as *const c_void;
        let code_page = ((code as usize) & !(page - 1)) as *const c_void;
        assert_eq!(extmem_host_range_importable(code_page, 4096, false), 0);
        assert_eq!(
            extmem_host_range_importable(code_page, 4096, true),
            errno::EFAULT
        );
    }
}
