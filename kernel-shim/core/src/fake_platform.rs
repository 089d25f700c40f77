//! A `std`-backed [`Platform`] for host tests: "physical memory" is a map of 4 KiB pages.
//!
//! It enforces the platform contract loudly: a copy or fill that crosses a page, a
//! misaligned word, a double free all panic, which fails the test (or the fuzz run, with
//! the `fake-platform` feature) that caused them.
#![allow(
    clippy::expect_used,
    reason = "a test fake: a broken platform contract panics, failing the caller"
)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::vec::Vec;

use extmem_hw::PhysAddr;

use crate::platform::{MemoryFault, ObjectId, Platform, Segment, SegmentError};

/// 4 KiB.
pub const PAGE: u64 = 4096;
const PAGE_BYTES: usize = 4096;
/// Where table pages come from (below the 40-bit output-address limit).
const TABLE_BASE: u64 = 0x80_0000_0000;

/// A page of RAM, shared copy-on-write: every page starts as the one zero page, a write
/// copies it ([`Rc::make_mut`]), and a [`Snapshot`] shares the pages (and the map of them,
/// until the next change) instead of copying them. Comparing two is cheap where the pages
/// are the same allocation (the fuzz target takes one before every call that must change
/// nothing).
type Page = Rc<[u8; PAGE_BYTES]>;

/// One object: its physically contiguous runs, in object order.
#[derive(Clone, Debug, Default)]
pub struct FakeObject {
    /// (pa, len) runs.
    pub segments: Vec<(u64, u64)>,
    /// An error to return for offsets at or past this one, instead of the segments.
    pub fail_from: Option<(u64, SegmentError)>,
}

/// What a failed call must leave unchanged.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    ram: Rc<HashMap<u64, Page>>,
    live_tables: BTreeSet<u64>,
}

struct State {
    /// The page every page of RAM is until written.
    zero: Page,
    /// Shared with the snapshots taken since the last change, copied on the next one
    /// ([`Rc::make_mut`]): a snapshot is then a pointer, and comparing it with an
    /// unchanged memory a pointer comparison (before, each snapshot copied the map of
    /// every page, which with the compare was a quarter of the fuzz target's time). A hash
    /// map, not a `BTreeMap`: an ordered insert per page of each new object was a third
    /// of what was left, and nothing needs the pages in order.
    ram: Rc<HashMap<u64, Page>>,
    live_tables: BTreeSet<u64>,
    free_tables: Vec<u64>,
    next_table: u64,
    table_budget: Option<usize>,
    objects: BTreeMap<u64, FakeObject>,
    unbound: Vec<u64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            zero: Rc::new([0; PAGE_BYTES]),
            ram: Rc::new(HashMap::new()),
            live_tables: BTreeSet::new(),
            free_tables: Vec::new(),
            next_table: 0,
            table_budget: None,
            objects: BTreeMap::new(),
            unbound: Vec::new(),
        }
    }
}

/// The fake.
#[derive(Default)]
pub struct FakePlatform {
    state: RefCell<State>,
}

fn page_of(pa: u64) -> (u64, usize) {
    (
        pa & !(PAGE - 1),
        usize::try_from(pa % PAGE).expect("offset"),
    )
}

impl FakePlatform {
    /// A platform with no RAM and no objects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds RAM pages (zeroed) covering `[pa, pa + len)`.
    pub fn add_ram(&self, pa: u64, len: u64) {
        let mut s = self.state.borrow_mut();
        let zero = Rc::clone(&s.zero);
        let mut page = pa & !(PAGE - 1);
        while page < pa + len {
            Rc::make_mut(&mut s.ram)
                .entry(page)
                .or_insert_with(|| Rc::clone(&zero));
            page += PAGE;
        }
    }

    /// An object made of `segments` (pa, len), backed by fresh RAM.
    pub fn add_object(&self, id: u64, segments: &[(u64, u64)]) {
        for &(pa, len) in segments {
            self.add_ram(pa, len);
        }
        self.state.borrow_mut().objects.insert(
            id,
            FakeObject {
                segments: segments.to_vec(),
                fail_from: None,
            },
        );
    }

    /// An object of single pages at `pages` (physically adjacent ones form one run).
    pub fn add_paged_object(&self, id: u64, pages: &[u64]) {
        let mut segments: Vec<(u64, u64)> = Vec::new();
        for &pa in pages {
            match segments.last_mut() {
                Some((start, len)) if *start + *len == pa => *len += PAGE,
                _ => segments.push((pa, PAGE)),
            }
        }
        self.add_object(id, &segments);
    }

    /// Makes `object_segment` fail for offsets at or past `offset`.
    pub fn fail_segments_from(&self, id: u64, offset: u64, error: SegmentError) {
        if let Some(o) = self.state.borrow_mut().objects.get_mut(&id) {
            o.fail_from = Some((offset, error));
        }
    }

    /// How many more table pages may be allocated (`None`: unlimited).
    pub fn set_table_budget(&self, budget: Option<usize>) {
        self.state.borrow_mut().table_budget = budget;
    }

    /// Table pages allocated and not yet freed.
    pub fn live_tables(&self) -> usize {
        self.state.borrow().live_tables.len()
    }

    /// Every `object_unbound` call so far, in order.
    pub fn unbound(&self) -> Vec<u64> {
        self.state.borrow().unbound.clone()
    }

    /// RAM and live tables, to compare before and after a call that must change nothing.
    pub fn snapshot(&self) -> Snapshot {
        let s = self.state.borrow();
        Snapshot {
            ram: Rc::clone(&s.ram),
            live_tables: s.live_tables.clone(),
        }
    }

    /// Writes `bytes` at `pa`, which must be RAM.
    pub fn write(&self, pa: u64, bytes: &[u8]) {
        let mut s = self.state.borrow_mut();
        let mut at = pa;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (page, offset) = page_of(at);
            let (here, next) = rest.split_at(rest.len().min(PAGE_BYTES - offset));
            let ram = Rc::make_mut(&mut s.ram);
            Rc::make_mut(ram.get_mut(&page).expect("RAM"))[offset..offset + here.len()]
                .copy_from_slice(here);
            at += PAGE - u64::try_from(offset).expect("offset");
            rest = next;
        }
    }

    /// Reads `len` bytes at `pa`, which must be RAM.
    pub fn read(&self, pa: u64, len: u64) -> Vec<u8> {
        let s = self.state.borrow();
        let want = usize::try_from(len).expect("len");
        let mut out = Vec::with_capacity(want);
        let mut at = pa;
        while out.len() < want {
            let (page, offset) = page_of(at);
            let take = (want - out.len()).min(PAGE_BYTES - offset);
            out.extend_from_slice(&s.ram.get(&page).expect("RAM")[offset..offset + take]);
            at += PAGE - u64::try_from(offset).expect("offset");
        }
        out
    }
}

fn one_page(pa: u64, len: u64) {
    assert!(len > 0, "empty access at {pa:#x}");
    assert_eq!(
        pa / PAGE,
        (pa + len - 1) / PAGE,
        "access [{pa:#x}, +{len:#x}) crosses a 4 KiB page"
    );
}

impl Platform for FakePlatform {
    fn alloc_table(&self) -> Option<PhysAddr> {
        let mut s = self.state.borrow_mut();
        if let Some(budget) = s.table_budget.as_mut() {
            *budget = budget.checked_sub(1)?;
        }
        let pa = match s.free_tables.pop() {
            Some(pa) => pa,
            None => {
                let pa = TABLE_BASE + s.next_table * PAGE;
                s.next_table += 1;
                pa
            }
        };
        let zero = Rc::clone(&s.zero);
        Rc::make_mut(&mut s.ram).insert(pa, zero);
        assert!(s.live_tables.insert(pa));
        Some(PhysAddr::new(pa))
    }

    fn free_table(&self, table: PhysAddr) {
        let mut s = self.state.borrow_mut();
        assert!(
            s.live_tables.remove(&table.get()),
            "free of {table:?}, which is not a live table"
        );
        Rc::make_mut(&mut s.ram).remove(&table.get());
        s.free_tables.push(table.get());
    }

    fn read_u64(&self, pa: PhysAddr) -> u64 {
        assert_eq!(pa.get() % 8, 0, "misaligned word at {pa:?}");
        // Straight from the page: the page-table walk reads a word per level, and a
        // `Vec` per word was most of the fuzz target's time.
        let (page, offset) = page_of(pa.get());
        let s = self.state.borrow();
        let bytes = &s.ram.get(&page).expect("RAM")[offset..offset + 8];
        u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }

    fn write_u64(&self, pa: PhysAddr, value: u64) {
        assert_eq!(pa.get() % 8, 0, "misaligned word at {pa:?}");
        self.write(pa.get(), &value.to_le_bytes());
    }

    fn read_u64s(&self, pa: PhysAddr, out: &mut [u64]) {
        // One page lookup for a whole table scan (tearing a VM down reads every entry).
        assert_eq!(pa.get() % 8, 0, "misaligned word at {pa:?}");
        let (page, offset) = page_of(pa.get());
        let s = self.state.borrow();
        let bytes = &s.ram.get(&page).expect("RAM")[offset..offset + out.len() * 8];
        for (word, raw) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(raw.try_into().expect("8 bytes"));
        }
    }

    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemoryFault> {
        one_page(dst.get(), len);
        one_page(src.get(), len);
        {
            let s = self.state.borrow();
            for pa in [dst.get(), src.get()] {
                if !s.ram.contains_key(&page_of(pa).0) {
                    return Err(MemoryFault);
                }
            }
        }
        let bytes = self.read(src.get(), len);
        self.write(dst.get(), &bytes);
        Ok(())
    }

    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault> {
        one_page(dst.get(), len);
        assert_eq!((dst.get() % 4, len % 4), (0, 0), "unaligned fill");
        if !self.state.borrow().ram.contains_key(&page_of(dst.get()).0) {
            return Err(MemoryFault);
        }
        let bytes: Vec<u8> = value
            .to_le_bytes()
            .iter()
            .copied()
            .cycle()
            .take(usize::try_from(len).expect("len"))
            .collect();
        self.write(dst.get(), &bytes);
        Ok(())
    }

    fn object_segment(&self, object: ObjectId, offset: u64) -> Result<Segment, SegmentError> {
        let s = self.state.borrow();
        let o = s.objects.get(&object.0).expect("known object");
        // Where lookups start failing; a segment before it ends there, so that no page
        // past it is handed out through a run that began earlier.
        let mut usable = u64::MAX;
        if let Some((from, error)) = o.fail_from {
            if offset >= from {
                return Err(error);
            }
            usable = from - offset;
        }
        let mut start = 0;
        for &(pa, len) in &o.segments {
            if offset < start + len {
                return Ok(Segment {
                    pa: PhysAddr::new(pa + (offset - start)),
                    len: (len - (offset - start)).min(usable),
                });
            }
            start += len;
        }
        Err(SegmentError::PastEnd)
    }

    fn object_unbound(&self, object: ObjectId) {
        self.state.borrow_mut().unbound.push(object.0);
    }
}

/// `VM_BIND` MAP arguments.
pub fn map_args(va: u64, offset: u64, size: u64, flags: u32) -> extmem_uapi::VmBind {
    extmem_uapi::VmBind {
        op: extmem_uapi::BindOp::MAP,
        flags,
        handle: 1,
        va,
        offset,
        size,
        ..extmem_uapi::VmBind::default()
    }
}

/// `VM_BIND` UNMAP arguments.
pub fn unmap_args(va: u64, size: u64) -> extmem_uapi::VmBind {
    extmem_uapi::VmBind {
        op: extmem_uapi::BindOp::UNMAP,
        va,
        size,
        ..extmem_uapi::VmBind::default()
    }
}

impl FakePlatform {
    /// An object whose segments point at memory that is not RAM.
    pub fn add_object_without_ram(&self, id: u64, segments: &[(u64, u64)]) {
        self.state.borrow_mut().objects.insert(
            id,
            FakeObject {
                segments: segments.to_vec(),
                fail_from: None,
            },
        );
    }

    /// The object's size: the sum of its segments.
    pub fn object_size(&self, id: u64) -> u64 {
        self.state.borrow().objects[&id]
            .segments
            .iter()
            .map(|s| s.1)
            .sum()
    }

    /// The physical address of byte `offset` of object `id`.
    pub fn object_pa(&self, id: u64, offset: u64) -> u64 {
        self.object_segment(ObjectId(id), offset)
            .expect("in the object")
            .pa
            .get()
    }
}
