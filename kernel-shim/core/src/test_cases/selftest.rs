//! The KTAP self-test (descriptor encoding, map / translate / unmap, a 2 MiB block split,
//! `VM_BIND` validation with each errno, the copy engine and its faults, `vm_fini`) over a
//! [`FixedPlatform`], as the kernel runs it over its own pages: every case passes and
//! every page comes back; with too few pages, the cases that need them fail with a
//! diagnostic and still give back what they took.

use crate::selftest::{run, Line, CASES};

use super::{host_tests, FixedPlatform};

/// Pages the self-test needs at most at once (its peak, checked below), so that the
/// Cortex-M3's 56 KiB stack holds the platform.
pub const PAGES: usize = 9;

/// Checks one KTAP line as the kernel would print it; counts results and failures.
#[derive(Default)]
struct Tally {
    lines: usize,
    results: usize,
    failed: usize,
    diagnostics: usize,
    /// The first diagnostic, for the failure message.
    first_diagnostic: Option<Line>,
}

impl Tally {
    fn line(&mut self, line: &Line) {
        let text = line.as_str();
        assert_eq!(line.as_bytes_with_nul().last(), Some(&0), "{text}");
        assert!(!text.contains('\n'), "{text}");
        match self.lines {
            0 => assert_eq!(text, "KTAP version 1"),
            1 => assert_eq!(text.strip_prefix("1.."), Some("7"), "the plan: {text}"),
            _ if text.starts_with("# ") => {
                self.diagnostics += 1;
                self.first_diagnostic.get_or_insert_with(|| line.clone());
            }
            _ => {
                let rest = match text.strip_prefix("not ok ") {
                    Some(rest) => {
                        self.failed += 1;
                        rest
                    }
                    None => text.strip_prefix("ok ").unwrap_or_else(|| panic!("{text}")),
                };
                let name = CASES.get(self.results).copied().unwrap_or("");
                let (number, got) = rest.split_once(' ').unwrap_or((rest, ""));
                assert_eq!(got, name, "result {}: {text}", self.results + 1);
                assert_eq!(
                    number.parse::<usize>().ok(),
                    Some(self.results + 1),
                    "{text}"
                );
                self.results += 1;
            }
        }
        self.lines += 1;
    }
}

pub fn the_self_test_passes_on_a_fixed_platform() {
    let platform = FixedPlatform::<PAGES>::new();
    let mut tally = Tally::default();
    let failed = run(&platform, |line| tally.line(line));
    assert_eq!(
        (failed, tally.failed, tally.diagnostics),
        (0, 0, 0),
        "{:?}",
        tally.first_diagnostic.as_ref().map(Line::as_str)
    );
    assert_eq!(tally.results, CASES.len());
    assert_eq!(platform.live_pages(), 0, "every page came back");
    assert_eq!(platform.peak(), PAGES, "the peak PAGES says");
}

pub fn self_test_failures_have_a_diagnostic_and_give_pages_back() {
    let platform = FixedPlatform::<PAGES>::new();
    // Enough for the first cases' roots only: later ones fail part-way.
    platform.set_budget(Some(3));
    let mut tally = Tally::default();
    let failed = run(&platform, |line| tally.line(line));
    assert!(failed > 0);
    assert_eq!(tally.results, CASES.len());
    assert_eq!(
        (tally.failed, tally.diagnostics),
        (failed as usize, failed as usize)
    );
    assert_eq!(
        platform.live_pages(),
        0,
        "failed cases give their pages back too"
    );
}

host_tests!(
    the_self_test_passes_on_a_fixed_platform,
    self_test_failures_have_a_diagnostic_and_give_pages_back,
);
