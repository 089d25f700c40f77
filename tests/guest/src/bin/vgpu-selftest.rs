//! vgpu-selftest: the in-kernel self-tests of extmem-kcore, as the module ran them at load
//! (`insmod extmem_vgpu.ko selftest=1`), read back from the kernel log.
//!
//! The module prints each KTAP line of `extmem_kcore_selftest` with the prefix
//! `extmem_vgpu: selftest: ` (kernel-shim/kmod/extmem_vgpu_drv.c). This program reads
//! `/dev/kmsg`, picks those lines and prints one KTAP document: the core's report nested as
//! the subtests of result 1, and a result 2 for the glue's own check that the self-test gave
//! back every page-table page.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

/// The module's prefix for self-test lines (`pr_fmt` plus the self-test's own).
const PREFIX: &str = "extmem_vgpu: selftest: ";
/// What the module prints when the self-test left tables allocated.
const LEAK_MARK: &str = "page-table page(s) left allocated";
/// `O_NONBLOCK` on x86_64 (and every architecture but alpha, mips, parisc, sparc): reading
/// `/dev/kmsg` then ends with `EAGAIN` instead of waiting for new messages.
const O_NONBLOCK: i32 = 0o4000;
/// What the module prints after a failed self-test.
const FAILED_MARK: &str = "test(s) failed";

fn main() -> ExitCode {
    let messages = match kernel_messages() {
        Ok(messages) => messages,
        Err(err) => {
            println!("KTAP version 1\n1..1\nnot ok 1 reading the kernel log");
            println!("# expected: /dev/kmsg readable\n# seen: {err}");
            return ExitCode::FAILURE;
        }
    };
    let lines = selftest_lines(&messages);
    let report = last_report(&lines);

    println!("KTAP version 1");
    println!("1..2");
    let mut failed = false;
    match report {
        Some(report) if !report.is_empty() => {
            for line in &report {
                println!("    {line}");
            }
            let any_failed = report.iter().any(|l| l.trim_start().starts_with("not ok"))
                || lines.iter().any(|l| l.contains(FAILED_MARK));
            if any_failed {
                failed = true;
                println!("not ok 1 extmem-kcore self-tests in the kernel");
            } else {
                println!("ok 1 extmem-kcore self-tests in the kernel");
            }
        }
        _ => {
            failed = true;
            println!("not ok 1 extmem-kcore self-tests in the kernel");
            println!(
                "# expected: KTAP lines prefixed {PREFIX:?} in the kernel log (insmod selftest=1)"
            );
            println!(
                "# seen: {} such lines, none starting a KTAP document",
                lines.len()
            );
        }
    }
    match lines.iter().find(|l| l.contains(LEAK_MARK)) {
        Some(leak) => {
            failed = true;
            println!("not ok 2 the self-test gave back every page-table page");
            println!("# expected: PT_PAGES 0 after the self-test\n# seen: {leak}");
        }
        None => println!("ok 2 the self-test gave back every page-table page"),
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Every message in the kernel's ring buffer, oldest first (`/dev/kmsg` records are
/// `prio,seq,usec,flags;text`, one per read, continuation lines indented after them).
fn kernel_messages() -> io::Result<Vec<String>> {
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut messages = Vec::new();
    let mut record = vec![0_u8; 8192];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(record.get(..n).unwrap_or_default());
                let first = text.lines().next().unwrap_or_default();
                if let Some((_, message)) = first.split_once(';') {
                    messages.push(message.to_owned());
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            // A record overwritten while reading: skip to the next one.
            Err(err) if err.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(messages)
}

/// The self-test lines, prefix removed.
fn selftest_lines(messages: &[String]) -> Vec<&str> {
    messages
        .iter()
        .filter_map(|m| m.strip_prefix(PREFIX))
        .collect()
}

/// The last KTAP document among `lines` (from its version line on), without the module's
/// own summary lines.
fn last_report<'a>(lines: &[&'a str]) -> Option<Vec<&'a str>> {
    let start = lines
        .iter()
        .rposition(|l| l.trim_start() == "KTAP version 1" && !l.starts_with(' '))?;
    Some(
        lines
            .get(start..)?
            .iter()
            .filter(|l| !l.contains(FAILED_MARK) && !l.contains(LEAK_MARK))
            .copied()
            .collect(),
    )
}
