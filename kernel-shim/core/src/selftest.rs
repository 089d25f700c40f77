//! Self-tests that run where the core runs: in the kernel (`extmem_kcore_selftest`, on the
//! module's real table pages and memory access), and on the host against the fake platform.
//!
//! What runs in the kernel, all on memory the platform allocates as table pages:
//! descriptor encoding against hand-worked bits; page-table map / translate / unmap and
//! the split of a 2 MiB block; `VM_BIND` validation with each errno; the copy engine
//! through a VM whose objects are table pages (COPY and FILL across page boundaries,
//! byte-exact, and its faults); and `vm_fini` giving every page and object back.
//! Objects here are the self-test's own (no GEM object is involved), so
//! `extmem_plat_object_segment` and `extmem_plat_object_unbound` are not called.
//!
//! Output is KTAP version 1, one line per call of `emit`, without newlines. Lines are
//! built without `core::fmt`, whose machinery the no-panic check cannot see through.

use core::cell::Cell;

use extmem_hw::profile::MIN_PAGE;
use extmem_hw::{
    Access, Descriptor, GpuVa, Level, MapFlags, PageSize, PageTable, PhysAddr, TranslateError,
};
use extmem_uapi::{
    BindOp, Cmd, Exec, FaultKind, VmBind, VmQuery, FLAG_READ_ONLY, QUERY_MAPPED, QUERY_READ_ONLY,
};

use crate::copy_engine::ExecError;
use crate::errno::{self, ToErrno};
use crate::platform::{
    MemoryFault, ObjectId, Platform, PlatformTables, RunFault, Segment, SegmentError,
};
use crate::vm::{BoundObject, Vm};

/// The longest line `emit` is given, in bytes, without the NUL (longer text is cut).
pub const LINE_MAX: usize = 111;

/// The test cases, in the order they run.
pub const CASES: [&str; 7] = [
    "descriptor_encoding",
    "map_translate_unmap",
    "block_split",
    "bind_validation",
    "copy_engine",
    "copy_engine_faults",
    "vm_fini_releases_everything",
];

/// A KTAP line being built: ASCII, always NUL-terminated so the kernel can print it as it
/// is.
///
/// A plain aligned array under 128 bytes: LLVM zeroes and copies that inline. (A larger
/// or unaligned one becomes a `memset` / `memcpy` call, which the kernel object must not
/// contain; see `tests/no_panic.rs`.)
///
/// # Invariants
/// `len <= LINE_MAX`, and `bytes[len..]` are all zero.
#[derive(Clone, Debug)]
#[repr(C, align(8))]
pub struct Line {
    len: usize,
    bytes: [u8; LINE_MAX + 1],
}

impl Default for Line {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; LINE_MAX + 1],
        }
    }
}

impl Line {
    fn push(&mut self, byte: u8) -> Result<(), ()> {
        if byte == 0 || self.len >= LINE_MAX {
            return Err(());
        }
        let slot = self.bytes.get_mut(self.len).ok_or(())?;
        *slot = byte;
        self.len += 1;
        Ok(())
    }

    fn str(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            // A full line drops the rest: a cut diagnostic is better than none.
            if self.push(b).is_err() {
                break;
            }
        }
        self
    }

    fn dec(&mut self, value: u64) -> &mut Self {
        // Least significant digit first, then pushed in reverse.
        let mut digits = [0u8; 20];
        let mut n = value;
        let mut used = 0;
        for slot in &mut digits {
            *slot = b'0' + u8::try_from(n % 10).unwrap_or(0);
            n /= 10;
            used += 1;
            if n == 0 {
                break;
            }
        }
        for &digit in digits.iter().take(used).rev() {
            if self.push(digit).is_err() {
                break;
            }
        }
        self
    }

    fn hex(&mut self, value: u64) -> &mut Self {
        self.str("0x");
        let mut started = false;
        for shift in (0..16).rev() {
            let nibble = (value >> (shift * 4)) & 0xf;
            if nibble != 0 || started || shift == 0 {
                started = true;
                let digit = usize::try_from(nibble)
                    .ok()
                    .and_then(|n| b"0123456789abcdef".get(n))
                    .copied();
                if self.push(digit.unwrap_or(b'?')).is_err() {
                    break;
                }
            }
        }
        self
    }

    fn errno(&mut self, errno: i32) -> &mut Self {
        if errno == 0 {
            return self.str("0");
        }
        self.str("-E").dec(u64::from(errno.unsigned_abs()))
    }

    /// The text, without the NUL.
    #[must_use]
    pub fn as_str(&self) -> &str {
        let text = self.bytes.get(..self.len).unwrap_or(&[]);
        core::str::from_utf8(text).unwrap_or("")
    }

    /// The text with its NUL terminator, for C.
    #[must_use]
    pub fn as_bytes_with_nul(&self) -> &[u8] {
        self.bytes.get(..=self.len).unwrap_or(&[0])
    }
}

/// How a [`Failure`] shows a value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shown {
    Hex(u64),
    /// 0 or a positive errno, shown negated.
    Errno(i32),
}

/// Why a case failed: what was checked, what came out and what should have.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Failure {
    what: &'static str,
    got: Shown,
    want: Shown,
}

type Outcome = Result<(), Failure>;

fn check(what: &'static str, got: u64, want: u64) -> Outcome {
    if got == want {
        Ok(())
    } else {
        Err(Failure {
            what,
            got: Shown::Hex(got),
            want: Shown::Hex(want),
        })
    }
}

fn check_errno<T, E: ToErrno>(what: &'static str, result: Result<T, E>, want: i32) -> Outcome {
    let got = result.map_or_else(|e| e.errno(), |_| 0);
    if got == want {
        Ok(())
    } else {
        Err(Failure {
            what,
            got: Shown::Errno(got),
            want: Shown::Errno(want),
        })
    }
}

fn fail(what: &'static str) -> Failure {
    Failure {
        what,
        got: Shown::Hex(0),
        want: Shown::Hex(1),
    }
}

/// Runs every case; returns how many failed.
pub fn run<P: Platform>(platform: &P, mut emit: impl FnMut(&Line)) -> u32 {
    let mut line = Line::default();
    emit(line.str("KTAP version 1"));
    line = Line::default();
    emit(line.str("1..").dec(CASES.len() as u64));
    let mut failed = 0;
    for (index, &name) in CASES.iter().enumerate() {
        let number = index as u64 + 1;
        let result = run_case(platform, index);
        if let Err(failure) = result {
            failed += 1;
            let mut diag = Line::default();
            diag.str("# ").str(name).str(": ").str(failure.what);
            for (label, value) in [(": got ", failure.got), (", want ", failure.want)] {
                diag.str(label);
                match value {
                    Shown::Hex(v) => diag.hex(v),
                    Shown::Errno(e) => diag.errno(e),
                };
            }
            emit(&diag);
        }
        let mut result_line = Line::default();
        if result.is_err() {
            result_line.str("not ");
        }
        result_line.str("ok ").dec(number).str(" ").str(name);
        emit(&result_line);
    }
    failed
}

/// One case, each on a fresh [`TestPlatform`] that must end with nothing allocated.
fn run_case<P: Platform>(host: &P, index: usize) -> Outcome {
    let platform = TestPlatform::new(host);
    let result = match index {
        0 => descriptor_encoding(),
        1 => map_translate_unmap(&platform),
        2 => block_split(&platform),
        3 => bind_validation(&platform),
        4 => copy_engine(&platform),
        5 => copy_engine_faults(&platform),
        6 => vm_fini_releases_everything(&platform),
        _ => Err(fail("no such case")),
    };
    platform.free_objects();
    result?;
    check(
        "table pages left allocated",
        u64::from(platform.live_tables.get()),
        0,
    )
}

/// Pages one test object has at most. (These capacities, and that of the test VM, are kept
/// small so the self-test's locals stay below 128 bytes each, the size above which LLVM
/// zeroes or copies through a `memset` / `memcpy` call.)
const OBJECT_PAGES: usize = 2;
/// Test objects at most.
const OBJECTS: usize = 2;

/// A test object: pages from the host's table allocator, not necessarily contiguous.
#[derive(Clone, Copy, Debug, Default)]
struct TestObject {
    pages: [PhysAddr; OBJECT_PAGES],
    count: usize,
}

/// The platform of a self-test: the host's table pages and memory access, plus objects
/// made of the host's table pages. Counts what it hands out, so a case can check that
/// everything came back.
struct TestPlatform<'a, P> {
    host: &'a P,
    live_tables: Cell<u32>,
    unbound: Cell<u32>,
    objects: [Cell<TestObject>; OBJECTS],
}

impl<'a, P: Platform> TestPlatform<'a, P> {
    fn new(host: &'a P) -> Self {
        Self {
            host,
            live_tables: Cell::new(0),
            unbound: Cell::new(0),
            objects: Default::default(),
        }
    }

    /// A zeroed object of `pages` pages; its id is its slot plus one.
    fn object(&self, pages: usize) -> Result<ObjectId, Failure> {
        let (slot, cell) = self
            .objects
            .iter()
            .enumerate()
            .find(|(_, c)| c.get().count == 0)
            .ok_or(fail("out of test object slots"))?;
        let mut object = TestObject::default();
        for index in 0..pages.min(OBJECT_PAGES) {
            let page = self
                .alloc_table()
                .ok_or(fail("no page for a test object"))?;
            if let Some(slot) = object.pages.get_mut(index) {
                *slot = page;
                object.count += 1;
            }
            // Recorded page by page, so a failure part-way still frees what was taken.
            cell.set(object);
        }
        Ok(ObjectId(slot as u64 + 1))
    }

    fn object_size(&self, id: ObjectId) -> u64 {
        self.lookup(id)
            .map_or(0, |o| o.count as u64 * MIN_PAGE.get())
    }

    fn lookup(&self, id: ObjectId) -> Option<TestObject> {
        let slot = usize::try_from(id.0.checked_sub(1)?).ok()?;
        self.objects.get(slot).map(Cell::get)
    }

    /// The physical address of byte `offset` of object `id`.
    fn pa_of(&self, id: ObjectId, offset: u64) -> Option<PhysAddr> {
        let object = self.lookup(id)?;
        let page = usize::try_from(offset / MIN_PAGE.get()).ok()?;
        let base = *object.pages.get(page).filter(|_| page < object.count)?;
        base.checked_add(offset % MIN_PAGE.get())
    }

    fn byte(&self, id: ObjectId, offset: u64) -> Option<u8> {
        let pa = self.pa_of(id, offset)?;
        let word = self.host.read_u64(pa.align_down(EIGHT));
        word.to_le_bytes()
            .get(usize::try_from(pa.get() % 8).ok()?)
            .copied()
    }

    fn free_objects(&self) {
        for cell in &self.objects {
            let object = cell.take();
            for &page in object.pages.iter().take(object.count) {
                self.free_table(page);
            }
        }
    }
}

const EIGHT: extmem_hw::Alignment = match extmem_hw::Alignment::new(8) {
    Some(a) => a,
    None => MIN_PAGE,
};

impl<P: Platform> Platform for TestPlatform<'_, P> {
    fn alloc_table(&self) -> Option<PhysAddr> {
        let table = self.host.alloc_table()?;
        self.live_tables
            .set(self.live_tables.get().saturating_add(1));
        Some(table)
    }
    fn free_table(&self, table: PhysAddr) {
        self.live_tables
            .set(self.live_tables.get().saturating_sub(1));
        self.host.free_table(table);
    }
    fn read_u64(&self, pa: PhysAddr) -> u64 {
        self.host.read_u64(pa)
    }
    fn write_u64(&self, pa: PhysAddr, value: u64) {
        self.host.write_u64(pa, value);
    }
    fn copy(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), MemoryFault> {
        self.host.copy(dst, src, len)
    }
    fn copy_run(&self, dst: PhysAddr, src: PhysAddr, len: u64) -> Result<(), RunFault> {
        self.host.copy_run(dst, src, len)
    }
    fn fill(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), MemoryFault> {
        self.host.fill(dst, value, len)
    }
    fn fill_run(&self, dst: PhysAddr, value: u32, len: u64) -> Result<(), RunFault> {
        self.host.fill_run(dst, value, len)
    }
    fn object_segment(&self, object: ObjectId, offset: u64) -> Result<Segment, SegmentError> {
        let o = self.lookup(object).ok_or(SegmentError::PastEnd)?;
        let first = usize::try_from(offset / MIN_PAGE.get()).map_err(|_| SegmentError::PastEnd)?;
        let pages = o.pages.get(first..o.count).unwrap_or(&[]);
        let start = *pages.first().ok_or(SegmentError::PastEnd)?;
        // Extend the run while the next page follows physically.
        let mut len = MIN_PAGE.get();
        for pair in pages.windows(2) {
            match pair {
                [a, b] if a.checked_add(MIN_PAGE.get()) == Some(*b) => len += MIN_PAGE.get(),
                _ => break,
            }
        }
        let pa = start
            .checked_add(offset % MIN_PAGE.get())
            .ok_or(SegmentError::PastEnd)?;
        Ok(Segment {
            pa,
            len: len - offset % MIN_PAGE.get(),
        })
    }
    fn object_unbound(&self, _object: ObjectId) {
        self.unbound.set(self.unbound.get().saturating_add(1));
    }
}

fn rw() -> MapFlags {
    MapFlags::default()
}

/// Hand-worked from the Arm ARM field positions (D8.3): valid bit 0, table/page bit 1,
/// AttrIndx 4:2, AP[1] 6, AP[2] 7, SH 9:8, AF 10, nG 11, OA 47:12, XN 54.
fn descriptor_encoding() -> Outcome {
    let attrs = rw().attrs();
    // Page: 0b11 | AP[1] 0x40 | SH 0x300 | AF 0x400 | nG 0x800 | XN 1 << 54.
    let page = Descriptor::Leaf {
        output: PhysAddr::new(0x1234_5000),
        attrs,
    };
    check(
        "4K page",
        page.encode(Level::L3).unwrap_or(0),
        0x0040_0000_1234_5f43,
    )?;
    let read_only = Descriptor::Leaf {
        output: PhysAddr::new(0x1234_5000),
        attrs: MapFlags {
            access: Access::ReadOnly,
            ..rw()
        }
        .attrs(),
    };
    check(
        "read-only 4K page",
        read_only.encode(Level::L3).unwrap_or(0),
        0x0040_0000_1234_5fc3,
    )?;
    // Block: bit 1 clear.
    let block = Descriptor::Leaf {
        output: PhysAddr::new(0x4020_0000),
        attrs,
    };
    check(
        "2M block",
        block.encode(Level::L2).unwrap_or(0),
        0x0040_0000_4020_0f41,
    )?;
    check(
        "unaligned 2M block is refused",
        u64::from(
            Descriptor::Leaf {
                output: PhysAddr::new(0x4020_1000),
                attrs,
            }
            .encode(Level::L2)
            .is_none(),
        ),
        1,
    )?;
    let table = Descriptor::Table {
        next: PhysAddr::new(0x8_0000_1000),
    };
    check(
        "table",
        table.encode(Level::L0).unwrap_or(0),
        0x0000_0008_0000_1003,
    )?;
    check(
        "decode round trip",
        u64::from(Descriptor::decode(Level::L3, 0x0040_0000_1234_5f43) == Ok(page)),
        1,
    )?;
    check(
        "reserved level-0 block is corrupt",
        u64::from(Descriptor::decode(Level::L0, 0x4000_0001).is_err()),
        1,
    )
}

type TestTable<'p, 'h, P> = PageTable<PlatformTables<&'p TestPlatform<'h, P>>>;

fn page_table<'p, 'h, P: Platform>(
    platform: &'p TestPlatform<'h, P>,
) -> Result<TestTable<'p, 'h, P>, Failure> {
    PageTable::new(PlatformTables::new(platform), crate::PROFILE).map_err(|_| fail("no root table"))
}

fn translate<P: Platform>(table: &TestTable<'_, '_, P>, va: u64) -> (u64, u64) {
    match table.translate(GpuVa::new(va)) {
        Ok(t) => (t.pa.get(), t.page.bytes()),
        Err(_) => (0, 0),
    }
}

/// Page tables map addresses they never touch, so made-up physical addresses are fine.
fn map_translate_unmap<P: Platform>(platform: &TestPlatform<'_, P>) -> Outcome {
    let mut table = page_table(platform)?;
    let result = (|| {
        let va = 0x7f_1234_0000;
        table
            .map(GpuVa::new(va), PhysAddr::new(0x8000_0000), 0x3000, rw())
            .map_err(|_| fail("map"))?;
        check("pages for one 4K run", table.table_pages() as u64, 4)?;
        let (pa, size) = translate(&table, va + 0x1abc);
        check("translate pa", pa, 0x8000_1abc)?;
        check("translate page size", size, 0x1000)?;
        let _ = table
            .unmap(GpuVa::new(va), 0x3000)
            .map_err(|_| fail("unmap"))?;
        check("unmapped", translate(&table, va).1, 0)?;
        check("tables freed", table.table_pages() as u64, 1)
    })();
    let _memory = table.destroy();
    result
}

fn block_split<P: Platform>(platform: &TestPlatform<'_, P>) -> Outcome {
    let mut table = page_table(platform)?;
    let result = (|| {
        let (va, pa, m2) = (0x20_0000, 0x4000_0000, PageSize::Size2M.bytes());
        table
            .map(GpuVa::new(va), PhysAddr::new(pa), m2, rw())
            .map_err(|_| fail("map"))?;
        check("a 2M block", translate(&table, va + 0x5123).1, m2)?;
        check("block pa", translate(&table, va + 0x5123).0, pa + 0x5123)?;
        let _ = table
            .unmap(GpuVa::new(va), 0x1000)
            .map_err(|_| fail("unmap first page"))?;
        check(
            "first page gone",
            u64::from(matches!(
                table.translate(GpuVa::new(va)),
                Err(TranslateError::NotMapped { .. })
            )),
            1,
        )?;
        check("split into pages", translate(&table, va + 0x1000).1, 0x1000)?;
        check(
            "split keeps pa",
            translate(&table, va + 0x1008).0,
            pa + 0x1008,
        )?;
        let _ = table
            .unmap(GpuVa::new(va + 0x1000), m2 - 0x1000)
            .map_err(|_| fail("unmap rest"))?;
        check("tables freed", table.table_pages() as u64, 1)
    })();
    let _memory = table.destroy();
    result
}

fn map_args(va: u64, offset: u64, size: u64, flags: u32) -> VmBind {
    VmBind {
        op: BindOp::MAP,
        flags,
        handle: 1,
        va,
        offset,
        size,
        ..VmBind::default()
    }
}

fn unmap_args(va: u64, size: u64) -> VmBind {
    VmBind {
        op: BindOp::UNMAP,
        va,
        size,
        ..VmBind::default()
    }
}

type TestVm<'p, 'h, P> = Vm<&'p TestPlatform<'h, P>, 2>;

fn test_vm<'p, 'h, P: Platform>(
    platform: &'p TestPlatform<'h, P>,
) -> Result<TestVm<'p, 'h, P>, Failure> {
    let mut vm = Vm::new();
    vm.init(platform).map_err(|_| fail("vm init"))?;
    Ok(vm)
}

fn bound<P: Platform>(
    platform: &TestPlatform<'_, P>,
    id: ObjectId,
    read_only: bool,
) -> BoundObject {
    BoundObject {
        id,
        size: platform.object_size(id),
        read_only,
    }
}

fn bind_validation<P: Platform>(platform: &TestPlatform<'_, P>) -> Outcome {
    let rw_object = platform.object(2)?;
    let ro_object = platform.object(1)?;
    let mut vm = test_vm(platform)?;
    let result = (|| {
        let rw = bound(platform, rw_object, false);
        let ro = bound(platform, ro_object, true);
        let base = 0x100_0000;
        check_errno(
            "misaligned va",
            vm.bind(&map_args(base + 8, 0, 0x1000, 0), rw),
            errno::EINVAL,
        )?;
        check_errno(
            "unknown flag",
            vm.bind(&map_args(base, 0, 0x1000, 1 << 7), rw),
            errno::EINVAL,
        )?;
        check_errno(
            "wrapping va",
            vm.bind(&map_args(!0xfff, 0, 0x2000, 0), rw),
            errno::EOVERFLOW,
        )?;
        check_errno(
            "outside the VA space",
            vm.bind(&map_args(1 << 48, 0, 0x1000, 0), rw),
            errno::ERANGE,
        )?;
        check_errno(
            "past the object",
            vm.bind(&map_args(base, 0x1000, 0x2000, 0), rw),
            errno::ERANGE,
        )?;
        check_errno(
            "read-only object",
            vm.bind(&map_args(base, 0, 0x1000, 0), ro),
            errno::EACCES,
        )?;
        check("nothing mapped after refusals", vm.table_pages() as u64, 1)?;
        check_errno(
            "read-only object, read-only binding",
            vm.bind(&map_args(base, 0, 0x1000, FLAG_READ_ONLY), ro),
            0,
        )?;
        check_errno(
            "bind",
            vm.bind(&map_args(base + 0x1000, 0, 0x2000, 0), rw),
            0,
        )?;
        let mut query = VmQuery {
            va: base + 0x2010,
            ..VmQuery::default()
        };
        check_errno("query", vm.query(&mut query, true), 0)?;
        check(
            "query flags",
            u64::from(query.flags),
            u64::from(QUERY_MAPPED),
        )?;
        let pa = platform.pa_of(rw_object, 0x1010).map_or(0, PhysAddr::get);
        check("query pa", query.pa, pa)?;
        query.va = base;
        check_errno("query read-only", vm.query(&mut query, false), 0)?;
        check(
            "query read-only flags",
            u64::from(query.flags),
            u64::from(QUERY_MAPPED | QUERY_READ_ONLY),
        )?;
        check("unprivileged query hides pa", query.pa, 0)?;
        let tables = vm.table_pages();
        check_errno(
            "overlap",
            vm.bind(&map_args(base + 0x2000, 0, 0x2000, 0), rw),
            errno::EEXIST,
        )?;
        check(
            "tables unchanged by the overlap",
            vm.table_pages() as u64,
            tables as u64,
        )?;
        check_errno(
            "table full",
            vm.bind(&map_args(base + 0x10_0000, 0, 0x1000, 0), rw),
            errno::ENOSPC,
        )?;
        check_errno(
            "unbind of no binding",
            vm.bind(&unmap_args(base + 0x1000, 0x1000), rw),
            errno::ENOENT,
        )?;
        check("bindings after refusals", vm.bindings().len() as u64, 2)?;
        for (va, size) in [(base, 0x1000), (base + 0x1000, 0x2000)] {
            check_errno("unbind", vm.bind(&unmap_args(va, size), rw), 0)?;
        }
        check("unbound calls", u64::from(platform.unbound.get()), 2)?;
        check("tables after unbinding", vm.table_pages() as u64, 1)
    })();
    vm.fini();
    result
}

/// The byte the pattern puts at `offset` of a source object: distinct over 251 bytes, so
/// an off-by-some copy shows.
fn pattern(offset: u64) -> u8 {
    u8::try_from(offset % 251).unwrap_or(0) ^ 0x5a
}

fn write_pattern<P: Platform>(platform: &TestPlatform<'_, P>, id: ObjectId) -> Outcome {
    let size = platform.object_size(id);
    let mut offset = 0;
    while offset < size {
        let pa = platform.pa_of(id, offset).ok_or(fail("pattern pa"))?;
        let mut bytes = [0u8; 8];
        for (i, b) in (0u64..).zip(bytes.iter_mut()) {
            *b = pattern(offset + i);
        }
        platform.write_u64(pa, u64::from_le_bytes(bytes));
        offset += 8;
    }
    Ok(())
}

fn exec<P: Platform>(vm: &TestVm<'_, '_, P>, cmds: &[Cmd]) -> (Result<(), ExecError>, Exec) {
    let mut args = Exec {
        cmds: 0x1000,
        count: u32::try_from(cmds.len()).unwrap_or(0),
        ..Exec::default()
    };
    let result = vm.exec(&mut args, cmds);
    (result, args)
}

const SRC_VA: u64 = 0x10_0000;
const DST_VA: u64 = 0x20_0000;

fn copy_engine<P: Platform>(platform: &TestPlatform<'_, P>) -> Outcome {
    let src = platform.object(2)?;
    let dst = platform.object(2)?;
    write_pattern(platform, src)?;
    let mut vm = test_vm(platform)?;
    let result = (|| {
        check_errno(
            "bind src",
            vm.bind(&map_args(SRC_VA, 0, 0x2000, 0), bound(platform, src, false)),
            0,
        )?;
        check_errno(
            "bind dst",
            vm.bind(&map_args(DST_VA, 0, 0x2000, 0), bound(platform, dst, false)),
            0,
        )?;
        // A FILL across the page boundary, then a COPY across it on both sides at
        // different offsets, from an odd address.
        let (fill_at, fill_len) = (0xff0_u64, 0x20_u64);
        let (from, to, len) = (0xffb_u64, 0xff6_u64, 0x1d_u64);
        let (result, args) = exec(
            &vm,
            &[
                Cmd::fill(DST_VA + fill_at, 0xa1b2_c3d4, fill_len),
                Cmd::copy(SRC_VA + from, DST_VA + to, len),
            ],
        );
        check_errno("exec", result, 0)?;
        check("fault kind", u64::from(args.fault_kind.0), 0)?;
        let fill = 0xa1b2_c3d4_u32.to_le_bytes();
        for offset in 0xfe0..0x1020 {
            let want = if (to..to + len).contains(&offset) {
                pattern(from + offset - to)
            } else if (fill_at..fill_at + fill_len).contains(&offset) {
                fill.get(usize::try_from(offset % 4).unwrap_or(0))
                    .copied()
                    .unwrap_or(0)
            } else {
                0
            };
            let got = platform.byte(dst, offset).ok_or(fail("read back"))?;
            if got != want {
                return Err(Failure {
                    what: "byte after fill and copy",
                    got: Shown::Hex(offset << 8 | u64::from(got)),
                    want: Shown::Hex(offset << 8 | u64::from(want)),
                });
            }
        }
        Ok(())
    })();
    vm.fini();
    result
}

fn copy_engine_faults<P: Platform>(platform: &TestPlatform<'_, P>) -> Outcome {
    let src = platform.object(2)?;
    write_pattern(platform, src)?;
    let mut vm = test_vm(platform)?;
    let result = (|| {
        let object = bound(platform, src, false);
        check_errno("bind", vm.bind(&map_args(SRC_VA, 0, 0x2000, 0), object), 0)?;
        check_errno(
            "bind read-only",
            vm.bind(&map_args(DST_VA, 0, 0x2000, FLAG_READ_ONLY), object),
            0,
        )?;
        // Copy the last 16 bytes of the source plus 16 past its end onto its start.
        let (result, args) = exec(
            &vm,
            &[
                Cmd::fill(SRC_VA + 0x1000, 0, 4),
                Cmd::copy(SRC_VA + 0x1ff0, SRC_VA, 0x20),
            ],
        );
        check_errno("unmapped source", result, errno::EIO)?;
        check("fault va", args.fault_va, SRC_VA + 0x2000)?;
        check("fault cmd", u64::from(args.fault_cmd), 1)?;
        check(
            "fault kind",
            u64::from(args.fault_kind.0),
            u64::from(FaultKind::UNMAPPED.0),
        )?;
        let copied = platform.byte(src, 0xf).ok_or(fail("read back"))?;
        check(
            "bytes before the fault were copied",
            u64::from(copied),
            u64::from(pattern(0x1fff)),
        )?;
        let (result, args) = exec(&vm, &[Cmd::fill(DST_VA + 0x1ffc, 7, 4)]);
        check_errno("read-only destination", result, errno::EIO)?;
        check("read-only fault va", args.fault_va, DST_VA + 0x1ffc)?;
        check(
            "read-only fault kind",
            u64::from(args.fault_kind.0),
            u64::from(FaultKind::READ_ONLY.0),
        )?;
        let (result, args) = exec(
            &vm,
            &[
                Cmd::fill(SRC_VA, 0x1111_1111, 4),
                Cmd::fill(SRC_VA + 2, 0, 4),
            ],
        );
        check_errno("malformed command", result, errno::EINVAL)?;
        check("malformed cmd index", u64::from(args.fault_cmd), 1)?;
        check(
            "a malformed batch runs nothing",
            u64::from(platform.byte(src, 0).ok_or(fail("read back"))?),
            u64::from(pattern(0x1ff0)),
        )
    })();
    vm.fini();
    result
}

fn vm_fini_releases_everything<P: Platform>(platform: &TestPlatform<'_, P>) -> Outcome {
    let object = platform.object(1)?;
    let mut vm = test_vm(platform)?;
    let o = bound(platform, object, false);
    for va in [0x1000, 0x80_0000_0000] {
        if vm.bind(&map_args(va, 0, 0x1000, 0), o).is_err() {
            vm.fini();
            return Err(fail("bind"));
        }
    }
    vm.fini();
    check(
        "unbound once per binding",
        u64::from(platform.unbound.get()),
        2,
    )?;
    check("no bindings", vm.bindings().len() as u64, 0)?;
    check("no table pages", vm.table_pages() as u64, 0)?;
    // Only the object's page is left.
    check("live pages", u64::from(platform.live_tables.get()), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_platform::FakePlatform;
    use std::string::{String, ToString};
    use std::vec::Vec;

    fn run_on(fake: &FakePlatform) -> (u32, Vec<String>) {
        let mut lines = Vec::new();
        let failed = run(fake, |line: &Line| {
            assert_eq!(line.as_bytes_with_nul().last(), Some(&0));
            assert!(!line.as_str().contains('\n'));
            lines.push(line.as_str().to_string());
        });
        (failed, lines)
    }

    /// The results of a KTAP v1 document: (ok, number, name, diagnostics before it).
    fn parse(lines: &[String]) -> Vec<(bool, usize, String, Vec<String>)> {
        assert_eq!(lines[0], "KTAP version 1");
        let plan: usize = lines[1]
            .strip_prefix("1..")
            .and_then(|n| n.parse().ok())
            .expect("plan line");
        let mut results = Vec::new();
        let mut diagnostics = Vec::new();
        for line in &lines[2..] {
            if let Some(diag) = line.strip_prefix("# ") {
                diagnostics.push(diag.to_string());
                continue;
            }
            let (ok, rest) = match line.strip_prefix("not ok ") {
                Some(rest) => (false, rest),
                None => (true, line.strip_prefix("ok ").expect("a result line")),
            };
            let (number, name) = rest.split_once(' ').expect("number and name");
            results.push((
                ok,
                number.parse().expect("number"),
                name.to_string(),
                std::mem::take(&mut diagnostics),
            ));
        }
        assert!(diagnostics.is_empty(), "trailing diagnostics");
        assert_eq!(results.len(), plan, "as many results as the plan says");
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.1, i + 1, "results numbered in order");
        }
        results
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a 2 MiB mapping takes Miri minutes (the map checks every 4 KiB page for overlap); runs natively in cargo test and in the kernel's KTAP self-test"
    )]
    fn the_self_test_passes_on_the_fake_and_prints_ktap() {
        let fake = FakePlatform::new();
        let (failed, lines) = run_on(&fake);
        let results = parse(&lines);
        for (ok, _, name, diags) in &results {
            assert!(ok, "{name}: {diags:?}");
        }
        assert_eq!(failed, 0);
        let names: Vec<&str> = results.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(names, CASES);
        assert_eq!(fake.live_tables(), 0, "every page came back");
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a 2 MiB mapping takes Miri minutes (the map checks every 4 KiB page for overlap); runs natively in cargo test and in the kernel's KTAP self-test"
    )]
    fn failures_are_reported_with_a_diagnostic() {
        let fake = FakePlatform::new();
        // Enough pages for the first cases' roots only: later ones fail part-way.
        fake.set_table_budget(Some(3));
        let (failed, lines) = run_on(&fake);
        let results = parse(&lines);
        let failures: Vec<_> = results.iter().filter(|r| !r.0).collect();
        assert_eq!(failures.len(), failed as usize);
        assert!(failed > 0);
        for (_, _, name, diags) in failures {
            assert_eq!(diags.len(), 1, "{name}");
            assert!(diags[0].starts_with(&std::format!("{name}: ")), "{diags:?}");
        }
        assert!(results[0].0, "descriptor encoding needs no memory");
        assert_eq!(
            fake.live_tables(),
            0,
            "failed cases give their pages back too"
        );
    }

    #[test]
    fn lines_format_numbers_and_stop_at_their_capacity() {
        let mut line = Line::default();
        line.dec(0)
            .str(" ")
            .dec(u64::MAX)
            .str(" ")
            .hex(0)
            .str(" ")
            .hex(0xdead_beef);
        line.str(" ").errno(errno::EINVAL).str(" ").errno(0);
        assert_eq!(
            line.as_str(),
            "0 18446744073709551615 0x0 0xdeadbeef -E22 0"
        );
        let mut long = Line::default();
        for _ in 0..LINE_MAX {
            long.str("ab");
        }
        assert_eq!(long.as_str().len(), LINE_MAX);
        assert_eq!(long.as_bytes_with_nul().len(), LINE_MAX + 1);
        assert_eq!(long.as_bytes_with_nul().last(), Some(&0));
        assert!(core::mem::size_of::<Line>() <= 128, "see the note on Line");
    }
}
