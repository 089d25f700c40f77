//! host-bench: extmem's host benchmarks (`cargo bench-host`; `cargo bench-all` adds the guest).
//!
//! Every case is timed next to a reference for the same work in the same run (the physical
//! floor for page tables, a first-fit list for the VA allocator), so a ratio means the same
//! on a noisy machine. Each case runs several times and reports the median. The table goes
//! to stdout, the same rows as CSV to `<target dir>/extmem-bench/host.csv`.
//!
//! These are benchmarks, not tests: nothing here fails on a slow figure, and `cargo suite`
//! does not run them.
//!
//! `cargo bench-host [GROUP...]` runs only the named groups (`page-tables`, `va`,
//! `softgpu`); with none, all of them.

mod page_tables;
mod report;
mod soft_copy;
mod va_trace;

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use report::Row;

/// Repetitions of each case (the median is reported).
const REPS: usize = 5;

/// A group of cases: its name on the command line, its heading, and how it runs.
type Group = (&'static str, &'static str, fn() -> Result<Vec<Row>, String>);

/// Every group, in the order they run.
const GROUPS: [Group; 3] = [
    ("page-tables", "page tables (1 GiB)", || {
        page_tables::run(REPS)
    }),
    ("va", "VA allocator", || Ok(va_trace::run(REPS))),
    ("softgpu", "software device copy engine", || {
        soft_copy::run(REPS)
    }),
];

fn main() -> ExitCode {
    if cfg!(debug_assertions) {
        eprintln!("host-bench: an unoptimised build; run it with --release (cargo bench-host)");
    }
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = chosen
        .iter()
        .find(|g| !GROUPS.iter().any(|(name, ..)| name == g))
    {
        let names: Vec<&str> = GROUPS.iter().map(|(name, ..)| *name).collect();
        eprintln!(
            "host-bench: no group {unknown:?}; the groups are {}",
            names.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let mut rows = Vec::new();
    for (name, heading, run) in GROUPS {
        if !chosen.is_empty() && !chosen.iter().any(|g| g == name) {
            continue;
        }
        println!("host-bench: {heading} ({REPS} runs each, medians)");
        match run() {
            Ok(group) => rows.extend(group),
            Err(err) => {
                eprintln!("host-bench: a {name} case failed: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", report::table(&rows));

    let dir = output_dir();
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
