//! Running host tools (apt-get, dpkg-deb, cargo, qemu, …) and turning their failures into
//! errors that name the command and carry its stderr.
//!
//! A tool whose output is captured says nothing while it runs, and a cargo build, a Miri run
//! or a guest boot takes minutes: [`Heartbeat`] prints a line with the elapsed time every
//! [`HEARTBEAT_INTERVAL`] until the tool is done, so the runner is never silent for long.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus, Output};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// How often a running tool is reported as still running.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// The longest label a heartbeat line shows: a QEMU or fuzz command line runs to hundreds of
/// characters, and its start is what tells one tool from another.
const HEARTBEAT_LABEL_CHARS: usize = 90;

/// A command that could not be started or did not exit 0.
#[derive(Debug)]
pub struct CommandError {
    /// The command line, for the message.
    pub command: String,
    /// What went wrong.
    pub failure: CommandFailure,
}

/// How a command failed.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started (usually: not installed).
    Spawn(io::Error),
    /// It ran and exited unsuccessfully.
    Exit {
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error (trimmed).
        stderr: String,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            CommandFailure::Spawn(err) => write!(f, "could not run `{}`: {err}", self.command),
            CommandFailure::Exit { status, stderr } if stderr.is_empty() => {
                write!(f, "`{}` failed ({status})", self.command)
            }
            CommandFailure::Exit { status, stderr } => {
                write!(
                    f,
                    "`{}` failed ({status}):\n{}",
                    self.command,
                    indent(stderr)
                )
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// The command line of `command`, quoted where needed, for messages.
pub fn describe(command: &Command) -> String {
    let mut line = quote(command.get_program());
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

/// `word` as a shell would need it: bare when it is plain, in single quotes otherwise.
pub fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `command` to completion, capturing stdout and stderr; fails unless it exits 0.
pub fn output(command: &mut Command) -> Result<Output, CommandError> {
    let result = capture(command);
    check(command, result)
}

/// [`Command::output`] (stdin is `/dev/null` unless the command sets it), with a [`Heartbeat`]
/// naming the command while it runs.
pub fn capture(command: &mut Command) -> io::Result<Output> {
    let _heartbeat = Heartbeat::start(describe_briefly(command));
    command.output()
}

/// [`describe`] with the program by its file name only: cargo runs as
/// `/root/.rustup/toolchains/<toolchain>/bin/cargo`, which would fill a heartbeat line
/// before the arguments that tell one build from another.
pub fn describe_briefly(command: &Command) -> String {
    let program = Path::new(command.get_program());
    let mut line = quote(program.file_name().unwrap_or(program.as_os_str()));
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

/// Like [`output`], returning stdout as text.
pub fn stdout_text(command: &mut Command) -> Result<String, CommandError> {
    output(command).map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(command: &Command, result: io::Result<Output>) -> Result<Output, CommandError> {
    match result {
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => Err(CommandError {
            command: describe(command),
            failure: CommandFailure::Exit {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            },
        }),
        Err(err) => Err(CommandError {
            command: describe(command),
            failure: CommandFailure::Spawn(err),
        }),
    }
}

/// Whether `program` can be found on `PATH` (or is an existing path itself).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Indents every line of `text` by four spaces (for nesting output in messages and reports).
pub fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// While alive, prints `  … still running after <elapsed>: <label>` on stdout every
/// [`HEARTBEAT_INTERVAL`]; dropping it stops the lines at once.
pub struct Heartbeat {
    /// Dropped to stop the thread: its `recv_timeout` then returns `Disconnected`.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts the lines for a tool described by `label` (shortened to its start if long).
    pub fn start(label: impl Into<String>) -> Self {
        Self::start_with(label.into(), HEARTBEAT_INTERVAL, |line| println!("{line}"))
    }

    /// [`Heartbeat::start`] with the interval and the line's destination chosen (tests).
    fn start_with(
        label: String,
        interval: Duration,
        mut emit: impl FnMut(&str) + Send + 'static,
    ) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let label = shorten(&label, HEARTBEAT_LABEL_CHARS);
        let started = Instant::now();
        let spawned = thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let mut schedule = BeatSchedule::new(interval);
                loop {
                    let wait = schedule.until_next(started.elapsed());
                    match stopped.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {
                            let elapsed = started.elapsed();
                            if schedule.due(elapsed) {
                                emit(&heartbeat_line(&label, elapsed));
                            }
                        }
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
            });
        // A thread that cannot be started costs only the progress lines, never the command:
        // the tool still runs and is judged as before.
        Self {
            stop: Some(stop),
            thread: spawned.ok(),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread (stdout closed) has nothing left to stop.
            let _ended = thread.join();
        }
    }
}

/// When the heartbeat lines are due: at every multiple of the interval since the start. A
/// late wake-up (a loaded machine) gives one line and moves on to the next multiple, never a
/// burst of lines that catch up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BeatSchedule {
    interval: Duration,
    /// Elapsed time at which the next line is due.
    next: Duration,
}

impl BeatSchedule {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            next: interval,
        }
    }

    /// How long to wait, `elapsed` after the start, until the next line is due.
    fn until_next(&self, elapsed: Duration) -> Duration {
        self.next.saturating_sub(elapsed)
    }

    /// Whether a line is due at `elapsed`; if so, the next one is scheduled.
    fn due(&mut self, elapsed: Duration) -> bool {
        if elapsed < self.next || self.interval.is_zero() {
            return false;
        }
        let beats = elapsed.as_nanos() / self.interval.as_nanos();
        let next = beats
            .checked_add(1)
            .and_then(|n| u32::try_from(n).ok())
            .and_then(|n| self.interval.checked_mul(n));
        self.next = next.unwrap_or(Duration::MAX);
        true
    }
}

/// `  … still running after 1 min 30 s: cargo test --workspace`.
fn heartbeat_line(label: &str, elapsed: Duration) -> String {
    let total = elapsed.as_secs();
    let (minutes, seconds) = (total / 60, total % 60);
    let time = if minutes == 0 {
        format!("{seconds} s")
    } else {
        format!("{minutes} min {seconds} s")
    };
    format!("  … still running after {time}: {label}")
}

/// `text` cut to its first `max` characters, with `…` when something was cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or(text)),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn describe_quotes_only_what_needs_it() {
        let mut command = Command::new("apt-get");
        command.args([
            "install",
            "-y",
            "linux-headers-6.12.95+deb12-amd64",
            "a b",
            "it's",
        ]);
        assert_eq!(
            describe(&command),
            r"apt-get install -y linux-headers-6.12.95+deb12-amd64 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn a_brief_description_names_the_program_by_its_file_name() {
        let mut command = Command::new("/root/.rustup/toolchains/1.95.0/bin/cargo");
        command.args(["build", "-p", "extmem-guest-tests"]);
        assert_eq!(
            describe_briefly(&command),
            "cargo build -p extmem-guest-tests"
        );
        assert_eq!(
            describe_briefly(&Command::new("qemu-system-x86_64")),
            "qemu-system-x86_64"
        );
    }

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = output(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .err()
            .map(|e| e.to_string());
        let text = err.unwrap_or_default();
        assert!(
            text.starts_with("`sh -c 'echo oops >&2; exit 3'` failed"),
            "{text}"
        );
        assert!(text.ends_with("\n    oops"), "{text}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_failure() {
        let err = output(&mut Command::new("extmem-no-such-program"));
        assert!(matches!(
            err,
            Err(CommandError {
                failure: CommandFailure::Spawn(_),
                ..
            })
        ));
        assert!(!on_path("extmem-no-such-program"));
        assert!(on_path("sh"));
    }

    #[test]
    fn beats_fall_on_multiples_of_the_interval_without_bursts() {
        let mut schedule = BeatSchedule::new(Duration::from_secs(30));
        assert_eq!(schedule.until_next(Duration::ZERO), Duration::from_secs(30));
        assert!(!schedule.due(Duration::from_secs(29)));
        assert!(schedule.due(Duration::from_secs(30)));
        assert_eq!(
            schedule.until_next(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert!(!schedule.due(Duration::from_secs(59)));
        // Woken late, long past two due times: one line, then the next multiple.
        assert!(schedule.due(Duration::from_secs(125)));
        assert!(!schedule.due(Duration::from_secs(126)));
        assert_eq!(
            schedule.until_next(Duration::from_secs(125)),
            Duration::from_secs(25)
        );
        let mut never = BeatSchedule::new(Duration::ZERO);
        assert!(!never.due(Duration::from_secs(1)));
    }

    #[test]
    fn heartbeat_lines_name_the_elapsed_time_and_the_command() {
        assert_eq!(
            heartbeat_line("cargo test", Duration::from_millis(30_400)),
            "  … still running after 30 s: cargo test"
        );
        assert_eq!(
            heartbeat_line("cargo miri test", Duration::from_secs(150)),
            "  … still running after 2 min 30 s: cargo miri test"
        );
        assert_eq!(
            shorten("qemu-system-x86_64 -m 2G", 18),
            "qemu-system-x86_64…"
        );
        assert_eq!(shorten("cargo", 18), "cargo");
        assert_eq!(shorten("ééé", 2), "éé…");
    }

    #[test]
    fn a_heartbeat_beats_while_alive_and_stops_when_dropped() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let started = Instant::now();
        let heartbeat =
            Heartbeat::start_with("sleep 1".into(), Duration::from_millis(40), move |line| {
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line.to_owned());
                }
            });
        thread::sleep(Duration::from_millis(300));
        drop(heartbeat);
        let due = started.elapsed().as_millis() / 40;
        let seen = lines.lock().map(|l| l.clone()).unwrap_or_default();
        // At most one per interval that passed (a loaded machine may oversleep the 300 ms,
        // so count them), at least one; it may also wake the thread late and skip some.
        let due = usize::try_from(due).unwrap_or(usize::MAX);
        assert!((1..=due).contains(&seen.len()), "{seen:?}, {due} due");
        assert!(
            seen.iter()
                .all(|l| l.starts_with("  … still running after 0 s: sleep 1")),
            "{seen:?}"
        );
        thread::sleep(Duration::from_millis(100));
        let after = lines.lock().map(|l| l.len()).unwrap_or_default();
        assert_eq!(after, seen.len(), "lines after the drop");
    }

    #[test]
    fn dropping_a_heartbeat_does_not_wait_for_its_interval() {
        let started = Instant::now();
        let lines = Arc::new(Mutex::new(0_u32));
        let sink = Arc::clone(&lines);
        let heartbeat =
            Heartbeat::start_with("cargo build".into(), Duration::from_secs(3600), move |_| {
                if let Ok(mut count) = sink.lock() {
                    *count += 1;
                }
            });
        drop(heartbeat);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(lines.lock().map(|c| *c).unwrap_or(u32::MAX), 0);
    }
}
