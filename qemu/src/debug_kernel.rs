//! The debug guest kernel: Debian's `linux-source-6.12` (the source of the backports kernel the
//! guest normally boots, at the same package version) configured from `make tinyconfig` plus
//! `qemu/debug-kernel.config` (KASAN, lockdep, kmemleak, DMA-API debugging, UBSAN, atomic-sleep
//! and object debugging, and only what the guest uses, all built in), built once and cached.
//!
//! Layout under `~/.cache/extmem/debug-kernel/`:
//! - `src-<version>/`: the unpacked source, shared by every configuration of that version;
//! - `<version>-<key>/`: the out-of-tree build (`make O=`), where `<key>` hashes the fragment
//!   and [`RECIPE`], so editing the fragment builds a new kernel beside the old one (which is
//!   then removed). It is also the `KDIR` extmem_vgpu.ko builds against, and holds
//!   `extmem-root/` (`boot/vmlinuz-<release>`, `boot/config-<release>` and an empty
//!   `lib/modules/<release>/modules.dep`: nothing is a module) in the shape [`Kernel`] wants,
//!   `build.log` (make's output) and, last, the `extmem-ready` stamp with the build time.
//!
//! The build runs under `nice -n 10` with one job per CPU.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::build_root;
use crate::host_command::{self, CommandError};
use crate::provision::{self, Kernel, ProvisionError};

/// The configuration fragment, merged onto `tinyconfig`.
pub const FRAGMENT: &str = include_str!("../debug-kernel.config");
/// Where the fragment lives in the workspace, for messages.
const FRAGMENT_PATH: &str = "qemu/debug-kernel.config";
/// The source package; its version is the backports image package's.
const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// The tarball inside it.
const SOURCE_TARBALL: &str = "./usr/src/linux-source-6.12.tar.xz";
/// The directory the tarball unpacks to.
const SOURCE_DIR_NAME: &str = "linux-source-6.12";
/// Bump when the build recipe below changes in a way that changes the kernel, so cached
/// builds are redone.
const RECIPE: &str = "extmem-debug-kernel 1";
/// The stamp a finished build writes: `release <r>` and `seconds <s>` lines.
const READY_STAMP: &str = "extmem-ready";
/// Where the build's `make` output goes, inside the build directory.
const BUILD_LOG: &str = "build.log";
/// The subdirectory shaped like an unpacked kernel package.
const ROOT_DIR: &str = "extmem-root";

/// A debug kernel ready to boot.
#[derive(Debug, Clone)]
pub struct DebugKernel {
    /// The kernel, for the guest runner and the module build (its `headers` is the build tree).
    pub kernel: Kernel,
    /// The Debian package version of the source.
    pub source_version: String,
    /// How long the kernel build took (the one that made the cached build).
    pub build_time: Duration,
    /// Whether this run found the build cached.
    pub was_cached: bool,
}

/// Why the debug kernel could not be had.
#[derive(Debug)]
pub enum DebugKernelError {
    /// Asking apt, downloading or installing failed.
    Provision(ProvisionError),
    /// A build tool failed.
    Command(CommandError),
    /// `make` failed; the tail of its log explains.
    Make {
        /// What was being made.
        target: String,
        /// The full log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Symbols the fragment sets that the final `.config` does not have as asked (a typo, or a
    /// dependency the fragment does not satisfy).
    ConfigDrift {
        /// `CONFIG_X: asked y, got not set`, one per symbol.
        symbols: Vec<String>,
    },
    /// The build's stamp is damaged.
    BadStamp {
        /// The stamp file.
        path: PathBuf,
    },
}

impl fmt::Display for DebugKernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provision(err) => write!(f, "{err}"),
            Self::Command(err) => write!(f, "{err}"),
            Self::Make { target, log, tail } => write!(
                f,
                "`make {target}` of the debug kernel failed (log {}):\n{}",
                log.display(),
                host_command::indent(tail)
            ),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::ConfigDrift { symbols } => write!(
                f,
                "the debug kernel's .config does not have what {FRAGMENT_PATH} asks:\n{}",
                host_command::indent(&symbols.join("\n"))
            ),
            Self::BadStamp { path } => write!(
                f,
                "{} is not a finished build's stamp (delete the directory to rebuild)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DebugKernelError {}

impl From<ProvisionError> for DebugKernelError {
    fn from(err: ProvisionError) -> Self {
        Self::Provision(err)
    }
}

impl From<CommandError> for DebugKernelError {
    fn from(err: CommandError) -> Self {
        Self::Command(err)
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DebugKernelError + '_ {
    move |source| DebugKernelError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The debug kernel for the source of `backports` (the provisioned guest kernel), built unless
/// a build of the same source version and fragment is cached.
pub fn ensure(backports: &Kernel) -> Result<DebugKernel, DebugKernelError> {
    let source_version = provision::package_version(&format!("linux-image-{}", backports.version))?;
    let base = provision::cache_dir().join("debug-kernel");
    let build_dir = base.join(build_dir_name(&source_version, FRAGMENT));
    let stamp = build_dir.join(READY_STAMP);
    if stamp.is_file() {
        let (release, build_time) = read_stamp(&stamp)?;
        return Ok(DebugKernel {
            kernel: kernel_in(&build_dir, release),
            source_version,
            build_time,
            was_cached: true,
        });
    }
    provision::ensure_packages(provision::KERNEL_BUILD_PACKAGES)?;
    let source = base.join(format!("src-{}", path_safe(&source_version)));
    ensure_source(&source, &source_version)?;
    fs::create_dir_all(&build_dir).map_err(io_error(&build_dir))?;

    let started = Instant::now();
    println!(
        "debug kernel: configuring {SOURCE_PACKAGE} {source_version} in {}",
        build_dir.display()
    );
    let log = build_dir.join(BUILD_LOG);
    make(&source, &build_dir, &log, &["tinyconfig"])?;
    let fragment_path = build_dir.join("extmem-debug.config");
    fs::write(&fragment_path, FRAGMENT).map_err(io_error(&fragment_path))?;
    let merge = Command::new(source.join("scripts/kconfig/merge_config.sh"))
        .current_dir(&source)
        .env("ARCH", "x86_64")
        .arg("-O")
        .arg(&build_dir)
        .arg(build_dir.join(".config"))
        .arg(&fragment_path)
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(&source))?;
    append_log(&log, &merge.stdout)?;
    append_log(&log, &merge.stderr)?;
    if !merge.status.success() {
        return Err(make_error("merge_config.sh", &log));
    }
    let config_path = build_dir.join(".config");
    let config = fs::read_to_string(&config_path).map_err(io_error(&config_path))?;
    let drift = fragment_drift(FRAGMENT, &config);
    if !drift.is_empty() {
        return Err(DebugKernelError::ConfigDrift { symbols: drift });
    }
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "debug kernel: building (nice -n 10, make -j{jobs}; make's output goes to {})",
        log.display()
    );
    let jobs = format!("-j{jobs}");
    // `modules` has no module to build, but writes Module.symvers, which modpost needs to
    // resolve extmem_vgpu.ko's symbols against the kernel.
    make(&source, &build_dir, &log, &[&jobs, "bzImage", "modules"])?;
    let build_time = started.elapsed();

    let release_path = build_dir.join("include/config/kernel.release");
    let release = fs::read_to_string(&release_path)
        .map_err(io_error(&release_path))?
        .trim()
        .to_owned();
    let kernel = kernel_in(&build_dir, release.clone());
    lay_out_root(&build_dir, &kernel)?;
    fs::write(
        &stamp,
        format!("release {release}\nseconds {}\n", build_time.as_secs()),
    )
    .map_err(io_error(&stamp))?;
    remove_other_builds(&base, &build_dir, &source_version)?;
    Ok(DebugKernel {
        kernel,
        source_version,
        build_time,
        was_cached: false,
    })
}

/// `<version>-<key>`: the build directory's name for a source version and fragment.
fn build_dir_name(source_version: &str, fragment: &str) -> String {
    format!(
        "{}-{:016x}",
        path_safe(source_version),
        build_root::fnv1a(&format!("{RECIPE}\n{fragment}"))
    )
}

/// A Debian version as a path component Kbuild accepts: `~` and `+` (and anything but
/// letters, digits, `.` and `-`) become `_`.
fn path_safe(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The build in `build_dir` as a [`Kernel`].
fn kernel_in(build_dir: &Path, release: String) -> Kernel {
    Kernel {
        version: release,
        root: build_dir.join(ROOT_DIR),
        origin: "built from Debian's linux-source-6.12 with qemu/debug-kernel.config",
        headers: build_dir.to_owned(),
        // Built by the host's own gcc, so the module builds on the host too.
        build_root: None,
    }
}

/// Reads the release and build time from a stamp.
fn read_stamp(path: &Path) -> Result<(String, Duration), DebugKernelError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    parse_stamp(&text).ok_or_else(|| DebugKernelError::BadStamp {
        path: path.to_owned(),
    })
}

fn parse_stamp(text: &str) -> Option<(String, Duration)> {
    let mut lines = text.lines();
    let release = lines.next()?.strip_prefix("release ")?.trim();
    let seconds = lines
        .next()?
        .strip_prefix("seconds ")?
        .trim()
        .parse()
        .ok()?;
    (!release.is_empty()).then(|| (release.to_owned(), Duration::from_secs(seconds)))
}

/// Unpacks the source package's tarball into `source` unless it is there; unpacks beside it
/// and renames, so an interrupted run never leaves a tree that looks complete.
fn ensure_source(source: &Path, version: &str) -> Result<(), DebugKernelError> {
    if source.join("Makefile").is_file() {
        return Ok(());
    }
    let deb = provision::download_deb(SOURCE_PACKAGE, version)?;
    let partial = source.with_file_name(format!(
        "{}.partial",
        source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io_error(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(io_error(&partial))?;
    println!(
        "debug kernel: unpacking {} into {}",
        deb.display(),
        source.display()
    );
    // dpkg-deb gives the package's data as a tar stream; the source is a tarball inside it.
    host_command::output(
        Command::new("sh")
            .arg("-c")
            .arg(r#"dpkg-deb --fsys-tarfile "$1" | tar -xO "$2" | tar -xJ -C "$3""#)
            .arg("sh")
            .arg(&deb)
            .arg(SOURCE_TARBALL)
            .arg(&partial),
    )?;
    let unpacked = partial.join(SOURCE_DIR_NAME);
    if source.exists() {
        fs::remove_dir_all(source).map_err(io_error(source))?;
    }
    fs::rename(&unpacked, source).map_err(io_error(source))?;
    fs::remove_dir_all(&partial).map_err(io_error(&partial))?;
    fs::remove_file(&deb).map_err(io_error(&deb))
}

/// `nice -n 10 make -C <source> O=<build> ARCH=x86_64 <args>`, its output appended to `log`.
fn make(source: &Path, build: &Path, log: &Path, args: &[&str]) -> Result<(), DebugKernelError> {
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_error(log))?;
    let err_file = log_file.try_clone().map_err(io_error(log))?;
    let mut command = Command::new("nice");
    command
        .args(["-n", "10", "make", "-C"])
        .arg(source)
        .arg(format!("O={}", build.display()))
        .arg("ARCH=x86_64")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file);
    let _heartbeat = host_command::Heartbeat::start(format!("make {}", args.join(" ")));
    let status = command.status().map_err(io_error(source))?;
    if status.success() {
        Ok(())
    } else {
        Err(make_error(&args.join(" "), log))
    }
}

fn make_error(target: &str, log: &Path) -> DebugKernelError {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines
        .get(lines.len().saturating_sub(30)..)
        .unwrap_or_default()
        .join("\n");
    DebugKernelError::Make {
        target: target.to_owned(),
        log: log.to_owned(),
        tail,
    }
}

fn append_log(log: &Path, bytes: &[u8]) -> Result<(), DebugKernelError> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_error(log))?;
    file.write_all(bytes).map_err(io_error(log))
}

/// Gives the build the shape of an unpacked kernel package ([`Kernel::vmlinuz`],
/// [`Kernel::config`], [`Kernel::modules_dir`]): everything is built in, so `modules.dep` is
/// empty and the initramfs loads nothing.
fn lay_out_root(build_dir: &Path, kernel: &Kernel) -> Result<(), DebugKernelError> {
    let boot = kernel.root.join("boot");
    let modules = kernel.modules_dir();
    for dir in [&boot, &modules] {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let copies = [
        (build_dir.join("arch/x86/boot/bzImage"), kernel.vmlinuz()),
        (build_dir.join(".config"), kernel.config()),
    ];
    for (from, to) in copies {
        fs::copy(&from, &to).map_err(io_error(&from))?;
    }
    let dep = modules.join("modules.dep");
    fs::write(&dep, "").map_err(io_error(&dep))
}

/// Removes the builds of `version` other than `keep` (earlier fragments): each is gigabytes.
fn remove_other_builds(base: &Path, keep: &Path, version: &str) -> Result<(), DebugKernelError> {
    let prefix = format!("{}-", path_safe(version));
    for entry in fs::read_dir(base).map_err(io_error(base))? {
        let path = entry.map_err(io_error(base))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_build = name
            .strip_prefix(&prefix)
            .is_some_and(|key| key.len() == 16 && key.chars().all(|c| c.is_ascii_hexdigit()));
        if is_build && path != keep && path.join(READY_STAMP).is_file() {
            println!(
                "debug kernel: removing the earlier build {}",
                path.display()
            );
            fs::remove_dir_all(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// What one line of a fragment asks: `CONFIG_X=value`, or `None` for `# CONFIG_X is not set`.
fn fragment_settings(fragment: &str) -> Vec<(&str, Option<&str>)> {
    fragment
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            if let Some(rest) = line.strip_prefix("# ") {
                let symbol = rest.strip_suffix(" is not set")?;
                return symbol.starts_with("CONFIG_").then_some((symbol, None));
            }
            let (symbol, value) = line.split_once('=')?;
            symbol
                .starts_with("CONFIG_")
                .then_some((symbol, Some(value)))
        })
        .collect()
}

/// Every symbol `fragment` sets that `config` (a final `.config`) has otherwise, as
/// `CONFIG_X: asked <value>, got <value>`.
fn fragment_drift(fragment: &str, config: &str) -> Vec<String> {
    let settings = fragment_settings(config);
    let actual = |symbol: &str| {
        settings
            .iter()
            .find(|(s, _)| *s == symbol)
            .and_then(|(_, value)| *value)
    };
    fragment_settings(fragment)
        .into_iter()
        .filter(|(symbol, asked)| actual(symbol) != *asked)
        .map(|(symbol, asked)| {
            let shown = |value: Option<&str>| value.unwrap_or("not set").to_owned();
            format!(
                "{symbol}: asked {}, got {}",
                shown(asked),
                shown(actual(symbol))
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fragment_asks_for_every_checker_and_the_guest_features() {
        let asked = fragment_settings(FRAGMENT);
        for symbol in [
            "CONFIG_KASAN",
            "CONFIG_PROVE_LOCKING",
            "CONFIG_DEBUG_KMEMLEAK",
            "CONFIG_DMA_API_DEBUG",
            "CONFIG_UBSAN",
            "CONFIG_DEBUG_ATOMIC_SLEEP",
            "CONFIG_DEBUG_OBJECTS",
            "CONFIG_PROVE_RCU",
            "CONFIG_MITIGATION_RETPOLINE",
            "CONFIG_MITIGATION_RETHUNK",
            "CONFIG_X86_KERNEL_IBT",
            "CONFIG_MODULES",
            "CONFIG_DEVTMPFS",
        ] {
            assert!(asked.contains(&(symbol, Some("y"))), "{symbol}");
        }
        // Every feature the guest needs is built in: the initramfs loads no module.
        for feature in crate::guest_plan::KERNEL_FEATURES {
            assert!(
                asked.contains(&(feature.config, Some("y"))),
                "{}",
                feature.config
            );
        }
    }

    #[test]
    fn drift_names_each_symbol_the_config_lost() {
        let fragment = "# comment\nCONFIG_A=y\nCONFIG_B=\"x\"\n# CONFIG_C is not set\nCONFIG_D=y\n";
        let config = "CONFIG_A=y\nCONFIG_B=\"y\"\nCONFIG_C=y\n# CONFIG_D is not set\n";
        assert_eq!(
            fragment_drift(fragment, config),
            [
                "CONFIG_B: asked \"x\", got \"y\"",
                "CONFIG_C: asked not set, got y",
                "CONFIG_D: asked y, got not set",
            ]
        );
        assert!(fragment_drift(fragment, "CONFIG_A=y\nCONFIG_B=\"x\"\nCONFIG_D=y\n").is_empty());
    }

    #[test]
    fn the_cache_key_follows_the_fragment_and_the_version() {
        let a = build_dir_name("6.12.95-1~bpo12+1", "CONFIG_A=y\n");
        assert!(a.starts_with("6.12.95-1_bpo12_1-"), "{a}");
        assert_eq!(a.len(), "6.12.95-1_bpo12_1-".len() + 16);
        assert_eq!(a, build_dir_name("6.12.95-1~bpo12+1", "CONFIG_A=y\n"));
        assert_ne!(a, build_dir_name("6.12.95-1~bpo12+1", "CONFIG_A=n\n"));
        assert_ne!(a, build_dir_name("6.12.96-1~bpo12+1", "CONFIG_A=y\n"));
        // FNV-1a over the recipe line and the fragment: a changed key orphans every cache.
        assert_eq!(a, "6.12.95-1_bpo12_1-ae9deb4d2a668080");
    }

    #[test]
    fn stamps_round_trip_and_damage_is_refused() {
        assert_eq!(
            parse_stamp("release 6.12.95-extmem-debug\nseconds 1800\n"),
            Some(("6.12.95-extmem-debug".to_owned(), Duration::from_secs(1800)))
        );
        assert_eq!(parse_stamp("release \nseconds 3\n"), None);
        assert_eq!(parse_stamp("release x\nseconds soon\n"), None);
        assert_eq!(parse_stamp(""), None);
    }
}
