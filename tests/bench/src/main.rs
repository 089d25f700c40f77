//! host-bench: extmem's host benchmarks (`cargo bench-host`; `cargo bench-all` adds the guest).
//!
//! Every case is timed next to a reference for the same work in the same run (the physical
//! floor for page tables; Mesa's util_vma_heap and a first-fit list for the VA allocator), so a ratio means the same
//! on a noisy machine. Each case runs several times and reports the median. The table goes
//! to stdout, the same rows as CSV to `<target dir>/extmem-bench/host.csv`.
//!
//! These are benchmarks, not tests: nothing here fails on a slow figure, and `cargo suite`
//! does not run them.
//!
//! `cargo bench-host [GROUP...] [--plots DIR]` runs only the named groups (`page-tables`,
//! `va`, `softgpu`; with none, all of them) and with `--plots` writes their SVG plots into
//! `DIR` (`docs/perf` for the documentation), with the guest's import plot if a
//! `cargo bench-all` left its CSV. `EXTMEM_BENCH_VA_LIVE=1000,10000` limits the `va` group
//! to the steady states at those working-set sizes.

mod page_tables;
mod plots;
mod report;
mod soft_copy;
#[cfg(util_vma_heap)]
mod util_vma_heap;
mod va_trace;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use plots::Plot;
use report::Row;

/// Repetitions of each case (the median is reported).
const REPS: usize = 5;

/// What a group of cases produces: its rows and its plots.
type GroupResult = Result<(Vec<Row>, Vec<Plot>), String>;

/// A group of cases: its name on the command line, its heading, and how it runs.
type Group = (&'static str, &'static str, fn() -> GroupResult);

/// Every group, in the order they run.
const GROUPS: [Group; 3] = [
    ("page-tables", "page tables (1 GiB)", || {
        page_tables::run(REPS)
    }),
    ("va", "VA allocator", || Ok(va_trace::run(REPS))),
    ("softgpu", "software device copy engine", || {
        soft_copy::run(REPS).map(|rows| (rows, Vec::new()))
    }),
];

/// The system allocator, counting the bytes live on Rust's heap, so the VA cases can say
/// how much metadata an allocator holds per live range.
struct CountingAlloc;

static HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged; the
// counter is only arithmetic beside it.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` and `layout` came from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is the caller's valid size.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            HEAP_BYTES.fetch_add(new_size, Ordering::Relaxed);
        }
        moved
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Bytes live on Rust's heap now (as asked for, not as malloc rounds them).
pub fn heap_bytes() -> usize {
    HEAP_BYTES.load(Ordering::Relaxed)
}

fn main() -> ExitCode {
    if cfg!(debug_assertions) {
        eprintln!("host-bench: an unoptimised build; run it with --release (cargo bench-host)");
    }
    let mut chosen: Vec<String> = Vec::new();
    let mut plots_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--plots" {
            let Some(dir) = args.next() else {
                eprintln!("host-bench: --plots needs a directory");
                return ExitCode::FAILURE;
            };
            plots_dir = Some(PathBuf::from(dir));
        } else {
            chosen.push(arg);
        }
    }
    if let Some(unknown) = chosen
        .iter()
        .find(|g| !GROUPS.iter().any(|(name, ..)| name == g))
    {
        let names: Vec<&str> = GROUPS.iter().map(|(name, ..)| *name).collect();
        eprintln!(
            "host-bench: no group {unknown:?}; the groups are {} (and --plots DIR)",
            names.join(", ")
        );
        return ExitCode::FAILURE;
    }
    if !cfg!(util_vma_heap) && (chosen.is_empty() || chosen.iter().any(|g| g == "va")) {
        println!(
            "host-bench: built without Mesa's util_vma_heap (EXTMEM_MESA_SRC was not set); \
             `cargo bench-host` fetches Mesa's source and builds it in"
        );
    }
    let mut rows = Vec::new();
    let mut plots = Vec::new();
    for (name, heading, run) in GROUPS {
        if !chosen.is_empty() && !chosen.iter().any(|g| g == name) {
            continue;
        }
        println!("host-bench: {heading} ({REPS} runs each, medians)");
        match run() {
            Ok((group, group_plots)) => {
                rows.extend(group);
                plots.extend(group_plots);
            }
            Err(err) => {
                eprintln!("host-bench: a {name} case failed: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", report::table(&rows));

    let dir = output_dir();
    if let Some(imports) = plots::guest_imports(&dir) {
        plots.push(Plot {
            file: "imports.svg",
            title: "Guest imports: GEM_USERPTR vs pin_user_pages by size".to_owned(),
            x_desc: "bytes imported",
            y_desc: "µs per import (median of the guest run)",
            series: imports,
        });
    }
    if let Some(plots_dir) = plots_dir {
        let written = fs::create_dir_all(&plots_dir)
            .map_err(|e| format!("{}: {e}", plots_dir.display()))
            .and_then(|()| plots.iter().try_for_each(|p| p.write(&plots_dir)));
        match written {
            Ok(()) => {
                let files: Vec<&str> = plots.iter().map(|p| p.file).collect();
                println!(
                    "host-bench: plots {} in {}",
                    files.join(", "),
                    plots_dir.display()
                );
            }
            Err(err) => {
                eprintln!("host-bench: plots: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let path = dir.join("host.csv");
    match fs::create_dir_all(&dir).and_then(|()| fs::write(&path, report::csv(&rows))) {
        Ok(()) => {
            println!("host-bench: CSV in {}", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("host-bench: {}: {err}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// `<target dir>/extmem-bench`: `CARGO_TARGET_DIR` when set, else the directory above the
/// profile directory this executable was built into (`<target>/release/host-bench`).
fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("extmem-bench")
}
