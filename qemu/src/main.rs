//! extmem-qemu: the project's test command.
//!
//! `cargo suite` runs everything (formatting, clippy, the workspace's tests, the no_std builds,
//! the Cortex-M tests, and the guest tests on Debian's backports kernel in QEMU) and ends with
//! one line `N passed, M failed`. `cargo demo` boots the guest and runs the demo. Both provision
//! what they need on Debian first (see `provision.rs`). `cargo bench-all` runs the benchmarks
//! (host, then guest); they are not tests and `suite` does not run them. `cargo fuzz-long`
//! runs the fuzz targets for longer than the suite does.

mod console_log;
mod cortex_m;
mod fuzz_step;
mod guest_boot;
mod guest_plan;
mod guest_suite;
mod host_checks;
mod host_command;
mod initramfs;
mod kernel_modules;
mod kmod_build;
mod ktap;
mod miri_step;
mod provision;
mod report;
mod rust_tools;
mod windows_tests;
mod workspace;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use guest_boot::Accel;
use guest_suite::GuestOptions;
use provision::{Freshness, Provisioned};
use report::{Check, Step};
use workspace::Workspace;

const USAGE: &str = "\
usage: extmem-qemu <command> [--kvm] [--timeout SECONDS] [--seconds SECONDS]

commands:
  setup   provision only: apt source, packages, rustup targets, kernel image and headers
  suite   everything: provision, fmt, clippy, cargo test, Miri, a short fuzz run, no_std
          builds, Cortex-M, guest
  guest   provision and run the guest tests only
  demo    provision, boot the guest and run the demo
  bench   benchmarks: the host ones (extmem-bench), then the guest one in QEMU
  fuzz    the fuzz targets of tests/fuzz, one after the other (cargo fuzz-long)

options:
  --kvm              use KVM instead of TCG (needs /dev/kvm)
  --timeout SECONDS  limit for one guest boot (default 600)
  --seconds SECONDS  fuzz: time per target (default 600)";

/// The default limit for one guest boot.
const DEFAULT_GUEST_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subcommand {
    Setup,
    Suite,
    Guest,
    Demo,
    Bench,
    Fuzz,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Options {
    command: Subcommand,
    accel: Accel,
    timeout: Duration,
    /// Seconds per fuzz target for `fuzz`.
    fuzz_seconds: u64,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut command = None;
    let mut accel = Accel::Tcg;
    let mut timeout = DEFAULT_GUEST_TIMEOUT;
    let mut fuzz_seconds = fuzz_step::LONG_SECONDS;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--kvm" => accel = Accel::Kvm,
            "--timeout" => {
                let value = words.next().ok_or("--timeout needs a number of seconds")?;
                let seconds: u64 = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("--timeout {value:?} is not a positive number of seconds")
                })?;
                timeout = Duration::from_secs(seconds);
            }
            "--seconds" => {
                let value = words.next().ok_or("--seconds needs a number of seconds")?;
                fuzz_seconds = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("--seconds {value:?} is not a positive number of seconds")
                })?;
            }
            "setup" | "suite" | "guest" | "demo" | "bench" | "fuzz" if command.is_none() => {
                command = Some(match word.as_str() {
                    "setup" => Subcommand::Setup,
                    "suite" => Subcommand::Suite,
                    "guest" => Subcommand::Guest,
                    "bench" => Subcommand::Bench,
                    "fuzz" => Subcommand::Fuzz,
                    _ => Subcommand::Demo,
                });
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let command = command.ok_or("no command given")?;
    Ok(Options {
        command,
        accel,
        timeout,
        fuzz_seconds,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("extmem-qemu: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let workspace = match Workspace::locate() {
        Ok(workspace) => workspace,
        Err(err) => {
            eprintln!("extmem-qemu: cannot find the workspace: {err}");
            return ExitCode::FAILURE;
        }
    };
    match options.command {
        Subcommand::Setup => setup(&workspace),
        Subcommand::Suite => suite(&workspace, options),
        Subcommand::Guest => guest_only(&workspace, options),
        Subcommand::Demo => demo(&workspace, options),
        Subcommand::Bench => bench(&workspace, options),
        Subcommand::Fuzz => finish(&[fuzz_step::run(
            &workspace,
            fuzz_step::TARGETS,
            options.fuzz_seconds,
            fuzz_step::Corpus::Kept,
            "fuzz (libFuzzer, long run)",
        )]),
    }
}

fn setup(workspace: &Workspace) -> ExitCode {
    match provision::provision(workspace, Freshness::Refresh) {
        Ok(provisioned) => {
            let kernel = &provisioned.kernel;
            println!(
                "setup: kernel {} in {}",
                kernel.version,
                kernel.root.display()
            );
            println!("setup: headers in {}", kernel.headers_dir().display());
            println!("setup: busybox {}", provisioned.busybox.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("setup failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Provisioning as a report step: it counts only when it fails (it is no test), but a failure
/// fails the run, since the guest steps cannot run without it.
fn provision_step(workspace: &Workspace) -> (Step, Option<Provisioned>) {
    let started = Instant::now();
    let mut step = Step::new("provision");
    let provisioned = match provision::provision(workspace, Freshness::UseStamp) {
        Ok(provisioned) => {
            step.notes.push(format!(
                "kernel {}{}",
                provisioned.kernel.version,
                if provisioned.was_cached {
                    " (cached)"
                } else {
                    ""
                }
            ));
            Some(provisioned)
        }
        Err(err) => {
            step.checks.push(Check::fail("provision", err.to_string()));
            None
        }
    };
    step.elapsed = started.elapsed();
    (step, provisioned)
}

fn guest_step(workspace: &Workspace, provisioned: Option<&Provisioned>, options: Options) -> Step {
    let title = "guest tests (QEMU x86_64)";
    match provisioned {
        Some(provisioned) => {
            let guest_options = GuestOptions {
                accel: options.accel,
                timeout: options.timeout,
                echo_plain_output: false,
            };
            guest_suite::run(
                workspace,
                provisioned,
                guest_plan::TEST_SUITES,
                guest_options,
                title,
            )
        }
        None => {
            let mut step = Step::new(title);
            step.checks
                .push(Check::fail("guest-boot", "not run: provisioning failed"));
            step
        }
    }
}

fn finish(steps: &[Step]) -> ExitCode {
    print!("{}", report::render(steps));
    if report::passed(steps) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn suite(workspace: &Workspace, options: Options) -> ExitCode {
    let (provision, provisioned) = provision_step(workspace);
    let mut steps = vec![provision];
    steps.push(host_checks::fmt(workspace));
    steps.push(host_checks::clippy(workspace));
    steps.push(host_checks::clippy_windows(workspace));
    steps.push(host_checks::tests(workspace));
    steps.push(miri_step::run(workspace));
    steps.push(fuzz_step::run(
        workspace,
        fuzz_step::TARGETS,
        fuzz_step::SUITE_SECONDS,
        fuzz_step::Corpus::Scratch,
        "fuzz (libFuzzer, short run)",
    ));
    steps.push(host_checks::no_std_builds(workspace));
    steps.push(cortex_m::run_tests(workspace));
    steps.push(windows_tests::run_tests(workspace));
    steps.push(guest_step(workspace, provisioned.as_ref(), options));
    finish(&steps)
}

fn guest_only(workspace: &Workspace, options: Options) -> ExitCode {
    let (provision, provisioned) = provision_step(workspace);
    let guest = guest_step(workspace, provisioned.as_ref(), options);
    finish(&[provision, guest])
}

fn demo(workspace: &Workspace, options: Options) -> ExitCode {
    let (provision, provisioned) = provision_step(workspace);
    let Some(provisioned) = provisioned else {
        return finish(&[provision]);
    };
    let guest_options = GuestOptions {
        accel: options.accel,
        timeout: options.timeout,
        echo_plain_output: true,
    };
    let demo = guest_suite::run(
        workspace,
        &provisioned,
        &[guest_plan::DEMO],
        guest_options,
        "demo (QEMU x86_64)",
    );
    finish(&[provision, demo])
}

/// The host benchmarks, then the guest benchmark; the guest's CSV (printed between markers)
/// is saved next to the host's in `<target dir>/extmem-bench/`.
fn bench(workspace: &Workspace, options: Options) -> ExitCode {
    println!("bench: host benchmarks");
    let mut host = workspace.cargo();
    host.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "extmem-bench",
        "--bin",
        "host-bench",
    ]);
    let mut host_step = Step::new("host benchmarks");
    let started = Instant::now();
    let status = host.status();
    host_step.elapsed = started.elapsed();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => host_step
            .checks
            .push(Check::fail("host-bench", format!("exited with {status}"))),
        Err(err) => host_step
            .checks
            .push(Check::fail("host-bench", err.to_string())),
    }
    let (provision, provisioned) = provision_step(workspace);
    let Some(provisioned) = provisioned else {
        return finish(&[host_step, provision]);
    };
    let guest_options = GuestOptions {
        accel: options.accel,
        timeout: options.timeout,
        echo_plain_output: true,
    };
    let mut guest = guest_suite::run(
        workspace,
        &provisioned,
        &[guest_plan::BENCH],
        guest_options,
        "guest benchmark (QEMU x86_64)",
    );
    let console = guest_suite::console_log_path(workspace);
    let csv_dir = workspace.target_dir.join("extmem-bench");
    let csv_path = csv_dir.join("guest.csv");
    let saved = std::fs::read_to_string(&console).and_then(|log| {
        let csv = bench_csv(&log).ok_or_else(|| std::io::Error::other("no CSV in the log"))?;
        std::fs::create_dir_all(&csv_dir)?;
        std::fs::write(&csv_path, csv)
    });
    match saved {
        Ok(()) => guest
            .notes
            .push(format!("guest CSV: {}", csv_path.display())),
        Err(err) => guest.checks.push(Check::fail(
            "bench-csv",
            format!("{}: {err}", console.display()),
        )),
    }
    finish(&[host_step, provision, guest])
}

/// The lines the guest benchmark printed between `@@bench-csv begin` and `@@bench-csv end`.
fn bench_csv(console: &str) -> Option<String> {
    let mut lines = console.lines().map(|l| l.trim_end_matches('\r'));
    lines.find(|l| *l == "@@bench-csv begin")?;
    let mut csv = String::new();
    for line in lines {
        if line == "@@bench-csv end" {
            return Some(csv);
        }
        csv.push_str(line);
        csv.push('\n');
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &str) -> Vec<String> {
        words.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn commands_and_options_parse() {
        assert_eq!(
            parse_args(&args("suite")),
            Ok(Options {
                command: Subcommand::Suite,
                accel: Accel::Tcg,
                timeout: DEFAULT_GUEST_TIMEOUT,
                fuzz_seconds: fuzz_step::LONG_SECONDS,
            })
        );
        assert_eq!(
            parse_args(&args("--kvm guest --timeout 60")),
            Ok(Options {
                command: Subcommand::Guest,
                accel: Accel::Kvm,
                timeout: Duration::from_secs(60),
                fuzz_seconds: fuzz_step::LONG_SECONDS,
            })
        );
    }

    #[test]
    fn the_bench_csv_is_cut_from_the_console() {
        let log = "boot\r\n@@bench-csv begin\r\na,b\r\n1,2\r\n@@bench-csv end\r\nafter\r\n";
        assert_eq!(bench_csv(log).as_deref(), Some("a,b\n1,2\n"));
        assert_eq!(bench_csv("@@bench-csv begin\na,b\n"), None);
        assert_eq!(
            parse_args(&args("bench")).map(|o| o.command),
            Ok(Subcommand::Bench)
        );
        assert_eq!(
            parse_args(&args("fuzz --seconds 900")).map(|o| (o.command, o.fuzz_seconds)),
            Ok((Subcommand::Fuzz, 900))
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse_args(&args("")).is_err());
        assert!(parse_args(&args("suite demo")).is_err());
        assert!(parse_args(&args("suite --timeout")).is_err());
        assert!(parse_args(&args("suite --timeout 0")).is_err());
        assert!(parse_args(&args("suite --fast")).is_err());
        assert!(parse_args(&args("fuzz --seconds 0")).is_err());
        assert!(parse_args(&args("fuzz --seconds")).is_err());
    }
}
