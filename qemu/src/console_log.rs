//! Reading the guest's serial console: the steps the init script framed with `@@extmem`
//! marker lines (see `guest_init.sh`), and kernel messages that mean the kernel misbehaved.

/// The marker prefix the init script prints.
const MARKER: &str = "@@extmem ";

/// Name of the init script's own module-loading step.
pub const MODULES_STEP: &str = "kernel-modules";
/// Name of the init script's `dmesg` dump.
pub const KERNEL_LOG_STEP: &str = "kernel-log";

/// Kernel messages that fail a run wherever they appear: oopses, BUGs, WARN splats, panics,
/// lockdep reports and sanitizer reports.
const KERNEL_PROBLEMS: &[&str] = &[
    "BUG:",
    "kernel BUG at",
    "Oops",
    "WARNING:",
    "Kernel panic",
    "general protection fault",
    "possible circular locking",
    "INFO: possible",
    "UBSAN:",
    "KASAN:",
];

/// One step the guest ran, with the lines it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutput {
    /// `setup`, `ktap`, `plain`, `teardown` or `dmesg`.
    pub kind: String,
    /// The step's name.
    pub name: String,
    /// Its output lines.
    pub lines: Vec<String>,
    /// Its exit code, or `None` when no end marker came (it crashed or the guest stopped).
    pub exit_code: Option<i32>,
}

/// The console transcript split into steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    /// Steps in the order they began.
    pub steps: Vec<StepOutput>,
    /// The message of an `@@extmem fatal` line.
    pub fatal: Option<String>,
    /// Whether the init script reached its end (`@@extmem done`).
    pub done: bool,
}

impl Transcript {
    /// Splits console `lines` at the marker lines.
    pub fn parse(lines: &[String]) -> Self {
        let mut transcript = Self::default();
        let mut open: Option<StepOutput> = None;
        for line in lines {
            let Some(marker) = line
                .find(MARKER)
                .and_then(|at| line.get(at + MARKER.len()..))
            else {
                if let Some(step) = open.as_mut() {
                    step.lines.push(line.clone());
                }
                continue;
            };
            let words: Vec<&str> = marker.split_whitespace().collect();
            match words.as_slice() {
                ["begin", kind, name] => {
                    if let Some(unfinished) = open.take() {
                        transcript.steps.push(unfinished);
                    }
                    open = Some(StepOutput {
                        kind: (*kind).to_owned(),
                        name: (*name).to_owned(),
                        lines: Vec::new(),
                        exit_code: None,
                    });
                }
                ["end", kind, name, rc] => {
                    let code = rc.strip_prefix("rc=").and_then(|c| c.parse().ok());
                    match open.take() {
                        Some(mut step) if step.kind == *kind && step.name == *name => {
                            step.exit_code = code;
                            transcript.steps.push(step);
                        }
                        other => open = other,
                    }
                }
                ["done"] => transcript.done = true,
                ["fatal", ..] => {
                    let message = marker.trim_start().strip_prefix("fatal").unwrap_or("");
                    transcript.fatal = Some(message.trim().to_owned());
                }
                _ => {
                    if let Some(step) = open.as_mut() {
                        step.lines.push(line.clone());
                    }
                }
            }
        }
        if let Some(unfinished) = open {
            transcript.steps.push(unfinished);
        }
        transcript
    }

    /// The step of `kind` named `name`, if it began.
    pub fn step(&self, kind: &str, name: &str) -> Option<&StepOutput> {
        self.steps.iter().find(|s| s.kind == kind && s.name == name)
    }
}

/// Kernel messages among `lines` that mean trouble, each once, in order of appearance.
///
/// Only lines carrying a kernel timestamp (`[    3.141592] `) are looked at, so a program that
/// prints "WARNING:" itself does not fail the run; the guest kernel is booted with
/// `printk.time=1` to make sure every kernel line has one.
pub fn kernel_problems<'a>(lines: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in lines {
        let Some(message) = kernel_message(line).filter(|_| is_kernel_problem(line)) else {
            continue;
        };
        if !found.iter().any(|f| f == message) {
            found.push(message.to_owned());
        }
    }
    found
}

/// Whether `line` is a kernel message that means trouble (see [`kernel_problems`]).
pub fn is_kernel_problem(line: &str) -> bool {
    kernel_message(line).is_some_and(is_problem_message)
}

/// Whether a kernel message (the part after its timestamp) means trouble.
pub fn is_problem_message(message: &str) -> bool {
    KERNEL_PROBLEMS.iter().any(|p| message.contains(p))
}

/// The message part of a line holding a kernel timestamp `[ seconds.micros]`, wherever in the
/// line it starts (console output of user space and kernel can share a line).
pub fn kernel_message(line: &str) -> Option<&str> {
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let after = rest.get(open + 1..)?;
        if let Some(close) = after.find(']') {
            let stamp = after.get(..close)?.trim();
            let is_stamp = stamp.contains('.')
                && !stamp.starts_with('.')
                && stamp.chars().all(|c| c.is_ascii_digit() || c == '.');
            if is_stamp {
                return after.get(close + 1..).map(str::trim);
            }
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn steps_are_split_at_markers() {
        let t = Transcript::parse(&lines(
            "SeaBIOS noise\n\x1b[2J@@extmem begin setup kernel-modules\n\
             @@extmem end setup kernel-modules rc=0\n@@extmem begin ktap guest-env\nKTAP version 1\n\
             1..1\nok 1 a\n@@extmem end ktap guest-env rc=0\n@@extmem begin dmesg kernel-log\n\
             [    0.000000] Linux version 6.12\n@@extmem end dmesg kernel-log rc=0\n@@extmem done\n",
        ));
        assert!(t.done);
        assert_eq!(t.fatal, None);
        assert_eq!(t.steps.len(), 3);
        assert_eq!(t.steps[0].exit_code, Some(0));
        let env = t.step("ktap", "guest-env");
        assert_eq!(
            env.map(|s| s.lines.clone()),
            Some(lines("KTAP version 1\n1..1\nok 1 a"))
        );
        assert_eq!(
            t.step("dmesg", KERNEL_LOG_STEP).map(|s| s.lines.len()),
            Some(1)
        );
    }

    #[test]
    fn a_step_without_end_marker_has_no_exit_code() {
        let t = Transcript::parse(&lines(
            "@@extmem begin ktap guest-env\nKTAP version 1\n1..3\nok 1 a\n[ 5.1] Kernel panic - not syncing\n",
        ));
        assert!(!t.done);
        assert_eq!(t.steps.len(), 1);
        assert_eq!(t.steps[0].exit_code, None);
        assert_eq!(t.steps[0].lines.len(), 4);
    }

    #[test]
    fn fatal_messages_and_nonzero_exit_codes_are_kept() {
        let t = Transcript::parse(&lines(
            "@@extmem begin setup kernel-modules\ninsmod vgem.ko failed\n\
             @@extmem end setup kernel-modules rc=1\n@@extmem fatal mounting the host root failed\n",
        ));
        assert_eq!(t.steps[0].exit_code, Some(1));
        assert_eq!(t.steps[0].lines, ["insmod vgem.ko failed"]);
        assert_eq!(t.fatal.as_deref(), Some("mounting the host root failed"));
    }

    #[test]
    fn kernel_problems_need_a_timestamp_and_are_reported_once() {
        let console = lines(
            "[    1.000000] virtio_gpu: features: -virgl\n\
             [    2.500000] WARNING: CPU: 0 PID: 1 at drivers/gpu/drm/x.c:10 f+0x1/0x2\n\
             WARNING: printed by a program, not the kernel\n\
             ok 3 import[    3.000000] BUG: kernel NULL pointer dereference, address: 0\n\
             [    2.500000] WARNING: CPU: 0 PID: 1 at drivers/gpu/drm/x.c:10 f+0x1/0x2\n\
             [    4.000000] ======================================================\n\
             [    4.000001] WARNING: possible circular locking dependency detected\n\
             [    9.000000] Kernel panic - not syncing: Fatal exception\n\
             [    1.000000] Booting paravirtualized kernel on TCG\n",
        );
        assert_eq!(
            kernel_problems(&console),
            [
                "WARNING: CPU: 0 PID: 1 at drivers/gpu/drm/x.c:10 f+0x1/0x2",
                "BUG: kernel NULL pointer dereference, address: 0",
                "WARNING: possible circular locking dependency detected",
                "Kernel panic - not syncing: Fatal exception",
            ]
        );
    }

    #[test]
    fn every_listed_problem_is_caught() {
        for problem in KERNEL_PROBLEMS {
            let line = format!("[   12.345678] {problem} something");
            assert_eq!(kernel_problems(&[line]).len(), 1, "{problem}");
        }
        assert!(kernel_problems(&["[a.b] BUG: x".to_owned()]).is_empty());
    }
}
