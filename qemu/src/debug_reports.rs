//! The debug kernel's checkers as named checks: each sanitizer or validator whose report
//! appears in the kernel log fails its own check, with the report's first lines, and the
//! kmemleak scan the plan ends with fails on any unreferenced object.

use crate::console_log::{self, Transcript};
use crate::report::Check;

/// One checker: the kernel log lines that are its reports.
struct Checker {
    /// The check's name.
    name: &'static str,
    /// What a report of it means, for the failure message.
    what: &'static str,
    /// Whether a kernel message (timestamp removed) is one of its reports.
    reports: fn(&str) -> bool,
}

/// The checkers, most specific first: a line counts for the first that claims it.
const CHECKERS: &[Checker] = &[
    Checker {
        name: "kasan",
        what: "KASAN found a bad memory access",
        reports: |m| m.contains("KASAN:"),
    },
    Checker {
        name: "ubsan",
        what: "UBSAN found undefined behaviour",
        reports: |m| m.contains("UBSAN:"),
    },
    Checker {
        name: "atomic-sleep",
        what: "something slept where it must not",
        reports: |m| {
            m.contains("sleeping function called from invalid context")
                || m.contains("BUG: scheduling while atomic")
                || m.contains("BUG: assuming atomic context")
                || m.contains("BUG: scheduling in a non-blocking section")
                || m.contains("BUG: workqueue leaked")
        },
    },
    Checker {
        name: "lockdep",
        what: "lockdep (or RCU lockdep) found a locking bug",
        reports: |m| {
            LOCKDEP_REPORTS.iter().any(|r| m.contains(r))
                || m.starts_with("INFO: possible")
                || m.starts_with("WARNING: possible")
        },
    },
    Checker {
        name: "debug-objects",
        what: "debugobjects found an object used in the wrong state",
        reports: |m| m.contains("ODEBUG:"),
    },
    Checker {
        name: "dma-api-debug",
        what: "DMA-API debugging found a misuse of the DMA API",
        reports: |m| m.contains("DMA-API:") && !DMA_API_INFO.iter().any(|info| m.contains(info)),
    },
    Checker {
        name: "warn-bug-oops",
        what: "the kernel warned, hit a BUG or oopsed",
        reports: |m| console_log::is_problem_message(m),
    },
];

/// Lockdep's and PROVE_RCU's report headlines other than the `possible …` ones.
const LOCKDEP_REPORTS: &[&str] = &[
    "WARNING: inconsistent lock state",
    "WARNING: suspicious RCU usage",
    "WARNING: bad unlock balance detected",
    "WARNING: held lock freed",
    "WARNING: lock held when returning to user space",
    "WARNING: Nested lock was not taken",
    "WARNING: bad contention detected",
    "WARNING: chain_key collision",
    "-unsafe lock order detected",
    "still has locks held!",
    "BUG: MAX_",
    "BUG: key ",
    "BUG: looking up invalid subclass",
    "INFO: trying to register non-static key",
];

/// DMA-API debugging's own informational lines (`kernel/dma/debug.c`), which are not
/// complaints: its start-up and the growth of its entry pool.
const DMA_API_INFO: &[&str] = &[
    "preallocated",
    "debugging enabled by kernel config",
    "dma_debug_entry pool grown to",
];

/// The teardown command that makes kmemleak scan and prints what it found (`guest_plan.rs`).
pub const KMEMLEAK_STEP: &str = "kmemleak-scan";

/// kmemleak's first line for each suspected leak.
const KMEMLEAK_OBJECT: &str = "unreferenced object";

/// The named checks of a debug-kernel boot: one per checker over the kernel messages of the
/// whole console, and `kmemleak` over the scan's output.
pub fn checks(lines: &[String], transcript: &Transcript) -> Vec<Check> {
    let mut found: Vec<Vec<&str>> = vec![Vec::new(); CHECKERS.len()];
    for message in lines.iter().filter_map(|l| console_log::kernel_message(l)) {
        if let Some(index) = CHECKERS.iter().position(|c| (c.reports)(message)) {
            if let Some(reports) = found.get_mut(index) {
                if !reports.contains(&message) {
                    reports.push(message);
                }
            }
        }
    }
    let mut checks: Vec<Check> = CHECKERS
        .iter()
        .zip(&found)
        .map(|(checker, reports)| {
            let name = format!("debug-kernel: {}", checker.name);
            if reports.is_empty() {
                return Check::pass(name);
            }
            let shown: Vec<&str> = reports.iter().take(10).copied().collect();
            Check::fail(
                name,
                format!(
                    "{}: {} report line(s):\n{}",
                    checker.what,
                    reports.len(),
                    shown.join("\n")
                ),
            )
        })
        .collect();
    checks.push(kmemleak_check(transcript));
    checks
}

/// Fails on any object the scan printed, or when the scan did not run to the end.
fn kmemleak_check(transcript: &Transcript) -> Check {
    const NAME: &str = "debug-kernel: kmemleak";
    let Some(step) = transcript.step("teardown", KMEMLEAK_STEP) else {
        return Check::fail(NAME, "the kmemleak scan did not run");
    };
    let objects = step
        .lines
        .iter()
        .filter(|l| l.trim_start().starts_with(KMEMLEAK_OBJECT))
        .count();
    if objects > 0 {
        let shown: Vec<&str> = step.lines.iter().take(40).map(String::as_str).collect();
        return Check::fail(
            NAME,
            format!(
                "kmemleak reports {objects} unreferenced object(s):\n{}",
                shown.join("\n")
            ),
        );
    }
    match step.exit_code {
        Some(0) => Check::pass(NAME),
        Some(code) => Check::fail(
            NAME,
            format!(
                "the scan exited with status {code}:\n{}",
                step.lines.join("\n")
            ),
        ),
        None => Check::fail(NAME, "the scan never finished"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Verdict;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    fn verdicts(console: &str) -> Vec<(String, bool)> {
        let lines = lines(console);
        let transcript = Transcript::parse(&lines);
        checks(&lines, &transcript)
            .into_iter()
            .map(|c| (c.name, matches!(c.verdict, Verdict::Pass)))
            .collect()
    }

    fn failed(console: &str) -> Vec<String> {
        verdicts(console)
            .into_iter()
            .filter(|(_, pass)| !pass)
            .map(|(name, _)| name)
            .collect()
    }

    const CLEAN_SCAN: &str =
        "@@extmem begin teardown kmemleak-scan\n@@extmem end teardown kmemleak-scan rc=0\n";

    #[test]
    fn a_clean_boot_passes_every_named_check() {
        let console = format!(
            "[    0.500000] DMA-API: preallocated 65536 debug entries\n\
             [    0.500001] DMA-API: debugging enabled by kernel config\n\
             [   30.000000] DMA-API: dma_debug_entry pool grown to 131072 (200%)\n\
             [    1.000000] kmemleak: Kernel memory leak detector initialized (mem pool available: 15000)\n\
             {CLEAN_SCAN}"
        );
        let verdicts = verdicts(&console);
        assert_eq!(verdicts.len(), CHECKERS.len() + 1);
        assert!(verdicts.iter().all(|(_, pass)| *pass), "{verdicts:?}");
    }

    #[test]
    fn each_report_fails_its_own_check() {
        let cases = [
            (
                "BUG: KASAN: slab-use-after-free in extmem_bo_free+0x1/0x2",
                "kasan",
            ),
            ("UBSAN: shift-out-of-bounds in drivers/x.c:10:5", "ubsan"),
            (
                "BUG: sleeping function called from invalid context at mm/gup.c:1",
                "atomic-sleep",
            ),
            (
                "WARNING: possible circular locking dependency detected",
                "lockdep",
            ),
            ("WARNING: possible recursive locking detected", "lockdep"),
            ("WARNING: suspicious RCU usage", "lockdep"),
            (
                "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected",
                "lockdep",
            ),
            ("BUG: MAX_LOCKDEP_CHAINS too low!", "lockdep"),
            (
                "BUG: scheduling while atomic: vgpu/90/0x00000002",
                "atomic-sleep",
            ),
            (
                "INFO: possible irq lock inversion dependency detected",
                "lockdep",
            ),
            (
                "ODEBUG: free active (active state 0) object: 0000 object type: timer_list",
                "debug-objects",
            ),
            (
                "DMA-API: platform extmem-vgpu: device driver frees DMA memory with different size",
                "dma-api-debug",
            ),
            (
                "WARNING: CPU: 1 PID: 80 at kernel/x.c:3 f+0x1/0x2",
                "warn-bug-oops",
            ),
            (
                "Oops: general protection fault, probably for address",
                "warn-bug-oops",
            ),
        ];
        for (message, checker) in cases {
            let console = format!("[   12.000000] {message}\n{CLEAN_SCAN}");
            assert_eq!(
                failed(&console),
                [format!("debug-kernel: {checker}")],
                "{message}"
            );
        }
    }

    #[test]
    fn kmemleak_objects_fail_with_the_report() {
        let console = "@@extmem begin teardown kmemleak-scan\n\
             unreferenced object 0xffff888012345678 (size 64):\n  comm \"vgpu\", pid 90\n\
             @@extmem end teardown kmemleak-scan rc=0\n";
        let lines = lines(console);
        let check = kmemleak_check(&Transcript::parse(&lines));
        let reason = match check.verdict {
            Verdict::Fail(reason) => reason,
            _ => String::new(),
        };
        assert!(
            reason.starts_with("kmemleak reports 1 unreferenced object(s)"),
            "{reason}"
        );
        assert!(reason.contains("comm \"vgpu\""), "{reason}");
        assert_eq!(failed(""), ["debug-kernel: kmemleak"]);
        let unfinished = "@@extmem begin teardown kmemleak-scan\n";
        assert_eq!(failed(unfinished), ["debug-kernel: kmemleak"]);
    }

    #[test]
    fn reports_need_the_kernel_timestamp() {
        let console = format!("a program printed BUG: KASAN: and UBSAN: itself\n{CLEAN_SCAN}");
        assert!(failed(&console).is_empty());
    }
}
