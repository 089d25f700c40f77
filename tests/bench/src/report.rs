//! Results: one row per case, printed as a table and written as CSV.

use std::fmt::Write as _;
use std::time::Duration;

/// Measures the calling thread's CPU time (wall time where the platform has no per-thread
/// clock): on a machine shared with other work, the time this thread spends descheduled
/// is not the cost of the code, and with a dozen runnable processes per core it would
/// otherwise swamp short cases at random. A reading is a system call (~0.1-0.3 µs), so
/// cases time whole loops, never single short calls.
#[derive(Clone, Copy, Debug)]
pub struct Stopwatch(Duration);

impl Stopwatch {
    /// Starts counting now.
    pub fn start() -> Self {
        Self(thread_cpu_time())
    }

    /// CPU time since the start.
    pub fn elapsed(&self) -> Duration {
        thread_cpu_time().saturating_sub(self.0)
    }
}

#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(std::time::Instant::now).elapsed()
}

/// One measured case: our time against a reference time for the same work, in one run.
#[derive(Clone, Debug)]
pub struct Row {
    /// Which benchmark (`page-table`, `va-allocator`, …).
    pub group: &'static str,
    /// The case, with the reference it is held against.
    pub case: String,
    /// The size of the work (bytes, pages, operations, live ranges), as printed.
    pub size: String,
    /// What one unit of the per-unit times is (`PTE`, `op`, `call`).
    pub unit: &'static str,
    /// Our median time per unit, in nanoseconds (below one too: `Duration` cannot say 0.4 ns).
    pub ours: f64,
    /// The reference's median time per unit in nanoseconds, when it was measured.
    pub reference: Option<f64>,
    /// What the reference is.
    pub reference_name: &'static str,
    /// Anything else worth a column (fragmentation, failures).
    pub note: String,
}

impl Row {
    /// Ours over the reference: 1.0 is as fast, 3.0 three times slower.
    pub fn ratio(&self) -> Option<f64> {
        let reference = self.reference?;
        (reference > 0.0).then(|| self.ours / reference)
    }
}

/// Nanoseconds with about three significant digits.
pub fn nanos(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else if ns >= 10.0 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.2}")
    }
}

fn ratio_text(row: &Row) -> String {
    row.ratio()
        .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
}

/// The rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "case",
        "size",
        "ours ns/unit",
        "reference",
        "ref ns/unit",
        "ratio",
        "note",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                format!("{}: {}", r.group, r.case),
                r.size.clone(),
                format!("{} /{}", nanos(r.ours), r.unit),
                r.reference_name.to_owned(),
                r.reference.map_or_else(|| "-".to_owned(), nanos),
                ratio_text(r),
                r.note.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[String]| {
        let mut text = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            // Numbers right-aligned, words left-aligned.
            if (1..=2).contains(&i) || (4..=5).contains(&i) {
                let _ = write!(text, "{c:>w$}");
            } else {
                let _ = write!(text, "{c:<w$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in &cells {
        line(row);
    }
    out
}

/// The rows as CSV: `group,case,size,unit,ours_ns,reference,reference_ns,ratio,note`.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from("group,case,size,unit,ours_ns,reference,reference_ns,ratio,note\n");
    for r in rows {
        let fields = [
            r.group.to_owned(),
            r.case.clone(),
            r.size.clone(),
            r.unit.to_owned(),
            nanos(r.ours),
            r.reference_name.to_owned(),
            r.reference.map_or_else(String::new, nanos),
            r.ratio().map_or_else(String::new, |x| format!("{x:.3}")),
            r.note.clone(),
        ];
        let quoted: Vec<String> = fields.iter().map(|f| quote(f)).collect();
        out.push_str(&quoted.join(","));
        out.push('\n');
    }
    out
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// The median of `samples` (which must not be empty; an empty set reads as zero).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// `total` spread over `units` (at least one), in nanoseconds.
pub fn per_unit(total: Duration, units: usize) -> f64 {
    // Unit counts stay far below 2^53.
    total.as_secs_f64() * 1e9 / units.max(1) as f64
}

/// The median of per-unit times (an empty set reads as zero).
pub fn median_ns(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}
