//! Mesa's `util_vma_heap` (`src/util/vma.c` from Debian's `mesa` source package, built by
//! `build.rs`), the allocator Mesa's Vulkan drivers use for GPU VA, behind the bench's
//! allocator trait. The C side is `csrc/util_vma_heap_shim.c`.

use core::ffi::c_void;
use core::ptr::NonNull;

extern "C" {
    fn extmem_bench_vma_new(start: u64, size: u64, alloc_high: bool) -> *mut c_void;
    fn extmem_bench_vma_destroy(heap: *mut c_void);
    fn extmem_bench_vma_alloc(heap: *mut c_void, size: u64, align: u64) -> u64;
    fn extmem_bench_vma_free(heap: *mut c_void, offset: u64, size: u64);
    fn extmem_bench_vma_holes(
        heap: *const c_void,
        size: u64,
        align: u64,
        largest: *mut u64,
        free_bytes: *mut u64,
        fits: *mut bool,
    );
    fn extmem_bench_vma_metadata_bytes() -> usize;
}

/// One `struct util_vma_heap`, owned.
///
/// # Invariants
/// `heap` came from `extmem_bench_vma_new` and is destroyed only by `Drop`.
pub struct UtilVmaHeap {
    heap: NonNull<c_void>,
}

impl UtilVmaHeap {
    /// A heap over `[start, end)`, allocating from the top (`alloc_high`, Mesa's default)
    /// or from the bottom. `None` if the C side could not allocate it.
    pub fn new(start: u64, end: u64, alloc_high: bool) -> Option<Self> {
        let size = end.checked_sub(start)?;
        // SAFETY: plain values in; the shim returns a fresh heap or null.
        let heap = unsafe { extmem_bench_vma_new(start, size, alloc_high) };
        NonNull::new(heap).map(|heap| Self { heap })
    }

    /// `util_vma_heap_alloc`: the start of `size` bytes at `align` (a power of two), or
    /// `None` (Mesa's 0) when nothing fits.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        // SAFETY: the heap is live (type invariant); size is non-zero and align a power of
        // two, as util_vma_heap_alloc requires (the bench's traces only make such).
        let at = unsafe { extmem_bench_vma_alloc(self.heap.as_ptr(), size, align) };
        (at != 0).then_some(at)
    }

    /// `util_vma_heap_free` of a range `alloc` returned, with its size.
    pub fn free(&mut self, offset: u64, size: u64) {
        // SAFETY: the heap is live; the caller frees only what it allocated, once.
        unsafe { extmem_bench_vma_free(self.heap.as_ptr(), offset, size) }
    }

    /// (largest hole, free bytes, whether some hole holds `size` bytes at `align`).
    pub fn holes(&self, size: u64, align: u64) -> (u64, u64, bool) {
        let (mut largest, mut free, mut fits) = (0, 0, false);
        // SAFETY: the heap is live; the three pointers are to locals that outlive the call.
        unsafe {
            extmem_bench_vma_holes(
                self.heap.as_ptr(),
                size,
                align,
                &mut largest,
                &mut free,
                &mut fits,
            );
        }
        (largest, free, fits)
    }

    /// Bytes of hole records every util_vma_heap in the process holds now.
    pub fn metadata_bytes() -> usize {
        // SAFETY: reads a counter; no arguments.
        unsafe { extmem_bench_vma_metadata_bytes() }
    }
}

impl Drop for UtilVmaHeap {
    fn drop(&mut self) {
        // SAFETY: the heap is live and this is its only destruction (type invariant).
        unsafe { extmem_bench_vma_destroy(self.heap.as_ptr()) }
    }
}
