//! A fixed-size pool of table pages with made-up physical addresses: the [`TableMemory`]
//! of host tests, fuzz targets and bare-metal Cortex-M, where no allocator exists.

use crate::addr::PhysAddr;
use crate::page_table::{TableIndex, TableMemory, ENTRIES};
use crate::profile::MIN_PAGE;

/// `N` table pages at physical addresses `base`, `base + 4 KiB`, ….
///
/// # Invariants
/// `free[..free_len]` holds the indices of the pages not handed out, each once.
#[derive(Clone, Debug)]
pub struct TablePool<const N: usize> {
    pages: [[u64; ENTRIES as usize]; N],
    free: [u16; N],
    free_len: usize,
    base: PhysAddr,
    peak: usize,
}

impl<const N: usize> TablePool<N> {
    /// A pool whose first page sits at `base`, or `None` when `base` is not 4 KiB-aligned,
    /// the pool would run past the end of the address space, or `N` exceeds 65536 pages.
    #[must_use]
    pub fn new(base: PhysAddr) -> Option<Self> {
        let bytes = (N as u64).checked_mul(MIN_PAGE.get())?;
        if !base.is_aligned(MIN_PAGE) || base.checked_add(bytes).is_none() || N > 1 << 16 {
            return None;
        }
        let mut free = [0u16; N];
        // Hand out low addresses first: pop from the end of a descending list.
        for (slot, page) in free.iter_mut().zip((0..N).rev()) {
            *slot = u16::try_from(page).ok()?;
        }
        Some(Self {
            pages: [[0; ENTRIES as usize]; N],
            free,
            free_len: N,
            base,
            peak: 0,
        })
    }

    /// Pages handed out and not yet freed.
    #[must_use]
    pub fn live(&self) -> usize {
        N - self.free_len
    }

    /// The most pages ever live at once.
    #[must_use]
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// The page index of `table`, if the pool owns that address.
    fn page_of(&self, table: PhysAddr) -> Option<usize> {
        let offset = table.offset_from(self.base)?;
        if !MIN_PAGE.is_aligned(offset) {
            return None;
        }
        let page = usize::try_from(offset / MIN_PAGE.get()).ok()?;
        (page < N).then_some(page)
    }

    fn is_free(&self, page: usize) -> bool {
        self.free[..self.free_len]
            .iter()
            .any(|&p| usize::from(p) == page)
    }
}

impl<const N: usize> TableMemory for TablePool<N> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let new_len = self.free_len.checked_sub(1)?;
        let page = usize::from(*self.free.get(new_len)?);
        self.free_len = new_len;
        self.peak = self.peak.max(self.live());
        let table = self.pages.get_mut(page)?;
        *table = [0; ENTRIES as usize];
        self.base.checked_add(page as u64 * MIN_PAGE.get())
    }

    fn free_table(&mut self, table: PhysAddr) {
        // A double free or a foreign address is ignored rather than corrupting the list.
        let Some(page) = self.page_of(table) else {
            return;
        };
        if self.is_free(page) {
            return;
        }
        if let (Some(slot), Ok(page)) = (self.free.get_mut(self.free_len), u16::try_from(page)) {
            *slot = page;
            self.free_len += 1;
        }
    }

    fn read_descriptor(&self, table: PhysAddr, index: TableIndex) -> u64 {
        self.page_of(table)
            .and_then(|page| self.pages.get(page))
            .and_then(|t| t.get(index.get()))
            .copied()
            .unwrap_or(0)
    }

    fn write_descriptor(&mut self, table: PhysAddr, index: TableIndex, raw: u64) {
        let Some(page) = self.page_of(table) else {
            return;
        };
        if let Some(slot) = self
            .pages
            .get_mut(page)
            .and_then(|t| t.get_mut(index.get()))
        {
            *slot = raw;
        }
    }

    fn read_descriptors(&self, table: PhysAddr, first: TableIndex, out: &mut [u64]) {
        let entries = self
            .page_of(table)
            .and_then(|page| self.pages.get(page))
            .and_then(|t| t.get(first.get()..));
        match entries {
            Some(entries) => {
                let n = entries.len().min(out.len());
                if let (Some(dst), Some(src)) = (out.get_mut(..n), entries.get(..n)) {
                    dst.copy_from_slice(src);
                }
            }
            None => out
                .iter_mut()
                .take(usize::from(ENTRIES) - first.get())
                .for_each(|d| *d = 0),
        }
    }

    fn write_descriptors(&mut self, table: PhysAddr, first: TableIndex, raws: &[u64]) {
        let Some(page) = self.page_of(table) else {
            return;
        };
        if let Some(entries) = self
            .pages
            .get_mut(page)
            .and_then(|t| t.get_mut(first.get()..))
        {
            let n = entries.len().min(raws.len());
            if let (Some(dst), Some(src)) = (entries.get_mut(..n), raws.get(..n)) {
                dst.copy_from_slice(src);
            }
        }
    }
}
