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

/// Repetitions of each case (the median is reported).
const REPS: usize = 5;

/// The groups of cases, as named on the command line.
const GROUPS: [&str; 3] = ["page-tables", "va", "softgpu"];

fn main() -> ExitCode {
    if cfg!(debug_assertions) {
        eprintln!("host-bench: an unoptimised build; run it with --release (cargo bench-host)");
    }
    let chosen: Vec<String> = std::env::args().skip(1).collect();
    if let Some(unknown) = chosen.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        eprintln!(
            "host-bench: no group {unknown:?}; the groups are {}",
            GROUPS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let runs = |group: &str| chosen.is_empty() || chosen.iter().any(|g| g == group);
    let mut rows = Vec::new();
    if runs("page-tables") {
        println!("host-bench: page tables (1 GiB, {REPS} runs each, medians)");
        match page_tables::run(REPS) {
            Ok(table) => rows.extend(table),
            Err(err) => {
                eprintln!("host-bench: page-table case failed: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    if runs("va") {
        println!("host-bench: VA allocator");
        rows.extend(va_trace::run(REPS));
    }
    if runs("softgpu") {
        println!("host-bench: software device copy engine");
        match soft_copy::run(REPS) {
            Ok(soft) => rows.extend(soft),
            Err(err) => {
                eprintln!("host-bench: software device case failed: {err}");
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
