//! [`FixedPlatform`]: a [`Platform`] of `N` pages in a plain array, with no allocator and
//! no `std`, for the cases that run on a Cortex-M3.

use core::cell::{Cell, RefCell};

use extmem_hw::PhysAddr;

use crate::platform::{MemoryFault, ObjectId, Platform, Segment, SegmentError};

/// Bytes in a page.
const PAGE_BYTES: usize = 4096;
/// 4 KiB, as an address step.
const PAGE: u64 = 4096;

/// `N` (at most 64) pages at physical addresses [`FixedPlatform::BASE`] + 4 KiB × i, handed
/// out as table pages. A live table page is the only RAM: the KTAP self-test's objects are
/// table pages, and it asks for no GEM object.
///
/// It keeps the platform contract loudly, like the host fake: an access outside a live
/// page, across a page, or misaligned, and a free of a page not live, panic, which fails
/// the case.
///
/// # Invariants
/// Bit `i` of `live` is set exactly while page `i` is handed out; `N <= 64`.
#[derive(Debug)]
pub struct FixedPlatform<const N: usize> {
    pages: RefCell<[[u8; PAGE_BYTES]; N]>,
    live: Cell<u64>,
    peak: Cell<usize>,
    /// Table pages that may still be handed out (`None`: all of them).
    budget: Cell<Option<u32>>,
}

impl<const N: usize> Default for FixedPlatform<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FixedPlatform<N> {
    /// The physical address of page 0 (below the 40-bit output-address limit).
    pub const BASE: u64 = 0x40_0000_0000;

    /// `N` free pages.
    ///
    /// # Panics
    /// When `N` exceeds 64 (a build-time error where `N` is a constant).
    #[must_use]
    pub const fn new() -> Self {
        assert!(N <= 64, "a FixedPlatform has at most 64 pages");
        Self {
            pages: RefCell::new([[0; PAGE_BYTES]; N]),
            live: Cell::new(0),
            peak: Cell::new(0),
            budget: Cell::new(None),
        }
    }

    /// Pages handed out and not yet freed.
    #[must_use]
    pub fn live_pages(&self) -> usize {
        self.live.get().count_ones() as usize
    }

    /// The most pages ever live at once.
    #[must_use]
    pub fn peak(&self) -> usize {
        self.peak.get()
    }

    /// Allows `budget` more table pages (`None`: as many as there are).
    pub fn set_budget(&self, budget: Option<u32>) {
        self.budget.set(budget);
    }

    /// The page holding `[pa, pa + len)` and the offset of `pa` in it; a panic when the
    /// range is empty, crosses a page or is not in a live page.
    #[track_caller]
    fn locate(&self, pa: u64, len: u64) -> Option<(usize, usize)> {
        assert!(len > 0, "empty access at {pa:#x}");
        let offset = pa.checked_sub(Self::BASE)?;
        let last = offset.checked_add(len - 1)?;
        assert_eq!(
            offset / PAGE,
            last / PAGE,
            "access [{pa:#x}, +{len:#x}) crosses a 4 KiB page"
        );
        let page = usize::try_from(offset / PAGE).ok()?;
        let live = page < N && self.live.get() & (1 << page) != 0;
        live.then_some((page, usize::try_from(offset % PAGE).ok()?))
    }

    /// `locate` for a table word, which must be live.
    #[track_caller]
    fn word(&self, pa: PhysAddr) -> (usize, usize) {
        assert_eq!(pa.get() % 8, 0, "misaligned word at {pa:?}");
        match self.locate(pa.get(), 8) {
            Some(at) => at,
            None => panic!("word at {pa:?} is not in a live table page"),
        }
    }
}

impl<const N: usize> Platform for FixedPlatform<N> {
    fn alloc_table(&self) -> Option<PhysAddr> {
        if let Some(budget) = self.budget.get() {
            self.budget.set(Some(budget.checked_sub(1)?));
        }
        let live = self.live.get();
        let page = (0..N).find(|&i| live & (1 << i) == 0)?;
        self.pages.borrow_mut().get_mut(page)?.fill(0);
        self.live.set(live | 1 << page);
        self.peak.set(self.peak.get().max(self.live_pages()));
        PhysAddr::new(Self::BASE).checked_add(page as u64 * PAGE)
    }

    fn free_table(&self, table: PhysAddr) {
        let page = match self.locate(table.get(), PAGE) {
            Some((page, 0)) => page,
            _ => panic!("free of {table:?}, which is not a live table"),
        };
        self.live.set(self.live.get() & !(1 << page));
    }

    fn read_u64(&self, pa: PhysAddr) -> u64 {
        let (page, offset) = self.word(pa);
        let pages = self.pages.borrow();
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&pages[page][offset..offset + 8]);
        u64::from_le_bytes(bytes)
    }

    fn write_u64(&self, pa: PhysAddr, value: u64) {
        let (page, offset) = self.word(pa);
        self.pages.borrow_mut()[page][offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemoryFault> {
        let (Some((to, at)), Some((from, start))) =
            (self.locate(dst.get(), len), self.locate(src.get(), len))
        else {
            return Err(MemoryFault);
        };
        let len = usize::try_from(len).map_err(|_| MemoryFault)?;
        let mut pages = self.pages.borrow_mut();
        // In place, without a page-sized buffer: the Cortex-M3's stack is small.
        if to == from {
            pages[to].copy_within(start..start + len, at);
        } else {
            let (low, high) = pages.split_at_mut(to.max(from));
            let (dst, src) = if to < from {
                (&mut low[to], &high[0])
            } else {
                (&mut high[0], &low[from])
            };
            dst[at..at + len].copy_from_slice(&src[start..start + len]);
        }
        Ok(())
    }

    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault> {
        assert_eq!((dst.get() % 4, len % 4), (0, 0), "unaligned fill");
        let (page, at) = self.locate(dst.get(), len).ok_or(MemoryFault)?;
        let len = usize::try_from(len).map_err(|_| MemoryFault)?;
        let mut pages = self.pages.borrow_mut();
        for word in pages[page][at..at + len].chunks_exact_mut(4) {
            word.copy_from_slice(&value.to_le_bytes());
        }
        Ok(())
    }

    fn object_segment(&self, _object: ObjectId, _offset: u64) -> Result<Segment, SegmentError> {
        // No GEM objects here: every object is past its end.
        Err(SegmentError::PastEnd)
    }

    fn object_unbound(&self, _object: ObjectId) {}
}
