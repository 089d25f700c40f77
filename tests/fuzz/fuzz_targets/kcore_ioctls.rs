//! The kernel core's ioctl handlers, copy engine and pin records on the host fake platform,
//! driven by random sequences of what the C glue does with one DRM file.
//!
//! Beyond "no panic" (the fake panics on any broken platform contract: a copy crossing a
//! page, an unaligned fill, a double free, an unknown object), after every step: table
//! pages held equal the fake's live ones, the bindings are sorted and disjoint, a failed
//! `VM_BIND` or a rejected batch changed nothing, a `MAP` maps exactly the object's pages,
//! an `UNMAP` unbinds its object once, a fault names an address that really is unmapped or
//! read-only, an accepted ioctl argument meets its documented rules, and pinned pages add
//! up. When the file closes, everything goes back to zero: no table page, binding, pin or
//! object reference is left.
//!
//! Bounds, so that one execution takes well under a millisecond: at most 48 operations
//! (`kcore_ops::MAX_OPS`), 8 objects of 1280 pages in all (`MAX_OBJECT_PAGES`; enough for
//! 2 MiB block mappings), 16 bindings and 8 pin records per file, commands of at most 16
//! pages, and up to 11 table pages when a budget is set. The fake's RAM is copy-on-write
//! (every page starts as one shared zero page, and the map of pages is shared with the
//! snapshots until the next write), so the "changed nothing" snapshot before every call
//! costs a pointer, not a copy of the memory, and comparing it with an unchanged memory a
//! pointer comparison.
#![no_main]

use extmem_fuzz::kcore_ops::{
    self, Addr, CmdSpec, Op, Size, M2, MAX_OBJECTS, MAX_OBJECT_PAGES, PAGE, RAM_BASE,
};
use extmem_hw::{Access, GpuVa, HostVa, TranslateError};
use extmem_kcore::args::{check_exec, check_gem_create, check_gem_userptr};
use extmem_kcore::copy_engine::ExecError;
use extmem_kcore::fake_platform::{FakePlatform, Snapshot};
use extmem_kcore::params::get_param;
use extmem_kcore::pin_registry::PinRegistry;
use extmem_kcore::vm::InitError;
use extmem_kcore::{BoundObject, CpuPage, ObjectId, SegmentError, ToErrno, Vm, PROFILE};
use extmem_uapi::{
    BindOp, Cmd, CmdOp, Exec, FaultKind, GemCreate, GemUserptr, GetParam, ObjectKind, Param,
    VmBind, VmQuery, EXEC_FLAGS, GEM_USERPTR_FLAGS, MAX_EXEC_CMDS, QUERY_MAPPED, QUERY_READ_ONLY,
};
use libfuzzer_sys::fuzz_target;

/// Bindings per VM: small, so that the table fills up.
const BINDINGS: usize = 16;
/// Pin records per file: small, for the same reason.
const PINS: usize = 8;
/// Commands copy at most this much per command: enough to cross pages and, placed near
/// one, a 2 MiB boundary; every byte is then checked, so this bounds an execution's time.
const CMD_BYTES_MAX: u64 = 16 * PAGE;
const G1: u64 = 1 << 30;

struct File<'a> {
    fake: &'a FakePlatform,
    vm: Vm<&'a FakePlatform, BINDINGS>,
    pins: PinRegistry<PINS>,
    objects: Vec<BoundObject>,
    object_pages: u64,
    /// The object of every live binding, as the glue counts its references.
    bound: Vec<ObjectId>,
    /// `object_unbound` calls seen so far.
    unbound_seen: usize,
}

/// What a step that must change nothing compares.
#[derive(PartialEq, Debug)]
struct State {
    memory: Snapshot,
    live_tables: usize,
    bindings: Vec<extmem_kcore::Binding>,
}

impl<'a> File<'a> {
    fn open(fake: &'a FakePlatform) -> Self {
        let mut vm = Vm::new();
        // May fail under a zero table budget; the VM then answers ENODEV.
        let _ = vm.init(fake);
        Self {
            fake,
            vm,
            pins: PinRegistry::new(),
            objects: Vec::new(),
            object_pages: 0,
            bound: Vec::new(),
            unbound_seen: 0,
        }
    }

    fn state(&self) -> State {
        State {
            memory: self.fake.snapshot(),
            live_tables: self.fake.live_tables(),
            bindings: self.vm.bindings().to_vec(),
        }
    }

    fn addr(&self, addr: Addr) -> u64 {
        match addr {
            Addr::Pages { pages, blocks } => G1 + u64::from(pages) * if blocks { M2 } else { PAGE },
            Addr::InBinding { index, offset } => {
                let bindings = self.vm.bindings();
                match bindings.get(usize::from(index) % bindings.len().max(1)) {
                    Some(b) => b.va.get().wrapping_add(u64::from(offset)),
                    None => G1 + u64::from(offset),
                }
            }
            Addr::Raw(raw) => raw,
        }
    }

    fn size(&self, size: Size, va: u64) -> u64 {
        match size {
            Size::Pages(pages) => u64::from(pages) * PAGE,
            Size::Bytes(bytes) => u64::from(bytes),
            Size::Blocks { blocks, pages } => u64::from(blocks) * M2 + u64::from(pages) * PAGE,
            Size::Binding => self
                .vm
                .bindings()
                .iter()
                .find(|b| b.va.get() <= va && va < b.end())
                .map_or(PAGE, |b| b.size),
            Size::Raw(raw) => raw,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::CreateObject {
                pages,
                contiguous,
                base,
                offset_pages,
                seed,
                ram,
                read_only,
                fail_from,
            } => self.create_object(
                u64::from(*pages),
                *contiguous,
                u64::from(*base) * M2 + u64::from(*offset_pages) * PAGE,
                *seed,
                *ram,
                *read_only,
                *fail_from,
            ),
            Op::Map {
                object,
                op,
                va,
                offset,
                size,
                flags,
                pad,
            } => {
                let Some(&object) = self
                    .objects
                    .get(usize::from(*object) % self.objects.len().max(1))
                else {
                    return;
                };
                let va = self.addr(*va);
                let args = VmBind {
                    op: BindOp(*op),
                    flags: *flags,
                    handle: 1,
                    pad: *pad,
                    va,
                    offset: self.addr(*offset),
                    size: self.size(*size, va),
                };
                self.bind(&args, object);
            }
            Op::Unmap {
                va,
                size,
                flags,
                handle,
                pad,
            } => {
                let va = self.addr(*va);
                let args = VmBind {
                    op: BindOp::UNMAP,
                    flags: *flags,
                    handle: *handle,
                    pad: *pad,
                    va,
                    offset: 0,
                    size: self.size(*size, va),
                };
                let any = BoundObject {
                    id: ObjectId(u64::MAX),
                    size: 0,
                    read_only: false,
                };
                self.bind(&args, any);
            }
            Op::Exec { cmds, count, pad } => self.exec(cmds, *count, *pad),
            Op::Query {
                va,
                pad,
                privileged,
            } => self.query(self.addr(*va), *pad, *privileged),
            Op::PinAdd {
                object,
                start,
                pages,
            } => {
                let start = HostVa::new(self.addr(*start));
                let page = CpuPage::from_shift(PAGE.trailing_zeros()).expect("4 KiB");
                let result = self.pins.add(ObjectId(u64::from(*object)), start, *pages, page);
                if let Err(e) = result {
                    assert!(e.errno() > 0);
                }
            }
            Op::PinRemove { object } => {
                if let Err(e) = self.pins.remove(ObjectId(u64::from(*object))) {
                    assert!(e.errno() > 0);
                }
            }
            Op::CheckArgs { which, words } => check_args(*which, *words),
            Op::TableBudget(budget) => self.fake.set_table_budget(budget.map(usize::from)),
            Op::Reopen => {
                self.close();
                let _ = self.vm.init(self.fake);
            }
            Op::InitAgain => {
                if self.vm.is_initialised() {
                    let before = self.state();
                    assert_eq!(self.vm.init(self.fake), Err(InitError::AlreadyInitialised));
                    assert_eq!(self.state(), before, "a second init changed something");
                } else {
                    let _ = self.vm.init(self.fake);
                }
            }
        }
        self.check_invariants();
    }

    #[allow(clippy::too_many_arguments)]
    fn create_object(
        &mut self,
        pages: u64,
        contiguous: bool,
        offset: u64,
        seed: u16,
        ram: bool,
        read_only: bool,
        fail_from: Option<u16>,
    ) {
        if self.objects.len() == MAX_OBJECTS || self.object_pages + pages > MAX_OBJECT_PAGES {
            return;
        }
        let id = u64::try_from(self.objects.len()).unwrap_or(0) + 1;
        let segments: Vec<(u64, u64)> = if contiguous {
            vec![(RAM_BASE + offset, pages * PAGE)]
        } else {
            // Pages scattered over 256 MiB; some repeat, some are adjacent.
            (0..pages)
                .map(|i| {
                    let hash = (u64::from(seed) + 1)
                        .wrapping_mul(i + 1)
                        .wrapping_mul(0x9e37_79b9);
                    (RAM_BASE + (hash % 0x1_0000) * PAGE, PAGE)
                })
                .collect()
        };
        if ram {
            self.fake.add_object(id, &segments);
        } else {
            self.fake.add_object_without_ram(id, &segments);
        }
        if let Some(from) = fail_from {
            let error = if from % 2 == 0 {
                SegmentError::PastEnd
            } else {
                SegmentError::Failed { errno: 5 }
            };
            self.fake
                .fail_segments_from(id, u64::from(from) * PAGE, error);
        }
        self.object_pages += pages;
        self.objects.push(BoundObject {
            id: ObjectId(id),
            size: pages * PAGE,
            read_only,
        });
    }

    fn bind(&mut self, args: &VmBind, object: BoundObject) {
        let before = self.state();
        let unmapped = self
            .vm
            .bindings()
            .iter()
            .find(|b| b.va.get() == args.va && b.size == args.size)
            .copied();
        match self.vm.bind(args, object) {
            Ok(()) if args.op == BindOp::MAP => {
                self.bound.push(object.id);
                self.check_mapped(args, object);
            }
            Ok(()) => {
                let binding = unmapped.expect("UNMAP succeeded on a binding that exists");
                let at = self.bound.iter().position(|&o| o == binding.object);
                self.bound.swap_remove(at.expect("a bound object"));
                let unbound = self.fake.unbound();
                assert_eq!(unbound.len(), self.unbound_seen + 1, "one object_unbound");
                assert_eq!(unbound.last(), Some(&binding.object.0));
                self.unbound_seen += 1;
                let gone = self.vm.translate(GpuVa::new(args.va)).expect("initialised");
                assert!(
                    matches!(gone, Err(TranslateError::NotMapped { .. })),
                    "{args:?} left {gone:?}"
                );
            }
            Err(e) => {
                assert!(e.errno() > 0, "{e:?}");
                assert_eq!(
                    self.state(),
                    before,
                    "failed {args:?} ({e:?}) changed something"
                );
            }
        }
    }

    /// Every page of a new binding translates to the object's page at that offset, with
    /// the binding's access (every page for small bindings, a sample for large ones).
    fn check_mapped(&self, args: &VmBind, object: BoundObject) {
        let pages = args.size / PAGE;
        let step = (pages / 64).max(1);
        let mut page = 0;
        while page < pages {
            let at = page * PAGE;
            let t = self
                .vm
                .translate(GpuVa::new(args.va + at))
                .expect("initialised")
                .expect("a bound page is mapped");
            assert_eq!(
                t.pa.get(),
                self.fake.object_pa(object.id.0, args.offset + at),
                "{args:?} page {page}"
            );
            let read_only = args.flags & extmem_uapi::FLAG_READ_ONLY != 0;
            assert_eq!(t.attrs.access == Access::ReadOnly, read_only);
            page += step;
        }
    }

    fn exec(&mut self, specs: &[CmdSpec], count: Option<u32>, pad: u32) {
        let cmds: Vec<Cmd> = specs
            .iter()
            .map(|spec| {
                let dst = self.addr(spec.dst);
                let size = match spec.size {
                    Size::Raw(raw) => raw,
                    other => self.size(other, dst).min(CMD_BYTES_MAX),
                };
                Cmd {
                    op: CmdOp(spec.op),
                    value: spec.value,
                    src: self.addr(spec.src),
                    dst,
                    size,
                }
            })
            .collect();
        let mut args = Exec {
            cmds: 0x7f00_0000_0000,
            count: count.unwrap_or(u32::try_from(cmds.len()).unwrap_or(0)),
            // The word that was `pad` before API version 2 is `flags` now.
            flags: pad,
            fault_va: 1,
            fault_cmd: 1,
            fault_kind: FaultKind(7),
            ..Exec::default()
        };
        let before = self.state();
        match self.vm.exec(&mut args, &cmds) {
            Ok(()) => {
                assert_eq!(
                    (args.fault_va, args.fault_cmd, args.fault_kind.0),
                    (0, 0, 0)
                );
                // The engine runs the first `count` commands; a count below the array's
                // length leaves the rest unrun.
                let ran = usize::try_from(args.count)
                    .ok()
                    .and_then(|count| cmds.get(..count))
                    .unwrap_or_default();
                if let Some(last) = ran.last() {
                    self.check_fill(last);
                }
            }
            Err(e) => {
                assert!(e.errno() > 0, "{e:?}");
                match e {
                    ExecError::Uninitialised | ExecError::Args(_) | ExecError::Malformed { .. } => {
                        assert_eq!(self.state(), before, "rejected batch {cmds:?} ran");
                    }
                    ExecError::Fault { cmd, va, kind } => {
                        assert_eq!(
                            (args.fault_cmd, args.fault_va, args.fault_kind),
                            (cmd, va.get(), kind)
                        );
                        assert!(cmd < args.count.min(MAX_EXEC_CMDS));
                        let t = self.vm.translate(va).expect("initialised");
                        match kind {
                            FaultKind::UNMAPPED => assert!(t.is_err(), "{va:?} is mapped: {t:?}"),
                            FaultKind::READ_ONLY => assert_eq!(
                                t.map(|t| t.attrs.access),
                                Ok(Access::ReadOnly),
                                "{va:?}"
                            ),
                            other => panic!("fault kind {other:?}"),
                        }
                    }
                    ExecError::Memory { .. } | ExecError::Corrupt { .. } => {}
                }
            }
        }
    }

    /// After a successful batch ending in a FILL, its destination holds the pattern.
    fn check_fill(&self, cmd: &Cmd) {
        if cmd.op != CmdOp::FILL {
            return;
        }
        let pattern = cmd.value.to_le_bytes();
        let mut at = 0;
        while at < cmd.size {
            let va = cmd.dst + at;
            let t = self
                .vm
                .translate(GpuVa::new(va))
                .expect("initialised")
                .expect("a filled byte is mapped");
            let chunk = (PAGE - va % PAGE).min(cmd.size - at);
            let bytes = self.fake.read(t.pa.get(), chunk);
            for (i, byte) in (at..).zip(bytes) {
                assert_eq!(
                    byte,
                    pattern[(i % 4) as usize],
                    "FILL byte at {:#x}",
                    cmd.dst + i
                );
            }
            at += chunk;
        }
    }

    fn query(&self, va: u64, pad: u32, privileged: bool) {
        let mut args = VmQuery {
            va,
            pa: 1,
            page_size: 1,
            flags: 0xff,
            pad,
        };
        match self.vm.query(&mut args, privileged) {
            Ok(()) => match self.vm.translate(GpuVa::new(va)).expect("initialised") {
                Ok(t) => {
                    let read_only = t.attrs.access == Access::ReadOnly;
                    let flags = QUERY_MAPPED | if read_only { QUERY_READ_ONLY } else { 0 };
                    assert_eq!(args.flags, flags);
                    assert_eq!(args.page_size, t.page.bytes());
                    assert_eq!(args.pa, if privileged { t.pa.get() } else { 0 });
                }
                Err(_) => assert_eq!((args.flags, args.pa, args.page_size), (0, 0, 0)),
            },
            Err(e) => assert!(e.errno() > 0, "{e:?}"),
        }
    }

    fn check_invariants(&self) {
        assert_eq!(
            self.fake.live_tables(),
            self.vm.table_pages(),
            "table pages"
        );
        let bindings = self.vm.bindings();
        assert_eq!(bindings.len(), self.bound.len(), "bindings");
        for pair in bindings.windows(2) {
            assert!(
                pair[0].end() <= pair[1].va.get(),
                "bindings overlap: {pair:?}"
            );
        }
        assert_eq!(self.fake.unbound().len(), self.unbound_seen);
        let pinned: u64 = self.pins.pins().iter().map(|p| p.pages).sum();
        assert_eq!(self.pins.pinned_pages(), pinned, "pinned pages");
    }

    /// The file closes: everything it held goes.
    fn close(&mut self) {
        self.vm.fini();
        self.pins.clear();
        assert_eq!(self.fake.live_tables(), 0, "table pages leaked");
        assert_eq!(self.vm.table_pages(), 0);
        assert!(self.vm.bindings().is_empty(), "bindings left");
        assert_eq!(self.pins.pinned_pages(), 0, "pins left");
        let unbound = self.fake.unbound();
        let mut released: Vec<u64> = unbound[self.unbound_seen..].to_vec();
        let mut held: Vec<u64> = self.bound.iter().map(|o| o.0).collect();
        released.sort_unstable();
        held.sort_unstable();
        assert_eq!(
            released, held,
            "each binding's object reference dropped once"
        );
        self.unbound_seen = unbound.len();
        self.bound.clear();
    }
}

/// The argument checks on raw words: whatever they accept meets their documented rules.
fn check_args(which: u8, [a, b, c]: [u64; 3]) {
    let high = |w: u64| (w >> 32) as u32;
    // Every page size Linux is built with, 4 to 64 KiB, from the top bits of `c`.
    let cpu_page = CpuPage::from_shift(12 + ((c >> 56) % 5) as u32).expect("4..=64 KiB");
    match which {
        0 => {
            let args = GemCreate {
                size: a,
                flags: b as u32,
                handle: high(b),
            };
            if check_gem_create(&args, PROFILE, cpu_page).is_ok() {
                assert!(args.size > 0 && args.size % cpu_page.bytes() == 0, "{args:?}");
                assert!(
                    args.size <= PROFILE.max_mapping && args.flags == 0,
                    "{args:?}"
                );
            }
        }
        1 => {
            let args = GemUserptr {
                ptr: a,
                size: b,
                flags: c as u32,
                handle: high(c),
                kind: ObjectKind(high(a)),
                pad: high(b),
            };
            if check_gem_userptr(&args, PROFILE, cpu_page).is_ok() {
                let align = cpu_page.import_alignment(PROFILE);
                assert!(align.get() >= cpu_page.bytes(), "{args:?}");
                assert!(
                    args.flags & !GEM_USERPTR_FLAGS == 0 && args.pad == 0,
                    "{args:?}"
                );
                assert!(
                    args.size > 0 && args.size <= PROFILE.max_mapping,
                    "{args:?}"
                );
                assert!(
                    align.is_aligned(args.ptr) && align.is_aligned(args.size),
                    "{args:?}"
                );
                assert!(args.ptr.checked_add(args.size).is_some(), "{args:?}");
            }
        }
        2 => {
            let args = Exec {
                cmds: a,
                count: b as u32,
                flags: high(b),
                ..Exec::default()
            };
            if check_exec(&args).is_ok() {
                assert!(args.flags & !EXEC_FLAGS == 0 && (1..=MAX_EXEC_CMDS).contains(&args.count));
            }
        }
        _ => {
            let mut args = GetParam {
                param: Param(a as u32),
                pad: high(a),
                value: b,
            };
            match get_param(&mut args, PROFILE, cpu_page) {
                Ok(_) => assert!(args.param.is_known() && args.pad == 0, "{args:?}"),
                Err(e) => {
                    assert!(e.errno() > 0);
                    assert_eq!(args.value, b, "a refused GET_PARAM wrote its value");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let fake = FakePlatform::new();
    let mut file = File::open(&fake);
    for op in kcore_ops::decode(data) {
        file.apply(&op);
    }
    file.close();
});
