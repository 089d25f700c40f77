//! A guest program re-running itself as a child process (`<program> <mode> [args]`) for the
//! checks that need another process, and the line protocol the child answers in.
//!
//! The child prints one line per check on stdout: `ok`, or `fail<TAB>expected<TAB>seen`;
//! any other line is left to the parent (statistics, `ready`). The parent gives the child a
//! time limit: a child still running after it is killed, and that is a failure (a hang),
//! never a stuck suite.

use std::io::{BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::ktap::{io_op, CheckResult, Failure};

/// Prints `result` as one protocol line on stdout.
pub fn report(result: &CheckResult<()>) {
    match result {
        Ok(()) => println!("ok"),
        Err(f) => println!(
            "fail\t{}\t{}",
            f.expected.replace(['\t', '\n'], " "),
            f.seen.replace(['\t', '\n'], " ")
        ),
    }
}

/// The check result one protocol line carries.
pub fn parse_line(line: &str) -> CheckResult<()> {
    let mut fields = line.split('\t');
    match (fields.next(), fields.next(), fields.next()) {
        (Some("ok"), _, _) => Ok(()),
        (Some("fail"), Some(expected), Some(seen)) => Err(Failure::new(expected, seen)),
        _ => Err(Failure::new(
            "ok or fail<TAB>expected<TAB>seen",
            line.to_owned(),
        )),
    }
}

/// Whether a stdout line of the child is a protocol line (`ok` or `fail...`).
pub fn is_result_line(line: &str) -> bool {
    line == "ok" || line.starts_with("fail\t")
}

/// How a child run ended.
#[derive(Debug)]
pub struct ChildRun {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout, by line.
    pub lines: Vec<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

impl ChildRun {
    /// The child's verdict: its result lines all `ok` (at least one), and exit status 0.
    pub fn verdict(&self) -> CheckResult<()> {
        let mut results = self.lines.iter().filter(|l| is_result_line(l)).peekable();
        if results.peek().is_none() {
            return Err(Failure::new(
                "a result line from the child",
                format!("none; it ended with {:?}", self.status),
            ));
        }
        results.try_for_each(|l| parse_line(l))?;
        if self.status.success() {
            Ok(())
        } else {
            Err(Failure::new("exit status 0", format!("{:?}", self.status)))
        }
    }

    /// The lines that are not results (statistics and the like).
    pub fn notes(&self) -> impl Iterator<Item = &String> {
        self.lines.iter().filter(|l| !is_result_line(l))
    }
}

/// Starts this program with `args` and `stdin`, its stdout piped to the caller and its
/// stderr shared; returns the child, its stdout and the command line (for messages).
pub fn spawn_self(args: &[&str], stdin: Stdio) -> CheckResult<(Child, ChildStdout, String)> {
    let exe = io_op("locating /proc/self/exe", std::env::current_exe())?;
    let what = format!("{} {}", exe.display(), args.join(" "));
    let mut child = io_op(
        format!("spawning {what}"),
        Command::new(&exe)
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn(),
    )?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Failure::new("the child's stdout", "none"))?;
    Ok((child, stdout, what))
}

/// Runs this program with `args` to completion, killing it (and failing) after `limit`.
pub fn run_self(args: &[&str], limit: Duration) -> CheckResult<ChildRun> {
    let started = Instant::now();
    let (mut child, stdout, what) = spawn_self(args, Stdio::null())?;
    // Read on a thread so a chatty child never blocks on a full pipe while we wait.
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut text);
        text
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::new(
                    format!("{what} ends within {} s", limit.as_secs()),
                    "it was still running (a hang) and was killed",
                ));
            }
            Err(err) => return Err(Failure::op(format!("waiting for {what}"), err)),
        }
    };
    let text = reader
        .join()
        .map_err(|_| Failure::new("the stdout reader thread ends", "it panicked"))?;
    Ok(ChildRun {
        status,
        lines: text.lines().map(str::to_owned).collect(),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse_back() {
        assert_eq!(parse_line("ok"), Ok(()));
        assert_eq!(
            parse_line("fail\tbytes 1\tbytes 2"),
            Err(Failure::new("bytes 1", "bytes 2"))
        );
        assert!(parse_line("ready").is_err());
        assert!(is_result_line("fail\ta\tb") && is_result_line("ok"));
        assert!(!is_result_line("EXEC: 3 calls"));
    }

    #[test]
    fn a_child_runs_to_its_end_within_the_limit() {
        // This test binary, run with a filter that matches no test, exits at once.
        let run = run_self(&["--exact", "no-such-test"], Duration::from_secs(30));
        assert!(run.is_ok_and(|r| r.status.success()));
    }
}
