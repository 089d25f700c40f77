//! The GPU VM of one DRM file: its page tables and its bindings.
//!
//! Userspace owns VA allocation; the VM checks every request (range, alignment, overlap,
//! capacity, access) and writes the page tables. A failed request changes nothing: the
//! checks that need no memory run first, and what a `MAP` managed to map before failing is
//! unmapped again.
//!
//! TLB: the extmem-vgpu copy engine walks the page tables on every access, so the
//! [`extmem_hw::Invalidate`] an unmap returns has nothing to invalidate; a driver for a
//! real MMU would issue it here.

use extmem_hw::descriptor::CorruptDescriptor;
use extmem_hw::page_table::NoRootTable;
use extmem_hw::profile::MIN_PAGE;
use extmem_hw::{
    Access, GpuVa, MapError, MapFlags, MapRunsError, PageTable, PhysAddr, Run, TranslateError,
    Translation, UnmapError,
};
use extmem_uapi::{
    BindOp, Cmd, Exec, VmBind, VmQuery, FLAG_READ_ONLY, QUERY_MAPPED, QUERY_READ_ONLY,
};

use crate::args::{check_vm_bind, ArgError};
use crate::bindings::{Binding, BindingError, BindingTable, BINDINGS_MAX};
use crate::copy_engine::{self, ExecError, TouchError};
use crate::platform::{ObjectId, Platform, PlatformTables, SegmentError};
use crate::PROFILE;

/// The object a `MAP` binds, as the C glue describes it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BoundObject {
    /// Its cookie.
    pub id: ObjectId,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the GPU may only read it (a read-only `GEM_USERPTR` or dma-buf).
    pub read_only: bool,
}

/// Why [`Vm::init`] failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum InitError {
    /// The VM holds page tables already (`EBUSY`).
    AlreadyInitialised,
    /// No page for the root table (`ENOMEM`).
    NoRootTable,
}

/// Why a `VM_BIND` failed. Nothing changed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BindError {
    /// The VM has no page tables: never initialised, or torn down (`ENODEV`).
    Uninitialised,
    /// The arguments themselves are bad.
    Args(ArgError),
    /// `[offset, offset + size)` is not inside the object (`ERANGE`).
    ObjectRange {
        /// The offset.
        offset: u64,
        /// The size.
        size: u64,
        /// The object's size.
        object_size: u64,
    },
    /// A read-only object bound without `EXTMEM_FLAG_READ_ONLY` (`EACCES`).
    ReadOnlyObject {
        /// The object.
        object: ObjectId,
    },
    /// Overlap, full table, or (UNMAP) no such binding.
    Binding(BindingError),
    /// The platform gave no segment for the object byte at `offset`.
    Segment {
        /// Offset in the object.
        offset: u64,
        /// What the platform said.
        error: SegmentError,
    },
    /// The platform gave an empty or unaligned segment (`EIO`: it broke its contract).
    BadSegment {
        /// Offset in the object.
        offset: u64,
        /// The segment's address.
        pa: PhysAddr,
        /// Its length.
        len: u64,
    },
    /// Writing the page tables failed.
    Map(MapError),
    /// Clearing the page tables failed.
    Unmap(UnmapError),
}

/// Why a `VM_QUERY` failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum QueryError {
    /// The VM has no page tables (`ENODEV`).
    Uninitialised,
    /// Non-zero padding, or a VA outside the VA space.
    Args(ArgError),
    /// A descriptor on the walk is corrupt (`EIO`).
    Corrupt(CorruptDescriptor),
}

/// The GPU VM of one file, with room for `N` bindings.
///
/// # Invariants
/// - Every binding is mapped in `table`, with the binding's access, and nothing else is.
/// - Bindings exist only while `table` is `Some`.
/// - All-zero bytes with `table` then written as `None` make a valid, empty `Vm`: every
///   other field is a [`BindingTable`]. The kernel VM (C-allocated, zeroed) relies on it.
#[derive(Debug)]
pub struct Vm<P: Platform, const N: usize = BINDINGS_MAX> {
    /// `None` before [`Vm::init`], after [`Vm::fini`], and when init failed.
    pub(crate) table: Option<PageTable<PlatformTables<P>>>,
    bindings: BindingTable<N>,
}

impl<P: Platform, const N: usize> Default for Vm<P, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Platform, const N: usize> Vm<P, N> {
    /// A VM with no page tables yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            table: None,
            bindings: BindingTable::new(),
        }
    }

    /// Allocates the root table from `platform`, which the VM keeps for all its callbacks.
    pub fn init(&mut self, platform: P) -> Result<(), InitError> {
        if self.table.is_some() {
            return Err(InitError::AlreadyInitialised);
        }
        match PageTable::new(PlatformTables::new(platform), PROFILE) {
            Ok(table) => {
                self.table = Some(table);
                Ok(())
            }
            Err(NoRootTable(_)) => Err(InitError::NoRootTable),
        }
    }

    /// Removes every binding (telling the platform once per binding) and frees every
    /// table page. The VM can be initialised again afterwards.
    pub fn fini(&mut self) {
        if let Some(table) = self.table.take() {
            for binding in self.bindings.as_slice() {
                table.memory().platform().object_unbound(binding.object);
            }
            let _memory = table.destroy();
        }
        self.bindings.clear();
    }

    /// Whether [`Vm::init`] succeeded and [`Vm::fini`] has not run since.
    #[must_use]
    pub fn is_initialised(&self) -> bool {
        self.table.is_some()
    }

    /// The platform, once initialised.
    #[must_use]
    pub fn platform(&self) -> Option<&P> {
        self.table.as_ref().map(|t| t.memory().platform())
    }

    /// Table pages held, the root included (0 when not initialised).
    #[must_use]
    pub fn table_pages(&self) -> usize {
        self.table.as_ref().map_or(0, PageTable::table_pages)
    }

    /// The bindings, in VA order.
    #[must_use]
    pub fn bindings(&self) -> &[Binding] {
        self.bindings.as_slice()
    }

    /// Walks the page tables for `va`.
    pub fn translate(&self, va: GpuVa) -> Option<Result<Translation, TranslateError>> {
        self.table.as_ref().map(|t| t.translate(va))
    }

    /// `VM_BIND`. For `MAP`, `object` is the object the handle names; `UNMAP` ignores it.
    pub fn bind(&mut self, args: &VmBind, object: BoundObject) -> Result<(), BindError>
    where
        P: Clone,
    {
        check_vm_bind(args, PROFILE).map_err(BindError::Args)?;
        let table = self.table.as_mut().ok_or(BindError::Uninitialised)?;
        match args.op {
            BindOp::MAP => map(table, &mut self.bindings, args, object),
            BindOp::UNMAP => unmap(table, &mut self.bindings, args),
            BindOp(op) => Err(BindError::Args(ArgError::UnknownOp { op })),
        }
    }

    /// `VM_QUERY`: fills `args` with the translation of `args.va`; the physical address
    /// only when `privileged`, so it does not leak to unprivileged users.
    pub fn query(&self, args: &mut VmQuery, privileged: bool) -> Result<(), QueryError> {
        if args.pad != 0 {
            return Err(QueryError::Args(ArgError::NonZeroPad { pad: args.pad }));
        }
        let table = self.table.as_ref().ok_or(QueryError::Uninitialised)?;
        args.pa = 0;
        args.page_size = 0;
        args.flags = 0;
        match table.translate(GpuVa::new(args.va)) {
            Ok(t) => {
                args.flags = QUERY_MAPPED;
                if t.attrs.access == Access::ReadOnly {
                    args.flags |= QUERY_READ_ONLY;
                }
                args.page_size = t.page.bytes();
                if privileged {
                    args.pa = t.pa.get();
                }
                Ok(())
            }
            Err(TranslateError::NotMapped { .. }) => Ok(()),
            Err(TranslateError::VaOutOfRange { va, va_bits }) => {
                Err(QueryError::Args(ArgError::OutsideVaSpace {
                    va: va.get(),
                    size: 1,
                    va_bits,
                }))
            }
            Err(TranslateError::Corrupt(c)) => Err(QueryError::Corrupt(c)),
        }
    }

    /// Every object a well-formed `EXEC` batch reads or writes through the bindings as
    /// they stand: `visit(object, write)`; see `copy_engine::touched`.
    pub fn touched<E>(
        &self,
        args: &mut Exec,
        cmds: &[Cmd],
        visit: impl FnMut(ObjectId, bool) -> Result<(), E>,
    ) -> Result<(), TouchError<E>> {
        copy_engine::touched(self.bindings(), args, cmds, visit)
    }

    /// `EXEC`: runs `cmds` (the first `args.count` of them) on the copy engine. Sets the
    /// fault fields of `args`; see [`copy_engine`].
    pub fn exec(&self, args: &mut Exec, cmds: &[Cmd]) -> Result<(), ExecError> {
        match self.table.as_ref() {
            Some(table) => copy_engine::run(table, args, cmds),
            None => Err(ExecError::Uninitialised),
        }
    }
}

type Table<P> = PageTable<PlatformTables<P>>;

fn map<P: Platform + Clone, const N: usize>(
    table: &mut Table<P>,
    bindings: &mut BindingTable<N>,
    args: &VmBind,
    object: BoundObject,
) -> Result<(), BindError> {
    let (va, offset, size) = (GpuVa::new(args.va), args.offset, args.size);
    let object_range = BindError::ObjectRange {
        offset,
        size,
        object_size: object.size,
    };
    match offset.checked_add(size) {
        Some(end) if end <= object.size => {}
        _ => return Err(object_range),
    }
    let read_only = args.flags & FLAG_READ_ONLY != 0;
    if object.read_only && !read_only {
        return Err(BindError::ReadOnlyObject { object: object.id });
    }
    bindings
        .check_vacant(va, size)
        .map_err(BindError::Binding)?;

    let flags = MapFlags {
        access: if read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        },
        ..MapFlags::default()
    };
    // One batched map over the object's runs: each table is walked once, and a failure
    // anywhere (a bad segment included) leaves the tables as they were.
    let runs = ObjectRuns {
        platform: table.memory().platform().clone(),
        object: object.id,
        at: offset,
    };
    table
        .map_runs(va, size, runs, flags)
        .map_err(|error| match error {
            MapRunsError::Map(error) => BindError::Map(error),
            MapRunsError::Source(error) => error,
            // The object range was checked against the object's size: the glue claims
            // more than its segments hold.
            MapRunsError::RunsEnded { mapped, .. } => BindError::Segment {
                offset: offset.saturating_add(mapped),
                error: SegmentError::PastEnd,
            },
        })?;
    let binding = Binding {
        va,
        size,
        object: object.id,
        offset,
        read_only,
    };
    bindings.insert(binding).map_err(|error| {
        roll_back(table, va, size);
        BindError::Binding(error)
    })
}

/// The runs of an object from byte `at` on, as the platform reports its segments.
struct ObjectRuns<P> {
    platform: P,
    object: ObjectId,
    /// Object offset of the next run.
    at: u64,
}

impl<P: Platform> Iterator for ObjectRuns<P> {
    type Item = Result<Run, BindError>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at;
        let segment = match self.platform.object_segment(self.object, at) {
            Ok(segment) => segment,
            Err(error) => return Some(Err(BindError::Segment { offset: at, error })),
        };
        if segment.len == 0 || !segment.pa.is_aligned(MIN_PAGE) || !MIN_PAGE.is_aligned(segment.len)
        {
            return Some(Err(BindError::BadSegment {
                offset: at,
                pa: segment.pa,
                len: segment.len,
            }));
        }
        self.at = at.saturating_add(segment.len);
        Some(Ok(Run {
            pa: segment.pa,
            len: segment.len,
        }))
    }
}

/// Unmaps `[va, va + done)`, which this call just mapped. No block straddles its ends
/// (every block lies inside one `map`), so no split is needed and no table page has to be
/// allocated: it cannot run out of memory.
fn roll_back<P: Platform>(table: &mut Table<P>, va: GpuVa, done: u64) {
    if done > 0 {
        let _invalidate = table.unmap(va, done);
    }
}

fn unmap<P: Platform, const N: usize>(
    table: &mut Table<P>,
    bindings: &mut BindingTable<N>,
    args: &VmBind,
) -> Result<(), BindError> {
    let (va, size) = (GpuVa::new(args.va), args.size);
    let binding = *bindings.find_exact(va, size).map_err(BindError::Binding)?;
    let _invalidate = table.unmap(va, size).map_err(BindError::Unmap)?;
    bindings
        .remove_exact(va, size)
        .map_err(BindError::Binding)?;
    table.memory().platform().object_unbound(binding.object);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::{self, ToErrno};
    use crate::fake_platform::{map_args, unmap_args, FakePlatform, PAGE};
    use extmem_hw::PageSize;
    use std::boxed::Box;
    use std::vec::Vec;

    const VA: u64 = 0x4000_0000;
    const M2: u64 = 2 << 20;

    fn vm<const N: usize>(fake: &FakePlatform) -> Vm<&FakePlatform, N> {
        let mut vm = Vm::new();
        vm.init(fake).expect("init");
        vm
    }

    fn object(fake: &FakePlatform, id: u64) -> BoundObject {
        BoundObject {
            id: ObjectId(id),
            size: fake.object_size(id),
            read_only: false,
        }
    }

    fn errno_of<E: ToErrno>(result: Result<(), E>) -> i32 {
        result.map_or_else(|e| e.errno(), |()| 0)
    }

    fn pa_at<const N: usize>(vm: &Vm<&FakePlatform, N>, va: u64) -> Option<(u64, PageSize, bool)> {
        match vm.translate(GpuVa::new(va)).expect("initialised") {
            Ok(t) => Some((t.pa.get(), t.page, t.attrs.access == Access::ReadOnly)),
            Err(TranslateError::NotMapped { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// Four scattered pages, the middle two physically adjacent.
    fn scattered(fake: &FakePlatform, id: u64) -> [u64; 4] {
        let pages = [0x1_0000_5000, 0x1_0000_1000, 0x1_0000_2000, 0x1_0000_9000];
        fake.add_paged_object(id, &pages);
        pages
    }

    #[test]
    fn a_16_kib_cpu_page_is_four_gpu_pages() {
        // An object of 16 KiB CPU pages, scattered as a 16 KiB-page kernel pins them.
        let cpu_page = crate::CpuPage::from_shift(14).expect("16 KiB");
        let fake = FakePlatform::new();
        let pages = [0x1_0004_0000, 0x1_0000_c000, 0x1_0010_4000];
        let segments: Vec<(u64, u64)> = pages.iter().map(|&pa| (pa, cpu_page.bytes())).collect();
        fake.add_object(1, &segments);
        let mut vm = vm::<8>(&fake);
        let size = 3 * cpu_page.bytes();
        vm.bind(&map_args(VA, 0, size, 0), object(&fake, 1))
            .expect("bind");
        for (cpu, &pa) in pages.iter().enumerate() {
            let cpu_va = VA + cpu as u64 * cpu_page.bytes();
            for gpu in 0..cpu_page.gpu_pages() {
                assert_eq!(
                    pa_at(&vm, cpu_va + gpu * PAGE + 0x10),
                    Some((pa + gpu * PAGE + 0x10, PageSize::Size4K, false)),
                    "CPU page {cpu}, GPU page {gpu}"
                );
            }
        }
        assert_eq!(pa_at(&vm, VA + size), None);
        // A binding may start inside a CPU page: the GPU's granule is 4 KiB.
        vm.bind(&map_args(VA + M2, PAGE, PAGE, 0), object(&fake, 1))
            .expect("a 4 KiB binding inside a 16 KiB page");
        assert_eq!(
            pa_at(&vm, VA + M2),
            Some((pages[0] + PAGE, PageSize::Size4K, false))
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a 2 MiB mapping takes Miri minutes (the map checks every 4 KiB page for overlap); runs natively in cargo test"
    )]
    fn aligned_16_kib_pages_that_make_2_mib_are_one_block() {
        let cpu_page = crate::CpuPage::from_shift(14).expect("16 KiB");
        let fake = FakePlatform::new();
        // 128 physically adjacent 16 KiB pages from a 2 MiB boundary, which the glue
        // reports as one segment (extmem_pages_segment merges adjacent pages).
        let base = 0x1_0020_0000;
        assert_eq!(M2 / cpu_page.bytes(), 128);
        let segments = [(base, M2)];
        fake.add_object(1, &segments);
        let mut vm = vm::<8>(&fake);
        vm.bind(&map_args(VA, 0, M2, 0), object(&fake, 1))
            .expect("bind");
        assert_eq!(
            pa_at(&vm, VA + 0x12_3456),
            Some((base + 0x12_3456, PageSize::Size2M, false))
        );
    }

    #[test]
    fn bind_maps_every_page_and_unbind_gives_everything_back() {
        let fake = FakePlatform::new();
        let pages = scattered(&fake, 1);
        let mut vm = vm::<8>(&fake);
        vm.bind(&map_args(VA, 0, 4 * PAGE, 0), object(&fake, 1))
            .expect("map");
        for (i, &pa) in (0u64..).zip(&pages) {
            assert_eq!(
                pa_at(&vm, VA + i * PAGE + 0x123),
                Some((pa + 0x123, PageSize::Size4K, false))
            );
        }
        assert_eq!(pa_at(&vm, VA + 4 * PAGE), None);
        // A window into the object, read-only.
        vm.bind(
            &map_args(VA + M2, PAGE, 2 * PAGE, FLAG_READ_ONLY),
            object(&fake, 1),
        )
        .expect("map window");
        assert_eq!(
            pa_at(&vm, VA + M2 + PAGE),
            Some((pages[2], PageSize::Size4K, true))
        );
        assert_eq!(
            vm.bindings(),
            &[
                Binding {
                    va: GpuVa::new(VA),
                    size: 4 * PAGE,
                    object: ObjectId(1),
                    offset: 0,
                    read_only: false
                },
                Binding {
                    va: GpuVa::new(VA + M2),
                    size: 2 * PAGE,
                    object: ObjectId(1),
                    offset: PAGE,
                    read_only: true
                },
            ]
        );
        // Root, L1, L2 and two L3 tables (the two bindings are 2 MiB apart).
        assert_eq!((vm.table_pages(), fake.live_tables()), (5, 5));
        let unrelated = BoundObject {
            id: ObjectId(99),
            size: 0,
            read_only: true,
        };
        vm.bind(&unmap_args(VA, 4 * PAGE), unrelated)
            .expect("unmap ignores the object");
        assert_eq!(fake.unbound(), [1]);
        assert_eq!(pa_at(&vm, VA), None);
        vm.bind(&unmap_args(VA + M2, 2 * PAGE), object(&fake, 1))
            .expect("unmap");
        assert_eq!(fake.unbound(), [1, 1]);
        assert_eq!((vm.table_pages(), fake.live_tables()), (1, 1));
        assert!(vm.bindings().is_empty());
        vm.fini();
        assert_eq!(fake.live_tables(), 0);
        assert_eq!(fake.unbound(), [1, 1], "fini had no bindings left to drop");
    }

    #[test]
    fn every_rejection_has_its_errno_and_changes_nothing() {
        let fake = FakePlatform::new();
        scattered(&fake, 1);
        fake.add_paged_object(2, &[0x1_0001_0000]);
        let mut vm = vm::<8>(&fake);
        let rw = object(&fake, 1);
        let ro = BoundObject {
            read_only: true,
            ..object(&fake, 2)
        };
        vm.bind(&map_args(VA, 0, 2 * PAGE, 0), rw)
            .expect("existing");
        let before = (fake.snapshot(), vm.bindings().to_vec(), vm.table_pages());
        let with = |f: fn(&mut VmBind)| {
            let mut args = map_args(VA + M2, 0, PAGE, 0);
            f(&mut args);
            args
        };
        let cases: Vec<(&str, VmBind, BoundObject, i32)> = std::vec![
            ("unknown op", with(|a| a.op = BindOp(0)), rw, errno::EINVAL),
            ("unknown flag", with(|a| a.flags = 0x80), rw, errno::EINVAL),
            ("non-zero pad", with(|a| a.pad = 1), rw, errno::EINVAL),
            ("zero size", with(|a| a.size = 0), rw, errno::EINVAL),
            ("misaligned va", with(|a| a.va += 0x10), rw, errno::EINVAL),
            (
                "misaligned offset",
                with(|a| a.offset = 0x800),
                rw,
                errno::EINVAL
            ),
            (
                "misaligned size",
                with(|a| a.size = 0x1800),
                rw,
                errno::EINVAL
            ),
            (
                "va + size wraps",
                with(|a| a.va = !0xfff),
                rw,
                errno::EOVERFLOW
            ),
            (
                "offset + size wraps",
                with(|a| a.offset = !0xfff),
                rw,
                errno::EOVERFLOW
            ),
            (
                "va outside the VA space",
                with(|a| a.va = (1 << 48) - PAGE + PAGE),
                rw,
                errno::ERANGE
            ),
            (
                "range ends outside the VA space",
                with(|a| {
                    a.va = (1 << 48) - PAGE;
                    a.size = 2 * PAGE;
                }),
                rw,
                errno::ERANGE
            ),
            (
                "larger than max_mapping",
                with(|a| a.size = crate::PROFILE.max_mapping + PAGE),
                rw,
                errno::ERANGE
            ),
            (
                "object range past the object",
                with(|a| {
                    a.offset = 3 * PAGE;
                    a.size = 2 * PAGE;
                }),
                rw,
                errno::ERANGE
            ),
            (
                "read-only object without READ_ONLY",
                with(|_| {}),
                ro,
                errno::EACCES
            ),
            ("overlap", with(|a| a.va = VA + PAGE), rw, errno::EEXIST),
            (
                "overlap from below",
                with(|a| {
                    a.va = VA - PAGE;
                    a.size = 2 * PAGE;
                }),
                rw,
                errno::EEXIST
            ),
            (
                "unbind of no binding",
                unmap_args(VA + M2, PAGE),
                rw,
                errno::ENOENT
            ),
            (
                "unbind of part of a binding",
                unmap_args(VA, PAGE),
                rw,
                errno::ENOENT
            ),
            (
                "unbind with a handle",
                VmBind {
                    handle: 1,
                    ..unmap_args(VA, 2 * PAGE)
                },
                rw,
                errno::EINVAL
            ),
            (
                "unbind with an offset",
                VmBind {
                    offset: PAGE,
                    ..unmap_args(VA, 2 * PAGE)
                },
                rw,
                errno::EINVAL
            ),
            (
                "unbind with READ_ONLY",
                VmBind {
                    flags: FLAG_READ_ONLY,
                    ..unmap_args(VA, 2 * PAGE)
                },
                rw,
                errno::EINVAL
            ),
        ];
        for (name, args, object, want) in cases {
            assert_eq!(errno_of(vm.bind(&args, object)), want, "{name}");
            assert_eq!(
                (fake.snapshot(), vm.bindings().to_vec(), vm.table_pages()),
                before,
                "{name} changed something"
            );
        }
        assert!(fake.unbound().is_empty());
        // The read-only object binds with READ_ONLY.
        vm.bind(&with(|a| a.flags = FLAG_READ_ONLY), ro)
            .expect("read-only binding");
        vm.fini();
    }

    #[test]
    fn a_full_table_is_enospc() {
        let fake = FakePlatform::new();
        fake.add_paged_object(1, &[0x1_0000_0000]);
        let mut small = vm::<3>(&fake);
        for i in 0..3 {
            small
                .bind(&map_args(VA + i * PAGE, 0, PAGE, 0), object(&fake, 1))
                .expect("fits");
        }
        let before = (fake.snapshot(), small.table_pages());
        assert_eq!(
            errno_of(small.bind(&map_args(VA + 8 * PAGE, 0, PAGE, 0), object(&fake, 1))),
            errno::ENOSPC
        );
        assert_eq!((fake.snapshot(), small.table_pages()), before);
        small.fini();
        if cfg!(miri) {
            // 4096 bindings take Miri many minutes; the capacity-3 table above checks the
            // same code.
            return;
        }

        // The real capacity.
        let mut full = Box::new(Vm::<&FakePlatform>::new());
        full.init(&fake).expect("init");
        for i in 0..BINDINGS_MAX as u64 {
            full.bind(&map_args(VA + i * PAGE, 0, PAGE, 0), object(&fake, 1))
                .expect("fits");
        }
        assert_eq!(
            errno_of(full.bind(&map_args(0x1000, 0, PAGE, 0), object(&fake, 1))),
            errno::ENOSPC
        );
        full.fini();
        assert_eq!(fake.unbound().len(), 3 + BINDINGS_MAX);
        assert_eq!(fake.live_tables(), 0);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a 2 MiB mapping takes Miri minutes (the map checks every 4 KiB page for overlap); runs natively in cargo test"
    )]
    fn running_out_of_table_pages_part_way_rolls_back() {
        let fake = FakePlatform::new();
        // A 2 MiB-contiguous run, then a lone page: the block needs L1 and L2 tables, the
        // page an L3 table as well.
        fake.add_object(1, &[(0x2_0000_0000, M2), (0x3_0000_0000, PAGE)]);
        let mut vm = vm::<8>(&fake);
        let before = fake.snapshot();
        fake.set_table_budget(Some(2));
        assert_eq!(
            errno_of(vm.bind(&map_args(VA, 0, M2 + PAGE, 0), object(&fake, 1))),
            errno::ENOMEM
        );
        assert_eq!(fake.snapshot(), before);
        assert_eq!(vm.table_pages(), 1);
        assert!(vm.bindings().is_empty());
        assert_eq!(pa_at(&vm, VA), None, "the block mapped first is gone again");
        fake.set_table_budget(None);
        vm.bind(&map_args(VA, 0, M2 + PAGE, 0), object(&fake, 1))
            .expect("with memory it maps");
        vm.fini();
        assert_eq!(fake.live_tables(), 0);
    }

    #[test]
    fn segment_errors_roll_back() {
        let fake = FakePlatform::new();
        fake.add_paged_object(1, &[0x1_0000_0000, 0x1_0000_3000]);
        fake.fail_segments_from(
            1,
            PAGE,
            SegmentError::Failed {
                errno: errno::EFAULT,
            },
        );
        fake.add_paged_object(2, &[0x1_0001_0000]);
        fake.add_object_without_ram(3, &[(0x1_0002_0800, PAGE)]);
        // Object 4 is one physically contiguous run that fails from its second page.
        fake.add_paged_object(4, &[0x1_0004_0000, 0x1_0004_1000]);
        fake.fail_segments_from(
            4,
            PAGE,
            SegmentError::Failed {
                errno: errno::EFAULT,
            },
        );
        let mut vm = vm::<8>(&fake);
        let before = fake.snapshot();
        assert_eq!(
            errno_of(vm.bind(&map_args(VA, 0, 2 * PAGE, 0), object(&fake, 1))),
            errno::EFAULT,
            "the platform's errno passes through"
        );
        // The same failure inside one contiguous run: the run handed out before the
        // failing offset ends there, so the bind meets the error too.
        assert_eq!(
            errno_of(vm.bind(&map_args(VA, 0, 2 * PAGE, 0), object(&fake, 4))),
            errno::EFAULT
        );
        // The glue claims the object is larger than its segments.
        let short = BoundObject {
            size: 2 * PAGE,
            ..object(&fake, 2)
        };
        assert_eq!(
            vm.bind(&map_args(VA, 0, 2 * PAGE, 0), short),
            Err(BindError::Segment {
                offset: PAGE,
                error: SegmentError::PastEnd
            })
        );
        assert_eq!(
            errno_of(vm.bind(&map_args(VA, 0, 2 * PAGE, 0), short)),
            errno::ERANGE
        );
        assert_eq!(
            vm.bind(&map_args(VA, 0, PAGE, 0), object(&fake, 3)),
            Err(BindError::BadSegment {
                offset: 0,
                pa: PhysAddr::new(0x1_0002_0800),
                len: PAGE
            })
        );
        assert_eq!(fake.snapshot(), before);
        assert_eq!(vm.table_pages(), 1);
        assert!(vm.bindings().is_empty() && fake.unbound().is_empty());
        vm.fini();
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a 2 MiB mapping takes Miri minutes (the map checks every 4 KiB page for overlap); runs natively in cargo test"
    )]
    fn contiguous_aligned_memory_gets_2m_blocks() {
        let fake = FakePlatform::new();
        let base = 0x2_0000_0000;
        fake.add_object(1, &[(base, 2 * M2)]);
        let mut vm = vm::<8>(&fake);
        let query = |vm: &Vm<&FakePlatform, 8>, va: u64| {
            let mut q = VmQuery {
                va,
                ..VmQuery::default()
            };
            vm.query(&mut q, true).expect("query");
            (q.pa, q.page_size)
        };
        vm.bind(&map_args(VA, 0, 2 * M2, 0), object(&fake, 1))
            .expect("map");
        assert_eq!(query(&vm, VA + 0x1234), (base + 0x1234, M2));
        assert_eq!(query(&vm, VA + M2 + 8), (base + M2 + 8, M2));
        // Root, L1 and one L2 table hold both blocks.
        assert_eq!(vm.table_pages(), 3);
        // VA aligned but PA not (offset 4 KiB): pages.
        vm.bind(&map_args(VA + 4 * M2, PAGE, M2, 0), object(&fake, 1))
            .expect("map");
        assert_eq!(query(&vm, VA + 4 * M2), (base + PAGE, PAGE));
        // PA aligned, VA not: pages.
        vm.bind(&map_args(VA + 8 * M2 + PAGE, 0, M2, 0), object(&fake, 1))
            .expect("map");
        assert_eq!(query(&vm, VA + 8 * M2 + PAGE), (base, PAGE));
        vm.fini();
        assert_eq!(fake.live_tables(), 0);
    }

    #[test]
    fn fini_unbinds_each_binding_once_and_frees_every_table() {
        let fake = FakePlatform::new();
        scattered(&fake, 1);
        fake.add_paged_object(2, &[0x1_0001_0000]);
        let mut vm = vm::<8>(&fake);
        vm.bind(&map_args(VA + M2, 0, 4 * PAGE, 0), object(&fake, 1))
            .expect("map");
        vm.bind(&map_args(VA, 0, PAGE, 0), object(&fake, 2))
            .expect("map");
        vm.bind(&map_args(1 << 40, 0, PAGE, 0), object(&fake, 1))
            .expect("map");
        assert!(fake.live_tables() > 1);
        vm.fini();
        assert_eq!(fake.unbound(), [2, 1, 1], "once per binding, in VA order");
        assert_eq!(fake.live_tables(), 0);
        assert!(!vm.is_initialised() && vm.bindings().is_empty());
        vm.fini();
        assert_eq!(fake.unbound().len(), 3, "a second fini does nothing");
        // And the VM can be used again.
        vm.init(&fake).expect("init again");
        vm.fini();
        assert_eq!(fake.live_tables(), 0);
    }

    #[test]
    fn an_uninitialised_vm_refuses_everything() {
        let fake = FakePlatform::new();
        fake.set_table_budget(Some(0));
        let mut vm = Vm::<&FakePlatform, 2>::new();
        assert_eq!(vm.init(&fake), Err(InitError::NoRootTable));
        assert_eq!(InitError::NoRootTable.errno(), errno::ENOMEM);
        assert_eq!(
            errno_of(vm.bind(
                &map_args(VA, 0, PAGE, 0),
                BoundObject {
                    id: ObjectId(1),
                    size: PAGE,
                    read_only: false
                }
            )),
            errno::ENODEV
        );
        let mut q = VmQuery::default();
        assert_eq!(errno_of(vm.query(&mut q, true)), errno::ENODEV);
        let mut exec = Exec::default();
        assert_eq!(errno_of(vm.exec(&mut exec, &[])), errno::ENODEV);
        assert_eq!((vm.table_pages(), vm.platform().is_some()), (0, false));
        vm.fini();
        fake.set_table_budget(None);
        vm.init(&fake).expect("init");
        assert_eq!(vm.init(&fake), Err(InitError::AlreadyInitialised));
        assert_eq!(InitError::AlreadyInitialised.errno(), errno::EBUSY);
        vm.fini();
    }

    #[test]
    fn query_reports_mapping_access_and_hides_pa_unless_privileged() {
        let fake = FakePlatform::new();
        let pages = scattered(&fake, 1);
        let mut vm = vm::<8>(&fake);
        vm.bind(&map_args(VA, 0, 4 * PAGE, FLAG_READ_ONLY), object(&fake, 1))
            .expect("map");
        let mut q = VmQuery {
            va: VA + 3 * PAGE + 5,
            ..VmQuery::default()
        };
        vm.query(&mut q, true).expect("query");
        assert_eq!(
            (q.pa, q.page_size, q.flags),
            (pages[3] + 5, PAGE, QUERY_MAPPED | QUERY_READ_ONLY)
        );
        vm.query(&mut q, false).expect("query");
        assert_eq!((q.pa, q.page_size), (0, PAGE));
        q.va = VA + 4 * PAGE;
        vm.query(&mut q, true).expect("unmapped is not an error");
        assert_eq!((q.pa, q.page_size, q.flags), (0, 0, 0));
        q.va = 1 << 48;
        assert_eq!(errno_of(vm.query(&mut q, true)), errno::ERANGE);
        q.va = VA;
        q.pad = 1;
        assert_eq!(errno_of(vm.query(&mut q, true)), errno::EINVAL);
        vm.fini();
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        const CAPACITY: usize = 6;
        /// (pages, read-only object)
        const OBJECTS: [(u64, bool); 3] = [(12, false), (6, true), (512, false)];

        #[derive(Clone, Debug)]
        enum Op {
            Map {
                va_page: u64,
                pages: u64,
                object: usize,
                offset_page: u64,
                read_only: bool,
            },
            /// Object 3 whole, at a 2 MiB-aligned VA: a block mapping.
            MapBlock {
                slot: u64,
            },
            Unmap {
                va_page: u64,
                pages: u64,
            },
            UnmapExisting {
                index: usize,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0..96u64, 1..16u64, 0..2usize, 0..16u64, any::<bool>()).prop_map(
                    |(va_page, pages, object, offset_page, read_only)| Op::Map {
                        va_page,
                        pages,
                        object,
                        offset_page,
                        read_only
                    }
                ),
                1 => (0..2u64).prop_map(|slot| Op::MapBlock { slot }),
                1 => (0..96u64, 1..16u64).prop_map(|(va_page, pages)| Op::Unmap { va_page, pages }),
                3 => any::<usize>().prop_map(|index| Op::UnmapExisting { index }),
            ]
        }

        #[derive(Clone, Copy, Debug)]
        struct Bound {
            size: u64,
            object: u64,
            offset: u64,
            read_only: bool,
        }

        fn setup(fake: &FakePlatform) {
            // Object 1: scattered pages with some contiguous runs.
            let pages: Vec<u64> = (0..12u64)
                .map(|i| {
                    0x1_0000_0000
                        + (i * 5 % 12 + i / 4 * 3) * PAGE
                        + (i % 3 == 1) as u64 * 0x10_0000
                })
                .collect();
            fake.add_paged_object(1, &pages);
            fake.add_paged_object(
                2,
                &(0..6u64)
                    .map(|i| 0x1_1000_0000 + i * 2 * PAGE)
                    .collect::<Vec<_>>(),
            );
            fake.add_object(3, &[(0x2_0000_0000, M2)]);
        }

        fn expected_errno(
            model: &BTreeMap<u64, Bound>,
            va: u64,
            b: Bound,
            object_size: u64,
            object_ro: bool,
        ) -> i32 {
            if b.offset + b.size > object_size {
                return errno::ERANGE;
            }
            if object_ro && !b.read_only {
                return errno::EACCES;
            }
            if model
                .iter()
                .any(|(&v, m)| v < va + b.size && va < v + m.size)
            {
                return errno::EEXIST;
            }
            if model.len() >= CAPACITY {
                return errno::ENOSPC;
            }
            0
        }

        fn check_translations(
            fake: &FakePlatform,
            vm: &Vm<&FakePlatform, CAPACITY>,
            model: &BTreeMap<u64, Bound>,
            probes: &[u64],
        ) {
            for (&va, b) in model {
                let pages = b.size / PAGE;
                for k in [0, pages / 2, pages - 1] {
                    let want = fake.object_pa(b.object, b.offset + k * PAGE);
                    let got = pa_at(vm, va + k * PAGE + 8).expect("mapped");
                    assert_eq!(
                        (got.0, got.2),
                        (want + 8, b.read_only),
                        "binding at {va:#x} page {k}"
                    );
                }
            }
            for &probe in probes {
                let va = VA + probe * PAGE;
                let inside = model
                    .range(..=va)
                    .next_back()
                    .filter(|(&v, b)| va < v + b.size);
                match inside {
                    Some((&v, b)) => {
                        let want = fake.object_pa(b.object, b.offset + (va - v));
                        assert_eq!(pa_at(vm, va).map(|t| t.0), Some(want), "probe {va:#x}");
                    }
                    None => assert_eq!(pa_at(vm, va), None, "probe {va:#x} should be unmapped"),
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

            #[test]
            #[cfg_attr(miri, ignore = "a 2 MiB mapping takes Miri minutes (the map checks every 4 KiB page for overlap); runs natively in cargo test")]
            fn bind_and_unbind_match_a_model(
                ops in proptest::collection::vec(op(), 1..40),
                probes in proptest::collection::vec(0..1100u64, 8),
            ) {
                let fake = FakePlatform::new();
                setup(&fake);
                let mut vm = vm::<CAPACITY>(&fake);
                let mut model: BTreeMap<u64, Bound> = BTreeMap::new();
                let mut unbound = 0;
                for op in ops {
                    let (args, object, bound) = match op {
                        Op::Map { va_page, pages, object, offset_page, read_only } => {
                            let (object_pages, object_ro) = OBJECTS[object];
                            let b = Bound { size: pages * PAGE, object: object as u64 + 1, offset: offset_page * PAGE, read_only };
                            let flags = if read_only { FLAG_READ_ONLY } else { 0 };
                            let bound = BoundObject { id: ObjectId(b.object), size: object_pages * PAGE, read_only: object_ro };
                            (map_args(VA + va_page * PAGE, b.offset, b.size, flags), bound, Some(b))
                        }
                        Op::MapBlock { slot } => {
                            let b = Bound { size: M2, object: 3, offset: 0, read_only: false };
                            let bound = BoundObject { id: ObjectId(3), size: M2, read_only: false };
                            (map_args(VA + slot * M2, 0, M2, 0), bound, Some(b))
                        }
                        Op::Unmap { va_page, pages } => {
                            (unmap_args(VA + va_page * PAGE, pages * PAGE), BoundObject { id: ObjectId(0), size: 0, read_only: false }, None)
                        }
                        Op::UnmapExisting { index } => {
                            let Some((&va, b)) = model.iter().nth(index % model.len().max(1)) else { continue };
                            (unmap_args(va, b.size), BoundObject { id: ObjectId(0), size: 0, read_only: false }, None)
                        }
                    };
                    let got = errno_of(vm.bind(&args, object));
                    let want = match bound {
                        Some(b) => {
                            let want = expected_errno(&model, args.va, b, object.size, object.read_only);
                            if want == 0 {
                                model.insert(args.va, b);
                            }
                            want
                        }
                        None => match model.get(&args.va) {
                            Some(b) if b.size == args.size => {
                                model.remove(&args.va);
                                unbound += 1;
                                0
                            }
                            _ => errno::ENOENT,
                        },
                    };
                    prop_assert_eq!(got, want, "{:?}", args);
                    let listed: Vec<(u64, u64, u64)> = vm.bindings().iter().map(|b| (b.va.get(), b.size, b.object.0)).collect();
                    let modelled: Vec<(u64, u64, u64)> = model.iter().map(|(&va, b)| (va, b.size, b.object)).collect();
                    prop_assert_eq!(listed, modelled);
                    prop_assert_eq!(fake.unbound().len(), unbound);
                    check_translations(&fake, &vm, &model, &probes);
                }
                let remaining: Vec<(u64, u64)> = model.iter().map(|(&va, b)| (va, b.size)).collect();
                for (va, size) in remaining {
                    vm.bind(&unmap_args(va, size), BoundObject { id: ObjectId(0), size: 0, read_only: false }).expect("unbind");
                }
                prop_assert_eq!(vm.table_pages(), 1, "only the root is left");
                vm.fini();
                prop_assert_eq!(fake.live_tables(), 0);
            }
        }
    }
}
