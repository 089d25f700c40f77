//! The extmem-vgpu copy engine: `EXEC` runs COPY and FILL commands addressed by GPU VA,
//! reading and writing memory only through the VM's page tables, as a GPU's DMA engine
//! behind its MMU would.
//!
//! - Every command is checked before any runs, so a malformed batch has no effect
//!   (`EINVAL`, `fault_cmd` names the first bad command).
//! - Commands then run in order, each front to back. Each side is translated as a run of
//!   leaves that continue each other physically ([`PageTable::translate_run`]), re-used
//!   while the address stays inside it; a new run whose leaf is in the table of the last
//!   one costs one descriptor read instead of a walk from the root. A COPY hands each
//!   stretch where both sides stay contiguous to [`Platform::copy_run`], and a FILL each
//!   contiguous stretch of its destination to [`Platform::fill_run`]. By default these
//!   move the stretch in chunks that never cross a 4 KiB page on either side (the
//!   contract of [`Platform::copy`] and [`Platform::fill`]); the kernel glue moves it
//!   through the kernel's linear map in steps of up to 256 KiB instead of one call and
//!   one mapping per page (`docs/PERFORMANCE.md` has the figures), the software device
//!   moves a stretch of imported host memory in one system call.
//! - The first byte that cannot be read (nothing mapped: `UNMAPPED`) or written (nothing
//!   mapped, or mapped read-only: `READ_ONLY`) stops the batch with `EIO`; `fault_va` is
//!   exactly that byte, `fault_cmd` its command. The source of a chunk is translated before
//!   its destination, so a COPY with both sides unmapped reports the source. Everything
//!   before the faulting byte has been copied.

use extmem_hw::descriptor::CorruptDescriptor;
use extmem_hw::{Access, GpuVa, LeafTable, PageTable, PhysAddr, TranslateError};
use extmem_uapi::{Cmd, CmdOp, Exec, FaultKind};

use crate::args::{check_cmd, check_exec, ArgError};
use crate::bindings::Binding;
use crate::platform::{ObjectId, Platform, PlatformTables, RunFault};

/// Why `EXEC` stopped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ExecError {
    /// The VM has no page tables (`ENODEV`).
    Uninitialised,
    /// The `EXEC` arguments themselves are bad (`EINVAL`, `EOVERFLOW`); or fewer commands
    /// were passed than `count` says.
    Args(ArgError),
    /// Command `cmd` is malformed (`EINVAL`); nothing ran.
    Malformed {
        /// Its index.
        cmd: u32,
        /// What is wrong with it.
        error: ArgError,
    },
    /// Command `cmd` took a GPU fault at `va` (`EIO`).
    Fault {
        /// Its index.
        cmd: u32,
        /// The first byte it could not access.
        va: GpuVa,
        /// Translation or permission fault.
        kind: FaultKind,
    },
    /// The platform refused the memory behind `va` (`EFAULT`): a page table points at
    /// something that is not RAM the device may touch. `va` is the chunk's source for a
    /// COPY, its destination for a FILL.
    Memory {
        /// The command's index.
        cmd: u32,
        /// Start of the chunk.
        va: GpuVa,
    },
    /// A corrupt descriptor on the walk for `va` (`EIO`, `fault_kind` NONE).
    Corrupt {
        /// The command's index.
        cmd: u32,
        /// The address being translated.
        va: GpuVa,
        /// The descriptor.
        descriptor: CorruptDescriptor,
    },
}

/// Runs `cmds[..args.count]` through `table` and records a failure in `args`' out fields
/// (all zero on success).
pub(crate) fn run<P: Platform>(
    table: &PageTable<PlatformTables<P>>,
    args: &mut Exec,
    cmds: &[Cmd],
) -> Result<(), ExecError> {
    args.fault_va = 0;
    args.fault_cmd = 0;
    args.fault_kind = FaultKind::NONE;
    let result = run_checked(table, args, cmds);
    match result {
        Ok(()) | Err(ExecError::Uninitialised | ExecError::Args(_)) => {}
        Err(ExecError::Malformed { cmd, .. }) => args.fault_cmd = cmd,
        Err(ExecError::Fault { cmd, va, kind }) => {
            args.fault_cmd = cmd;
            args.fault_va = va.get();
            args.fault_kind = kind;
        }
        Err(ExecError::Memory { cmd, va } | ExecError::Corrupt { cmd, va, .. }) => {
            args.fault_cmd = cmd;
            args.fault_va = va.get();
        }
    }
    result
}

/// The first `args.count` of `cmds`, each checked: `args` itself, then every command
/// ([`ExecError::Malformed`] names the first bad one).
fn checked_cmds<'c>(args: &Exec, cmds: &'c [Cmd]) -> Result<&'c [Cmd], ExecError> {
    check_exec(args).map_err(ExecError::Args)?;
    let short = ExecError::Args(ArgError::BadCount { count: args.count });
    let count = usize::try_from(args.count).map_err(|_| short)?;
    let cmds = cmds.get(..count).ok_or(short)?;
    for (index, cmd) in cmds.iter().enumerate() {
        check_cmd(cmd).map_err(|error| ExecError::Malformed {
            cmd: cmd_index(index),
            error,
        })?;
    }
    Ok(cmds)
}

/// Why `touched` stopped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TouchError<E> {
    /// The batch is malformed (as `run` would find it; nothing was visited).
    Exec(ExecError),
    /// The visitor refused an object.
    Visit(E),
}

/// Every binding the commands of a well-formed batch read or write, as `bindings` (sorted
/// by VA, not overlapping) stand now: `visit(object, write)` once per command side and
/// binding it overlaps, a COPY's source as a read and every destination as a write. An
/// address no binding covers is skipped (the run faults there). This is what a job must
/// hold and synchronise with before it runs; `args`' `fault_cmd` names a malformed
/// command.
pub(crate) fn touched<E>(
    bindings: &[Binding],
    args: &mut Exec,
    cmds: &[Cmd],
    mut visit: impl FnMut(ObjectId, bool) -> Result<(), E>,
) -> Result<(), TouchError<E>> {
    args.fault_cmd = 0;
    let cmds = match checked_cmds(args, cmds) {
        Ok(cmds) => cmds,
        Err(e) => {
            if let ExecError::Malformed { cmd, .. } = e {
                args.fault_cmd = cmd;
            }
            return Err(TouchError::Exec(e));
        }
    };
    for cmd in cmds {
        let reads = (cmd.op == CmdOp::COPY).then_some((cmd.src, false));
        for (start, write) in reads.into_iter().chain([(cmd.dst, true)]) {
            // Checked not to wrap; the end saturates all the same.
            let end = start.saturating_add(cmd.size);
            let first = bindings.partition_point(|b| b.end() <= start);
            for binding in bindings.iter().skip(first) {
                if binding.va.get() >= end {
                    break;
                }
                visit(binding.object, write).map_err(TouchError::Visit)?;
            }
        }
    }
    Ok(())
}

fn run_checked<P: Platform>(
    table: &PageTable<PlatformTables<P>>,
    args: &Exec,
    cmds: &[Cmd],
) -> Result<(), ExecError> {
    let cmds = checked_cmds(args, cmds)?;
    for (index, cmd) in cmds.iter().enumerate() {
        let mut engine = Engine {
            table,
            cmd: cmd_index(index),
            src: Side::default(),
            dst: Side::default(),
        };
        match cmd.op {
            CmdOp::COPY => engine.copy(cmd.src, cmd.dst, cmd.size)?,
            CmdOp::FILL => engine.fill(cmd.dst, cmd.value, cmd.size)?,
            CmdOp(op) => {
                return Err(ExecError::Malformed {
                    cmd: engine.cmd,
                    error: ArgError::UnknownOp { op },
                })
            }
        }
    }
    Ok(())
}

/// Command indices are below `MAX_EXEC_CMDS`.
fn cmd_index(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// A physically contiguous run of VA with one access, kept so its pages are not walked
/// again.
#[derive(Clone, Copy)]
struct Leaf {
    va: u64,
    pa: u64,
    size: u64,
    read_only: bool,
}

/// What one side of a command remembers between chunks.
#[derive(Default)]
struct Side<'a> {
    /// The run the last chunk used.
    run: Option<Leaf>,
    /// The table its leaves are in: the next run is most often in it too.
    near: Option<LeafTable<'a>>,
}

/// One command in flight.
struct Engine<'a, P: Platform> {
    table: &'a PageTable<PlatformTables<P>>,
    cmd: u32,
    src: Side<'a>,
    dst: Side<'a>,
}

impl<'a, P: Platform> Engine<'a, P> {
    fn platform(&self) -> &P {
        self.table.memory().platform()
    }

    /// The physical address of `va`, as a read or a write, and how many bytes from there on
    /// are physically contiguous, through `side` (the last run of that side). A new run
    /// is looked up at most `want` bytes long.
    fn resolve(
        table: &'a PageTable<PlatformTables<P>>,
        cmd: u32,
        side: &mut Side<'a>,
        (va, want): (u64, u64),
        write: bool,
    ) -> Result<(PhysAddr, u64), ExecError> {
        let leaf = match side.run {
            Some(leaf) if va >= leaf.va && va - leaf.va < leaf.size => leaf,
            _ => {
                let found = table.translate_run(GpuVa::new(va), want, &mut side.near);
                let (t, bytes) = found.map_err(|e| match e {
                    TranslateError::NotMapped { .. } | TranslateError::VaOutOfRange { .. } => {
                        ExecError::Fault {
                            cmd,
                            va: GpuVa::new(va),
                            kind: FaultKind::UNMAPPED,
                        }
                    }
                    TranslateError::Corrupt(descriptor) => ExecError::Corrupt {
                        cmd,
                        va: GpuVa::new(va),
                        descriptor,
                    },
                })?;
                let leaf = Leaf {
                    va,
                    pa: t.pa.get(),
                    size: bytes,
                    read_only: t.attrs.access == Access::ReadOnly,
                };
                side.run = Some(leaf);
                leaf
            }
        };
        if write && leaf.read_only {
            return Err(ExecError::Fault {
                cmd,
                va: GpuVa::new(va),
                kind: FaultKind::READ_ONLY,
            });
        }
        // va - leaf.va < leaf.size, and the run's PA range was checked when it was mapped.
        let offset = va - leaf.va;
        Ok((
            PhysAddr::new(leaf.pa.wrapping_add(offset)),
            leaf.size - offset,
        ))
    }

    /// COPY: `src + size` and `dst + size` do not wrap (checked).
    fn copy(&mut self, src: u64, dst: u64, size: u64) -> Result<(), ExecError> {
        let mut done = 0;
        while done < size {
            let (s, d, left) = (src.wrapping_add(done), dst.wrapping_add(done), size - done);
            let (src_pa, src_run) =
                Self::resolve(self.table, self.cmd, &mut self.src, (s, left), false)?;
            let (dst_pa, dst_run) =
                Self::resolve(self.table, self.cmd, &mut self.dst, (d, left), true)?;
            // The whole stretch where both sides stay contiguous, in one platform call
            // (which moves it page by page unless the platform knows better).
            let chunk = left.min(src_run).min(dst_run);
            self.platform().copy_run(dst_pa, src_pa, chunk).map_err(
                |RunFault { done: before }| ExecError::Memory {
                    cmd: self.cmd,
                    va: GpuVa::new(s.wrapping_add(before)),
                },
            )?;
            done += chunk;
        }
        Ok(())
    }

    /// FILL: `dst` and `size` are multiples of 4 and `dst + size` does not wrap (checked),
    /// so every chunk is a multiple of 4 too.
    fn fill(&mut self, dst: u64, value: u32, size: u64) -> Result<(), ExecError> {
        let mut done = 0;
        while done < size {
            let (d, left) = (dst.wrapping_add(done), size - done);
            let (dst_pa, dst_run) =
                Self::resolve(self.table, self.cmd, &mut self.dst, (d, left), true)?;
            // The whole contiguous stretch in one platform call, as for COPY.
            let chunk = left.min(dst_run);
            self.platform().fill_run(dst_pa, value, chunk).map_err(
                |RunFault { done: before }| ExecError::Memory {
                    cmd: self.cmd,
                    va: GpuVa::new(d.wrapping_add(before)),
                },
            )?;
            done += chunk;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::{self, ToErrno};
    use crate::fake_platform::{map_args, FakePlatform, PAGE};
    use crate::platform::ObjectId;
    use crate::vm::{BoundObject, Vm};
    use extmem_uapi::FLAG_READ_ONLY;
    use std::vec::Vec;

    const SRC: u64 = 0x10_0000;
    const DST: u64 = 0x80_0000;
    const M2: u64 = 2 << 20;

    type TestVm<'a> = Vm<&'a FakePlatform, 8>;

    /// A VM with a 3-page source (scattered pages, patterned) at `SRC` and a 3-page
    /// destination (scattered, zero) at `DST`, plus a read-only view of the source at
    /// `DST + M2`.
    fn setup(fake: &FakePlatform) -> TestVm<'_> {
        fake.add_paged_object(1, &[0x1_0000_7000, 0x1_0000_2000, 0x1_0000_5000]);
        fake.add_paged_object(2, &[0x1_0001_3000, 0x1_0001_1000, 0x1_0001_a000]);
        for page in 0..3 {
            let bytes: Vec<u8> = (page * PAGE..(page + 1) * PAGE).map(pattern).collect();
            fake.write(fake.object_pa(1, page * PAGE), &bytes);
        }
        let mut vm = Vm::new();
        vm.init(fake).expect("init");
        let object = |id: u64| BoundObject {
            id: ObjectId(id),
            size: 3 * PAGE,
            read_only: false,
        };
        vm.bind(&map_args(SRC, 0, 3 * PAGE, 0), object(1))
            .expect("src");
        vm.bind(&map_args(DST, 0, 3 * PAGE, 0), object(2))
            .expect("dst");
        vm.bind(&map_args(DST + M2, 0, 3 * PAGE, FLAG_READ_ONLY), object(1))
            .expect("read-only view");
        vm
    }

    fn pattern(offset: u64) -> u8 {
        u8::try_from(offset % 251).expect("small") ^ 0x5a
    }

    /// Bytes `[offset, offset + len)` of object `id`, read physically, a page at a time.
    fn object_bytes(fake: &FakePlatform, id: u64, offset: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = offset;
        while at < offset + len {
            let chunk = (PAGE - at % PAGE).min(offset + len - at);
            out.extend(fake.read(fake.object_pa(id, at), chunk));
            at += chunk;
        }
        out
    }

    fn exec(vm: &TestVm<'_>, cmds: &[Cmd]) -> (Result<(), ExecError>, Exec) {
        let mut args = Exec {
            cmds: 0x7000,
            count: u32::try_from(cmds.len()).expect("count"),
            fault_va: 0xdead,
            fault_cmd: 77,
            fault_kind: FaultKind(9),
            ..Exec::default()
        };
        let result = vm.exec(&mut args, cmds);
        (result, args)
    }

    /// What `touched` visits for `cmds`, in order, or its errno.
    fn touched_by(vm: &TestVm<'_>, cmds: &[Cmd]) -> Result<Vec<(u64, bool)>, (i32, u32)> {
        let mut args = Exec {
            cmds: 0x7000,
            count: u32::try_from(cmds.len()).expect("count"),
            fault_cmd: 77,
            ..Exec::default()
        };
        let mut seen = Vec::new();
        let result = vm.touched(&mut args, cmds, |object, write| {
            seen.push((object.0, write));
            Ok::<(), ()>(())
        });
        match result {
            Ok(()) => Ok(seen),
            Err(TouchError::Exec(e)) => Err((e.errno(), args.fault_cmd)),
            Err(TouchError::Visit(())) => Err((0, args.fault_cmd)),
        }
    }

    #[test]
    fn touched_names_each_side_binding_as_read_or_write() {
        let fake = FakePlatform::new();
        let vm = setup(&fake);
        // A copy from the source into the destination, then a fill that spans the end of
        // the destination, the hole after it and the read-only view at DST + M2.
        let cmds = [
            Cmd::copy(SRC + 8, DST + PAGE, 16),
            Cmd::fill(DST + 2 * PAGE, 7, M2),
        ];
        assert_eq!(
            touched_by(&vm, &cmds),
            Ok(std::vec![(1, false), (2, true), (2, true), (1, true)])
        );
        // An address nothing maps touches nothing (the run faults there).
        assert_eq!(
            touched_by(&vm, &[Cmd::fill(0x4000_0000, 0, 4)]),
            Ok(Vec::new())
        );
        // A range that ends exactly where a binding starts does not touch it.
        assert_eq!(
            touched_by(&vm, &[Cmd::fill(SRC - PAGE, 0, PAGE)]),
            Ok(Vec::new())
        );
        // A malformed command stops the walk before anything is visited, and is named.
        let bad = [Cmd::copy(SRC, DST, 4), Cmd::fill(DST + 1, 0, 4)];
        assert_eq!(touched_by(&vm, &bad), Err((errno::EINVAL, 1)));
    }

    #[test]
    fn copy_across_scattered_pages_is_byte_exact() {
        let fake = FakePlatform::new();
        let vm = setup(&fake);
        // Odd offsets, crossing page boundaries on both sides at different places.
        let (from, to, len) = (0xff3, 0x1ffe, 0xff0);
        let (result, args) = exec(&vm, &[Cmd::copy(SRC + from, DST + to, len)]);
        assert_eq!(result, Ok(()));
        assert_eq!(
            (args.fault_va, args.fault_cmd, args.fault_kind),
            (0, 0, FaultKind::NONE),
            "out fields are cleared"
        );
        let expected: Vec<u8> = (from..from + len).map(pattern).collect();
        assert_eq!(object_bytes(&fake, 2, to, len), expected);
        assert_eq!(
            object_bytes(&fake, 2, 0, to),
            std::vec![0; usize::try_from(to).expect("small")]
        );
        assert_eq!(
            object_bytes(&fake, 2, to + len, 3 * PAGE - to - len),
            std::vec![0; usize::try_from(3 * PAGE - to - len).expect("small")]
        );
    }

    #[test]
    fn fill_across_pages_writes_the_pattern_little_endian() {
        let fake = FakePlatform::new();
        let vm = setup(&fake);
        let (at, len) = (0xff8, 0x1010);
        let (result, _) = exec(&vm, &[Cmd::fill(DST + at, 0x1122_3344, len)]);
        assert_eq!(result, Ok(()));
        let expected: Vec<u8> = [0x44, 0x33, 0x22, 0x11]
            .iter()
            .copied()
            .cycle()
            .take(usize::try_from(len).expect("small"))
            .collect();
        assert_eq!(object_bytes(&fake, 2, at, len), expected);
        assert_eq!(object_bytes(&fake, 2, at - 4, 4), [0; 4]);
        assert_eq!(object_bytes(&fake, 2, at + len, 4), [0; 4]);
    }

    #[test]
    fn commands_run_in_order() {
        let fake = FakePlatform::new();
        let vm = setup(&fake);
        let (result, _) = exec(
            &vm,
            &[
                Cmd::fill(DST, 0xffff_ffff, 16),
                Cmd::copy(SRC, DST + 4, 4),
                Cmd::copy(DST, DST + 0x2000, 16),
            ],
        );
        assert_eq!(result, Ok(()));
        let mut expected = std::vec![0xff; 16];
        expected[4..8].copy_from_slice(&object_bytes(&fake, 1, 0, 4));
        assert_eq!(object_bytes(&fake, 2, 0x2000, 16), expected);
    }

    #[test]
    fn a_fault_names_the_exact_byte_and_command_and_what_ran_stays() {
        let fake = FakePlatform::new();
        let vm = setup(&fake);
        // The source runs off the end of its binding after 0x10 bytes.
        let (result, args) = exec(
            &vm,
            &[
                Cmd::fill(DST, 0xabab_abab, 8),
                Cmd::copy(SRC + 3 * PAGE - 0x10, DST + 0x100, 0x20),
            ],
        );
        assert_eq!(
            result,
            Err(ExecError::Fault {
                cmd: 1,
                va: GpuVa::new(SRC + 3 * PAGE),
                kind: FaultKind::UNMAPPED
            })
        );
        assert_eq!(result.map_err(|e| e.errno()), Err(errno::EIO));
        assert_eq!(
            (args.fault_va, args.fault_cmd, args.fault_kind),
            (SRC + 3 * PAGE, 1, FaultKind::UNMAPPED)
        );
        assert_eq!(object_bytes(&fake, 2, 0, 8), [0xab; 8], "command 0 ran");
        let copied: Vec<u8> = (3 * PAGE - 0x10..3 * PAGE).map(pattern).collect();
        assert_eq!(object_bytes(&fake, 2, 0x100, 0x10), copied);
        assert_eq!(object_bytes(&fake, 2, 0x110, 0x10), [0; 0x10]);

        // The destination faults part-way.
        let (_, args) = exec(&vm, &[Cmd::copy(SRC, DST + 3 * PAGE - 4, 8)]);
        assert_eq!(
            (args.fault_va, args.fault_cmd, args.fault_kind),
            (DST + 3 * PAGE, 0, FaultKind::UNMAPPED)
        );
        // Both sides unmapped: the source is reported.
        let (_, args) = exec(&vm, &[Cmd::copy(0x5000_0000, 0x6000_0000, 8)]);
        assert_eq!(args.fault_va, 0x5000_0000);
        // Beyond the VA space is unmapped too.
        let (_, args) = exec(&vm, &[Cmd::fill(1 << 48, 0, 4)]);
        assert_eq!(
            (args.fault_va, args.fault_kind),
            (1 << 48, FaultKind::UNMAPPED)
        );
    }

    #[test]
    fn writing_a_read_only_mapping_is_a_permission_fault() {
        let fake = FakePlatform::new();
        let vm = setup(&fake);
        let before = fake.snapshot();
        let (result, args) = exec(&vm, &[Cmd::fill(DST + M2 + 0x1ffc, 0, 8)]);
        assert_eq!(result.map_err(|e| e.errno()), Err(errno::EIO));
        assert_eq!(
            (args.fault_va, args.fault_cmd, args.fault_kind),
            (DST + M2 + 0x1ffc, 0, FaultKind::READ_ONLY)
        );
        assert_eq!(fake.snapshot(), before);
        // Reading it is fine.
        let (result, _) = exec(&vm, &[Cmd::copy(DST + M2 + 0x10, DST, 0x10)]);
        assert_eq!(result, Ok(()));
        assert_eq!(
            object_bytes(&fake, 2, 0, 0x10),
            object_bytes(&fake, 1, 0x10, 0x10)
        );
    }

    #[test]
    fn a_malformed_command_runs_nothing() {
        let fake = FakePlatform::new();
        let vm = setup(&fake);
        let good = Cmd::fill(DST, 0x0101_0101, 4);
        let cases = [
            Cmd {
                op: CmdOp(7),
                ..good
            },
            Cmd { src: 4, ..good },
            Cmd {
                value: 1,
                ..Cmd::copy(SRC, DST, 4)
            },
            Cmd { size: 0, ..good },
            Cmd {
                dst: DST + 2,
                ..good
            },
            Cmd { size: 6, ..good },
            Cmd::copy(u64::MAX - 2, DST, 4),
            Cmd::copy(SRC, u64::MAX - 2, 4),
        ];
        let before = fake.snapshot();
        for bad in cases {
            let (result, args) = exec(&vm, &[good, good, bad]);
            assert!(
                matches!(result, Err(ExecError::Malformed { cmd: 2, .. })),
                "{bad:?}: {result:?}"
            );
            assert_eq!(result.map_err(|e| e.errno()), Err(errno::EINVAL), "{bad:?}");
            assert_eq!(
                (args.fault_cmd, args.fault_va, args.fault_kind),
                (2, 0, FaultKind::NONE)
            );
            assert_eq!(fake.snapshot(), before, "{bad:?} ran something");
        }
    }

    #[test]
    fn bad_exec_arguments() {
        let fake = FakePlatform::new();
        let vm = setup(&fake);
        let errno_of = |args: &mut Exec, cmds: &[Cmd]| vm.exec(args, cmds).map_err(|e| e.errno());
        let one = [Cmd::fill(DST, 0, 4)];
        let mut args = Exec {
            cmds: 0x7000,
            count: 2,
            ..Exec::default()
        };
        assert_eq!(
            errno_of(&mut args, &one),
            Err(errno::EINVAL),
            "fewer than count"
        );
        args.count = 0;
        assert_eq!(errno_of(&mut args, &one), Err(errno::EINVAL));
        args.count = 1;
        args.flags = 0x80;
        assert_eq!(errno_of(&mut args, &one), Err(errno::EINVAL));
        args.flags = 0;
        assert_eq!(errno_of(&mut args, &one), Ok(()));
    }

    #[test]
    fn memory_the_platform_refuses_is_efault() {
        let fake = FakePlatform::new();
        let mut vm = setup(&fake);
        fake.add_object_without_ram(3, &[(0x7_0000_0000, PAGE)]);
        let object = BoundObject {
            id: ObjectId(3),
            size: PAGE,
            read_only: false,
        };
        vm.bind(&map_args(0x4000_0000, 0, PAGE, 0), object)
            .expect("bind");
        let (result, args) = exec(&vm, &[Cmd::copy(0x4000_0010, DST, 4)]);
        assert_eq!(
            result,
            Err(ExecError::Memory {
                cmd: 0,
                va: GpuVa::new(0x4000_0010)
            })
        );
        assert_eq!(result.map_err(|e| e.errno()), Err(errno::EFAULT));
        assert_eq!((args.fault_cmd, args.fault_va), (0, 0x4000_0010));
        let (result, _) = exec(&vm, &[Cmd::fill(0x4000_0010, 0, 4)]);
        assert_eq!(result.map_err(|e| e.errno()), Err(errno::EFAULT));
    }

    /// A contiguous stretch goes to the platform in one call; a page of it that is not RAM
    /// stops the command at that page, with everything before it done.
    #[test]
    fn a_refused_page_inside_a_contiguous_stretch_stops_there() {
        let fake = FakePlatform::new();
        let mut vm = setup(&fake);
        let base = 0x7_0000_0000;
        fake.add_object_without_ram(3, &[(base, 3 * PAGE)]);
        fake.add_ram(base, 2 * PAGE);
        let object = BoundObject {
            id: ObjectId(3),
            size: 3 * PAGE,
            read_only: false,
        };
        let va = 0x4000_0000;
        vm.bind(&map_args(va, 0, 3 * PAGE, 0), object)
            .expect("bind");
        let (result, args) = exec(&vm, &[Cmd::fill(va + 0x10, 0x0102_0304, 3 * PAGE - 0x10)]);
        let third = GpuVa::new(va + 2 * PAGE);
        assert_eq!(result, Err(ExecError::Memory { cmd: 0, va: third }));
        assert_eq!(args.fault_va, third.get());
        assert_eq!(fake.read(base, 0x10), std::vec![0; 0x10]);
        let filled: Vec<u8> = [4, 3, 2, 1]
            .into_iter()
            .cycle()
            .take(0x2000 - 0x10)
            .collect();
        assert_eq!(fake.read(base + 0x10, 2 * PAGE - 0x10), filled);
        // A COPY names the source byte of the chunk whose destination was refused.
        let (result, _) = exec(&vm, &[Cmd::copy(SRC, va + 0x800, 2 * PAGE)]);
        assert_eq!(
            result,
            Err(ExecError::Memory {
                cmd: 0,
                va: GpuVa::new(SRC + 2 * PAGE - 0x800)
            })
        );
        assert_eq!(
            fake.read(base + 0x800, 2 * PAGE - 0x800),
            object_bytes(&fake, 1, 0, 2 * PAGE - 0x800)
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "a 2 MiB mapping takes Miri minutes (the map checks every 4 KiB page for overlap); runs natively in cargo test and in the kernel's KTAP self-test"
    )]
    fn copies_through_2m_blocks_stay_page_bounded() {
        let fake = FakePlatform::new();
        let mut vm = Vm::<&FakePlatform, 8>::new();
        vm.init(&fake).expect("init");
        let base = 0x2_0000_0000;
        fake.add_object(1, &[(base, 2 * M2)]);
        let object = BoundObject {
            id: ObjectId(1),
            size: 2 * M2,
            read_only: false,
        };
        vm.bind(&map_args(0x4000_0000, 0, 2 * M2, 0), object)
            .expect("bind");
        fake.write(base + M2 - 0x800, &[0x77; 0x1000]);
        // Crosses the 2 MiB boundary between the two blocks; the fake panics on a chunk
        // that crosses a 4 KiB page.
        let (result, _) = exec(
            &vm,
            &[Cmd::copy(
                0x4000_0000 + M2 - 0x800,
                0x4000_0000 + 0x10_0003,
                0x1000,
            )],
        );
        assert_eq!(result, Ok(()));
        assert_eq!(fake.read(base + 0x10_0003, 0x1000), std::vec![0x77; 0x1000]);
        vm.fini();
    }
}
