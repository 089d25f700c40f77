//! The page-table model shared by the property tests (`hw/tests/page_table_model.rs`) and
//! the `page_table` fuzz target (`tests/fuzz`): heap-backed table memory with a page
//! budget, a list of mapped runs as the reference, and [`run`], which applies a sequence of
//! operations to both and checks after every step that the page table's merged mapping
//! list equals the model's, that failed steps changed nothing, that no non-root table is
//! empty, and that unmapping everything leaves only the root table.

#![allow(
    clippy::expect_used,
    reason = "test code: a failed expect is a failed test or a fuzz crash"
)]
#![allow(
    dead_code,
    reason = "each includer uses its own part of the model (the proptests their strategies, the fuzz target its decoder)"
)]

use extmem_hw::{
    Access, Entries, GpuProfile, GpuVa, MapError, MapFlags, MapRunsError, Mapping, PageAttrs,
    PageTable, PhysAddr, Run as PhysRun, TableIndex, TableMemory, UnmapError,
};

/// 4 KiB.
pub const PAGE: u64 = 0x1000;
/// 2 MiB.
pub const M2: u64 = 2 << 20;
/// 1 GiB.
pub const G1: u64 = 1 << 30;

/// Heap-backed table memory with an optional page budget, so large maps fit and small
/// budgets make table allocation fail at random points.
///
/// Table `i` sits at `BASE + i * 4 KiB`, found by index: the model walks every leaf after
/// every step, and a hash lookup per descriptor read was most of the fuzz target's time.
/// Addresses are never reused, so a stale table address reads as unknown and panics.
#[derive(Debug)]
struct HeapTables {
    /// Every table ever allocated, `None` once freed.
    slots: Vec<Option<Box<[u64; 512]>>>,
    /// Pages of freed tables, handed out again (zeroed) under new addresses: a fresh heap
    /// page per table, filled and faulted in by the sanitizer, was a third of the fuzz
    /// target's time.
    spare: Vec<Box<[u64; 512]>>,
    live: usize,
    budget: usize,
}

/// What [`HeapTables::alloc_table_to_fill`] fills its pages with.
const UNWRITTEN: u64 = 0x0000_7fff_ffff_f003;

/// The address of table 0.
const TABLES_BASE: u64 = 0x8000_0000;

impl HeapTables {
    fn new(budget: usize) -> Self {
        Self {
            slots: Vec::new(),
            spare: Vec::new(),
            live: 0,
            budget,
        }
    }

    fn index(table: PhysAddr) -> Option<usize> {
        usize::try_from(table.get().checked_sub(TABLES_BASE)? / PAGE).ok()
    }

    fn slot(&self, table: PhysAddr) -> Option<&[u64; 512]> {
        self.slots.get(Self::index(table)?)?.as_deref()
    }

    fn slot_mut(&mut self, table: PhysAddr) -> Option<&mut Box<[u64; 512]>> {
        self.slots.get_mut(Self::index(table)?)?.as_mut()
    }

    /// The live tables, with their addresses.
    fn tables(&self) -> impl Iterator<Item = (u64, &[u64; 512])> {
        (0u64..)
            .zip(&self.slots)
            .filter_map(|(i, slot)| Some((TABLES_BASE + i * PAGE, slot.as_deref()?)))
    }
}

impl TableMemory for HeapTables {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if self.live >= self.budget {
            return None;
        }
        let pa = TABLES_BASE + self.slots.len() as u64 * PAGE;
        let page = match self.spare.pop() {
            Some(mut page) => {
                page.fill(0);
                page
            }
            None => Box::new([0; 512]),
        };
        self.slots.push(Some(page));
        self.live += 1;
        Some(PhysAddr::new(pa))
    }

    // Pages to fill come back full of a descriptor that is valid at every level (a table
    // at an address no table has, a page at level 3): an entry the page table failed to
    // write would show in the mappings or be freed as a table, and either fails the run.
    fn alloc_table_to_fill(&mut self) -> Option<PhysAddr> {
        let table = self.alloc_table()?;
        self.slot_mut(table)?.fill(UNWRITTEN);
        Some(table)
    }

    fn free_table(&mut self, table: PhysAddr) {
        let slot = Self::index(table).and_then(|i| self.slots.get_mut(i));
        let freed = slot
            .and_then(Option::take)
            .unwrap_or_else(|| panic!("freed unknown table {table}"));
        self.spare.push(freed);
        self.live -= 1;
    }

    fn read_descriptor(&self, table: PhysAddr, index: TableIndex) -> u64 {
        self.slot(table).expect("read from a live table")[index.get()]
    }

    fn write_descriptor(&mut self, table: PhysAddr, index: TableIndex, raw: u64) {
        self.slot_mut(table).expect("write to a live table")[index.get()] = raw;
    }

    // One copy, not a call per descriptor: the walks after every step read whole tables.
    fn read_descriptors(&self, table: PhysAddr, first: TableIndex, out: &mut [u64]) {
        let entries = &self.slot(table).expect("read from a live table")[first.get()..];
        let n = entries.len().min(out.len());
        out[..n].copy_from_slice(&entries[..n]);
    }

    // Every other table lends its entries, so one run exercises both the in-place paths
    // and the descriptor-call paths, and their meeting (a lent table under an unlent one).
    fn entries(&self, table: PhysAddr) -> Option<&Entries> {
        lends(table).then(|| self.slot(table))?
    }

    fn entries_mut(&mut self, table: PhysAddr) -> Option<&mut Entries> {
        lends(table).then(|| self.slot_mut(table).map(|t| &mut **t))?
    }
}

/// Whether the table at `table` lends its entries (every other page).
fn lends(table: PhysAddr) -> bool {
    (table.get() / PAGE) % 2 == 0
}

/// One mapped run of the model.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    va: u64,
    pa: u64,
    size: u64,
    attrs: PageAttrs,
}

#[derive(Default, Debug)]
struct Model {
    runs: Vec<Run>,
}

impl Model {
    fn first_mapped(&self, va: u64, end: u64) -> Option<u64> {
        self.runs
            .iter()
            .filter(|r| r.va < end && va < r.va + r.size)
            .map(|r| r.va.max(va))
            .min()
    }

    fn first_hole(&self, va: u64, end: u64) -> Option<u64> {
        let mut cur = va;
        let mut runs: Vec<_> = self
            .runs
            .iter()
            .filter(|r| r.va < end && va < r.va + r.size)
            .collect();
        runs.sort_by_key(|r| r.va);
        for r in runs {
            if r.va > cur {
                return Some(cur);
            }
            cur = cur.max(r.va + r.size);
        }
        (cur < end).then_some(cur)
    }

    fn unmap(&mut self, va: u64, end: u64) {
        let mut out = Vec::new();
        for r in self.runs.drain(..) {
            let r_end = r.va + r.size;
            if r_end <= va || end <= r.va {
                out.push(r);
                continue;
            }
            if r.va < va {
                out.push(Run {
                    size: va - r.va,
                    ..r
                });
            }
            if end < r_end {
                out.push(Run {
                    va: end,
                    pa: r.pa + (end - r.va),
                    size: r_end - end,
                    attrs: r.attrs,
                });
            }
        }
        self.runs = out;
    }

    fn translate(&self, va: u64) -> Option<(u64, PageAttrs)> {
        self.runs
            .iter()
            .find(|r| r.va <= va && va < r.va + r.size)
            .map(|r| (r.pa + (va - r.va), r.attrs))
    }

    /// Runs sorted and merged the way `PageTable::mappings` merges leaves.
    fn merged(&self) -> Vec<Mapping> {
        let mut runs = self.runs.clone();
        runs.sort_by_key(|r| r.va);
        let mut out: Vec<Mapping> = Vec::new();
        for r in runs {
            match out.last_mut() {
                Some(m)
                    if m.va.get() + m.size == r.va
                        && m.pa.get() + m.size == r.pa
                        && m.attrs == r.attrs =>
                {
                    m.size += r.size;
                }
                _ => out.push(Mapping {
                    va: GpuVa::new(r.va),
                    pa: PhysAddr::new(r.pa),
                    size: r.size,
                    attrs: r.attrs,
                }),
            }
        }
        out
    }
}

/// One step of a sequence.
#[derive(Clone, Debug)]
pub enum Op {
    /// `PageTable::map`.
    Map {
        /// Where.
        va: u64,
        /// To what.
        pa: u64,
        /// Bytes.
        size: u64,
        /// Map read-only.
        read_only: bool,
    },
    /// `PageTable::map_runs`: the (pa, bytes) `runs` at `va`, for the runs' total plus
    /// `size_delta` bytes (at least a page); the source fails when asked for run `fail_at`.
    MapRuns {
        /// Where.
        va: u64,
        /// The physical runs, in order.
        runs: Vec<(u64, u64)>,
        /// Bytes mapped minus the runs' total: 0, short (the last run is cut) or long (the
        /// runs end first).
        size_delta: i64,
        /// The run whose fetch fails, if any.
        fail_at: Option<usize>,
    },
    /// `PageTable::unmap`.
    Unmap {
        /// Where.
        va: u64,
        /// Bytes.
        size: u64,
    },
    /// `PageTable::translate`.
    Translate {
        /// The address to walk.
        va: u64,
    },
}

/// What `map_runs` must return for these runs (the range already checked vacant), and
/// the (va, pa, bytes) pieces it maps on success.
fn expected_runs(
    va: u64,
    size: u64,
    runs: &[(u64, u64)],
    fail_at: Option<usize>,
    oa_bits: u8,
) -> Result<Vec<(u64, u64, u64)>, MapRunsError<usize>> {
    let mut mapped = 0;
    let mut pieces = Vec::new();
    for (i, &(pa, len)) in runs.iter().enumerate() {
        if mapped >= size {
            break;
        }
        if fail_at == Some(i) {
            return Err(MapRunsError::Source(i));
        }
        let used = len.min(size - mapped);
        if pa + used > 1u64 << oa_bits {
            return Err(MapRunsError::Map(MapError::PaOutOfRange {
                pa: PhysAddr::new(pa),
                size: used,
                oa_bits,
            }));
        }
        pieces.push((va + mapped, pa, used));
        mapped += used;
    }
    if mapped < size {
        return Err(MapRunsError::RunsEnded { mapped, size });
    }
    Ok(pieces)
}

fn snapshot(pt: &PageTable<HeapTables>) -> (Vec<Mapping>, usize, usize) {
    let maps = pt.mappings().collect::<Result<Vec<_>, _>>().expect("walk");
    (maps, pt.table_pages(), pt.memory().live)
}

/// No table other than the root may be empty, and every live table is counted.
fn check_tables(pt: &PageTable<HeapTables>) {
    let mem = pt.memory();
    assert_eq!(mem.live, pt.table_pages(), "table count drifted");
    assert_eq!(mem.tables().count(), mem.live, "live count drifted");
    for (pa, t) in mem.tables() {
        if pa != pt.root().get() {
            // An OR over the table, not a test per entry (the fuzz build traces each).
            assert!(
                t.iter().fold(0, |any, &d| any | d) != 0,
                "empty table {pa:#x} left allocated"
            );
        }
    }
}

/// Applies `ops` to a fresh page table over `budget` table pages and to the model,
/// panicking at the first difference.
pub fn run(profile: &GpuProfile, budget: usize, ops: &[Op]) {
    let mut pt = PageTable::new(HeapTables::new(budget), profile).expect("root");
    let mut model = Model::default();
    let va_size = 1u64 << profile.va_bits;
    let mut before = snapshot(&pt);
    for op in ops {
        match *op {
            Op::Map {
                va,
                pa,
                size,
                read_only,
            } => {
                let flags = MapFlags {
                    access: if read_only {
                        Access::ReadOnly
                    } else {
                        Access::ReadWrite
                    },
                    ..MapFlags::default()
                };
                let result = pt.map(GpuVa::new(va), PhysAddr::new(pa), size, flags);
                let end = va + size;
                if end > va_size {
                    assert!(
                        matches!(result, Err(MapError::VaOutOfRange { .. })),
                        "{result:?}"
                    );
                } else if pa + size > 1u64 << profile.oa_bits {
                    assert!(
                        matches!(result, Err(MapError::PaOutOfRange { .. })),
                        "{result:?}"
                    );
                } else if let Some(first) = model.first_mapped(va, end) {
                    assert_eq!(
                        result,
                        Err(MapError::AlreadyMapped {
                            va: GpuVa::new(first)
                        })
                    );
                } else if budget < usize::MAX && result == Err(MapError::OutOfTableMemory) {
                    // Only a limited budget may run out; the no-op check below proves the
                    // failed map left everything as it was.
                } else {
                    assert_eq!(result, Ok(()));
                    model.runs.push(Run {
                        va,
                        pa,
                        size,
                        attrs: flags.attrs(),
                    });
                }
            }
            Op::MapRuns {
                va,
                ref runs,
                size_delta,
                fail_at,
            } => {
                let total: u64 = runs.iter().map(|r| r.1).sum();
                let size = total.saturating_add_signed(size_delta).max(PAGE);
                let source = runs.iter().enumerate().map(|(i, &(pa, len))| {
                    if fail_at == Some(i) {
                        Err(i)
                    } else {
                        Ok(PhysRun {
                            pa: PhysAddr::new(pa),
                            len,
                        })
                    }
                });
                let flags = MapFlags::default();
                // A source that cannot fail may come as a slice (`map_run_slice`, checked
                // whole before anything is written); every other one of those does, so
                // both paths meet the same model.
                let result = if fail_at.is_none() && runs.len() % 2 == 0 {
                    let slice: Vec<PhysRun> = source.filter_map(Result::ok).collect();
                    pt.map_run_slice(GpuVa::new(va), size, &slice, flags)
                        .map_err(|error| match error {
                            MapRunsError::Map(error) => MapRunsError::Map(error),
                            MapRunsError::Source(never) => match never {},
                            MapRunsError::RunsEnded { mapped, size } => {
                                MapRunsError::RunsEnded { mapped, size }
                            }
                        })
                } else {
                    pt.map_runs(GpuVa::new(va), size, source, flags)
                };
                let end = va + size;
                if end > va_size {
                    assert!(
                        matches!(
                            result,
                            Err(MapRunsError::Map(MapError::VaOutOfRange { .. }))
                        ),
                        "{result:?}"
                    );
                } else if let Some(first) = model.first_mapped(va, end) {
                    assert_eq!(
                        result,
                        Err(MapRunsError::Map(MapError::AlreadyMapped {
                            va: GpuVa::new(first)
                        }))
                    );
                } else if budget < usize::MAX
                    && result == Err(MapRunsError::Map(MapError::OutOfTableMemory))
                {
                    // As for Map: only a limited budget may run out, and changes nothing.
                } else {
                    let expected = expected_runs(va, size, runs, fail_at, profile.oa_bits);
                    assert_eq!(result, expected.as_ref().map(|_| ()).map_err(|e| *e));
                    for (va, pa, size) in expected.unwrap_or_default() {
                        model.runs.push(Run {
                            va,
                            pa,
                            size,
                            attrs: flags.attrs(),
                        });
                    }
                }
            }
            Op::Unmap { va, size } => {
                let result = pt.unmap(GpuVa::new(va), size);
                let end = va + size;
                if end > va_size {
                    assert!(
                        matches!(result, Err(UnmapError::VaOutOfRange { .. })),
                        "{result:?}"
                    );
                } else if let Some(hole) = model.first_hole(va, end) {
                    assert_eq!(
                        result,
                        Err(UnmapError::NotMapped {
                            va: GpuVa::new(hole)
                        })
                    );
                } else if budget < usize::MAX && result == Err(UnmapError::OutOfTableMemory) {
                } else {
                    let inv = result.expect("unmap of a mapped range");
                    assert!(inv.va.get() <= va && va + size <= inv.va.get() + inv.size);
                    model.unmap(va, end);
                }
            }
            Op::Translate { va } => {
                let got = pt
                    .translate(GpuVa::new(va))
                    .ok()
                    .map(|t| (t.pa.get(), t.attrs));
                assert_eq!(got, model.translate(va), "translate {va:#x}");
                // A walk through `&self` changes nothing: no need to walk everything again.
                continue;
            }
        }
        let after = snapshot(&pt);
        if after.0 == before.0 {
            // Nothing changed in the mapping: table use must not have changed either
            // (a failed op leaves the tables as they were).
            assert_eq!(after, before, "a no-op changed table use after {op:?}");
        }
        assert_eq!(after.0, model.merged(), "after {op:?}");
        check_tables(&pt);
        before = after;
    }
    for r in model.merged() {
        let _ = pt
            .unmap(r.va, r.size)
            .expect("unmap everything (budget allows splits)");
    }
    assert_eq!(pt.table_pages(), 1, "only the root is left");
    assert_eq!(pt.destroy().live, 0, "destroy frees the root");
}
