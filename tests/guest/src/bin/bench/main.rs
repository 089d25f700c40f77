//! bench: extmem-vgpu's costs on the real kernel, each next to a reference measured in the same
//! run (`cargo bench-all` boots the guest for it; it is no test and prints no KTAP).
//!
//! - Import: `GEM_USERPTR` of 4 KiB … 256 MiB of prefaulted anonymous memory, the whole ioctl
//!   against the time the module itself measured around `pin_user_pages` (`GET_PARAM
//!   LAST_PIN_NS`) for the same call.
//!   Once over whatever pages the kernel gives (huge pages where 2 MiB fits) and once over
//!   4 KiB pages only (`MADV_NOHUGEPAGE`). Each with a second row: the import's time beyond
//!   the pin against a `GET_PARAM` round trip (the floor of any ioctl).
//! - GPU copy: one `EXEC` COPY between two imported, bound ranges, against `copy_from_slice`
//!   of the same size in the guest, the two alternating; the whole destination is checked.
//! - Bind: `VM_BIND` + unbind of one page, with and without table pages to allocate
//!   ([`bind`]).
//! - dma-buf import: `PRIME_FD_TO_HANDLE` of a udmabuf, alone and with `VM_BIND`, against
//!   vgem's import of the same dma-buf, and import + `VM_BIND` against the module's own time
//!   for the attachment mapping (`GET_PARAM LAST_ATTACH_NS`) ([`dma_buf_import`]).
//! - Front end: the Vulkan calls through the Khronos loader and extmem's ICD, each against
//!   the ioctls it makes, issued directly on a second file of the same node
//!   ([`front_end`]).
//!
//! Each case runs several times; the medians are reported. The table goes to stdout, and the
//! same rows as CSV between `@@bench-csv begin` and `@@bench-csv end` lines, which the runner
//! saves as `<target dir>/extmem-bench/guest.csv`.

use std::hint::black_box;
use std::io;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use extmem_guest_tests::dri::GemHandle;
use extmem_guest_tests::host_memory::{AnonMapping, RawBytes};
use extmem_guest_tests::vgpu::{self, Vgpu};
use extmem_uapi::Param;
use rustix::mm::Advice;

mod bind;
mod dma_buf_import;
mod front_end;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Where the copy source and destination are bound (far apart, 2 MiB-aligned).
const SRC_VA: u64 = 1 << 33;
const DST_VA: u64 = 1 << 34;

/// One result row.
struct Row {
    case: &'static str,
    size: usize,
    ours: Duration,
    reference: Duration,
    reference_name: &'static str,
    /// What else the CSV says about the row (phase times, samples); may be empty.
    note: String,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.ours.as_secs_f64() / self.reference.as_secs_f64().max(1e-12)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> io::Result<()> {
    let gpu = Vgpu::open().map_err(|e| io::Error::other(e.to_string()))?;
    let mut rows = Vec::new();
    for size in [
        4 * KIB,
        64 * KIB,
        MIB,
        4 * MIB,
        16 * MIB,
        64 * MIB,
        256 * MIB,
    ] {
        rows.extend(import(&gpu, size, Pages::Huge)?);
    }
    for size in [MIB, 16 * MIB, 64 * MIB, 256 * MIB] {
        rows.extend(import(&gpu, size, Pages::Small)?);
    }
    for size in [4 * KIB, 64 * KIB, MIB, 4 * MIB, 16 * MIB, 64 * MIB] {
        rows.extend(copy(&gpu, size)?);
    }
    rows.extend(bind::rows(&gpu).map_err(io::Error::other)?);
    rows.extend(dma_buf_import::rows(&gpu).map_err(io::Error::other)?);
    rows.extend(front_end::rows(&gpu).map_err(io::Error::other)?);
    print_table(&rows);
    println!("@@bench-csv begin");
    println!("group,case,size,unit,ours_ns,reference,reference_ns,ratio,note");
    for r in &rows {
        println!(
            "guest,{},{},call,{},{},{},{:.3},{}",
            r.case,
            r.size,
            r.ours.as_nanos(),
            r.reference_name,
            r.reference.as_nanos(),
            r.ratio(),
            r.note
        );
    }
    println!("@@bench-csv end");
    Ok(())
}

/// Repetitions of one import or copy: at least five, the figure the targets are set on.
fn reps(size: usize) -> usize {
    if size >= 64 * MIB {
        5
    } else {
        7
    }
}

/// Calls per timed batch in [`per_call`]: one call is near the clock's resolution under TCG.
const CALLS: u32 = 20;
/// Timed batches per side in [`per_call`].
const BATCHES: usize = 7;

/// Runs `ours` and `reference` `CALLS` times each per batch, alternating, and gives the
/// medians per call. The first error of either stops the measurement.
fn per_call(
    mut ours: impl FnMut() -> Result<(), String>,
    mut reference: impl FnMut() -> Result<(), String>,
) -> Result<(Duration, Duration), String> {
    let mut ours_times = Vec::new();
    let mut reference_times = Vec::new();
    for _ in 0..BATCHES {
        let started = Instant::now();
        for _ in 0..CALLS {
            ours()?;
        }
        ours_times.push(started.elapsed() / CALLS);
        let started = Instant::now();
        for _ in 0..CALLS {
            reference()?;
        }
        reference_times.push(started.elapsed() / CALLS);
    }
    Ok((median(ours_times), median(reference_times)))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn errno(what: &str) -> impl FnOnce(rustix::io::Errno) -> io::Error + '_ {
    move |e| io::Error::other(format!("{what}: {e}"))
}

fn gem(raw: u32) -> io::Result<GemHandle> {
    NonZeroU32::new(raw)
        .map(GemHandle)
        .ok_or_else(|| io::Error::other("GEM_USERPTR returned handle 0"))
}

/// Which pages back the imported memory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pages {
    /// Whatever the kernel gives (transparent huge pages where 2 MiB fits).
    Huge,
    /// 4 KiB pages only (`MADV_NOHUGEPAGE`): one struct page per 4 KiB to pin.
    Small,
}

/// Anonymous memory with every page touched, so pinning finds it present.
fn prefaulted(len: usize) -> io::Result<AnonMapping> {
    prefaulted_with(len, Pages::Huge)
}

fn prefaulted_with(len: usize, pages: Pages) -> io::Result<AnonMapping> {
    let mapping = AnonMapping::read_write(len)?;
    if pages == Pages::Small {
        mapping.advise(0, len, Advice::LinuxNoHugepage)?;
    }
    let ones = vec![0x5a_u8; len];
    mapping.write(0, &ones).map_err(io::Error::other)?;
    Ok(mapping)
}

/// The module's own clock for the phases of one `GEM_USERPTR`, in the order they run
/// (`GET_PARAM` ids and the names the CSV note gives them).
const PHASES: [(Param, &str); 5] = [
    (Param::LAST_PIN_NS, "pin"),
    (Param::LAST_USERPTR_RECORD_NS, "record"),
    (Param::LAST_USERPTR_LEDGER_NS, "ledger"),
    (Param::LAST_USERPTR_SETUP_NS, "setup"),
    (Param::LAST_USERPTR_NS, "in module"),
];

/// `GEM_USERPTR` of `size` bytes: the whole ioctl against the module's own pin time; and
/// what the import costs beyond the pin against the round trip of the `GET_PARAM` that
/// fetches the pin time (a near-empty ioctl: the floor of any call), which shows how much
/// of a fixed cost is the system call itself. The first row's note has every phase the
/// module timed ([`PHASES`]) and the system call around it, each as median (min–max) µs.
fn import(gpu: &Vgpu, size: usize, pages: Pages) -> io::Result<[Row; 2]> {
    let memory = prefaulted_with(size, pages)?;
    let size64 = u64::try_from(size).map_err(io::Error::other)?;
    let mut total = Vec::new();
    let mut beyond = Vec::new();
    let mut get_param = Vec::new();
    let mut phases: [Vec<Duration>; PHASES.len()] = Default::default();
    let mut outside = Vec::new();
    for _ in 0..reps(size) {
        let started = Instant::now();
        let answer = gpu
            .userptr(memory.addr(), size64, 0)
            .map_err(errno("GEM_USERPTR"))?;
        let elapsed = started.elapsed();
        let started = Instant::now();
        let pin_ns = gpu
            .get_param(Param::LAST_PIN_NS)
            .map_err(errno("GET_PARAM LAST_PIN_NS"))?;
        get_param.push(started.elapsed());
        for ((param, name), samples) in PHASES.iter().zip(&mut phases) {
            let ns = gpu
                .get_param(*param)
                .map_err(|e| io::Error::other(format!("GET_PARAM {name}: {e}")))?;
            samples.push(Duration::from_nanos(ns));
        }
        if let Some(module) = phases.last().and_then(|p| p.last()) {
            outside.push(elapsed.saturating_sub(*module));
        }
        total.push(elapsed);
        beyond.push(elapsed.saturating_sub(Duration::from_nanos(pin_ns)));
        gpu.close(gem(answer.handle)?)?;
    }
    let mut note: Vec<String> = PHASES
        .iter()
        .zip(phases.clone())
        .map(|((_, name), samples)| format!("{name} {}", spread(samples)))
        .collect();
    note.push(format!("system call {}", spread(outside)));
    note.push(format!("whole {}", spread(total.clone())));
    let [pin, ..] = phases;
    Ok([
        Row {
            case: match pages {
                Pages::Huge => "import GEM_USERPTR",
                Pages::Small => "import GEM_USERPTR 4K pages",
            },
            size,
            ours: median(total),
            reference: median(pin),
            reference_name: "pin_user_pages alone",
            note: format!("µs {}", note.join("; ")),
        },
        Row {
            case: match pages {
                Pages::Huge => "import beyond the pin",
                Pages::Small => "import beyond the pin 4K pages",
            },
            size,
            ours: median(beyond),
            reference: median(get_param),
            reference_name: "GET_PARAM round trip",
            note: String::new(),
        },
    ])
}

/// `samples` as "median (min–max)" in µs, for a CSV note (no commas).
fn spread(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let micros = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6);
    format!(
        "{:.1} ({:.1}–{:.1})",
        micros(samples.get(samples.len() / 2)),
        micros(samples.first()),
        micros(samples.last())
    )
}

/// Bytes of `addr`'s mapping backed by transparent huge pages (`AnonHugePages` in
/// `/proc/self/smaps`): how many 2 MiB runs an import of it can be. `None` if not found.
fn huge_kib(addr: u64) -> Option<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(kib) = line.strip_prefix("AnonHugePages:") {
                return kib.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
    }
    None
}

/// One `EXEC` COPY of `size` bytes between two imported, bound ranges, against
/// `copy_from_slice` of the same size: the whole ioctl (the job queue, its wakeups and the
/// wait included), and the engine alone as the module timed it (`LAST_EXEC_NS`).
fn copy(gpu: &Vgpu, size: usize) -> io::Result<[Row; 2]> {
    let size64 = u64::try_from(size).map_err(io::Error::other)?;
    let src = prefaulted(size)?;
    let dst = prefaulted(size)?;
    let src_bo = gem(gpu
        .userptr(src.addr(), size64, 0)
        .map_err(errno("GEM_USERPTR src"))?
        .handle)?;
    let dst_bo = gem(gpu
        .userptr(dst.addr(), size64, 0)
        .map_err(errno("GEM_USERPTR dst"))?
        .handle)?;
    gpu.map(src_bo, SRC_VA, 0, size64, 0)
        .map_err(errno("VM_BIND src"))?;
    gpu.map(dst_bo, DST_VA, 0, size64, 0)
        .map_err(errno("VM_BIND dst"))?;
    // Source and destination differ, so the check below sees the copy arrive.
    let pattern = vec![0xc3_u8; size];
    src.write(0, &pattern).map_err(io::Error::other)?;
    let cmds = [vgpu::copy(SRC_VA, DST_VA, size64)];
    let from = vec![0xa5_u8; size];
    let mut to = vec![0_u8; size];
    let mut gpu_times = Vec::new();
    let mut engine_times = Vec::new();
    let mut cpu_times = Vec::new();
    // Ours and the reference alternate, so both see the same load on a shared machine.
    for _ in 0..reps(size) {
        let started = Instant::now();
        gpu.exec(&cmds)
            .map_err(|(e, args)| io::Error::other(format!("EXEC: {e}, {args:?}")))?;
        gpu_times.push(started.elapsed());
        let engine = gpu
            .get_param(Param::LAST_EXEC_NS)
            .map_err(errno("GET_PARAM LAST_EXEC_NS"))?;
        engine_times.push(Duration::from_nanos(engine));
        let started = Instant::now();
        to.copy_from_slice(black_box(&from));
        black_box(&mut to);
        cpu_times.push(started.elapsed());
    }
    let huge = |addr: u64| huge_kib(addr).map_or("?".to_string(), |kib| kib.to_string());
    let samples = |times: &[Duration]| {
        let micros: Vec<String> = times
            .iter()
            .map(|t| format!("{:.0}", t.as_secs_f64() * 1e6))
            .collect();
        micros.join(" ")
    };
    // Every sample in run order and the huge pages behind each side: what tells a slow
    // run of the engine from a slow run of memcpy.
    let note = format!(
        "µs EXEC {}; engine {}; memcpy {}; THP KiB src {} dst {} from {} to {}",
        samples(&gpu_times),
        samples(&engine_times),
        samples(&cpu_times),
        huge(src.addr()),
        huge(dst.addr()),
        huge(from.as_ptr() as u64),
        huge(to.as_ptr() as u64),
    );
    if dst.read(0, size).map_err(io::Error::other)? != pattern {
        return Err(io::Error::other("the GPU copy did not arrive"));
    }
    gpu.unmap(SRC_VA, size64).map_err(errno("VM_BIND unmap"))?;
    gpu.unmap(DST_VA, size64).map_err(errno("VM_BIND unmap"))?;
    gpu.close(src_bo)?;
    gpu.close(dst_bo)?;

    let reference = median(cpu_times);
    Ok([
        Row {
            case: "GPU copy EXEC",
            size,
            ours: median(gpu_times),
            reference,
            reference_name: "memcpy in the guest",
            note,
        },
        Row {
            case: "GPU copy engine alone",
            size,
            ours: median(engine_times),
            reference,
            reference_name: "memcpy in the guest",
            note: String::new(),
        },
    ])
}

fn size_text(size: usize) -> String {
    if size >= MIB {
        format!("{} MiB", size / MIB)
    } else {
        format!("{} KiB", size / KIB)
    }
}

fn print_table(rows: &[Row]) {
    let case = rows.iter().map(|r| r.case.len()).max().unwrap_or(0);
    let reference = rows
        .iter()
        .map(|r| r.reference_name.len())
        .max()
        .unwrap_or(0);
    println!(
        "{:<case$} {:>8} {:>12} {:<reference$} {:>12} {:>7} {:>10}",
        "case", "size", "ours µs", "reference", "ref µs", "ratio", "ours MB/s"
    );
    for r in rows {
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        // Bytes per microsecond are MB/s.
        let throughput = r.size as f64 / micros(r.ours).max(1e-9);
        println!(
            "{:<case$} {:>8} {:>12.1} {:<reference$} {:>12.1} {:>7.2} {:>10.0}",
            r.case,
            size_text(r.size),
            micros(r.ours),
            r.reference_name,
            micros(r.reference),
            r.ratio(),
            throughput
        );
    }
}
