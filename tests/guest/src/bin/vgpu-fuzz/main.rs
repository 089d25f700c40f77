//! vgpu-fuzz: random and boundary arguments for every ioctl of extmem-vgpu, for a bounded
//! time, from a seeded generator (the seed is printed; `EXTMEM_FUZZ_SEED=<n>` replays it).
//!
//! The fuzzing runs in a child process (`vgpu-fuzz child <seed> <seconds>`) against two files
//! of the device: a modelled one, where every success is checked against what the fuzzer knows
//! the file holds ([`model`]), and a raw one that gets random ioctl numbers, sizes and argument
//! pointers. The parent then checks what only a survivor can: the child ended in time (no call
//! hung), every counter, pin and attachment is back where it was once the child is gone, and
//! the kernel logged no BUG, WARNING or Oops. The child's calls per ioctl and the errno
//! distribution are printed as diagnostics.
//!
//! The suite's run is time-bound ([`FUZZ_SECONDS`]). `extmem-qemu fuzz-guest --calls N` asks
//! for a run of N calls instead, by writing N to [`CALLS_FILE`] in a setup command of its
//! boot, with the same checks.

mod inputs;
mod model;

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use extmem_guest_tests::device_snapshot::{errno_name, expect_snapshot, snapshot};
use extmem_guest_tests::host_memory::RawBytes;
use extmem_guest_tests::ktap::{Failure, KtapWriter};
use extmem_guest_tests::pattern::Rng;
use extmem_guest_tests::vgpu::Vgpu;
use extmem_guest_tests::{child_process, fd_table, kernel_log, sync};
use extmem_uapi::{
    BindOp, Cmd, CmdOp, Exec, ExecSync, FaultKind, GemCreate, GemInfo, GemUserptr, GetParam,
    ObjectKind, Param, VmBind, VmQuery, DRM_COMMAND_BASE, DRM_IOCTL_BASE, EXEC_FLAGS, EXEC_WAIT,
    FLAG_READ_ONLY, GEM_CREATE_FLAGS, GEM_USERPTR_FLAGS, IOCTL_EXEC, IOCTL_GEM_CREATE,
    IOCTL_GEM_INFO, IOCTL_GEM_USERPTR, IOCTL_GET_PARAM, IOCTL_VM_BIND, IOCTL_VM_QUERY,
    MAX_EXEC_CMDS, MAX_EXEC_SYNCS, QUERY_MAPPED, QUERY_READ_ONLY, USERPTR_PROBE, VM_BIND_FLAGS,
};
use rustix::io::Errno;
use rustix::ioctl::{self, opcode, Ioctl, IoctlOutput, Opcode, Updater};
use rustix::mm::{MapFlags, ProtFlags};

use inputs::{Hostile, PAGE, VA_END};
use model::{Binding, Model, Object};

const PLAN: usize = 5;
/// How long the child fuzzes in the suite's run.
const FUZZ_SECONDS: u64 = 20;
/// Where a run of a fixed number of calls is asked for (the guest's fresh `/run`: only the
/// `fuzz-guest` boot writes it).
const CALLS_FILE: &str = "/run/extmem-vgpu-fuzz-calls";
/// The slowest rate a run of N calls may go at (calls per second under TCG, on a loaded
/// host) before it counts as hung.
const MIN_CALLS_PER_SECOND: u64 = 50;

/// How long the child fuzzes.
#[derive(Clone, Copy, Debug)]
enum Budget {
    /// For this many seconds.
    Seconds(u64),
    /// Until it has made this many calls.
    Calls(u64),
}

impl Budget {
    /// [`CALLS_FILE`]'s count when it exists, else [`FUZZ_SECONDS`].
    fn from_calls_file() -> Result<Self, Failure> {
        match std::fs::read_to_string(CALLS_FILE) {
            Ok(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|calls| *calls > 0)
                .map(Budget::Calls)
                .ok_or_else(|| {
                    Failure::new(
                        "the call count",
                        format!("{CALLS_FILE} holds {text:?}, not a positive number"),
                    )
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Budget::Seconds(FUZZ_SECONDS)),
            Err(e) => Err(Failure::op(CALLS_FILE, e)),
        }
    }

    /// The child's arguments after its seed.
    fn args(self) -> [String; 2] {
        match self {
            Budget::Seconds(seconds) => ["seconds".into(), seconds.to_string()],
            Budget::Calls(calls) => ["calls".into(), calls.to_string()],
        }
    }

    fn parse(kind: Option<&str>, value: Option<&str>) -> Self {
        let value = value.and_then(|v| v.parse().ok()).unwrap_or(1);
        match kind {
            Some("calls") => Budget::Calls(value),
            _ => Budget::Seconds(value),
        }
    }

    /// How long the child may take in all before it counts as hung.
    fn child_limit(self) -> Duration {
        Duration::from_secs(
            100 + match self {
                Budget::Seconds(seconds) => seconds,
                Budget::Calls(calls) => calls / MIN_CALLS_PER_SECOND,
            },
        )
    }

    fn describe(self) -> String {
        match self {
            Budget::Seconds(seconds) => format!("the {seconds} s run"),
            Budget::Calls(calls) => format!("the run of {calls} calls"),
        }
    }
}
/// Inconsistencies reported in full (the rest are counted).
const REPORTED: usize = 8;
/// Live objects and bindings past which the modelled file is emptied again.
const MAX_LIVE: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
        let budget = Budget::parse(
            args.get(3).map(String::as_str),
            args.get(4).map(String::as_str),
        );
        return child(seed, budget);
    }
    fd_table::ktap_program(PLAN, parent)
}

fn seed() -> u64 {
    std::env::var("EXTMEM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
        })
}

fn parent(ktap: &mut KtapWriter<io::Stdout>) {
    let gpu = ktap.check("extmem-vgpu: the render node opens", || {
        Vgpu::open().map_err(|e| Failure::op("opening extmem-vgpu", e))
    });
    let start = gpu.as_ref().and_then(|gpu| snapshot(gpu).ok());
    let mark = kernel_log::mark();
    let seed = seed();
    let budget = match Budget::from_calls_file() {
        Ok(budget) => budget,
        Err(failure) => {
            ktap.check("fuzz: the call count", || Err::<(), _>(failure));
            Budget::Seconds(FUZZ_SECONDS)
        }
    };
    ktap.diagnostic(format_args!(
        "seed {seed} (replay with EXTMEM_FUZZ_SEED={seed}); fuzzing: {}",
        budget.describe()
    ));
    let [kind, value] = budget.args();
    let run = child_process::run_self(
        &["child", &seed.to_string(), &kind, &value],
        budget.child_limit(),
    );
    if let Ok(run) = &run {
        ktap.diagnostic(format_args!(
            "the child ran {:.1} s",
            run.elapsed.as_secs_f64()
        ));
        for line in run.notes() {
            ktap.diagnostic(line);
        }
    }
    let what = format!(
        "fuzz (seed {seed}): every call of {} returned, each success agreed with the model, the child exited 0",
        budget.describe()
    );
    ktap.check(&what, || run?.verdict());
    ktap.check_after(
        "fuzz: once the child is gone every counter, pin and debugfs attachment is back to its value before",
        gpu.as_ref().zip(start),
        |(gpu, start)| expect_snapshot(snapshot(gpu)?, start),
    );
    ktap.check(
        "fuzz: the kernel log has no BUG, WARNING or Oops since the fuzzing began",
        || kernel_log::clean_since(mark),
    );
}

// ---- the child --------------------------------------------------------------------------

fn child(seed: u64, budget: Budget) -> ExitCode {
    let result = (|| {
        let gpu = Vgpu::open().map_err(|e| Failure::op("opening extmem-vgpu", e))?;
        let raw = Vgpu::open().map_err(|e| Failure::op("opening extmem-vgpu again", e))?;
        let max_mapping = gpu
            .get_param(Param::MAX_MAPPING)
            .map_err(|e| Failure::op("GET_PARAM(MAX_MAPPING)", errno_name(e)))?;
        let hostile = Hostile::new(max_mapping)?;
        let mut fuzzer = Fuzzer {
            rng: Rng::new(seed),
            gpu,
            raw,
            hostile,
            model: Model::default(),
            exports: Vec::new(),
            stats: BTreeMap::new(),
            inconsistencies: Vec::new(),
            slowest: (Duration::ZERO, ""),
            calls: 0,
            syncobjs: Vec::new(),
        };
        let started = Instant::now();
        let more = |fuzzer: &Fuzzer| match budget {
            Budget::Seconds(seconds) => started.elapsed() < Duration::from_secs(seconds),
            Budget::Calls(calls) => fuzzer.calls < calls,
        };
        while more(&fuzzer) {
            for _ in 0..64 {
                fuzzer.step();
            }
        }
        println!(
            "{} calls in {:.1} s ({:.0} calls/s)",
            fuzzer.calls,
            started.elapsed().as_secs_f64(),
            fuzzer.calls as f64 / started.elapsed().as_secs_f64().max(1e-9)
        );
        fuzzer.print_stats();
        match fuzzer.inconsistencies.first() {
            None => Ok(()),
            Some(first) => Err(Failure::new(
                "every success consistent with the model",
                format!(
                    "{} inconsistencies; first: {}",
                    fuzzer.inconsistencies.len(),
                    first
                ),
            )),
        }
        // Objects, bindings and exported fds still held here are left to the exit.
    })();
    child_process::report(&result);
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Fuzzer {
    rng: Rng,
    /// The modelled file.
    gpu: Vgpu,
    /// The file for random ioctl numbers and argument pointers (nothing is modelled there).
    raw: Vgpu,
    hostile: Hostile,
    model: Model,
    /// dma-bufs exported from the modelled file, with the handle they came from.
    exports: Vec<(OwnedFd, u32)>,
    /// Calls per ioctl, by outcome (`ok` or the errno's name).
    stats: BTreeMap<&'static str, BTreeMap<String, u64>>,
    inconsistencies: Vec<String>,
    slowest: (Duration, &'static str),
    /// Calls recorded so far, of every ioctl.
    calls: u64,
    /// Syncobjs of the modelled file that `EXEC` waits for and signals (made on first use).
    syncobjs: Vec<u32>,
}

/// A driver ioctl with a number, size and argument pointer chosen at run time.
struct RawCall {
    opcode: Opcode,
    arg: *mut c_void,
}

// SAFETY: the kernel may write through `arg`; every caller points it either at a buffer of
// at least the size encoded in `opcode` that it owns and no Rust reference aliases, or at
// memory this process cannot access (the kernel then fails with EFAULT).
unsafe impl Ioctl for RawCall {
    type Output = ();
    const IS_MUTATING: bool = true;
    fn opcode(&self) -> Opcode {
        self.opcode
    }
    fn as_ptr(&mut self) -> *mut c_void {
        self.arg
    }
    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut c_void) -> rustix::io::Result<()> {
        Ok(())
    }
}

const PRIME_FD_TO_HANDLE: Opcode = opcode::read_write::<drm_ffi::drm_prime_handle>(b'd', 0x2e);

impl Fuzzer {
    fn step(&mut self) {
        if self.model.objects.len() > MAX_LIVE || self.model.bindings.len() > MAX_LIVE {
            self.empty_model();
        }
        match self.rng.below(16) {
            0 => self.get_param(),
            1 | 2 => self.gem_create(),
            3 | 4 => self.userptr(),
            5 => self.gem_info(),
            6 | 7 => self.vm_bind(),
            8 | 9 => self.exec(),
            10 => self.vm_query(),
            11 => self.export(),
            12 => self.import(),
            13 => self.gem_close(),
            14 => self.drm_mmap(),
            _ => self.raw_ioctl(),
        }
    }

    /// Records the outcome and how long the call took.
    fn record<T>(&mut self, ioctl: &'static str, started: Instant, result: &Result<T, Errno>) {
        let elapsed = started.elapsed();
        self.calls += 1;
        if elapsed > self.slowest.0 {
            self.slowest = (elapsed, ioctl);
        }
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => errno_name(*e),
        };
        *self
            .stats
            .entry(ioctl)
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }

    fn inconsistent(&mut self, what: String) {
        if self.inconsistencies.len() < REPORTED {
            eprintln!("vgpu-fuzz: inconsistent: {what}");
        }
        self.inconsistencies.push(what);
    }

    /// A handle: live, closed, 0 or random.
    fn handle(&mut self) -> u32 {
        let live: Vec<u32> = self.model.objects.keys().copied().collect();
        match self.rng.below(8) {
            0..=4 if !live.is_empty() => live[self.rng.index(live.len())],
            5 if !self.model.closed.is_empty() => {
                self.model.closed[self.rng.index(self.model.closed.len())]
            }
            6 => *self.rng.pick(&[0, u32::MAX, 1 << 31]).unwrap_or(&0),
            _ => self.rng.below_u32(256),
        }
    }

    fn get_param(&mut self) {
        let mut args = GetParam {
            // Half the time a known id (so new ones are covered as the uAPI grows), else
            // any word, which is nearly always unknown.
            param: match self.rng.pick(Param::KNOWN) {
                Some(&known) if self.rng.one_in(2) => known,
                _ => Param(self.rng.next_u32()),
            },
            pad: inputs::pad(&mut self.rng),
            value: self.rng.next_u64(),
        };
        let sent = args;
        let started = Instant::now();
        let result = self.gpu.get_param_raw(&mut args);
        self.record("GET_PARAM", started, &result);
        if result.is_ok() && !(sent.param.is_known() && sent.pad == 0) {
            self.inconsistent(format!("GET_PARAM {sent:?} succeeded"));
        }
        if result.is_err() && sent.param.is_known() && sent.pad == 0 {
            self.inconsistent(format!("GET_PARAM {sent:?} failed: {result:?}"));
        }
    }

    fn gem_create(&mut self) {
        let mut args = GemCreate {
            size: self.hostile.object_size(&mut self.rng),
            flags: if self.rng.one_in(4) {
                inputs::flags(&mut self.rng)
            } else {
                0
            },
            handle: self.rng.next_u32(),
        };
        let sent = args;
        let started = Instant::now();
        let result = self.gpu.gem_create_raw(&mut args);
        self.record("GEM_CREATE", started, &result);
        if result.is_err() {
            return;
        }
        let valid = sent.flags & !GEM_CREATE_FLAGS == 0
            && sent.size > 0
            && sent.size % PAGE == 0
            && sent.size <= self.hostile.max_mapping;
        self.new_object(
            "GEM_CREATE",
            valid,
            args.handle,
            Object {
                size: sent.size,
                kind: ObjectKind::SHMEM,
                read_only: false,
            },
            &format!("{sent:?}"),
        );
    }

    /// Checks and records an object a call says it created.
    fn new_object(&mut self, call: &str, valid: bool, handle: u32, object: Object, sent: &str) {
        if !valid {
            self.inconsistent(format!("{call} {sent} succeeded"));
        }
        if handle == 0 || self.model.objects.contains_key(&handle) {
            self.inconsistent(format!(
                "{call} {sent} returned handle {handle}, which is 0 or live"
            ));
            return;
        }
        let mut info = GemInfo {
            handle,
            ..GemInfo::default()
        };
        match self.gpu.gem_info_raw(&mut info) {
            Ok(()) if info.size == object.size && info.kind == object.kind => {
                if info.mmap_offset != 0 {
                    self.model.stale_offsets.retain(|&o| o != info.mmap_offset);
                    self.model.offsets.insert(handle, info.mmap_offset);
                }
            }
            other => self.inconsistent(format!(
                "{call} {sent} made handle {handle}, GEM_INFO says {other:?} {info:?}"
            )),
        }
        self.model.closed.retain(|&h| h != handle);
        self.model.objects.insert(handle, object);
    }

    fn userptr(&mut self) {
        let mut args = GemUserptr {
            ptr: self.hostile.pointer(&mut self.rng),
            size: self.hostile.size(&mut self.rng),
            flags: inputs::flags(&mut self.rng),
            handle: self.rng.next_u32(),
            kind: ObjectKind(self.rng.next_u32()),
            pad: inputs::pad(&mut self.rng),
        };
        let sent = args;
        let started = Instant::now();
        let result = self.gpu.userptr_raw(&mut args);
        self.record("GEM_USERPTR", started, &result);
        if result.is_err() {
            return;
        }
        let end = sent.ptr.checked_add(sent.size);
        let touches =
            |base: u64, len: u64| end.is_some_and(|end| sent.ptr < base + len && base < end);
        let write = sent.flags & FLAG_READ_ONLY == 0;
        let valid = sent.flags & !GEM_USERPTR_FLAGS == 0
            && sent.pad == 0
            && sent.size > 0
            && sent.ptr % PAGE == 0
            && sent.size % PAGE == 0
            && sent.size <= self.hostile.max_mapping
            && !touches(self.hostile.no_access.addr(), 0x10000)
            && !(write && touches(self.hostile.read_only.addr(), 0x10000));
        if sent.flags & USERPTR_PROBE != 0 {
            if !valid || args.handle != 0 {
                self.inconsistent(format!("GEM_USERPTR(PROBE) {sent:?} gave {args:?}"));
            }
            return;
        }
        let foreign = self.hostile.in_foreign(sent.ptr);
        let kind = if foreign {
            ObjectKind::FOREIGN
        } else {
            ObjectKind::USERPTR
        };
        if args.kind != kind {
            self.inconsistent(format!("GEM_USERPTR {sent:?} made kind {:?}", args.kind));
        }
        self.new_object(
            "GEM_USERPTR",
            valid,
            args.handle,
            Object {
                size: sent.size,
                kind: args.kind,
                read_only: !write,
            },
            &format!("{sent:?}"),
        );
    }

    fn gem_info(&mut self) {
        let mut args = GemInfo {
            handle: self.handle(),
            kind: ObjectKind(self.rng.next_u32()),
            size: self.rng.next_u64(),
            mmap_offset: self.rng.next_u64(),
            flags: self.rng.next_u32(),
            pad: inputs::pad(&mut self.rng),
        };
        let sent = args;
        let started = Instant::now();
        let result = self.gpu.gem_info_raw(&mut args);
        self.record("GEM_INFO", started, &result);
        let known = self.model.objects.get(&sent.handle).copied();
        match (result, known) {
            (Ok(()), Some(o)) if o.size == args.size && o.kind == args.kind && sent.pad == 0 => {}
            (Err(_), None) => {}
            (Err(_), Some(_)) if sent.pad != 0 => {}
            (result, known) => self.inconsistent(format!(
                "GEM_INFO {sent:?} gave {result:?} {args:?}; the model has {known:?}"
            )),
        }
    }

    fn vm_bind(&mut self) {
        let map = !self.rng.one_in(3);
        let mut args = if map {
            // Objects over 2 MiB are never bound: binding populates them.
            let small: Vec<u32> = self
                .model
                .objects
                .iter()
                .filter(|(_, o)| o.size <= 2 << 20)
                .map(|(&h, _)| h)
                .collect();
            let handle = match small.get(self.rng.index(small.len())) {
                Some(&h) if !self.rng.one_in(5) => h,
                _ => self.handle(),
            };
            let size = match self.model.objects.get(&handle) {
                Some(o) if self.rng.one_in(2) => o.size,
                _ => self.hostile.size(&mut self.rng),
            };
            VmBind {
                op: BindOp::MAP,
                flags: inputs::flags(&mut self.rng),
                handle,
                pad: inputs::pad(&mut self.rng),
                va: inputs::va(&mut self.rng),
                offset: inputs::Hostile::offset(&mut self.rng),
                size,
            }
        } else {
            let existing: Vec<(u64, u64)> = self
                .model
                .bindings
                .iter()
                .map(|(&v, b)| (v, b.size))
                .collect();
            let (va, size) = match existing.get(self.rng.index(existing.len())) {
                Some(&b) if !self.rng.one_in(4) => b,
                _ => (inputs::va(&mut self.rng), self.hostile.size(&mut self.rng)),
            };
            VmBind {
                op: if self.rng.one_in(10) {
                    BindOp(self.rng.next_u32())
                } else {
                    BindOp::UNMAP
                },
                flags: if self.rng.one_in(10) {
                    inputs::flags(&mut self.rng)
                } else {
                    0
                },
                handle: if self.rng.one_in(10) {
                    self.handle()
                } else {
                    0
                },
                pad: inputs::pad(&mut self.rng),
                va,
                offset: if self.rng.one_in(10) { PAGE } else { 0 },
                size,
            }
        };
        let sent = args;
        let started = Instant::now();
        let result = self.gpu.vm_bind_raw(&mut args);
        self.record("VM_BIND", started, &result);
        match sent.op {
            BindOp::MAP => self.check_map(&sent, result),
            BindOp::UNMAP => self.check_unmap(&sent, result),
            _ if result.is_ok() => self.inconsistent(format!("VM_BIND {sent:?} succeeded")),
            _ => {}
        }
    }

    fn check_map(&mut self, sent: &VmBind, result: Result<(), Errno>) {
        let object = self.model.objects.get(&sent.handle).copied();
        let read_only = sent.flags & FLAG_READ_ONLY != 0;
        let valid = object.is_some_and(|o| {
            sent.offset
                .checked_add(sent.size)
                .is_some_and(|end| end <= o.size)
                && (read_only || !o.read_only)
        }) && sent.flags & !VM_BIND_FLAGS == 0
            && sent.pad == 0
            && sent.size > 0
            && (sent.va | sent.offset | sent.size) % PAGE == 0
            && sent
                .va
                .checked_add(sent.size)
                .is_some_and(|end| end <= VA_END);
        let free = !self.model.overlaps(sent.va, sent.size);
        match result {
            Ok(()) if valid && free => {
                self.model.bindings.insert(
                    sent.va,
                    Binding {
                        size: sent.size,
                        read_only,
                    },
                );
            }
            Ok(()) => self.inconsistent(format!(
                "VM_BIND {sent:?} succeeded (valid {valid}, free VA {free})"
            )),
            Err(Errno::NOMEM | Errno::NOSPC) => {}
            Err(e) if valid && free => {
                self.inconsistent(format!(
                    "a valid VM_BIND {sent:?} failed: {}",
                    errno_name(e)
                ));
            }
            Err(_) => {}
        }
    }

    fn check_unmap(&mut self, sent: &VmBind, result: Result<(), Errno>) {
        let exact = self
            .model
            .bindings
            .get(&sent.va)
            .is_some_and(|b| b.size == sent.size);
        let clean = sent.flags == 0 && sent.pad == 0 && sent.handle == 0 && sent.offset == 0;
        match result {
            Ok(()) if exact && clean => {
                self.model.bindings.remove(&sent.va);
            }
            Ok(()) => self.inconsistent(format!(
                "VM_BIND {sent:?} succeeded (binding there {exact}, zero fields {clean})"
            )),
            Err(e) if exact && clean => self.inconsistent(format!(
                "UNMAP of the binding {sent:?} failed: {}",
                errno_name(e)
            )),
            Err(_) => {}
        }
    }

    /// A command aimed at a binding or anywhere.
    fn command(&mut self) -> Cmd {
        let bound: Vec<(u64, u64)> = self
            .model
            .bindings
            .iter()
            .map(|(&v, b)| (v, b.size))
            .collect();
        let address = |rng: &mut Rng| match bound.get(rng.index(bound.len())) {
            Some(&(va, size)) if !rng.one_in(5) => va + rng.below(size / PAGE) * PAGE,
            _ => inputs::va(rng),
        };
        let src = address(&mut self.rng);
        let dst = address(&mut self.rng);
        let size = match self.rng.below(6) {
            0..=3 => (1 + self.rng.below(4)) * PAGE,
            4 => 4 * (1 + self.rng.below(64)),
            _ => self.hostile.size(&mut self.rng),
        };
        match self.rng.below(10) {
            0..=4 => Cmd::copy(src, dst, size),
            5..=8 => Cmd::fill(dst, self.rng.next_u32(), size),
            _ => Cmd {
                op: CmdOp(self.rng.next_u32() % 4),
                value: self.rng.next_u32(),
                src,
                dst,
                size,
            },
        }
    }

    fn exec(&mut self) {
        let count = match self.rng.below(10) {
            0..=7 => 1 + self.rng.index(4),
            8 => 64,
            _ => 0,
        };
        let cmds: Vec<Cmd> = (0..count).map(|_| self.command()).collect();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        // Whether the kernel reads exactly `cmds`: `Some(false)` for a count it refuses
        // before reading anything, `None` when it reads bytes the model does not know (one
        // command past the array, or through a hostile pointer that may be readable), where
        // any answer but a crash is consistent.
        let (pointer, claimed, real) = match self.rng.below(10) {
            0..=7 => (cmds.as_ptr() as u64, count, Some(true)),
            8 => {
                let claimed = *self
                    .rng
                    .pick(&[0, MAX_EXEC_CMDS + 1, u32::MAX, count + 1])
                    .unwrap_or(&0);
                let refused = claimed == 0 || claimed > MAX_EXEC_CMDS;
                (cmds.as_ptr() as u64, claimed, refused.then_some(false))
            }
            _ => (
                self.hostile.pointer(&mut self.rng),
                1 + self.rng.below_u32(8),
                None,
            ),
        };
        let flags = match self.rng.below(8) {
            0..=4 => EXEC_WAIT,
            5 | 6 => 0,
            _ => inputs::pad(&mut self.rng),
        };
        let (waits, waits_ok) = self.exec_syncs();
        let (signals, signals_ok) = self.exec_syncs();
        let mut args = Exec {
            cmds: pointer,
            count: claimed,
            flags,
            fault_va: self.rng.next_u64(),
            fault_cmd: self.rng.next_u32(),
            fault_kind: FaultKind(self.rng.next_u32()),
            waits: waits.0,
            signals: signals.0,
            wait_count: waits.1,
            signal_count: signals.1,
        };
        let sent = args;
        let started = Instant::now();
        let result = self.gpu.exec_raw(&mut args);
        self.record("EXEC", started, &result);
        let well_formed = real == Some(true) && flags & !EXEC_FLAGS == 0;
        let well_formed = well_formed && waits_ok != Some(false) && signals_ok != Some(false);
        // Commands or a sync array read from bytes the model does not know may parse as
        // valid ones: then neither a success nor a fault is inconsistent.
        let unknowable = real.is_none() || waits_ok.is_none() || signals_ok.is_none();
        // Without EXEC_WAIT a faulting job is still queued: the ioctl succeeds.
        let runs = flags & EXEC_WAIT == 0 || cmds.iter().all(|c| self.model.runs(c));
        match result {
            Ok(()) if (!well_formed || !runs) && !unknowable => {
                self.inconsistent(format!("EXEC {sent:?} of {cmds:?} succeeded"));
            }
            Err(Errno::IO) if real == Some(true) && flags & EXEC_WAIT != 0 => {
                let index = args.fault_cmd as usize;
                let faulted = cmds.get(index);
                let consistent = faulted.is_some_and(|c| !self.model.runs(c))
                    && cmds.iter().take(index).all(|c| self.model.runs(c))
                    && args.fault_kind != FaultKind::NONE;
                if !consistent {
                    self.inconsistent(format!("EXEC of {cmds:?} faulted as {args:?}"));
                }
            }
            Err(Errno::IO) if !unknowable => {
                self.inconsistent(format!(
                    "EXEC {sent:?} of {cmds:?} failed with EIO, which only a waited-for \
                     run of known commands can"
                ));
            }
            _ => {}
        }
        drop(waits.2);
        drop(signals.2);
    }

    /// Wait or signal syncobjs for one `EXEC`: (pointer, count, the array it points into)
    /// and whether the kernel may accept them (known flags, handles of this file, a
    /// count it takes), or `None` when the pointer is hostile: it may point at readable
    /// memory whose bytes happen to name a syncobj of this file, so nothing is known.
    /// Whether a wait finds a fence is not modelled.
    fn exec_syncs(&mut self) -> ((u64, u32, Vec<ExecSync>), Option<bool>) {
        if self.syncobjs.is_empty() {
            for _ in 0..4 {
                if let Ok(handle) = sync::syncobj_create(self.gpu.as_fd()) {
                    self.syncobjs.push(handle);
                }
            }
        }
        let count = match self.rng.below(10) {
            0..=6 => 0,
            7 | 8 => 1 + self.rng.index(3),
            _ => usize::try_from(MAX_EXEC_SYNCS).unwrap_or(64) + 1,
        };
        let count_ok = u32::try_from(count).is_ok_and(|c| c <= MAX_EXEC_SYNCS);
        let mut entries_ok = true;
        let syncs: Vec<ExecSync> = (0..count)
            .map(|_| {
                let handle = match self.rng.pick(&self.syncobjs) {
                    Some(&h) if !self.rng.one_in(8) => h,
                    _ => self.rng.next_u32(),
                };
                let flags = if self.rng.one_in(8) {
                    self.rng.next_u32() | 1
                } else {
                    0
                };
                let point = if self.rng.one_in(2) {
                    0
                } else {
                    self.rng.below(8)
                };
                entries_ok &= flags == 0 && self.syncobjs.contains(&handle);
                ExecSync {
                    handle,
                    flags,
                    point,
                }
            })
            .collect();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let (pointer, ok) = match self.rng.below(16) {
            // An impossible count fails before the array is read, whatever the pointer.
            0 if count > 0 => {
                let pointer = self.hostile.pointer(&mut self.rng);
                (pointer, (!count_ok).then_some(false))
            }
            _ => (syncs.as_ptr() as u64, Some(count_ok && entries_ok)),
        };
        ((pointer, count, syncs), ok)
    }

    fn vm_query(&mut self) {
        let va = match self.model.bindings.keys().next() {
            Some(&first) if self.rng.one_in(3) => first + self.rng.below(4) * PAGE,
            _ => inputs::va(&mut self.rng),
        };
        let mut args = VmQuery {
            va,
            pa: self.rng.next_u64(),
            page_size: self.rng.next_u64(),
            flags: self.rng.next_u32(),
            pad: inputs::pad(&mut self.rng),
        };
        let sent = args;
        let started = Instant::now();
        let result = self.gpu.vm_query_raw(&mut args);
        self.record("VM_QUERY", started, &result);
        if result.is_err() {
            return;
        }
        let binding = self.model.binding_at(sent.va).map(|(_, b)| b);
        let expected = binding.map_or(0, |b| {
            QUERY_MAPPED | if b.read_only { QUERY_READ_ONLY } else { 0 }
        });
        if sent.pad != 0 || args.flags != expected || sent.va >= VA_END {
            self.inconsistent(format!(
                "VM_QUERY {sent:?} gave {args:?}; the model has {binding:?}"
            ));
        }
    }

    fn export(&mut self) {
        let handle = self.handle();
        let flags = match self.rng.below(4) {
            0 | 1 => drm::CLOEXEC | drm::RDWR,
            2 => drm::CLOEXEC,
            _ => self.rng.next_u32(),
        };
        let started = Instant::now();
        let result = drm_ffi::gem::handle_to_fd(self.gpu.as_fd(), handle, flags)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO));
        self.record("PRIME_HANDLE_TO_FD", started, &result);
        let Ok(prime) = result else { return };
        // SAFETY: a successful PRIME_HANDLE_TO_FD installed this descriptor for us alone.
        let fd = unsafe { OwnedFd::from_raw_fd(prime.fd) };
        let object = self.model.objects.get(&handle).copied();
        let exportable =
            object.is_some_and(|o| o.kind == ObjectKind::SHMEM || o.kind == ObjectKind::DMABUF);
        if !exportable {
            self.inconsistent(format!(
                "PRIME export of handle {handle} ({object:?}, flags {flags:#x}) succeeded"
            ));
        }
        if self.exports.len() < 8 {
            self.exports.push((fd, handle));
        }
    }

    fn import(&mut self) {
        let export = self.exports.get(self.rng.index(self.exports.len()));
        let (name, fd, dma_buf, source) = match export {
            Some((fd, handle)) if self.rng.one_in(3) => (
                "an export of this file",
                as_raw(fd.as_fd()),
                true,
                Some(*handle),
            ),
            _ => {
                let c = self.hostile.candidate(&mut self.rng);
                (c.name, c.fd, c.dma_buf, None)
            }
        };
        let mut args = drm_ffi::drm_prime_handle {
            handle: self.rng.next_u32(),
            flags: if self.rng.one_in(4) {
                self.rng.next_u32()
            } else {
                0
            },
            fd,
        };
        let started = Instant::now();
        // SAFETY: DRM_IOCTL_PRIME_FD_TO_HANDLE takes a `drm_prime_handle`; the kernel resolves
        // `fd` itself and fails with EBADF for a number that is no descriptor.
        let result = unsafe {
            ioctl::ioctl(
                self.gpu.as_fd(),
                Updater::<PRIME_FD_TO_HANDLE, drm_ffi::drm_prime_handle>::new(&mut args),
            )
        };
        self.record("PRIME_FD_TO_HANDLE", started, &result);
        if result.is_err() {
            return;
        }
        if !dma_buf {
            self.inconsistent(format!("PRIME import of {name} succeeded"));
            return;
        }
        match source {
            Some(handle) if args.handle != handle => self.inconsistent(format!(
                "re-importing an export of handle {handle} gave handle {}",
                args.handle
            )),
            Some(_) => {}
            None if self.model.objects.contains_key(&args.handle) => {}
            None => {
                let size = inputs::SMALL;
                self.new_object(
                    "PRIME_FD_TO_HANDLE",
                    true,
                    args.handle,
                    Object {
                        size,
                        kind: ObjectKind::DMABUF,
                        read_only: false,
                    },
                    name,
                );
            }
        }
    }

    fn gem_close(&mut self) {
        let handle = self.handle();
        let started = Instant::now();
        let result = drm_ffi::gem::close(self.gpu.as_fd(), handle)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO));
        self.record("GEM_CLOSE", started, &result);
        let live = self.model.objects.remove(&handle).is_some();
        if let Some(offset) = self.model.offsets.remove(&handle) {
            self.model.stale_offsets.push(offset);
        }
        if result.is_ok() != live {
            self.inconsistent(format!(
                "GEM_CLOSE of handle {handle} (live {live}) gave {result:?}"
            ));
        }
        if live {
            self.model.closed.push(handle);
            // Exports keep the object alive in the dma-buf; a re-import makes a new handle.
            self.exports.retain(|(_, h)| *h != handle);
        }
    }

    /// `mmap` of the DRM file at a live object's offset, a closed object's (its handle gone,
    /// the file may no longer map it), or anywhere; lengths up to past the object.
    ///
    /// Only objects of at most 2 MiB are mapped: Linux 6.12's `drm_gem_shmem_mmap` allocates
    /// every page of the object at mmap time, so mapping one page of a 4 GiB object (a size
    /// `GEM_CREATE` accepts) takes all the guest's memory for half a minute before it fails
    /// with `ENOMEM`. That is the helper's design, reported rather than fuzzed.
    fn drm_mmap(&mut self) {
        let live: Vec<(u64, u64)> = self
            .model
            .offsets
            .iter()
            .filter_map(|(h, &o)| Some((o, self.model.objects.get(h)?.size)))
            .filter(|&(_, size)| size <= 2 << 20)
            .collect();
        let offset = match self.rng.below(10) {
            0..=4 => live.get(self.rng.index(live.len())).map_or(0, |l| l.0),
            5 | 6 => *self.rng.pick(&self.model.stale_offsets).unwrap_or(&0),
            // Below the DRM core's first fake offset (4 GiB), and far above every object's:
            // nothing is there (a random offset inside a large object would populate it).
            7 => self.rng.below(1 << 20) * PAGE,
            _ => (self.rng.next_u64() | 1 << 62) & !(PAGE - 1),
        };
        let len = match self.rng.below(6) {
            0..=3 => (1 + self.rng.below(4)) * PAGE,
            4 => 1 << 30,
            _ => 2 * (1 << 20) + PAGE,
        };
        let started = Instant::now();
        // SAFETY: a fresh shared mapping at an address the kernel picks overlaps nothing
        // Rust uses; it is unmapped below without being touched.
        let result = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                usize::try_from(len).unwrap_or(usize::MAX),
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                self.gpu.as_fd(),
                offset,
            )
        };
        self.record("mmap of the DRM file", started, &result);
        let Ok(addr) = result else { return };
        // SAFETY: the mapping just made, of `len` bytes, referenced by nothing else.
        let _ = unsafe { rustix::mm::munmap(addr, usize::try_from(len).unwrap_or(0)) };
        // The DRM core maps any page range inside one object the file may map.
        let fits = self.model.offsets.iter().any(|(h, &o)| {
            offset.checked_sub(o).is_some_and(|into| {
                let end = into.checked_add(len);
                self.model
                    .objects
                    .get(h)
                    .is_some_and(|obj| end.is_some_and(|e| e <= obj.size))
            })
        });
        if !fits {
            self.inconsistent(format!(
                "mmap of {len} bytes at offset {offset:#x} succeeded; live objects {live:x?}"
            ));
        }
    }

    /// A driver ioctl number (known or not) with a random size, direction and argument:
    /// random bytes, or a pointer the kernel cannot read or write. On the raw file.
    fn raw_ioctl(&mut self) {
        let mut arg = vec![0_u8; 1 << 14];
        for chunk in arg.chunks_mut(8) {
            let bytes = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or_default());
        }
        let nr = DRM_COMMAND_BASE + u8::try_from(self.rng.below(0x20)).unwrap_or(0);
        let size = match self.rng.below(4) {
            0 => self.rng.below_u32(1 << 14),
            1 => self.rng.below_u32(64),
            _ => *self.rng.pick(&[16, 24, 32, 40, 48]).unwrap_or(&16),
        };
        let dir = self.rng.below_u32(4);
        let opcode = (dir << 30) | (size << 16) | (u32::from(DRM_IOCTL_BASE) << 8) | u32::from(nr);
        let (pointer, name) = match self.rng.below(8) {
            0..=5 => (
                arg.as_mut_ptr().cast::<c_void>(),
                "raw ioctl (random bytes)",
            ),
            6 => (
                self.hostile.pointer(&mut self.rng) as *mut c_void,
                "raw ioctl (hostile pointer)",
            ),
            _ => (
                self.hostile.read_only.addr() as *mut c_void,
                "raw ioctl (read-only argument)",
            ),
        };
        // Known ioctls with an argument they cannot copy in or out.
        let opcode = if name != "raw ioctl (random bytes)" && self.rng.one_in(2) {
            *self
                .rng
                .pick(&[
                    IOCTL_GET_PARAM,
                    IOCTL_GEM_CREATE,
                    IOCTL_GEM_USERPTR,
                    IOCTL_GEM_INFO,
                    IOCTL_VM_BIND,
                    IOCTL_EXEC,
                    IOCTL_VM_QUERY,
                ])
                .unwrap_or(&IOCTL_GET_PARAM)
        } else {
            opcode
        };
        let started = Instant::now();
        // SAFETY: see `RawCall`: `arg` is this function's own 16 KiB buffer (at least the
        // largest size `opcode` encodes) with no Rust reference into it during the call, or
        // memory this process cannot write.
        let result = unsafe {
            ioctl::ioctl(
                self.raw.as_fd(),
                RawCall {
                    opcode,
                    arg: pointer,
                },
            )
        };
        self.record(name, started, &result);
        drop(arg);
        // What random calls made on the raw file is let go of by reopening it now and then.
        if self.rng.one_in(500) {
            if let Ok(fresh) = Vgpu::open() {
                self.raw = fresh;
            }
        }
    }

    /// Unbinds and closes everything in the model, checking that each call succeeds.
    fn empty_model(&mut self) {
        let bindings: Vec<(u64, Binding)> =
            self.model.bindings.iter().map(|(&v, &b)| (v, b)).collect();
        for (va, binding) in bindings {
            if let Err(e) = self.gpu.unmap(va, binding.size) {
                self.inconsistent(format!(
                    "UNMAP of the binding at {va:#x}: {}",
                    errno_name(e)
                ));
            }
        }
        self.model.bindings.clear();
        let handles: Vec<u32> = self.model.objects.keys().copied().collect();
        for handle in handles {
            if let Err(e) = drm_ffi::gem::close(self.gpu.as_fd(), handle) {
                self.inconsistent(format!("GEM_CLOSE of live handle {handle}: {e}"));
            }
            self.model.closed.push(handle);
        }
        self.model.objects.clear();
        let offsets = std::mem::take(&mut self.model.offsets);
        self.model.stale_offsets.extend(offsets.into_values());
        self.model.stale_offsets.truncate(64);
        self.exports.clear();
        self.model.closed.sort_unstable();
        self.model.closed.dedup();
        self.model.closed.truncate(64);
    }

    fn print_stats(&self) {
        let total: u64 = self.stats.values().flat_map(BTreeMap::values).sum();
        println!(
            "{total} calls; slowest {:.1} ms ({}); {} inconsistencies",
            self.slowest.0.as_secs_f64() * 1e3,
            self.slowest.1,
            self.inconsistencies.len()
        );
        for (ioctl, outcomes) in &self.stats {
            let calls: u64 = outcomes.values().sum();
            let spread: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
            println!("{ioctl}: {calls} calls: {}", spread.join(", "));
        }
    }
}

fn as_raw(fd: BorrowedFd<'_>) -> RawFd {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}
