//! The arm64 guest's userspace and kernels, from Debian's arm64 packages.
//!
//! The x86_64 guest runs the host's own root; an arm64 guest needs an arm64 one. It is built
//! without running any arm64 code on the host: a private apt (its own sources, lists, status
//! and cache under `~/.cache/extmem/arm64/apt`, the host's apt and dpkg untouched) resolves
//! and downloads the closure of [`ROOT_PACKAGES`] for arm64, and `dpkg-deb -x` unpacks every
//! package into the root. No maintainer script runs (they would need arm64 emulation), which
//! these packages do not need: libraries, the Vulkan loader, layer and tools, Mesa's DRI
//! drivers, kmod, mount and a static busybox, found by their paths. The root lives in a
//! directory named after its recipe's hash ([`recipe_hash`]), so changing the package list
//! or [`ROOT_RECIPE`] builds a new one and an unchanged recipe is never rebuilt.
//!
//! The kernels (4 KiB and 16 KiB pages, with the headers the module is built against) are
//! `provision::provision_arm64`'s.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guest_arch::GuestArch;
use crate::host_command;
use crate::provision::{self, Apt, Arm64Flavour, Kernel, ProvisionError};

/// What the arm64 root holds: what the guest programs link and load (the Khronos loader and
/// validation layer, GBM with Mesa's DRI drivers for virtio-gpu), what the guest plan runs
/// (`vulkaninfo`, `insmod`/`rmmod`, `mount`, `/bin/true`) and the static busybox the
/// initramfs is built around. Mesa comes from backports, as on the host.
pub const ROOT_PACKAGES: &[&str] = &[
    "libc6",
    "coreutils",
    "mount",
    "kmod",
    "busybox-static",
    "libvulkan1",
    "vulkan-tools",
    "vulkan-validationlayers",
    "libgbm1",
    "libgbm-dev",
    "libgl1-mesa-dri",
];

/// Bump when the way the root is built changes (not its package list: that is hashed).
const ROOT_RECIPE: &str = "extmem-arm64-root 1";

/// The Debian architecture of the root and kernels.
const DEBIAN_ARCH: &str = "arm64";

/// Written last into a finished root, so an interrupted build is never taken for one.
const COMPLETE_MARKER: &str = ".extmem-root-complete";

/// The provisioned arm64 guest: its root and the kernel of one page size.
#[derive(Debug, Clone)]
pub struct Arm64Guest {
    /// The unpacked root the guest chroots into.
    pub root: PathBuf,
    /// The arm64 static busybox inside it, for the initramfs.
    pub busybox: PathBuf,
    /// The kernel.
    pub kernel: Kernel,
}

/// The recipe's hash: 64-bit FNV-1a over [`ROOT_RECIPE`], the release and the package list,
/// in hex. FNV rather than std's hasher, whose output may change between Rust releases and
/// would rebuild the root for nothing.
pub fn recipe_hash(codename: &str, packages: &[&str]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET;
    let words = [ROOT_RECIPE, codename]
        .into_iter()
        .chain(packages.iter().copied());
    for word in words {
        // A separator no package name holds, so ["ab", "c"] and ["a", "bc"] differ.
        for byte in word.bytes().chain([b'\n']) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    format!("{hash:016x}")
}

/// Provisions the arm64 root and the kernel `arch` boots (4 KiB or 16 KiB pages, the release
/// of `x86`, the x86_64 guest's kernel), printing a line per action; a warm run only checks
/// that they are there.
pub fn provision(arch: GuestArch, x86: &Kernel) -> Result<Arm64Guest, ProvisionError> {
    let flavour = match arch {
        GuestArch::Arm64Pages16k => Arm64Flavour::Pages16K,
        GuestArch::Arm64 | GuestArch::X86_64 => Arm64Flavour::Pages4K,
    };
    let kernel = provision::provision_arm64(x86, flavour)?;
    let codename = provision::release_codename()?;
    let cache = provision::cache_dir().join("arm64");
    let mut apt = private_apt(&cache.join("apt"), &codename)?;
    let backports = format!("{codename}-backports");
    let root = ensure_root(&mut apt, &cache, &codename, &backports)?;
    let busybox = root.join("bin/busybox");
    if !busybox.is_file() {
        return Err(ProvisionError::Missing {
            what: "busybox in the arm64 root (package busybox-static)".into(),
            path: busybox,
        });
    }
    Ok(Arm64Guest {
        root,
        busybox,
        kernel,
    })
}

/// The private apt for arm64 packages of `codename` (release, updates, security, backports),
/// its directories created and its sources written; lists are fetched on first use.
fn private_apt(dir: &Path, codename: &str) -> Result<Apt, ProvisionError> {
    let etc = dir.join("etc");
    let state = dir.join("state");
    let archives = dir.join("cache/archives/partial");
    for path in [
        etc.join("apt.conf.d"),
        etc.join("preferences.d"),
        etc.join("sources.list.d"),
        state.join("lists/partial"),
        archives,
    ] {
        fs::create_dir_all(&path).map_err(|source| ProvisionError::Io { path, source })?;
    }
    let status = state.join("status");
    if !status.exists() {
        // An empty dpkg status: nothing is installed, so apt resolves the whole closure.
        fs::write(&status, "").map_err(|source| ProvisionError::Io {
            path: status.clone(),
            source,
        })?;
    }
    let sources = etc.join("sources.list");
    let text = sources_list(codename);
    if fs::read_to_string(&sources).ok().as_deref() != Some(text.as_str()) {
        fs::write(&sources, text).map_err(|source| ProvisionError::Io {
            path: sources.clone(),
            source,
        })?;
    }
    let mut apt = Apt::private(vec![
        format!("Dir::Etc={}", etc.display()),
        format!("Dir::State={}", state.display()),
        format!("Dir::State::status={}", status.display()),
        format!("Dir::Cache={}", dir.join("cache").display()),
        format!("APT::Architecture={DEBIAN_ARCH}"),
        format!("APT::Architectures={DEBIAN_ARCH}"),
        // Its own state and cache: the host's dpkg lock has nothing to guard here.
        "Debug::NoLocking=1".into(),
        // The downloads land in root's cache directory, which apt's _apt user cannot write.
        "APT::Sandbox::User=root".into(),
    ]);
    let has_lists = fs::read_dir(state.join("lists"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false);
    apt.lists_stale = !has_lists;
    Ok(apt)
}

/// The private apt's sources: the suites the host's provisioning uses, arm64 only.
fn sources_list(codename: &str) -> String {
    let key = "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg";
    let mut text = String::from("# Written by extmem-qemu (qemu/src/arm64_root.rs).\n");
    for (archive, suite) in [
        ("debian", codename.to_owned()),
        ("debian", format!("{codename}-updates")),
        ("debian-security", format!("{codename}-security")),
        ("debian", format!("{codename}-backports")),
    ] {
        text.push_str(&format!(
            "deb [arch={DEBIAN_ARCH} {key}] http://deb.debian.org/{archive} {suite} main\n"
        ));
    }
    text
}

/// The root for the current recipe, built if it is not there yet.
fn ensure_root(
    apt: &mut Apt,
    cache: &Path,
    codename: &str,
    backports: &str,
) -> Result<PathBuf, ProvisionError> {
    let root = cache.join(format!("root-{}", recipe_hash(codename, ROOT_PACKAGES)));
    if root.join(COMPLETE_MARKER).is_file() {
        return Ok(root);
    }
    if apt.lists_stale {
        apt.update()?;
    }
    println!(
        "provision: downloading the arm64 root's packages ({} and their dependencies)",
        ROOT_PACKAGES.join(" ")
    );
    let archives = cache.join("apt/cache/archives");
    remove_debs(&archives)?;
    let download = |apt: &Apt| {
        host_command::output(
            apt.command("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args([
                    "install",
                    "--download-only",
                    "--no-install-recommends",
                    "-y",
                ])
                .args(["-t", backports])
                .args(ROOT_PACKAGES),
        )
    };
    if download(apt).is_err() {
        apt.update()?;
        download(apt)?;
    }
    let mut debs: Vec<PathBuf> = fs::read_dir(&archives)
        .map_err(|source| ProvisionError::Io {
            path: archives.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    let partial = cache.join(format!(
        "{}.partial",
        root.file_name().unwrap_or_default().to_string_lossy()
    ));
    remove_dir_if_present(&partial)?;
    println!(
        "provision: unpacking {} arm64 packages into {}",
        debs.len(),
        root.display()
    );
    for deb in &debs {
        host_command::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
    }
    // Mount points the guest binds its /proc, /sys, /dev, /tmp and /run on.
    for dir in ["proc", "sys", "dev", "tmp", "run"] {
        let path = partial.join(dir);
        fs::create_dir_all(&path).map_err(|source| ProvisionError::Io { path, source })?;
    }
    let marker = partial.join(COMPLETE_MARKER);
    fs::write(
        &marker,
        format!("{ROOT_RECIPE}\n{}\n", ROOT_PACKAGES.join(" ")),
    )
    .map_err(|source| ProvisionError::Io {
        path: marker,
        source,
    })?;
    remove_dir_if_present(&root)?;
    fs::rename(&partial, &root).map_err(|source| ProvisionError::Io {
        path: root.clone(),
        source,
    })?;
    remove_debs(&archives)?;
    remove_other_roots(cache, &root)?;
    Ok(root)
}

/// Makes the directories of the host paths the guest binds into the root (the workspace and
/// target dir: the guest runs the cross-built programs by their host paths), so the binds
/// have a place to go on the read-only share.
pub fn add_mount_points(root: &Path, host_paths: &[&Path]) -> Result<(), ProvisionError> {
    for host_path in host_paths {
        let relative = host_path.strip_prefix("/").unwrap_or(host_path);
        let path = root.join(relative);
        fs::create_dir_all(&path).map_err(|source| ProvisionError::Io { path, source })?;
    }
    Ok(())
}

fn remove_dir_if_present(path: &Path) -> Result<(), ProvisionError> {
    if path.exists() {
        fs::remove_dir_all(path).map_err(|source| ProvisionError::Io {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

fn remove_debs(dir: &Path) -> Result<(), ProvisionError> {
    let entries = fs::read_dir(dir).map_err(|source| ProvisionError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_some_and(|x| x == "deb") {
            fs::remove_file(&path).map_err(|source| ProvisionError::Io { path, source })?;
        }
    }
    Ok(())
}

/// Roots of older recipes are a few hundred MiB each and nothing uses them any more.
fn remove_other_roots(cache: &Path, keep: &Path) -> Result<(), ProvisionError> {
    let entries = fs::read_dir(cache).map_err(|source| ProvisionError::Io {
        path: cache.to_owned(),
        source,
    })?;
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let is_root = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("root-"));
        if is_root && path != keep {
            println!("provision: removing the old arm64 root {}", path.display());
            remove_dir_if_present(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recipe_hash_follows_the_package_list_and_release() {
        let base = recipe_hash("bookworm", ROOT_PACKAGES);
        assert_eq!(base, recipe_hash("bookworm", ROOT_PACKAGES));
        assert_eq!(base.len(), 16);
        assert_ne!(base, recipe_hash("trixie", ROOT_PACKAGES));
        assert_ne!(base, recipe_hash("bookworm", &ROOT_PACKAGES[1..]));
        assert_ne!(
            recipe_hash("bookworm", &["ab", "c"]),
            recipe_hash("bookworm", &["a", "bc"])
        );
    }

    #[test]
    fn sources_name_every_suite_for_arm64_only() {
        let text = sources_list("bookworm");
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("deb ")).collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.starts_with("deb [arch=arm64 ")));
        for suite in [
            " bookworm main",
            " bookworm-updates main",
            "/debian-security bookworm-security main",
            " bookworm-backports main",
        ] {
            assert!(lines.iter().any(|l| l.ends_with(suite)), "{suite}");
        }
    }

    #[test]
    fn mount_points_follow_the_host_paths() -> Result<(), ProvisionError> {
        let root = std::env::temp_dir().join(format!("extmem-arm64-root-{}", std::process::id()));
        add_mount_points(
            &root,
            &[Path::new("/work/ws"), Path::new("/work/ws/target")],
        )?;
        assert!(root.join("work/ws/target").is_dir());
        remove_dir_if_present(&root)
    }
}
