//! The kernel log read from inside the guest (`/dev/kmsg`), to check that what a program did
//! left no oops, BUG or WARN splat behind.
//!
//! The runner scans the whole console for the same messages; a program checking for itself
//! ties a splat to the check that caused it, and fails that check rather than the boot.

use std::io;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::ktap::{io_op, CheckResult, Failure};

/// Messages that mean the kernel misbehaved (the runner's `console_log` list, minus the
/// ones only a debug kernel prints).
const PROBLEMS: &[&str] = &[
    "BUG:",
    "kernel BUG at",
    "Oops",
    "WARNING:",
    "general protection fault",
    "UBSAN:",
    "KASAN:",
];

/// One record of `/dev/kmsg`: its sequence number and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's sequence number.
    pub seq: u64,
    /// The message.
    pub text: String,
}

/// Every record the kernel still holds, oldest first.
pub fn records() -> io::Result<Vec<Record>> {
    // Non-blocking, so the last read ends with EAGAIN instead of waiting for new messages.
    let kmsg = rustix::fs::open(
        "/dev/kmsg",
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    // One read returns one record; the reader must offer room for the longest (8 KiB).
    let mut buffer = vec![0_u8; 8192];
    loop {
        match rustix::io::read(&kmsg, &mut buffer) {
            Ok(0) | Err(Errno::AGAIN) => break,
            Ok(n) => {
                let raw = buffer.get(..n).unwrap_or_default();
                if let Some(record) = parse(&String::from_utf8_lossy(raw)) {
                    out.push(record);
                }
            }
            // Records overwritten while reading: the next read goes on from the oldest left.
            Err(Errno::PIPE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// A `/dev/kmsg` record: `prio,seq,usec,flags[,...];text`, continuation lines after it.
fn parse(raw: &str) -> Option<Record> {
    let (header, text) = raw.split_once(';')?;
    let seq = header.split(',').nth(1)?.parse().ok()?;
    let text = text.lines().next().unwrap_or("").to_owned();
    Some(Record { seq, text })
}

/// The newest sequence number (0 when the log is empty): the mark to look for problems after.
pub fn mark() -> io::Result<u64> {
    Ok(records()?.last().map_or(0, |r| r.seq))
}

/// Records after `mark` that report a kernel problem.
pub fn problems_since(mark: u64) -> io::Result<Vec<String>> {
    Ok(records()?
        .into_iter()
        .filter(|r| r.seq > mark && is_problem(&r.text))
        .map(|r| r.text)
        .collect())
}

/// The check a program ends with: no kernel problem since `mark` (a [`mark`] taken at
/// the start).
pub fn clean_since(mark: io::Result<u64>) -> CheckResult<()> {
    let mark = io_op("reading /dev/kmsg", mark)?;
    let problems = io_op("reading /dev/kmsg", problems_since(mark))?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::new("no kernel problem", problems.join(" | ")))
    }
}

fn is_problem(text: &str) -> bool {
    PROBLEMS.iter().any(|p| text.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_problems_are_recognised() {
        let record = parse("4,1234,5678901,-;WARNING: CPU: 0 PID: 1 at x.c:1\n SUBSYSTEM=drm\n");
        assert_eq!(
            record,
            Some(Record {
                seq: 1234,
                text: "WARNING: CPU: 0 PID: 1 at x.c:1".to_owned()
            })
        );
        assert!(is_problem("BUG: kernel NULL pointer dereference"));
        assert!(!is_problem("[drm] Initialized extmem-vgpu"));
        assert_eq!(parse("no header"), None);
    }
}
