//! Host memory for `GEM_USERPTR` tests: an aligned heap allocation, anonymous mappings (with
//! their protection and huge-page advice), and physical addresses from `/proc/self/pagemap`.
//!
//! The device reads and writes this memory behind the compiler's back, so, as in
//! [`crate::mapping`], no Rust reference into it is handed out: bytes go in and out by copies
//! through raw pointers, and the pointers stay valid for the life of the owner.

use std::alloc::{self, Layout};
use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ptr::{self, NonNull};

use rustix::mm::{self, Advice, MapFlags, MprotectFlags, ProtFlags};

/// A byte range outside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// Start of the requested range.
    pub offset: usize,
    /// Its length.
    pub len: usize,
    /// The buffer's length.
    pub buffer_len: usize,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "range {}+{} is outside the {}-byte buffer",
            self.offset, self.len, self.buffer_len
        )
    }
}

impl std::error::Error for OutOfRange {}

/// Raw byte access shared by the buffer types.
///
/// # Safety
///
/// `base()` must point at `len()` bytes that stay readable (and writable when written) for
/// as long as the value lives.
pub unsafe trait RawBytes {
    /// Start of the buffer.
    fn base(&self) -> NonNull<u8>;
    /// Its length in bytes.
    fn len(&self) -> usize;

    /// Whether the buffer is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The start address as the kernel sees it (`GEM_USERPTR`'s `ptr`).
    fn addr(&self) -> u64 {
        self.base().as_ptr() as u64
    }

    /// Copies `bytes` in at `offset`.
    fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), OutOfRange> {
        check(offset, bytes.len(), self.len())?;
        // SAFETY: the range is inside the buffer (checked), which is live and writable (trait
        // contract); the source is a separate Rust slice.
        unsafe {
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base().as_ptr().add(offset),
                bytes.len(),
            );
        }
        Ok(())
    }

    /// Copies `len` bytes out from `offset`.
    fn read(&self, offset: usize, len: usize) -> Result<Vec<u8>, OutOfRange> {
        check(offset, len, self.len())?;
        let mut out = vec![0_u8; len];
        // SAFETY: the range is inside the live buffer (checked); `out` has `len` bytes.
        unsafe {
            ptr::copy_nonoverlapping(self.base().as_ptr().add(offset), out.as_mut_ptr(), len);
        }
        Ok(out)
    }
}

fn check(offset: usize, len: usize, buffer_len: usize) -> Result<(), OutOfRange> {
    match offset.checked_add(len) {
        Some(end) if end <= buffer_len => Ok(()),
        _ => Err(OutOfRange {
            offset,
            len,
            buffer_len,
        }),
    }
}

/// A zeroed heap allocation with a chosen alignment (what `posix_memalign` gives C).
///
/// # Invariants
///
/// `base` came from `alloc::alloc_zeroed(layout)` and is freed only by `Drop`.
#[derive(Debug)]
pub struct HeapBuffer {
    base: NonNull<u8>,
    layout: Layout,
}

impl HeapBuffer {
    /// `len` zeroed bytes aligned to `align` (a power of two).
    pub fn new(len: usize, align: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(len, align).map_err(io::Error::other)?;
        if layout.size() == 0 {
            return Err(io::Error::other("a zero-sized heap buffer"));
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let base = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(base).ok_or_else(|| io::Error::other("out of memory"))?;
        Ok(Self { base, layout })
    }
}

// SAFETY: `base` points at `layout.size()` bytes owned by this value until `Drop`.
unsafe impl RawBytes for HeapBuffer {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
    fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for HeapBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated with exactly this layout (type invariant), freed once.
        unsafe { alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// A private anonymous mapping (or a huge-page one), unmapped on drop.
///
/// # Invariants
///
/// `base`/`len` describe a live mapping owned by this value, unmapped only by `Drop`.
#[derive(Debug)]
pub struct AnonMapping {
    base: NonNull<u8>,
    len: usize,
}

impl AnonMapping {
    /// `len` bytes, private and anonymous, with protection `prot` and extra `flags`.
    pub fn new(len: usize, prot: ProtFlags, flags: MapFlags) -> io::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel picks overlaps nothing Rust uses.
        let base =
            unsafe { mm::mmap_anonymous(ptr::null_mut(), len, prot, MapFlags::PRIVATE | flags) }?;
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, len })
    }

    /// Readable and writable.
    pub fn read_write(len: usize) -> io::Result<Self> {
        Self::new(len, ProtFlags::READ | ProtFlags::WRITE, MapFlags::empty())
    }

    /// Changes the protection of the whole mapping.
    pub fn protect(&self, prot: MprotectFlags) -> io::Result<()> {
        // SAFETY: the range is this value's own mapping; no reference into it exists.
        unsafe { mm::mprotect(self.base.as_ptr().cast::<c_void>(), self.len, prot) }?;
        Ok(())
    }

    /// `madvise` on `[offset, offset + len)` of the mapping.
    pub fn advise(&self, offset: usize, len: usize, advice: Advice) -> io::Result<()> {
        check(offset, len, self.len).map_err(io::Error::other)?;
        // SAFETY: the range lies inside this value's own mapping (checked); advice does not
        // invalidate anything Rust holds, since no reference into the mapping exists.
        unsafe { mm::madvise(self.base.as_ptr().add(offset).cast::<c_void>(), len, advice) }?;
        Ok(())
    }
}

// SAFETY: `base` points at the `len` bytes of a live mapping owned by this value; reads and
// writes through it are only valid when the protection allows, which the tests arrange.
unsafe impl RawBytes for AnonMapping {
    fn base(&self) -> NonNull<u8> {
        self.base
    }
    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for AnonMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value (type invariant) and unmapped once.
        if let Err(err) = unsafe { mm::munmap(self.base.as_ptr().cast::<c_void>(), self.len) } {
            eprintln!("munmap of {} bytes failed: {err}", self.len);
        }
    }
}

/// An address range that is certainly not mapped: reserved, then unmapped again.
pub fn unmapped_range(len: usize) -> io::Result<u64> {
    let reserved = AnonMapping::new(len, ProtFlags::empty(), MapFlags::empty())?;
    let addr = reserved.addr();
    drop(reserved);
    Ok(addr)
}

/// Bytes in one of this system's CPU pages (`sysconf(_SC_PAGESIZE)`): 4 KiB on x86_64, 4 or
/// 16 KiB on arm64. The kernel pins, charges `RLIMIT_MEMLOCK` and numbers `/proc/self/pagemap`
/// in these, and host pointers are imported in whole ones; the GPU's own page-table granule
/// stays 4 KiB whatever this is.
pub fn cpu_page() -> u64 {
    rustix::param::page_size() as u64
}

/// [`cpu_page`] as a buffer length.
pub fn cpu_page_len() -> usize {
    rustix::param::page_size()
}

/// The physical address behind the virtual address `addr` of this process, from
/// `/proc/self/pagemap` (`Documentation/admin-guide/mm/pagemap.rst`): `None` when the page is
/// not present. Needs CAP_SYS_ADMIN for the frame numbers (they read as 0 otherwise).
pub fn physical_address(addr: u64) -> io::Result<Option<u64>> {
    const PRESENT: u64 = 1 << 63;
    const PFN_MASK: u64 = (1 << 55) - 1;
    let mut pagemap = File::open("/proc/self/pagemap")?;
    // pagemap has one entry per CPU page, not per 4 KiB.
    let page = cpu_page();
    pagemap.seek(SeekFrom::Start((addr / page) * 8))?;
    let mut entry = [0_u8; 8];
    pagemap.read_exact(&mut entry)?;
    let entry = u64::from_le_bytes(entry);
    if entry & PRESENT == 0 {
        return Ok(None);
    }
    let pfn = entry & PFN_MASK;
    if pfn == 0 {
        return Err(io::Error::other(
            "pagemap hides frame numbers (not CAP_SYS_ADMIN)",
        ));
    }
    Ok(Some(pfn * page + addr % page))
}

/// `VmPin` of a process from `/proc/<pid>/status`, in KiB (`mm->pinned_vm`, what
/// `GEM_USERPTR` charges against `RLIMIT_MEMLOCK`).
pub fn vm_pin_kib(pid: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmPin line in /proc/{pid}/status")))
}

/// Pages pinned with `FOLL_PIN` anywhere in the system and not yet unpinned: the difference
/// of `nr_foll_pin_acquired` and `nr_foll_pin_released` in `/proc/vmstat`. A pin that an
/// error path forgot to undo shows here, whatever the driver's own counters say.
///
/// The kernel keeps these counters per CPU and folds them into `/proc/vmstat` only now and
/// then, so the per-CPU deltas are folded first by writing `/proc/sys/vm/stat_refresh`
/// (root only); without that the difference can be off by dozens, even negative.
pub fn foll_pins_outstanding() -> io::Result<i64> {
    std::fs::write("/proc/sys/vm/stat_refresh", "1")?;
    let vmstat = std::fs::read_to_string("/proc/vmstat")?;
    pins_in_vmstat(&vmstat)
        .ok_or_else(|| io::Error::other("no nr_foll_pin_acquired/released in /proc/vmstat"))
}

/// `nr_foll_pin_acquired - nr_foll_pin_released` of a `/proc/vmstat` text.
fn pins_in_vmstat(vmstat: &str) -> Option<i64> {
    let field = |name: &str| -> Option<i64> {
        vmstat
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("nr_foll_pin_acquired")? - field("nr_foll_pin_released")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_buffers_are_aligned_and_bounds_checked() -> io::Result<()> {
        let buffer = HeapBuffer::new(8192, 4096)?;
        assert_eq!(buffer.addr() % 4096, 0);
        buffer.write(4096, b"abc").map_err(io::Error::other)?;
        assert_eq!(buffer.read(4096, 3).map_err(io::Error::other)?, b"abc");
        assert!(buffer.write(8190, b"abc").is_err());
        Ok(())
    }

    #[test]
    fn anonymous_mappings_read_back_and_unmapped_ranges_are_unmapped() -> io::Result<()> {
        let mapping = AnonMapping::read_write(8192)?;
        mapping.write(10, b"xyz").map_err(io::Error::other)?;
        assert_eq!(mapping.read(10, 3).map_err(io::Error::other)?, b"xyz");
        let hole = unmapped_range(4096)?;
        assert_eq!(hole % 4096, 0);
        Ok(())
    }

    #[test]
    fn vm_pin_of_this_process_is_readable() -> io::Result<()> {
        assert_eq!(vm_pin_kib("self")?, 0);
        Ok(())
    }

    #[test]
    fn outstanding_pins_are_acquired_minus_released() {
        let vmstat = "nr_free_pages 1000\nnr_foll_pin_acquired 812\nnr_foll_pin_released 800\n";
        assert_eq!(pins_in_vmstat(vmstat), Some(12));
        assert_eq!(pins_in_vmstat("nr_foll_pin_acquired 1\n"), None);
    }
}
