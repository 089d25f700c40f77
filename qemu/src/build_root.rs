//! The newest Debian kernel (7.x from trixie-backports) and the build root its module is
//! built in.
//!
//! Bookworm cannot run that kernel's build tools: `linux-kbuild-7.x` needs glibc 2.38 and the
//! headers' configuration names gcc-14. So a minimal trixie root (`mmdebstrap --variant=minbase`
//! with make, binutils and gcc-14) is made once under `~/.cache/extmem/build-root/`, in a
//! directory named after a hash of its recipe, so a changed recipe makes a new root. Inside
//! it, apt knows trixie and trixie-backports: it resolves the newest kernel
//! (`linux-image-amd64/trixie-backports`), installs that kernel's headers (which bring the
//! kbuild tools and the compiler they were configured with) and downloads the image, which is
//! unpacked under `~/.cache/extmem/linux/<version>` like the other kernels. The module is
//! built by `make` chrooted into the root, in a private mount namespace with `/proc` (objtool
//! reads it) and the build directory bind-mounted at its own path.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host_command;
use crate::provision::{self, Kernel, ProvisionError};

/// The release the root is made of.
const SUITE: &str = "trixie";
/// The suite the newest kernel comes from.
pub const KERNEL_SUITE: &str = "trixie-backports";
/// Debian's mirror, for the root's apt sources.
const MIRROR: &str = "http://deb.debian.org/debian";
/// What the root holds besides minbase; the kernel's headers add their own compiler and tools.
const PACKAGES: &[&str] = &["make", "binutils", "gcc-14"];
/// The metapackage whose dependency names the newest kernel image.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// Where, inside the root, kernel packages are downloaded to.
const DOWNLOADS: &str = "var/cache/extmem-debs";
/// Written last when the root is complete.
const COMPLETE_MARKER: &str = "extmem-build-root.complete";

/// The series `--kernel` names the newest kernel by.
pub const SERIES: &str = "7.x";

/// The root's recipe, hashed into its directory's name.
fn recipe() -> String {
    format!(
        "mmdebstrap --variant=minbase {SUITE} [{MIRROR} {SUITE}, {KERNEL_SUITE}] include {}",
        PACKAGES.join(",")
    )
}

/// FNV-1a (64-bit) of `text`: a short, stable name for a recipe (also the debug kernel's
/// cache key, `debug_kernel.rs`).
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The root's directory under `cache`.
fn root_dir(cache: &Path) -> PathBuf {
    cache
        .join("build-root")
        .join(format!("{SUITE}-{:016x}", fnv1a(&recipe())))
}

/// `chroot <root> <args...>`, non-interactive.
fn in_root(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("chroot");
    command.arg(root).args(args);
    provision::noninteractive(&mut command);
    command
}

/// Makes the root unless it is complete.
fn ensure_root(cache: &Path) -> Result<PathBuf, ProvisionError> {
    let root = root_dir(cache);
    if root.join(COMPLETE_MARKER).is_file() {
        return Ok(root);
    }
    if !host_command::on_path("mmdebstrap") {
        return Err(ProvisionError::MissingTool {
            tool: "mmdebstrap",
            hint: "the newest kernel's build root is made with it (Debian: mmdebstrap)",
        });
    }
    let partial = root.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(provision::io_error(&partial))?;
    }
    if let Some(parent) = partial.parent() {
        std::fs::create_dir_all(parent).map_err(provision::io_error(parent))?;
    }
    println!(
        "provision: making the {SUITE} build root in {} (once)",
        root.display()
    );
    host_command::output(
        Command::new("mmdebstrap")
            .args(["--mode=root", "--variant=minbase"])
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(SUITE)
            .arg(&partial)
            .arg(format!("deb {MIRROR} {SUITE} main"))
            .arg(format!("deb {MIRROR} {KERNEL_SUITE} main")),
    )?;
    // mmdebstrap leaves the package lists out of the root; the kernel is resolved from them.
    host_command::output(&mut in_root(&partial, &["apt-get", "update"]))?;
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(provision::io_error(&root))?;
    }
    std::fs::rename(&partial, &root).map_err(provision::io_error(&root))?;
    let marker = root.join(COMPLETE_MARKER);
    std::fs::write(&marker, recipe()).map_err(provision::io_error(&marker))?;
    Ok(root)
}

/// The newest kernel image package of [`KERNEL_SUITE`], as the root's apt sees it; the lists
/// are refreshed once if they name none.
fn resolve_image(root: &Path) -> Result<String, ProvisionError> {
    let metapackage = format!("{KERNEL_METAPACKAGE}/{KERNEL_SUITE}");
    let query = || {
        host_command::stdout_text(&mut in_root(
            root,
            &["apt-cache", "depends", metapackage.as_str()],
        ))
    };
    let output = match query() {
        Ok(text) if provision::image_dependency(&text).is_some() => text,
        _ => {
            host_command::output(&mut in_root(root, &["apt-get", "update"]))?;
            query()?
        }
    };
    provision::image_dependency(&output).ok_or_else(|| ProvisionError::KernelNotResolved {
        metapackage: KERNEL_METAPACKAGE.to_owned(),
        suite: KERNEL_SUITE.to_owned(),
        output,
    })
}

/// The packages that make up a kernel image: the image package and, from 7.x on, what it
/// depends on of the same version (`linux-binary-*` holds `vmlinuz`, `linux-modules-*` the
/// modules, `linux-base-*` the config), from `apt-cache depends <image>`.
fn image_packages(image_package: &str, version: &str, depends: &str) -> Vec<String> {
    let mut packages = vec![image_package.to_owned()];
    for line in depends.lines() {
        let Some(package) = line.trim().strip_prefix("Depends:").map(str::trim) else {
            continue;
        };
        if package.starts_with("linux-")
            && package.ends_with(&format!("-{version}"))
            && !package.starts_with("linux-headers-")
            && !packages.iter().any(|p| p == package)
        {
            packages.push(package.to_owned());
        }
    }
    packages
}

/// The newest Debian kernel: its image unpacked under the cache, its headers installed in the
/// build root (both once). A warm run asks the root's apt which kernel is newest and finds
/// both in place.
pub fn provision_newest() -> Result<Kernel, ProvisionError> {
    let cache = provision::cache_dir();
    let root = ensure_root(&cache)?;
    let image_package = resolve_image(&root)?;
    let version = provision::kernel_version(&image_package);
    let headers_package = format!("linux-headers-{version}");
    let kernel = Kernel {
        root: cache.join("linux").join(&version),
        origin: "Debian trixie-backports",
        headers: root.join("usr/src").join(&headers_package),
        build_root: Some(root.clone()),
        version: version.clone(),
    };
    if !kernel.headers.join("Makefile").is_file() {
        println!("provision: installing {headers_package} in the build root");
        host_command::output(&mut in_root(
            &root,
            &[
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                &headers_package,
            ],
        ))?;
    }
    if !provision::kernel_tree_complete(&kernel) {
        let depends = host_command::stdout_text(&mut in_root(
            &root,
            &["apt-cache", "depends", image_package.as_str()],
        ))?;
        let packages = image_packages(&image_package, &version, &depends);
        let downloads = root.join(DOWNLOADS);
        std::fs::create_dir_all(&downloads).map_err(provision::io_error(&downloads))?;
        for package in &packages {
            provision::remove_downloads(&downloads, package)?;
        }
        println!(
            "provision: downloading {} from {KERNEL_SUITE}",
            packages.join(" ")
        );
        let inside = format!("/{DOWNLOADS}");
        let mut download = in_root(
            &root,
            &[
                "sh",
                "-c",
                "cd \"$1\" && shift && exec apt-get download \"$@\"",
                "sh",
                &inside,
            ],
        );
        download.args(&packages);
        host_command::output(&mut download)?;
        provision::unpack_kernel_tree(&cache, &downloads, &packages, &kernel)?;
    }
    Ok(kernel)
}

/// `make -C <headers> M=<build dir> <args>` chrooted into `root`: in a mount namespace of its
/// own (so nothing stays mounted after it), with `/proc` and the build directory mounted at
/// the same path inside the root as outside.
pub fn make_in_root(root: &Path, headers: &Path, build_dir: &Path, args: &[&str]) -> Command {
    let inside_headers = headers
        .strip_prefix(root)
        .map_or_else(|_| headers.to_owned(), |rest| Path::new("/").join(rest));
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--",
            "sh",
            "-c",
        ])
        .arg(
            "root=$1 build=$2 headers=$3; shift 3; \
             mount -t proc proc \"$root/proc\" && mkdir -p \"$root$build\" && \
             mount --bind \"$build\" \"$root$build\" && \
             exec chroot \"$root\" make -C \"$headers\" M=\"$build\" \"$@\"",
        )
        .arg("sh")
        .arg(root)
        .arg(build_dir)
        .arg(inside_headers)
        .args(args);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_parts_are_its_dependencies_of_the_same_version() {
        let depends = "linux-image-7.3.4+deb13-amd64\n  \
            Depends: linux-base-7.3.4+deb13-amd64\n  \
            Depends: linux-binary-7.3.4+deb13-amd64\n  \
            Depends: linux-modules-7.3.4+deb13-amd64\n  \
            Depends: linux-headers-7.3.4+deb13-amd64\n  \
            Depends: linux-modules-7.2.9+deb13-amd64\n  \
           |Depends: dracut\n  \
            Depends: initramfs-tools\n";
        assert_eq!(
            image_packages(
                "linux-image-7.3.4+deb13-amd64",
                "7.3.4+deb13-amd64",
                depends
            ),
            [
                "linux-image-7.3.4+deb13-amd64",
                "linux-base-7.3.4+deb13-amd64",
                "linux-binary-7.3.4+deb13-amd64",
                "linux-modules-7.3.4+deb13-amd64",
            ]
        );
        // Before the split, the image package was all of it.
        assert_eq!(
            image_packages(
                "linux-image-7.0.4+deb13-amd64",
                "7.0.4+deb13-amd64",
                "linux-image-7.0.4+deb13-amd64\n  Depends: kmod\n"
            ),
            ["linux-image-7.0.4+deb13-amd64"]
        );
    }

    #[test]
    fn the_root_is_named_by_its_recipe() {
        let dir = root_dir(Path::new("/c"));
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with("trixie-") && name.len() == "trixie-".len() + 16);
        assert_ne!(fnv1a(&recipe()), fnv1a(&format!("{} ", recipe())));
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn make_runs_inside_the_root_with_the_headers_path_as_seen_there() {
        let command = make_in_root(
            Path::new("/c/root"),
            Path::new("/c/root/usr/src/linux-headers-7.3.4+deb13-amd64"),
            Path::new("/w/target/kmod/build"),
            &["-j2", "modules"],
        );
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(command.get_program(), "unshare");
        assert_eq!(
            args.get(args.len() - 6..).map(<[String]>::to_vec),
            Some(
                [
                    "sh",
                    "/c/root",
                    "/w/target/kmod/build",
                    "/usr/src/linux-headers-7.3.4+deb13-amd64",
                    "-j2",
                    "modules"
                ]
                .map(str::to_owned)
                .to_vec()
            )
        );
    }
}
