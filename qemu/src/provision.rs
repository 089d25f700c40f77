//! Self-provisioning on Debian: the backports apt source, QEMU and the initramfs tools, the
//! rustup targets, and Debian's current backports kernel (image unpacked into the cache,
//! headers installed for building our module).
//!
//! Every step first checks whether it is needed. A stamp in the cache records a finished
//! provisioning, so a warm run only confirms files and packages are still there (`dpkg-query`,
//! `rustup target list`) and does no apt work at all.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host_command::{self, CommandError};
use crate::kmod_build;
use crate::rust_tools;
use crate::workspace::Workspace;

/// Packages installed from `<codename>-backports` (QEMU 7.2 in bookworm lacks what we use less
/// than it lacks fixes; backports carries the current QEMU). Backports QEMU pulls in backports
/// Mesa (libgbm1), so GBM comes from there too, where its versions match: libgbm-dev to link
/// the guest programs (`gbm-flow`, `vk-demo`), and libgl1-mesa-dri for the `kms_swrast` driver
/// libgbm loads at run time for a virtio-gpu node without 3D.
const BACKPORTS_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-arm",
    "libgbm-dev",
    "libgl1-mesa-dri",
];
/// Packages installed from the release itself. The Khronos loader (libvulkan1) and
/// vulkaninfo (vulkan-tools) are what the ICD is tested through, on the host and in the
/// guest (which runs the host's root); the guest programs run it under the Khronos validation
/// layer (vulkan-validationlayers). `make` builds extmem_vgpu.ko against the headers
/// (which bring gcc-12 and binutils themselves). The Windows build links with mingw-w64
/// (gcc-mingw-w64-x86-64, which also builds the `ProcessPrng` shim DLL) and its tests run
/// under Wine (wine64). libextmem's C tests include the Vulkan headers (libvulkan-dev) and
/// link through pkg-config; its meson.build is tried with meson. mmdebstrap makes the trixie
/// build root for the newest kernel (`build_root.rs`). extmem_vgpu.ko is cross-built for
/// Debian's arm64 kernels with gcc-aarch64-linux-gnu, whose aarch64 binutils also link the
/// Rust object; the same compiler links the arm64 guest's programs (named in
/// `.cargo/config.toml`).
const RELEASE_PACKAGES: &[&str] = &[
    "busybox-static",
    "cpio",
    "kmod",
    "xz-utils",
    "libvulkan1",
    "vulkan-tools",
    "vulkan-validationlayers",
    "make",
    "libvulkan-dev",
    "pkg-config",
    "meson",
    "gcc-mingw-w64-x86-64",
    "wine64",
    "mmdebstrap",
    "gcc-aarch64-linux-gnu",
];
/// Rust targets: the bare-metal x86_64 build of the no_std crates, the two Cortex-M cores,
/// Windows (mingw-w64), whose tests run under Wine, and the arm64 guest's userspace.
pub const RUST_TARGETS: &[&str] = &[
    "x86_64-unknown-none",
    "aarch64-unknown-none-softfloat",
    "thumbv7em-none-eabihf",
    "thumbv7m-none-eabi",
    "x86_64-pc-windows-gnu",
    "aarch64-unknown-linux-gnu",
];
/// The kernel metapackage whose dependency names the current backports kernel.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// Bump when the provisioning recipe changes, so old stamps are redone.
const RECIPE: &str = "extmem-provision 2";

/// What provisioning produced.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The guest kernel.
    pub kernel: Kernel,
    /// The static busybox for the initramfs.
    pub busybox: PathBuf,
    /// The root the guest's programs run in when it is not the host's (the arm64 one,
    /// `arm64_root.rs`).
    pub guest_root: Option<PathBuf>,
    /// Whether this run used the stamp without doing anything.
    pub was_cached: bool,
}

/// Debian's backports kernel, unpacked under the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The release string, e.g. `6.12.95+deb12-amd64`.
    pub version: String,
    /// The unpacked package root (`boot/`, `lib/modules/`).
    pub root: PathBuf,
    /// Where Debian ships it, for the report (`Debian backports`, `Debian stable`).
    pub origin: &'static str,
    /// The headers for building out-of-tree modules: installed in `/usr/src` for the
    /// backports kernel, unpacked under `root` for the LTS one, installed in the build root
    /// for the newest one.
    pub headers: PathBuf,
    /// The root the module is built in (chrooted), where the host cannot run the kernel's
    /// build tools; `None` builds on the host.
    pub build_root: Option<PathBuf>,
}

impl Kernel {
    /// The bzImage.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.version))
    }

    /// The kernel's `.config`.
    pub fn config(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("config-{}", self.version))
    }

    /// `lib/modules/<version>` (with a regenerated `modules.dep`).
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }

    /// The headers, for building out-of-tree modules.
    pub fn headers_dir(&self) -> PathBuf {
        self.headers.clone()
    }

    /// Kernel `version` from `origin` with image and headers both unpacked under `cache`
    /// (`<cache>/linux/<version>`, headers in its `usr/src`), nothing installed.
    fn unpacked(cache: &Path, version: String, origin: &'static str) -> Self {
        let root = cache.join("linux").join(&version);
        Self {
            headers: root
                .join("usr/src")
                .join(format!("linux-headers-{version}")),
            version,
            root,
            origin,
            build_root: None,
        }
    }

    /// The backports kernel `version`, unpacked under `cache`, its headers installed by apt.
    fn backports(cache: &Path, version: &str) -> Self {
        Self {
            version: version.to_owned(),
            root: cache.join("linux").join(version),
            origin: "Debian backports",
            headers: PathBuf::from("/usr/src").join(format!("linux-headers-{version}")),
            build_root: None,
        }
    }
}

/// Whether to trust a stamp from an earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Use the stamp when everything it names is still there.
    UseStamp,
    /// Resolve the kernel again and redo whatever is missing (`setup`).
    Refresh,
}

/// Why provisioning failed.
#[derive(Debug)]
pub enum ProvisionError {
    /// Not a Debian system with apt: the message lists what to install by hand.
    NotDebian {
        /// What is missing.
        reason: String,
    },
    /// A tool needed even on Debian is missing.
    MissingTool {
        /// The tool.
        tool: &'static str,
        /// How to get it.
        hint: &'static str,
    },
    /// A command failed.
    Command(CommandError),
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The metapackage's dependencies named no kernel image.
    KernelNotResolved {
        /// The metapackage asked about (`linux-image-amd64`, `linux-image-arm64`, …).
        metapackage: String,
        /// The suite asked.
        suite: String,
        /// What `apt-cache depends` printed.
        output: String,
    },
    /// After download or install something expected is not there.
    Missing {
        /// What was expected.
        what: String,
        /// Where.
        path: PathBuf,
    },
    /// The busybox found is dynamically linked and would not run in the initramfs.
    BusyboxNotStatic {
        /// Its path.
        path: PathBuf,
    },
    /// The stable release's kernel is not of the LTS series this step is for.
    NotLtsSeries {
        /// The suite the kernel was resolved from.
        suite: String,
        /// The image package its metapackage depends on.
        image_package: String,
    },
    /// The x86_64 kernel, whose release the arm64 kernels follow, is not an `-amd64` one.
    NotAmd64 {
        /// Its release.
        version: String,
    },
    /// The pinned nightly toolchain with `rust-src` could not be installed.
    Nightly {
        /// Why, as rustup or the check said.
        reason: String,
    },
}

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotDebian { reason } => write!(
                f,
                "{reason}: extmem-qemu provisions itself only on Debian with apt.\n\
                 Install by hand, then run it again:\n\
                 - QEMU with qemu-system-x86_64 and qemu-system-arm (Debian: qemu-system-x86, \
                 qemu-system-arm from bookworm-backports)\n\
                 - a statically linked busybox (Debian: busybox-static), cpio, xz, depmod \
                 (kmod), dpkg-deb, the Vulkan loader and vulkaninfo (libvulkan1, vulkan-tools)\n\
                 - mingw-w64 for x86_64 and Wine (Debian: gcc-mingw-w64-x86-64, wine64)\n\
                 - rustup targets: {}\n\
                 - Debian's current backports kernel: the linux-image-<version>-amd64 package that \
                 linux-image-amd64 from bookworm-backports depends on, unpacked with dpkg-deb -x \
                 into {}/linux/<version>/ followed by depmod -b <that dir> <version>, and the \
                 matching linux-headers-<version> in /usr/src",
                RUST_TARGETS.join(" "),
                cache_dir().display()
            ),
            Self::MissingTool { tool, hint } => write!(f, "{tool} is not installed: {hint}"),
            Self::Command(err) => write!(f, "{err}"),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::KernelNotResolved {
                metapackage,
                suite,
                output,
            } => write!(
                f,
                "{metapackage}/{suite} depends on no linux-image package; apt-cache said:\n{}",
                host_command::indent(output.trim())
            ),
            Self::Missing { what, path } => {
                write!(f, "{what} is missing: {} does not exist", path.display())
            }
            Self::BusyboxNotStatic { path } => write!(
                f,
                "{} is dynamically linked; the initramfs needs busybox-static",
                path.display()
            ),
            Self::NotLtsSeries {
                suite,
                image_package,
            } => write!(
                f,
                "{KERNEL_METAPACKAGE}/{suite} depends on {image_package}, not a Linux \
                 {LTS_SERIES} amd64 kernel (the LTS guest step needs Debian bookworm's)"
            ),
            Self::NotAmd64 { version } => write!(
                f,
                "the x86_64 guest kernel {version} is not an -amd64 flavour, so there is no \
                 arm64 kernel of the same release to provision"
            ),
            Self::Nightly { reason } => write!(
                f,
                "the {} toolchain with rust-src (the kernel object): {reason}",
                rust_tools::NIGHTLY
            ),
        }
    }
}

impl std::error::Error for ProvisionError {}

impl From<CommandError> for ProvisionError {
    fn from(err: CommandError) -> Self {
        Self::Command(err)
    }
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `$XDG_CACHE_HOME/extmem`, else `~/.cache/extmem`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("extmem")
}

/// Provisions everything the runner needs, printing a line per action taken.
pub fn provision(
    workspace: &Workspace,
    freshness: Freshness,
) -> Result<Provisioned, ProvisionError> {
    let cache = cache_dir();
    let stamp_path = cache.join("provision.stamp");
    ensure_debian()?;
    let codename = release_codename()?;
    // The kernel object is built with the pinned nightly and `core` rebuilt from rust-src
    // (kmod_build.rs), and kcore's no-panic test builds it so during `cargo test`, before
    // any other step would install that toolchain. Cheap when it is there, so before the
    // stamp: stamps from before this requirement get it too.
    rust_tools::ensure_nightly(&[kmod_build::RUST_SOURCE_COMPONENT])
        .map_err(|reason| ProvisionError::Nightly { reason })?;
    if freshness == Freshness::UseStamp {
        if let Some(stamp) = read_stamp(&stamp_path, &codename)? {
            if let Some(ready) = verify_stamp(workspace, &stamp)? {
                return Ok(ready);
            }
            println!("provision: the cached setup is incomplete; redoing what is missing");
        }
    }

    let suite = format!("{codename}-backports");
    let mut apt = Apt::default();
    if ensure_apt_source("deb", &suite)? {
        apt.lists_stale = true;
    }
    let mut missing = missing_packages(BACKPORTS_PACKAGES)?;
    if !missing.is_empty() {
        apt.install(Some(&suite), &missing)?;
    }
    missing = missing_packages(RELEASE_PACKAGES)?;
    if !missing.is_empty() {
        apt.install(None, &missing)?;
    }
    ensure_rust_targets(workspace)?;

    let image_package = apt.resolve_kernel(&suite, KERNEL_METAPACKAGE)?;
    let version = kernel_version(&image_package);
    let kernel = Kernel::backports(&cache, &version);
    ensure_kernel_tree(
        &mut apt,
        &cache,
        &suite,
        std::slice::from_ref(&image_package),
        &kernel,
    )?;
    let headers = format!("linux-headers-{version}");
    if !missing_packages(&[&headers])?.is_empty() {
        apt.install(Some(&suite), std::slice::from_ref(&headers))?;
    }
    if !kernel.headers_dir().is_dir() {
        return Err(ProvisionError::Missing {
            what: format!("{headers} (installed, but its directory)"),
            path: kernel.headers_dir(),
        });
    }
    let busybox = static_busybox()?;

    fs::create_dir_all(&cache).map_err(io_error(&cache))?;
    let stamp = Stamp {
        codename,
        kernel: version,
    };
    fs::write(&stamp_path, stamp.render()).map_err(io_error(&stamp_path))?;
    Ok(Provisioned {
        kernel,
        busybox,
        guest_root: None,
        was_cached: false,
    })
}

/// The kernel series of Debian's stable release (bookworm), which the LTS guest step boots.
pub const LTS_SERIES: &str = "6.1";

/// Debian's stable kernel of the [`LTS_SERIES`] (the newest from `<codename>-security`, else
/// the release's): image, headers and kbuild unpacked under the cache, nothing installed. Run
/// after [`provision`]; a warm run only asks apt-cache which kernel is current.
pub fn provision_lts() -> Result<Kernel, ProvisionError> {
    ensure_debian()?;
    let codename = release_codename()?;
    let cache = cache_dir();
    let mut apt = Apt::default();
    let security = format!("{codename}-security");
    let (suite, image_package) = match apt.resolve_kernel(&security, KERNEL_METAPACKAGE) {
        Ok(package) => (security, package),
        Err(_) => {
            let package = apt.resolve_kernel(&codename, KERNEL_METAPACKAGE)?;
            (codename, package)
        }
    };
    let version = kernel_version(&image_package);
    let packages =
        lts_packages(&image_package, &version).ok_or_else(|| ProvisionError::NotLtsSeries {
            suite: suite.clone(),
            image_package: image_package.clone(),
        })?;
    let kernel = Kernel::unpacked(&cache, version, "Debian stable");
    ensure_kernel_tree(&mut apt, &cache, &suite, &packages, &kernel)?;
    Ok(kernel)
}

/// The packages of an [`LTS_SERIES`] kernel: the image, its flavour's headers, the common
/// headers they include and the series' kbuild tools; `None` if the kernel is of another
/// series or not an `-amd64` flavour.
fn lts_packages(image_package: &str, version: &str) -> Option<Vec<String>> {
    let abi = version.strip_suffix("-amd64")?;
    let minor = abi.strip_prefix(LTS_SERIES)?.strip_prefix('.')?;
    if !minor.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(vec![
        image_package.to_owned(),
        format!("linux-headers-{version}"),
        format!("linux-headers-{abi}-common"),
        format!("linux-kbuild-{LTS_SERIES}"),
    ])
}

/// Debian's arm64 kernel flavours: the same release as the x86_64 guest's, with 4 KiB or
/// with 16 KiB pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm64Flavour {
    /// `-arm64`: 4 KiB pages.
    Pages4K,
    /// `-arm64-16k`: 16 KiB pages.
    Pages16K,
}

impl Arm64Flavour {
    /// Debian's flavour name, the suffix of the kernel release and its packages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pages4K => "arm64",
            Self::Pages16K => "arm64-16k",
        }
    }
}

/// Where the arm64 package lists and apt cache live, under the cache directory.
const ARM64_APT_DIR: &str = "apt-arm64";

/// apt over the host's sources with its own package lists and cache in `dir`, for arm64
/// packages and the host's (`linux-kbuild:amd64` runs the cross build): dpkg's
/// configuration does not change (no foreign architecture is added), and `apt-get update`
/// there neither waits for nor blocks the host's apt.
fn arm64_kernel_apt(dir: &Path) -> Result<Apt, ProvisionError> {
    let lists = dir.join("lists");
    let cache = dir.join("cache");
    for partial in [lists.join("partial"), cache.join("archives/partial")] {
        fs::create_dir_all(&partial).map_err(io_error(&partial))?;
    }
    let native = host_command::stdout_text(Command::new("dpkg").arg("--print-architecture"))?;
    Ok(Apt::private(vec![
        format!("Dir::State::Lists={}", lists.display()),
        format!("Dir::Cache={}", cache.display()),
        "APT::Architecture=arm64".to_owned(),
        "APT::Architectures::=arm64".to_owned(),
        format!("APT::Architectures::={}", native.trim()),
        // The downloads land in root's cache directory, which apt's _apt user cannot read.
        "APT::Sandbox::User=root".to_owned(),
    ]))
}

/// Debian's arm64 kernel of `flavour` in the same release as `x86` (the backports kernel
/// [`provision`] resolved): image, flavour headers, common headers and the amd64 kbuild
/// tools of that release (which run the cross build), downloaded through a private apt
/// state ([`Apt::private`]) and unpacked under the cache like the LTS kernel. A warm run
/// only checks that the tree is there.
pub fn provision_arm64(x86: &Kernel, flavour: Arm64Flavour) -> Result<Kernel, ProvisionError> {
    let abi = x86
        .version
        .strip_suffix("-amd64")
        .ok_or_else(|| ProvisionError::NotAmd64 {
            version: x86.version.clone(),
        })?;
    let version = format!("{abi}-{}", flavour.name());
    let cache = cache_dir();
    let kernel = Kernel::unpacked(&cache, version, "Debian backports");
    let packages = arm64_packages(abi, flavour);
    let suite = format!("{}-backports", release_codename()?);
    let mut apt = arm64_kernel_apt(&cache.join(ARM64_APT_DIR))?;
    ensure_kernel_tree(&mut apt, &cache, &suite, &packages, &kernel)?;
    Ok(kernel)
}

/// The packages of the arm64 kernel `<abi>-<flavour>`: the image (the one the guest boots),
/// its flavour's headers, the common headers they include, and the kbuild tools of the
/// same release for the host's architecture (amd64), which run `make ARCH=arm64`.
fn arm64_packages(abi: &str, flavour: Arm64Flavour) -> Vec<String> {
    let flavour = flavour.name();
    vec![
        format!("linux-image-{abi}-{flavour}"),
        format!("linux-headers-{abi}-{flavour}"),
        format!("linux-headers-{abi}-common"),
        format!("linux-kbuild-{abi}:amd64"),
    ]
}

/// What building a kernel from source needs beyond [`RELEASE_PACKAGES`] (the debug kernel,
/// `debug_kernel.rs`): Kconfig's parser generators, `bc` for the timeconst header, and
/// libelf and OpenSSL for objtool and the certificate tools.
pub const KERNEL_BUILD_PACKAGES: &[&str] = &["bc", "bison", "flex", "libelf-dev", "libssl-dev"];

/// Installs those of `packages` that are missing, from the release. Run after [`provision`].
pub fn ensure_packages(packages: &[&str]) -> Result<(), ProvisionError> {
    let missing = missing_packages(packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    Apt::default().install(None, &missing)
}

/// Installs `packages` from `<codename>-backports` if any is missing, or always with
/// `upgrade` (an installed release version is too old). Run after [`provision`].
pub fn ensure_backports_packages(packages: &[&str], upgrade: bool) -> Result<(), ProvisionError> {
    let missing = missing_packages(packages)?;
    if missing.is_empty() && !upgrade {
        return Ok(());
    }
    let suite = format!("{}-backports", release_codename()?);
    let mut apt = Apt {
        lists_stale: ensure_apt_source("deb", &suite)?,
        ..Apt::default()
    };
    let all: Vec<String> = packages.iter().map(|p| (*p).to_owned()).collect();
    apt.install(Some(&suite), &all)
}

/// The version apt knows `package` by (`apt-cache show`, the first stanza: the candidate).
pub fn package_version(package: &str) -> Result<String, ProvisionError> {
    let output = host_command::stdout_text(
        Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .arg(package),
    )?;
    output
        .lines()
        .find_map(|line| line.strip_prefix("Version: "))
        .map(|version| version.trim().to_owned())
        .ok_or_else(|| ProvisionError::Missing {
            what: format!("a Version field in `apt-cache show {package}`"),
            path: PathBuf::from("/var/lib/apt/lists"),
        })
}

/// Downloads `package` at `version` (`apt-get download package=version`) into the cache's
/// download directory, replacing an earlier download of it; returns the `.deb`.
pub fn download_deb(package: &str, version: &str) -> Result<PathBuf, ProvisionError> {
    let downloads = cache_dir().join("debs");
    fs::create_dir_all(&downloads).map_err(io_error(&downloads))?;
    remove_downloads(&downloads, package)?;
    println!("provision: downloading {package} {version}");
    host_command::output(
        Command::new("apt-get")
            .current_dir(&downloads)
            .arg("download")
            .arg(format!("{package}={version}")),
    )?;
    find_download(&downloads, package)
}

/// What a finished provisioning recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    codename: String,
    kernel: String,
}

impl Stamp {
    fn render(&self) -> String {
        format!(
            "{RECIPE}\ncodename {}\nkernel {}\n",
            self.codename, self.kernel
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next() != Some(RECIPE) {
            return None;
        }
        let codename = lines.next()?.strip_prefix("codename ")?.to_owned();
        let kernel = lines.next()?.strip_prefix("kernel ")?.to_owned();
        Some(Self { codename, kernel })
    }
}

fn read_stamp(path: &Path, codename: &str) -> Result<Option<Stamp>, ProvisionError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Stamp::parse(&text).filter(|s| s.codename == codename)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error(path)(err)),
    }
}

/// Checks that what the stamp describes is all still present; `None` if anything is not.
fn verify_stamp(
    workspace: &Workspace,
    stamp: &Stamp,
) -> Result<Option<Provisioned>, ProvisionError> {
    let kernel = Kernel::backports(&cache_dir(), &stamp.kernel);
    let files = [
        kernel.vmlinuz(),
        kernel.config(),
        kernel.modules_dir().join("modules.dep"),
        kernel.headers_dir(),
    ];
    if files.iter().any(|f| !f.exists()) {
        return Ok(None);
    }
    let headers = format!("linux-headers-{}", stamp.kernel);
    let mut packages: Vec<&str> = BACKPORTS_PACKAGES.to_vec();
    packages.extend_from_slice(RELEASE_PACKAGES);
    packages.push(&headers);
    if !missing_packages(&packages)?.is_empty() || !missing_rust_targets(workspace)?.is_empty() {
        return Ok(None);
    }
    let Ok(busybox) = static_busybox() else {
        return Ok(None);
    };
    Ok(Some(Provisioned {
        kernel,
        busybox,
        guest_root: None,
        was_cached: true,
    }))
}

fn ensure_debian() -> Result<(), ProvisionError> {
    if !Path::new("/etc/debian_version").is_file() {
        return Err(ProvisionError::NotDebian {
            reason: "/etc/debian_version does not exist".into(),
        });
    }
    for tool in ["apt-get", "apt-cache", "dpkg-query", "dpkg-deb"] {
        if !host_command::on_path(tool) {
            return Err(ProvisionError::NotDebian {
                reason: format!("{tool} is not on PATH"),
            });
        }
    }
    Ok(())
}

pub(crate) fn release_codename() -> Result<String, ProvisionError> {
    let path = Path::new("/etc/os-release");
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ProvisionError::NotDebian {
            reason: "/etc/os-release names no VERSION_CODENAME".into(),
        })
}

/// Adds a `kind` (`deb`, or `deb-src` for source packages) apt source for `suite` unless
/// some sources file already has one; true if it was added.
pub(crate) fn ensure_apt_source(kind: &str, suite: &str) -> Result<bool, ProvisionError> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    let dir = Path::new("/etc/apt/sources.list.d");
    if let Ok(entries) = fs::read_dir(dir) {
        files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    for file in &files {
        let name = file.to_string_lossy();
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        let found = if name.ends_with(".sources") {
            deb822_has_suite(&text, kind, suite)
        } else if name.ends_with(".list") {
            one_line_has_suite(&text, kind, suite)
        } else {
            false
        };
        if found {
            return Ok(false);
        }
    }
    // deb822, as Debian writes its own sources since bookworm.
    let file = if kind == "deb" {
        format!("{suite}.sources")
    } else {
        format!("{suite}-{}.sources", kind.trim_start_matches("deb-"))
    };
    let path = Path::new("/etc/apt/sources.list.d").join(file);
    println!(
        "provision: adding the {suite} apt source ({kind}, {})",
        path.display()
    );
    let text = format!(
        "Types: {kind}\nURIs: http://deb.debian.org/debian\nSuites: {suite}\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    fs::write(&path, text).map_err(io_error(&path))?;
    Ok(true)
}

/// Whether a deb822 `.sources` file has an enabled stanza of type `kind` for `suite`.
fn deb822_has_suite(text: &str, kind: &str, suite: &str) -> bool {
    text.split("\n\n").any(|stanza| {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
                })
        };
        let enabled = field("Enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        let is_kind = field("Types").is_some_and(|v| v.split_whitespace().any(|t| t == kind));
        let has_suite = field("Suites").is_some_and(|v| v.split_whitespace().any(|s| s == suite));
        enabled && is_kind && has_suite
    })
}

/// Whether a one-line-style `.list` file has a `kind` line for `suite`.
fn one_line_has_suite(text: &str, kind: &str, suite: &str) -> bool {
    text.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(kind) && words.any(|w| w == suite)
    })
}

/// Which of `packages` dpkg does not have installed.
fn missing_packages(packages: &[&str]) -> Result<Vec<String>, ProvisionError> {
    let mut command = Command::new("dpkg-query");
    command
        .args(["-W", "-f=${Package}\t${db:Status-Abbrev}\n"])
        .args(packages);
    // dpkg-query exits 1 when some package is unknown to it; that just means "not installed".
    let out = command.output().map_err(|err| CommandError {
        command: host_command::describe(&command),
        failure: host_command::CommandFailure::Spawn(err),
    })?;
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(ProvisionError::Command(CommandError {
            command: host_command::describe(&command),
            failure: host_command::CommandFailure::Exit {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            },
        }));
    }
    let installed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name.to_owned())
        .collect();
    Ok(packages
        .iter()
        .filter(|p| !installed.contains(**p))
        .map(|p| (*p).to_owned())
        .collect())
}

/// apt-get, with `apt-get update` run at most once and only when needed.
#[derive(Debug, Default)]
pub(crate) struct Apt {
    /// A source was just added: the package lists do not know it yet.
    pub(crate) lists_stale: bool,
    updated: bool,
    /// `-o` settings given to every apt-get and apt-cache call: empty for the host's own apt,
    /// a private configuration for another architecture's packages (`arm64_root.rs`).
    options: Vec<String>,
}

impl Apt {
    /// An apt with its own configuration, state and cache (`-o NAME=VALUE` each), which
    /// leaves the host's apt alone.
    pub(crate) fn private(options: Vec<String>) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    /// `apt-get` or `apt-cache` with this apt's settings.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        for option in &self.options {
            command.arg("-o").arg(option);
        }
        command
    }

    pub(crate) fn update(&mut self) -> Result<(), ProvisionError> {
        println!("provision: apt-get update");
        host_command::output(noninteractive(self.command("apt-get").arg("update")))?;
        self.updated = true;
        self.lists_stale = false;
        Ok(())
    }

    /// Installs `packages` (from `suite` if given); after a failure with lists that were not
    /// refreshed in this run, updates them and tries once more.
    fn install(&mut self, suite: Option<&str>, packages: &[String]) -> Result<(), ProvisionError> {
        if self.lists_stale {
            self.update()?;
        }
        let from = suite.map(|s| format!(" from {s}")).unwrap_or_default();
        println!("provision: installing {}{from}", packages.join(" "));
        let attempt = |apt: &Apt| {
            let mut command = apt.command("apt-get");
            command.args(["install", "-y"]);
            if let Some(suite) = suite {
                command.args(["-t", suite]);
            }
            command.args(packages);
            host_command::output(noninteractive(&mut command))
        };
        match attempt(self) {
            Ok(_) => Ok(()),
            Err(_) if !self.updated => {
                println!("provision: apt-get install failed; refreshing the package lists first");
                self.update()?;
                attempt(self).map(|_| ()).map_err(ProvisionError::from)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The kernel image package `metapackage` (e.g. `linux-image-amd64`) of `suite`
    /// depends on.
    pub(crate) fn resolve_kernel(
        &mut self,
        suite: &str,
        metapackage: &str,
    ) -> Result<String, ProvisionError> {
        if self.lists_stale {
            self.update()?;
        }
        let query = |apt: &Apt| {
            host_command::stdout_text(
                apt.command("apt-cache")
                    .arg("depends")
                    .arg(format!("{metapackage}/{suite}")),
            )
        };
        let output = match query(self) {
            Ok(text) if image_dependency(&text).is_some() => text,
            _ if !self.updated => {
                self.update()?;
                query(self)?
            }
            Ok(text) => text,
            Err(err) => return Err(err.into()),
        };
        image_dependency(&output).ok_or_else(|| ProvisionError::KernelNotResolved {
            metapackage: metapackage.to_owned(),
            suite: suite.to_owned(),
            output,
        })
    }
}

pub(crate) fn noninteractive(command: &mut Command) -> &mut Command {
    command.env("DEBIAN_FRONTEND", "noninteractive")
}

/// The `linux-image-*` package named by a `Depends:` line of `apt-cache depends` output.
pub(crate) fn image_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let package = line.trim().strip_prefix("Depends:")?.trim();
        (package.starts_with("linux-image-") && !package.starts_with('<'))
            .then(|| package.to_owned())
    })
}

/// The kernel release inside an image package: `linux-image-6.12.95+deb12-amd64` holds
/// `vmlinuz-6.12.95+deb12-amd64`; an `-unsigned` package holds the same release.
pub(crate) fn kernel_version(image_package: &str) -> String {
    let version = image_package
        .strip_prefix("linux-image-")
        .unwrap_or(image_package);
    version
        .strip_suffix("-unsigned")
        .unwrap_or(version)
        .to_owned()
}

/// Downloads and unpacks the kernel's packages (the image first) into the cache and
/// regenerates `modules.dep`, unless a complete tree is already there.
fn ensure_kernel_tree(
    apt: &mut Apt,
    cache: &Path,
    suite: &str,
    packages: &[String],
    kernel: &Kernel,
) -> Result<(), ProvisionError> {
    if kernel_tree_complete(kernel) {
        return Ok(());
    }
    let downloads = cache.join("debs");
    fs::create_dir_all(&downloads).map_err(io_error(&downloads))?;
    for package in packages {
        remove_downloads(&downloads, package)?;
    }
    println!("provision: downloading {} from {suite}", packages.join(" "));
    let download = |apt: &Apt| {
        host_command::output(
            apt.command("apt-get")
                .current_dir(&downloads)
                .arg("download")
                .args(packages.iter().map(|p| format!("{p}/{suite}"))),
        )
    };
    match download(apt) {
        Ok(_) => {}
        Err(_) if !apt.updated => {
            apt.update()?;
            download(apt)?;
        }
        Err(err) => return Err(err.into()),
    }
    unpack_kernel_tree(cache, &downloads, packages, kernel)
}

/// The files a kernel tree in the cache must have (its headers' too, where they are
/// unpacked inside it).
fn kernel_tree_files(kernel: &Kernel) -> Vec<(&'static str, PathBuf)> {
    let mut required = vec![
        ("the kernel image", kernel.vmlinuz()),
        ("the kernel config", kernel.config()),
        ("modules.dep", kernel.modules_dir().join("modules.dep")),
    ];
    if kernel.headers.starts_with(&kernel.root) {
        required.push(("the headers' Makefile", kernel.headers.join("Makefile")));
    }
    required
}

/// Whether `kernel`'s tree is unpacked in the cache with everything it needs.
pub(crate) fn kernel_tree_complete(kernel: &Kernel) -> bool {
    kernel_tree_files(kernel)
        .iter()
        .all(|(_, path)| path.is_file())
}

/// Unpacks the downloaded `packages` (found in `downloads`, removed once unpacked) into
/// `kernel.root` and regenerates `modules.dep`.
pub(crate) fn unpack_kernel_tree(
    cache: &Path,
    downloads: &Path,
    packages: &[String],
    kernel: &Kernel,
) -> Result<(), ProvisionError> {
    let debs = packages
        .iter()
        .map(|package| find_download(downloads, package))
        .collect::<Result<Vec<_>, _>>()?;

    // Unpack next to the final place and rename, so an interrupted run never leaves a tree
    // that looks complete. (Not `with_extension`: the version holds dots.)
    let linux_dir = cache.join("linux");
    fs::create_dir_all(&linux_dir).map_err(io_error(&linux_dir))?;
    let partial = linux_dir.join(format!("{}.partial", kernel.version));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io_error(&partial))?;
    }
    for deb in &debs {
        println!(
            "provision: unpacking {} into {}",
            deb.display(),
            kernel.root.display()
        );
        host_command::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
    }
    link_usr_lib_layout(&partial, &kernel.version)?;
    if kernel.headers.starts_with(&kernel.root) {
        point_headers_at_unpacked_common(kernel, &partial)?;
    }
    println!("provision: depmod for {}", kernel.version);
    host_command::output(
        Command::new(tool_path("depmod"))
            .arg("-b")
            .arg(&partial)
            .arg(&kernel.version),
    )?;
    if kernel.root.exists() {
        fs::remove_dir_all(&kernel.root).map_err(io_error(&kernel.root))?;
    }
    fs::rename(&partial, &kernel.root).map_err(io_error(&kernel.root))?;
    for deb in &debs {
        fs::remove_file(deb).map_err(io_error(deb))?;
    }
    for (what, path) in kernel_tree_files(kernel) {
        if !path.is_file() {
            return Err(ProvisionError::Missing {
                what: format!("{what} of Linux {}", kernel.version),
                path,
            });
        }
    }
    Ok(())
}

/// Debian's 7.x kernels ship everything in `/usr/lib/modules/<version>` (`vmlinuz`, `config`
/// beside the modules); the runner reads a tree in the older layout (`boot/vmlinuz-<version>`,
/// `boot/config-<version>`, `lib/modules`), so such a tree gets links in that layout.
fn link_usr_lib_layout(tree: &Path, version: &str) -> Result<(), ProvisionError> {
    let modules = Path::new("usr/lib/modules").join(version);
    if !tree.join(&modules).join("vmlinuz").is_file() || tree.join("lib").exists() {
        return Ok(());
    }
    let boot = tree.join("boot");
    fs::create_dir_all(&boot).map_err(io_error(&boot))?;
    let links = [
        (
            Path::new("..").join(&modules).join("vmlinuz"),
            boot.join(format!("vmlinuz-{version}")),
        ),
        (
            Path::new("..").join(&modules).join("config"),
            boot.join(format!("config-{version}")),
        ),
        (PathBuf::from("usr/lib"), tree.join("lib")),
    ];
    for (target, link) in links {
        std::os::unix::fs::symlink(&target, &link).map_err(io_error(&link))?;
    }
    Ok(())
}

/// Debian's flavour headers hold a one-line Makefile that includes the common headers by
/// their absolute path in `/usr/src`; unpacked elsewhere, it must name where they now are
/// (the other links in the package are relative and survive the move).
fn point_headers_at_unpacked_common(kernel: &Kernel, partial: &Path) -> Result<(), ProvisionError> {
    let relative =
        kernel
            .headers
            .strip_prefix(&kernel.root)
            .map_err(|_| ProvisionError::Missing {
                what: format!("the headers of Linux {} inside its tree", kernel.version),
                path: kernel.headers.clone(),
            })?;
    let makefile = partial.join(relative).join("Makefile");
    let text = fs::read_to_string(&makefile).map_err(io_error(&makefile))?;
    let unpacked = kernel.root.join("usr/src");
    let rewritten = rebase_headers_makefile(&text, &unpacked.to_string_lossy());
    fs::write(&makefile, rewritten).map_err(io_error(&makefile))
}

/// `include /usr/src/<dir>/Makefile` lines pointed at `<unpacked>/<dir>/Makefile`.
fn rebase_headers_makefile(text: &str, unpacked: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("include /usr/src/") {
            Some(rest) => format!("include {unpacked}/{rest}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// Whether `path` is a download of `package` (`name` or `name:arch`; apt names the file
/// `<name>_<version>_<arch>.deb`).
fn download_matches(path: &Path, package: &str) -> bool {
    let package = package.split_once(':').map_or(package, |(name, _)| name);
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
}

pub(crate) fn remove_downloads(dir: &Path, package: &str) -> Result<(), ProvisionError> {
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if download_matches(&path, package) {
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

fn find_download(dir: &Path, package: &str) -> Result<PathBuf, ProvisionError> {
    fs::read_dir(dir)
        .map_err(io_error(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| download_matches(p, package))
        .ok_or_else(|| ProvisionError::Missing {
            what: format!("the downloaded {package}_*.deb"),
            path: dir.to_owned(),
        })
}

/// An sbin tool by absolute path when PATH (a non-root user's) lacks the sbin directories.
fn tool_path(tool: &str) -> PathBuf {
    if host_command::on_path(tool) {
        return PathBuf::from(tool);
    }
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(tool))
}

fn missing_rust_targets(workspace: &Workspace) -> Result<Vec<&'static str>, ProvisionError> {
    if !host_command::on_path("rustup") {
        return Err(ProvisionError::MissingTool {
            tool: "rustup",
            hint: "the no_std builds need rustup to add targets (https://rustup.rs)",
        });
    }
    let installed =
        host_command::stdout_text(Command::new("rustup").current_dir(&workspace.root).args([
            "target",
            "list",
            "--installed",
        ]))?;
    let installed: BTreeSet<&str> = installed.lines().map(str::trim).collect();
    Ok(RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.contains(t))
        .collect())
}

fn ensure_rust_targets(workspace: &Workspace) -> Result<(), ProvisionError> {
    let missing = missing_rust_targets(workspace)?;
    if missing.is_empty() {
        return Ok(());
    }
    println!("provision: rustup target add {}", missing.join(" "));
    host_command::output(
        Command::new("rustup")
            .current_dir(&workspace.root)
            .args(["target", "add"])
            .args(&missing),
    )?;
    Ok(())
}

/// busybox-static's binary, checked to be statically linked.
fn static_busybox() -> Result<PathBuf, ProvisionError> {
    let path = ["/usr/bin/busybox", "/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| ProvisionError::Missing {
            what: "busybox (package busybox-static)".into(),
            path: PathBuf::from("/bin/busybox"),
        })?;
    let bytes = fs::read(&path).map_err(io_error(&path))?;
    match elf_has_interpreter(&bytes) {
        Some(false) => Ok(path),
        _ => Err(ProvisionError::BusyboxNotStatic { path }),
    }
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header (is dynamically
/// linked); `None` if it is not such an ELF file.
fn elf_has_interpreter(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..4)? != b"\x7fELF" || *bytes.get(4)? != 2 || *bytes.get(5)? != 1 {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let table = usize::try_from(u64_at(0x20)?).ok()?;
    let entry_size = usize::from(u16_at(0x36)?);
    let count = usize::from(u16_at(0x38)?);
    for index in 0..count {
        let header = table.checked_add(index.checked_mul(entry_size)?)?;
        if u32_at(header)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metapackage_dependency_names_the_kernel() {
        let output = "linux-image-amd64\n  Depends: linux-image-6.12.95+deb12-amd64\n";
        assert_eq!(
            image_dependency(output).as_deref(),
            Some("linux-image-6.12.95+deb12-amd64")
        );
        assert_eq!(
            kernel_version("linux-image-6.12.95+deb12-amd64"),
            "6.12.95+deb12-amd64"
        );
        assert_eq!(
            kernel_version("linux-image-6.12.95+deb12-amd64-unsigned"),
            "6.12.95+deb12-amd64"
        );
        assert_eq!(
            image_dependency("linux-image-amd64\n  Depends: <linux-image-x>\n"),
            None
        );
        assert_eq!(image_dependency("W: Unable to locate package\n"), None);
    }

    #[test]
    fn backports_source_is_found_in_either_format() {
        let deb822 =
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n\nTypes: deb deb-src\nURIs: http://deb.debian.org/debian\n\
                      Suites: bookworm-backports\nComponents: main\n";
        assert!(deb822_has_suite(deb822, "deb", "bookworm-backports"));
        assert!(!deb822_has_suite(
            &deb822.replace("bookworm-backports", "x"),
            "deb",
            "bookworm-backports"
        ));
        let disabled = "Enabled: no\nTypes: deb\nSuites: bookworm-backports\n";
        assert!(!deb822_has_suite(disabled, "deb", "bookworm-backports"));
        let src_only = "Types: deb-src\nSuites: bookworm-backports\n";
        assert!(!deb822_has_suite(src_only, "deb", "bookworm-backports"));
        assert!(deb822_has_suite(src_only, "deb-src", "bookworm-backports"));

        let list = "# deb http://deb.debian.org/debian bookworm-backports main\n\
                    deb [arch=amd64] http://deb.debian.org/debian bookworm-backports main\n";
        assert!(one_line_has_suite(list, "deb", "bookworm-backports"));
        assert!(!one_line_has_suite(
            list.lines().next().unwrap_or(""),
            "deb",
            "bookworm-backports"
        ));
        assert!(!one_line_has_suite(list, "deb-src", "bookworm-backports"));
    }

    #[test]
    fn lts_kernel_packages_are_derived_from_the_image() {
        assert_eq!(
            lts_packages("linux-image-6.1.0-57-amd64", "6.1.0-57-amd64"),
            Some(vec![
                "linux-image-6.1.0-57-amd64".to_owned(),
                "linux-headers-6.1.0-57-amd64".to_owned(),
                "linux-headers-6.1.0-57-common".to_owned(),
                "linux-kbuild-6.1".to_owned(),
            ])
        );
        assert_eq!(
            lts_packages("linux-image-6.12.95+deb12-amd64", "6.12.95+deb12-amd64"),
            None
        );
        assert_eq!(
            lts_packages("linux-image-6.1.0-57-arm64", "6.1.0-57-arm64"),
            None
        );
    }

    #[test]
    fn arm64_kernel_packages_follow_the_x86_64_release() {
        assert_eq!(
            arm64_packages("6.12.95+deb12", Arm64Flavour::Pages16K),
            [
                "linux-image-6.12.95+deb12-arm64-16k",
                "linux-headers-6.12.95+deb12-arm64-16k",
                "linux-headers-6.12.95+deb12-common",
                "linux-kbuild-6.12.95+deb12:amd64",
            ]
        );
        assert_eq!(
            arm64_packages("6.12.95+deb12", Arm64Flavour::Pages4K)[1],
            "linux-headers-6.12.95+deb12-arm64"
        );
        // A download of an arch-qualified package is found by its name alone.
        let deb = Path::new("/c/debs/linux-kbuild-6.12.95+deb12_6.12.95-1~bpo12+1_amd64.deb");
        assert!(download_matches(deb, "linux-kbuild-6.12.95+deb12:amd64"));
        assert!(download_matches(deb, "linux-kbuild-6.12.95+deb12"));
        assert!(!download_matches(deb, "linux-kbuild-6.12.95"));
    }

    #[test]
    fn the_headers_makefile_is_pointed_at_the_unpacked_common_headers() {
        let text = "include /usr/src/linux-headers-6.1.0-57-common/Makefile\n";
        assert_eq!(
            rebase_headers_makefile(text, "/c/linux/6.1.0-57-amd64/usr/src"),
            "include /c/linux/6.1.0-57-amd64/usr/src/linux-headers-6.1.0-57-common/Makefile\n"
        );
        assert_eq!(rebase_headers_makefile("a\nb\n", "/x"), "a\nb\n");
    }

    #[test]
    fn stamp_round_trips_and_rejects_other_recipes() {
        let stamp = Stamp {
            codename: "bookworm".into(),
            kernel: "6.12.95+deb12-amd64".into(),
        };
        assert_eq!(Stamp::parse(&stamp.render()), Some(stamp));
        assert_eq!(
            Stamp::parse("extmem-provision 0\ncodename x\nkernel y\n"),
            None
        );
    }

    #[test]
    fn static_and_dynamic_elf_files_are_told_apart() {
        // A minimal ELF64 header with one program header of the given type at 0x40.
        let elf = |p_type: u32| {
            let mut bytes = vec![0_u8; 0x40 + 0x38];
            bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
            bytes[0x20..0x28].copy_from_slice(&0x40_u64.to_le_bytes());
            bytes[0x36..0x38].copy_from_slice(&0x38_u16.to_le_bytes());
            bytes[0x38..0x3a].copy_from_slice(&1_u16.to_le_bytes());
            bytes[0x40..0x44].copy_from_slice(&p_type.to_le_bytes());
            bytes
        };
        assert_eq!(elf_has_interpreter(&elf(3)), Some(true));
        assert_eq!(elf_has_interpreter(&elf(1)), Some(false));
        assert_eq!(elf_has_interpreter(b"#!/bin/sh\n"), None);
        let mut truncated = elf(3);
        truncated.truncate(0x42);
        assert_eq!(elf_has_interpreter(&truncated), None);
    }
}
