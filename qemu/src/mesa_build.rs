//! lavapipe built with libextmem for `cargo mesa`: Debian's Mesa source (`mesa_source`),
//! `tests/mesa/*.patch` applied, only lavapipe configured (`swrast` Vulkan driver, the
//! llvmpipe gallium driver it runs on, no GL, EGL, GBM or window-system platform), linked
//! against the static libextmem that cargo builds from this tree.
//!
//! What is kept under the cache:
//! - `mesa-extmem/`: libextmem as an installed library (`lib/libextmem.a`,
//!   `include/extmem.h`, `lib/pkgconfig/extmem.pc`), what `dependency('extmem')` finds;
//! - `mesa-lvp-src/`: a git tree of the upstream source, reset and patched before a build;
//! - `mesa-build/`: meson's build directory, so a changed patch or libextmem recompiles
//!   only what changed (a first build is long: see the README);
//! - `mesa-lvp-<key>/`: the patched `libvulkan_lvp.so` and its ICD manifest, where `key`
//!   hashes the patches and `libextmem.a`; a run whose key exists builds nothing.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::capi_step;
use crate::host_command::{self, CommandError};
use crate::mesa_source::{self, MesaSourceError};
use crate::provision::{self, ProvisionError};
use crate::workspace::Workspace;

/// The directory of the patches, relative to the workspace root.
pub const PATCH_DIR: &str = "tests/mesa";

/// What a lavapipe build needs from the release: Mesa's Python generators, the shader
/// compiler for its internal shaders, LLVM 15 (the one Debian's own lavapipe links),
/// the parser generators and the libraries meson looks for; the Vulkan headers for
/// libextmem's header; FFmpeg for the round trip.
const RELEASE_PACKAGES: &[&str] = &[
    "python3-mako",
    "python3-yaml",
    "python3-packaging",
    "glslang-tools",
    "llvm-15-dev",
    "bison",
    "flex",
    "libelf-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "libexpat1-dev",
    "pkg-config",
    "ninja-build",
    "libvulkan-dev",
    "ffmpeg",
];

/// What comes from backports: meson (Mesa 25.0 needs 1.1; bookworm has 1.0), libdrm's
/// headers (of the backports libdrm that Debian's Mesa 25.0 pulls in) and the stock
/// lavapipe the patched one is compared with.
const BACKPORTS_PACKAGES: &[&str] = &["meson", "libdrm-dev", "mesa-vulkan-drivers"];

/// The oldest meson Mesa 25.0's `meson.build` accepts.
const MESON_MINIMUM: (u32, u32) = (1, 1);

/// The meson options: lavapipe and nothing else.
const MESON_OPTIONS: &[&str] = &[
    "-Dbuildtype=release",
    "-Dvulkan-drivers=swrast",
    "-Dgallium-drivers=llvmpipe",
    "-Dplatforms=",
    "-Dopengl=false",
    "-Dgles1=disabled",
    "-Dgles2=disabled",
    "-Degl=disabled",
    "-Dglx=disabled",
    "-Dgbm=disabled",
    "-Dglvnd=disabled",
    "-Dllvm=enabled",
    "-Dshared-llvm=enabled",
    "-Dvalgrind=disabled",
    "-Dlibunwind=disabled",
    "-Dlmsensors=disabled",
    "-Dbuild-tests=false",
    "-Dvideo-codecs=",
    "-Dgallium-va=disabled",
    "-Dgallium-vdpau=disabled",
    "-Dgallium-xa=disabled",
    "-Dgallium-nine=false",
    "-Dgallium-rusticl=false",
    "-Dvulkan-layers=",
    "-Dtools=",
];

/// The driver inside the build directory.
const DRIVER: &str = "src/gallium/targets/lavapipe/libvulkan_lvp.so";

/// The build's tools from Debian, ahead of anything else on PATH (a pyenv `python3`
/// without mako, a `llvm-config` of another LLVM).
const NATIVE_FILE: &str =
    "[binaries]\nllvm-config = '/usr/bin/llvm-config-15'\npython = '/usr/bin/python3'\n";

/// Why the patched lavapipe could not be built.
#[derive(Debug)]
pub enum MesaBuildError {
    /// A package could not be installed.
    Provision(ProvisionError),
    /// The source could not be fetched.
    Source(MesaSourceError),
    /// A command failed.
    Command(CommandError),
    /// A file could not be read or written.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Something expected is not there.
    Missing {
        /// What.
        what: String,
    },
}

impl fmt::Display for MesaBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provision(err) => write!(f, "{err}"),
            Self::Source(err) => write!(f, "{err}"),
            Self::Command(err) => write!(f, "{err}"),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::Missing { what } => write!(f, "{what}"),
        }
    }
}

impl From<ProvisionError> for MesaBuildError {
    fn from(err: ProvisionError) -> Self {
        Self::Provision(err)
    }
}

impl From<MesaSourceError> for MesaBuildError {
    fn from(err: MesaSourceError) -> Self {
        Self::Source(err)
    }
}

impl From<CommandError> for MesaBuildError {
    fn from(err: CommandError) -> Self {
        Self::Command(err)
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> MesaBuildError + '_ {
    move |source| MesaBuildError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A patched lavapipe ready to load.
#[derive(Debug)]
pub struct PatchedLavapipe {
    /// Its ICD manifest (absolute `library_path`).
    pub manifest: PathBuf,
    /// The Debian version of the Mesa source it was built from.
    pub version: String,
    /// The cache key (patches and libextmem).
    pub key: String,
    /// How long this run's build took; `None` when the key's build was cached.
    pub built_in: Option<Duration>,
}

/// Installs the build's packages: those missing from the release, and the backports ones
/// when missing or (meson) too old.
pub fn provision_packages() -> Result<(), MesaBuildError> {
    provision::ensure_packages(RELEASE_PACKAGES)?;
    let meson_ok = meson_version().is_some_and(|v| v >= MESON_MINIMUM);
    provision::ensure_backports_packages(BACKPORTS_PACKAGES, !meson_ok)?;
    Ok(())
}

/// `meson --version` as (major, minor).
fn meson_version() -> Option<(u32, u32)> {
    let text = host_command::stdout_text(Command::new("meson").arg("--version")).ok()?;
    parse_version(&text)
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Builds (or finds cached) lavapipe with the patches of [`PATCH_DIR`] and this tree's
/// libextmem.
pub fn ensure(workspace: &Workspace) -> Result<PatchedLavapipe, MesaBuildError> {
    let cache = provision::cache_dir();
    let source = mesa_source::ensure(&cache)?;
    let patches = patches(workspace)?;
    let prefix = cache.join("mesa-extmem");
    let library = install_libextmem(workspace, &prefix)?;
    let mut hashed: Vec<&Path> = patches.iter().map(PathBuf::as_path).collect();
    hashed.push(&library);
    let key = content_key(&cache, &hashed)?;
    let out = cache.join(format!("mesa-lvp-{key}"));
    let manifest = out.join("lvp_icd.json");
    if manifest.is_file() {
        return Ok(PatchedLavapipe {
            manifest,
            version: source.version,
            key,
            built_in: None,
        });
    }

    let tree = cache.join("mesa-lvp-src");
    prepare_tree(&source.tree, &tree, &patches)?;
    let build = cache.join("mesa-build");
    let started = Instant::now();
    configure(&tree, &build, &prefix)?;
    // ninja does not know the static library meson found through pkg-config: relink.
    let driver = build.join(DRIVER);
    match fs::remove_file(&driver) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(&driver)(err)),
    }
    println!(
        "mesa: ninja -C {} (a first build takes long)",
        build.display()
    );
    host_command::output(
        Command::new("nice")
            .args(["-n", "10", "ninja", "-j2", "-C"])
            .arg(&build)
            .arg(DRIVER),
    )?;
    let built_in = started.elapsed();

    fs::create_dir_all(&out).map_err(io_error(&out))?;
    let installed = out.join("libvulkan_lvp.so");
    fs::copy(&driver, &installed).map_err(io_error(&installed))?;
    let json = format!(
        "{{\n    \"ICD\": {{\n        \"api_version\": \"1.4.305\",\n        \"library_path\": \"{}\"\n    }},\n    \"file_format_version\": \"1.0.0\"\n}}\n",
        installed.display()
    );
    // Written last: its presence marks the key's build complete.
    fs::write(&manifest, json).map_err(io_error(&manifest))?;
    Ok(PatchedLavapipe {
        manifest,
        version: source.version,
        key,
        built_in: Some(built_in),
    })
}

/// The `*.patch` files of [`PATCH_DIR`], in name order.
fn patches(workspace: &Workspace) -> Result<Vec<PathBuf>, MesaBuildError> {
    let dir = workspace.root.join(PATCH_DIR);
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(io_error(&dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "patch"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(MesaBuildError::Missing {
            what: format!("no *.patch in {}", dir.display()),
        });
    }
    Ok(found)
}

/// Builds the static libextmem and installs it with its header and pkg-config file under
/// `prefix`; returns the installed library.
fn install_libextmem(workspace: &Workspace, prefix: &Path) -> Result<PathBuf, MesaBuildError> {
    println!("mesa: cargo build --release -p extmem-capi --lib");
    host_command::output(workspace.cargo().args([
        "build",
        "--release",
        "--quiet",
        "--lib",
        "-p",
        "extmem-capi",
    ]))?;
    let lib_dir = prefix.join("lib");
    let include_dir = prefix.join("include");
    for dir in [&lib_dir, &include_dir] {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    // The static library only: a driver that links it needs nothing at run time.
    let built = workspace.target_dir.join("release/libextmem.a");
    let library = lib_dir.join("libextmem.a");
    fs::copy(&built, &library).map_err(io_error(&built))?;
    let header = workspace
        .root
        .join(capi_step::CAPI_DIR)
        .join("include/extmem.h");
    let installed_header = include_dir.join("extmem.h");
    fs::copy(&header, &installed_header).map_err(io_error(&header))?;
    capi_step::write_pc(
        workspace,
        prefix,
        &lib_dir,
        &include_dir,
        &lib_dir.join("pkgconfig"),
    )
    .map_err(|what| MesaBuildError::Missing { what })?;
    Ok(library)
}

/// The first 16 hex digits of the SHA-256 of the files' SHA-256 sums (kept in
/// `cache/mesa-key.txt`, which says what the key covers).
fn content_key(cache: &Path, files: &[&Path]) -> Result<String, MesaBuildError> {
    let sums = host_command::stdout_text(Command::new("sha256sum").args(files))?;
    let list = cache.join("mesa-key.txt");
    fs::write(&list, &sums).map_err(io_error(&list))?;
    let combined = host_command::stdout_text(Command::new("sha256sum").arg(&list))?;
    combined
        .split_whitespace()
        .next()
        .and_then(|digest| digest.get(..16))
        .map(str::to_owned)
        .ok_or_else(|| MesaBuildError::Missing {
            what: format!("a digest in sha256sum's output {combined:?}"),
        })
}

/// `git` on the work tree; the unpacked files keep the tarball's owner, which git would
/// otherwise refuse as a "dubious" repository.
fn git(tree: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-c")
        .arg("safe.directory=*")
        .arg("-C")
        .arg(tree);
    command
}

/// Makes `tree` the upstream source with the patches applied: a git repository whose first
/// commit is the unpacked source, reset to it, then `git apply` of each patch.
fn prepare_tree(upstream: &Path, tree: &Path, patches: &[PathBuf]) -> Result<(), MesaBuildError> {
    if !tree.join(".git").is_dir() {
        println!("mesa: copying the source into {}", tree.display());
        if tree.exists() {
            fs::remove_dir_all(tree).map_err(io_error(tree))?;
        }
        host_command::output(Command::new("cp").arg("-a").arg(upstream).arg(tree))?;
        host_command::output(git(tree).args(["init", "-q"]))?;
        host_command::output(git(tree).args(["add", "-A"]))?;
        host_command::output(
            git(tree)
                .args([
                    "-c",
                    "user.name=extmem",
                    "-c",
                    "user.email=extmem@localhost",
                ])
                .args(["commit", "-q", "-m", "upstream"]),
        )?;
    }
    host_command::output(git(tree).args(["reset", "-q", "--hard"]))?;
    host_command::output(git(tree).args(["clean", "-q", "-fd"]))?;
    for patch in patches {
        println!("mesa: git apply {}", patch.display());
        host_command::output(git(tree).arg("apply").arg(patch))?;
    }
    Ok(())
}

/// `meson setup` of `build` unless it is configured already (ninja then re-runs meson
/// itself when a `meson.build` changed); either way pkg-config looks in `prefix` first.
fn configure(tree: &Path, build: &Path, prefix: &Path) -> Result<(), MesaBuildError> {
    let pkg_config_path = format!(
        "-Dpkg_config_path={}",
        prefix.join("lib/pkgconfig").display()
    );
    if build.join("build.ninja").is_file() {
        host_command::output(
            Command::new("meson")
                .arg("configure")
                .arg(build)
                .arg(&pkg_config_path),
        )?;
        return Ok(());
    }
    let native = build.with_file_name("mesa-native.ini");
    fs::write(&native, NATIVE_FILE).map_err(io_error(&native))?;
    println!("mesa: meson setup {}", build.display());
    host_command::output(
        Command::new("meson")
            .current_dir(tree)
            .arg("setup")
            .arg(build)
            .arg(".")
            .arg("--native-file")
            .arg(&native)
            .arg(&pkg_config_path)
            .args(MESON_OPTIONS),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meson_versions_compare_by_major_and_minor() {
        assert_eq!(parse_version("1.7.0\n"), Some((1, 7)));
        assert_eq!(parse_version("1.0.1"), Some((1, 0)));
        assert!(parse_version("1.0.1").is_some_and(|v| v < MESON_MINIMUM));
        assert!(parse_version("1.10.0").is_some_and(|v| v >= MESON_MINIMUM));
        assert_eq!(parse_version("meson"), None);
    }
}
