//! A fixed-size pool of table pages with made-up physical addresses: the [`TableMemory`]
//! of host tests, fuzz targets and bare-metal Cortex-M, where no allocator exists.

use crate::addr::PhysAddr;
use crate::page_table::{Entries, TableIndex, TableMemory, ENTRIES};
use crate::profile::MIN_PAGE;

/// `N` table pages at physical addresses `base`, `base + 4 KiB`, ….
///
/// # Invariants
/// `free` holds the indices of the pages not handed out, each once; its top is the next page
/// handed out.
#[derive(Clone, Debug)]
pub struct TablePool<const N: usize> {
    pages: [[u64; ENTRIES as usize]; N],
    free: heapless::Vec<u16, N>,
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
        let mut free = heapless::Vec::new();
        // Hand out low addresses first: pop from the end of a descending list.
        for page in (0..N).rev() {
            free.push(u16::try_from(page).ok()?).ok()?;
        }
        Some(Self {
            pages: [[0; ENTRIES as usize]; N],
            free,
            base,
            peak: 0,
        })
    }

    /// Pages handed out and not yet freed.
    #[must_use]
    pub fn live(&self) -> usize {
        N - self.free.len()
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
        self.free.iter().any(|&p| usize::from(p) == page)
    }
}

impl<const N: usize> TableMemory for TablePool<N> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let table = self.alloc_table_to_fill()?;
        *self.entries_mut(table)? = [0; ENTRIES as usize];
        Some(table)
    }

    fn alloc_table_to_fill(&mut self) -> Option<PhysAddr> {
        // Left as the last user left it: the caller writes every entry.
        let page = usize::from(self.free.pop()?);
        self.peak = self.peak.max(self.live());
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
        // Every page the pool owns fits a u16 (`new` checks `N`), and a page not free is not
        // in the list, so the list has room for it: neither refusal below can happen.
        if let Ok(page) = u16::try_from(page) {
            let _ = self.free.push(page);
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

    fn entries(&self, table: PhysAddr) -> Option<&Entries> {
        self.pages.get(self.page_of(table)?)
    }

    fn entries_mut(&mut self, table: PhysAddr) -> Option<&mut Entries> {
        let page = self.page_of(table)?;
        self.pages.get_mut(page)
    }
}
