//! The process's open file descriptors, from `/proc/self/fd`, to prove a program closed
//! everything it opened.

use std::collections::BTreeMap;
use std::fs;
use std::io;

use std::process::ExitCode;

use crate::ktap::{CheckResult, Failure, KtapWriter};

/// Open descriptors and what each refers to (`readlink /proc/self/fd/N`).
///
/// The directory handle used for listing shows up in its own listing; it is left out by
/// comparing two snapshots taken the same way, so it cancels.
pub fn snapshot() -> io::Result<BTreeMap<u32, String>> {
    let mut open = BTreeMap::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // The listing's own fd is gone by the time it is read back; that is not an error.
        if let Ok(target) = fs::read_link(entry.path()) {
            open.insert(fd, target.to_string_lossy().into_owned());
        }
    }
    Ok(open)
}

/// Descriptors in `after` that were not open (to the same thing) in `before`.
pub fn leaked(before: &BTreeMap<u32, String>, after: &BTreeMap<u32, String>) -> Vec<String> {
    after
        .iter()
        .filter(|(fd, target)| before.get(fd) != Some(target))
        .map(|(fd, target)| format!("fd {fd} -> {target}"))
        .collect()
}

/// The check a guest program ends with: every descriptor opened since `before` (a
/// [`snapshot`] taken at start) is closed again.
pub fn closed_again(before: io::Result<BTreeMap<u32, String>>) -> CheckResult<()> {
    let before = before.map_err(|e| Failure::op("listing /proc/self/fd", e))?;
    let after = snapshot().map_err(|e| Failure::op("listing /proc/self/fd", e))?;
    let leaks = leaked(&before, &after);
    if leaks.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            format!("the {} descriptors open at start", before.len()),
            format!("still open: {}", leaks.join(", ")),
        ))
    }
}

/// Runs a KTAP program of `planned` results: `run` writes all but the last, and the last
/// is [`closed_again`] against the descriptors open before `run`.
pub fn ktap_program(planned: usize, run: impl FnOnce(&mut KtapWriter<io::Stdout>)) -> ExitCode {
    let before = snapshot();
    let mut ktap = KtapWriter::stdout(planned);
    run(&mut ktap);
    ktap.check(
        "every descriptor the program opened is closed again",
        || closed_again(before),
    );
    ktap.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::AsRawFd;

    // Other tests run in parallel threads and open descriptors of their own, so this test only
    // asserts about the descriptor it controls.
    #[test]
    fn a_file_left_open_is_reported_until_it_is_closed() -> io::Result<()> {
        let before = snapshot()?;
        let kept = fs::File::open("/proc/self/stat")?;
        let kept_fd = u32::try_from(kept.as_raw_fd()).map_err(io::Error::other)?;
        let expected = format!("fd {kept_fd} -> ");
        let leaks = leaked(&before, &snapshot()?);
        assert!(
            leaks
                .iter()
                .any(|l| l.starts_with(&expected) && l.ends_with("/stat")),
            "{leaks:?}"
        );
        drop(kept);
        let leaks = leaked(&before, &snapshot()?);
        assert!(!leaks.iter().any(|l| l.ends_with("/stat")), "{leaks:?}");
        Ok(())
    }
}
