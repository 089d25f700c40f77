//! Booting the guest in QEMU and collecting its serial console, with a time limit.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, LineWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::guest_arch::GuestArch;
use crate::host_command;

/// How QEMU executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation; works everywhere (the default).
    Tcg,
    /// Hardware virtualization through `/dev/kvm` (opt-in).
    Kvm,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The guest's architecture and page size.
    pub arch: GuestArch,
    /// The root the guest's programs run in, when it is not the host's (the arm64 root): it is
    /// shared as `guestroot` beside the host's.
    pub guest_root: Option<PathBuf>,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// TCG or KVM.
    pub accel: Accel,
    /// The whole run is killed after this long.
    pub timeout: Duration,
    /// Where the console transcript is written as it arrives.
    pub console_log: PathBuf,
}

/// How the QEMU process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEnd {
    /// QEMU exited by itself (guest power-off, or reboot after a panic with `-no-reboot`).
    Exited(ExitStatus),
    /// The time limit ran out and QEMU was killed.
    TimedOut(Duration),
}

impl fmt::Display for BootEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "QEMU exited ({status})"),
            Self::TimedOut(limit) => write!(
                f,
                "the guest was still running after {} s and was killed",
                limit.as_secs()
            ),
        }
    }
}

/// A finished boot.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// Every console line, `\r` removed.
    pub lines: Vec<String>,
    /// How it ended.
    pub end: BootEnd,
    /// What QEMU printed on stderr.
    pub qemu_stderr: String,
    /// Wall-clock time from start to exit.
    pub elapsed: Duration,
}

/// Failures to run QEMU at all.
#[derive(Debug)]
pub enum BootError {
    /// `--kvm` without `/dev/kvm`.
    NoKvm,
    /// QEMU could not be started.
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        source: io::Error,
    },
    /// The console log could not be written.
    Log {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoKvm => write!(f, "--kvm was given but /dev/kvm does not exist"),
            Self::Spawn { command, source } => write!(f, "could not start `{command}`: {source}"),
            Self::Log { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for BootError {}

/// The QEMU command line for `spec`.
pub fn qemu_command(spec: &BootSpec) -> Command {
    let mut command = spec.arch.qemu_machine(spec.accel == Accel::Kvm);
    // No default NIC (its option ROM costs boot time), no VGA: only what the tests use.
    command.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]);
    command.arg("-kernel").arg(&spec.kernel);
    command.arg("-initrd").arg(&spec.initramfs);
    command.arg("-append").arg(spec.arch.kernel_command_line());
    command.args([
        "-device",
        "virtio-gpu-pci",
        // The host root, read-only: the guest runs host-built binaries from their host paths.
        // multidevs=remap keeps inode numbers unique across the host's mounts.
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]);
    if let Some(root) = &spec.guest_root {
        command.arg("-virtfs").arg(format!(
            "local,path={},mount_tag=guestroot,security_model=none,readonly=on,multidevs=remap",
            root.display()
        ));
    }
    command
}

/// Boots `spec`, passing each console line to `on_line` as it arrives, until QEMU exits or the
/// time limit runs out.
pub fn boot(spec: &BootSpec, on_line: &mut dyn FnMut(&str)) -> Result<BootOutcome, BootError> {
    if spec.accel == Accel::Kvm && !Path::new("/dev/kvm").exists() {
        return Err(BootError::NoKvm);
    }
    let log_error = |source| BootError::Log {
        path: spec.console_log.clone(),
        source,
    };
    let mut log = LineWriter::new(File::create(&spec.console_log).map_err(log_error)?);
    let mut command = qemu_command(spec);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    // The console goes to the log; the suite prints only each guest suite's start and end.
    let _heartbeat = host_command::Heartbeat::start(host_command::describe_briefly(&command));
    let mut child = command.spawn().map_err(|source| BootError::Spawn {
        command: host_command::describe(&command),
        source,
    })?;

    let (sender, receiver) = mpsc::channel::<String>();
    let stdout = child.stdout.take();
    let reader = thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut stdout = BufReader::new(stdout);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match stdout.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buffer);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let stderr = child.stderr.take();
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            // Lossy on purpose: QEMU's stderr is only shown to people.
            let mut bytes = Vec::new();
            if stderr.read_to_end(&mut bytes).is_ok() {
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        text
    });

    let deadline = started + spec.timeout;
    let mut lines = Vec::new();
    let mut take = |line: String, log: &mut LineWriter<File>| -> Result<(), BootError> {
        writeln!(log, "{line}").map_err(log_error)?;
        on_line(&line);
        lines.push(line);
        Ok(())
    };
    let mut timed_out = false;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(remaining) {
            Ok(line) => take(line, &mut log)?,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        stop(&mut child);
    }
    let status = child.wait();
    // The reader ends at EOF once QEMU is gone; collect what it still had.
    if reader.join().is_err() {
        writeln!(log, "(console reader thread panicked)").map_err(log_error)?;
    }
    for line in receiver.try_iter() {
        take(line, &mut log)?;
    }
    let qemu_stderr = stderr_reader.join().unwrap_or_default();
    let end = match (timed_out, status) {
        (false, Ok(status)) => BootEnd::Exited(status),
        _ => BootEnd::TimedOut(spec.timeout),
    };
    log.flush().map_err(log_error)?;
    Ok(BootOutcome {
        lines,
        end,
        qemu_stderr,
        elapsed: started.elapsed(),
    })
}

fn stop(child: &mut Child) {
    // Already gone is fine: it exited between the timeout and now.
    let _already_exited = child.kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_boots_the_kernel_with_the_host_root_and_virtio_gpu() {
        let spec = BootSpec {
            arch: GuestArch::X86_64,
            guest_root: None,
            kernel: PathBuf::from("/c/vmlinuz"),
            initramfs: PathBuf::from("/t/initramfs.cpio"),
            accel: Accel::Tcg,
            timeout: Duration::from_secs(1),
            console_log: PathBuf::from("/t/console.log"),
        };
        let has_all = |spec: &BootSpec, parts: &[&str]| {
            let line = host_command::describe(&qemu_command(spec));
            for part in parts {
                assert!(line.contains(part), "{part} missing from {line}");
            }
            line
        };
        let line = has_all(
            &spec,
            &[
                "qemu-system-x86_64 -machine q35",
                "-accel tcg -cpu max",
                "-kernel /c/vmlinuz -initrd /t/initramfs.cpio",
                "-no-reboot",
                "-device virtio-gpu-pci",
                "mount_tag=hostroot",
                "readonly=on",
                "'console=ttyS0 panic=-1",
            ],
        );
        assert!(!line.contains("guestroot"), "{line}");
        let kvm = BootSpec {
            accel: Accel::Kvm,
            ..spec.clone()
        };
        assert!(host_command::describe(&qemu_command(&kvm)).contains("-accel kvm -cpu host"));
        let arm64 = BootSpec {
            arch: GuestArch::Arm64,
            guest_root: Some(PathBuf::from("/c/arm64/root-1")),
            ..spec
        };
        has_all(
            &arm64,
            &[
                "qemu-system-aarch64 -machine virt",
                "'console=ttyAMA0 panic=-1",
                "mount_tag=hostroot",
                "local,path=/c/arm64/root-1,mount_tag=guestroot",
            ],
        );
    }
}
