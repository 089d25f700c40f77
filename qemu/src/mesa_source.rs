//! Mesa's source tree from Debian's `mesa` source package (the backports suite's 25.0
//! series), unpacked into the cache: the host bench builds Mesa's `util_vma_heap` from it
//! as its reference allocator (`tests/bench/build.rs`), and a lavapipe build can use the
//! same tree. It is never copied into the repository.
//!
//! Idempotent: a tree unpacked before (marked by a stamp written last) is reused without
//! apt work beyond asking apt which version is current.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host_command::{self, CommandError};
use crate::provision::{self, ProvisionError};

/// The Mesa release series fetched: the bench's reference is this release's allocator.
pub const MESA_SERIES: &str = "25.0.";

/// Written into the version's directory once the tree is completely unpacked.
const STAMP: &str = "unpacked.stamp";

/// An unpacked Mesa source tree.
#[derive(Clone, Debug)]
pub struct MesaSource {
    /// The Debian version of the source package (`25.0.7-2~bpo12+1`).
    pub version: String,
    /// The tree's top directory (holding `meson.build` and `src/`).
    pub tree: PathBuf,
    /// Whether Debian's patches are applied (`dpkg-source -x`), or the tree is the
    /// upstream tarball alone (the mirror served no `.dsc`).
    pub patched: bool,
}

/// Why the Mesa source could not be made ready.
#[derive(Debug)]
pub enum MesaSourceError {
    /// The apt source or the release could not be set up.
    Provision(ProvisionError),
    /// A command failed.
    Command(CommandError),
    /// A file or directory could not be read or written.
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// apt knows no `mesa` source package of [`MESA_SERIES`].
    NoVersion {
        /// The suite it was looked for in.
        suite: String,
        /// The versions apt did list.
        listed: Vec<String>,
    },
    /// The download left no tarball to unpack, or the unpacked tree lacks Mesa's files.
    NotUnpacked {
        /// The version's directory.
        dir: PathBuf,
        /// What is missing.
        missing: String,
    },
}

impl fmt::Display for MesaSourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provision(err) => write!(f, "{err}"),
            Self::Command(err) => write!(f, "{err}"),
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::NoVersion { suite, listed } => write!(
                f,
                "apt has no mesa source package of the {MESA_SERIES}x series from {suite} \
                 (it lists: {})",
                if listed.is_empty() {
                    "none".to_owned()
                } else {
                    listed.join(", ")
                }
            ),
            Self::NotUnpacked { dir, missing } => {
                write!(f, "mesa source in {}: {missing}", dir.display())
            }
        }
    }
}

impl std::error::Error for MesaSourceError {}

impl From<ProvisionError> for MesaSourceError {
    fn from(err: ProvisionError) -> Self {
        Self::Provision(err)
    }
}

impl From<CommandError> for MesaSourceError {
    fn from(err: CommandError) -> Self {
        Self::Command(err)
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> MesaSourceError + '_ {
    move |source| MesaSourceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes Debian's Mesa source of [`MESA_SERIES`] ready under `cache/mesa-<version>/`:
/// adds the backports `deb-src` source if no sources file has one, asks apt for the
/// current version, and downloads and unpacks it unless that version is unpacked already.
pub fn ensure(cache: &Path) -> Result<MesaSource, MesaSourceError> {
    let suite = format!("{}-backports", provision::release_codename()?);
    let added = provision::ensure_apt_source("deb-src", &suite)?;
    if added {
        apt_update()?;
    }
    let version = match series_version(&showsrc()?) {
        Ok(version) => version,
        // Lists from before the source was added, or from before the last upload.
        Err(_) if !added => {
            apt_update()?;
            series_version(&showsrc()?).map_err(|listed| MesaSourceError::NoVersion {
                suite: suite.clone(),
                listed,
            })?
        }
        Err(listed) => return Err(MesaSourceError::NoVersion { suite, listed }),
    };
    let dir = cache.join(format!("mesa-{version}"));
    let upstream = upstream_version(&version);
    let tree = dir.join(format!("mesa-{upstream}"));
    if let Ok(stamp) = fs::read_to_string(dir.join(STAMP)) {
        if tree.join("src/util/vma.c").is_file() {
            return Ok(MesaSource {
                version,
                tree,
                patched: stamp.trim() == "patched",
            });
        }
    }

    fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    println!(
        "mesa-source: downloading Debian's mesa {version} source into {}",
        dir.display()
    );
    let mut download = Command::new("apt-get");
    download
        .args(["source", "--download-only", "-q"])
        .arg(format!("mesa={version}"))
        .current_dir(&dir);
    // Some mirrors carry the upstream tarball but not this revision's .dsc: the tree is
    // then the upstream source alone, which is what the bench needs.
    let downloaded = host_command::output(provision::noninteractive(&mut download));
    let dsc = dir.join(format!("mesa_{}.dsc", strip_epoch(&version)));
    let orig = dir.join(format!("mesa_{upstream}.orig.tar.xz"));
    if tree.exists() {
        fs::remove_dir_all(&tree).map_err(io_error(&tree))?;
    }
    let patched = if dsc.is_file() {
        let mut unpack = Command::new("dpkg-source");
        unpack.arg("-x").arg(&dsc).arg(&tree).current_dir(&dir);
        host_command::output(&mut unpack)?;
        true
    } else if orig.is_file() {
        println!(
            "mesa-source: no {} on the mirror; unpacking the upstream tarball alone",
            dsc.display()
        );
        let mut unpack = Command::new("tar");
        unpack.arg("-xJf").arg(&orig).current_dir(&dir);
        host_command::output(&mut unpack)?;
        false
    } else {
        downloaded?;
        return Err(MesaSourceError::NotUnpacked {
            dir,
            missing: format!("neither {} nor {}", dsc.display(), orig.display()),
        });
    };
    if !tree.join("src/util/vma.c").is_file() {
        return Err(MesaSourceError::NotUnpacked {
            dir,
            missing: format!("{}/src/util/vma.c", tree.display()),
        });
    }
    let stamp = dir.join(STAMP);
    fs::write(&stamp, if patched { "patched\n" } else { "upstream\n" })
        .map_err(io_error(&stamp))?;
    Ok(MesaSource {
        version,
        tree,
        patched,
    })
}

fn apt_update() -> Result<(), MesaSourceError> {
    println!("mesa-source: apt-get update");
    host_command::output(provision::noninteractive(
        Command::new("apt-get").arg("update"),
    ))?;
    Ok(())
}

fn showsrc() -> Result<String, MesaSourceError> {
    Ok(host_command::stdout_text(
        Command::new("apt-cache").args(["showsrc", "mesa"]),
    )?)
}

/// The version of the first `mesa` source stanza of [`MESA_SERIES`] in `apt-cache showsrc`
/// output, or every version listed when none is of the series.
fn series_version(showsrc: &str) -> Result<String, Vec<String>> {
    let mut listed = Vec::new();
    for stanza in showsrc.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        if field("Package") != Some("mesa") {
            continue;
        }
        if let Some(version) = field("Version") {
            if upstream_version(version).starts_with(MESA_SERIES) {
                return Ok(version.to_owned());
            }
            listed.push(version.to_owned());
        }
    }
    Err(listed)
}

/// A Debian version without its epoch (`1:2.3-4` → `2.3-4`): how the files are named.
fn strip_epoch(version: &str) -> &str {
    version.split_once(':').map_or(version, |(_, rest)| rest)
}

/// The upstream part of a Debian version (`25.0.7-2~bpo12+1` → `25.0.7`).
fn upstream_version(version: &str) -> &str {
    let version = strip_epoch(version);
    version
        .rsplit_once('-')
        .map_or(version, |(upstream, _)| upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_version_is_picked_from_showsrc() {
        let text = "Package: mesa\nBinary: libgbm1\nVersion: 22.3.6-1+deb12u1\n\n\
                    Package: mesa\nVersion: 25.0.7-2~bpo12+1\nFormat: 3.0 (quilt)\n";
        assert_eq!(series_version(text), Ok("25.0.7-2~bpo12+1".to_owned()));
        assert_eq!(
            series_version("Package: mesa\nVersion: 22.3.6-1\n"),
            Err(vec!["22.3.6-1".to_owned()])
        );
        assert_eq!(
            series_version("Package: mesa-demos\nVersion: 25.0.1-1\n"),
            Err(vec![])
        );
    }

    #[test]
    fn versions_split_as_debian_names_files() {
        assert_eq!(upstream_version("25.0.7-2~bpo12+1"), "25.0.7");
        assert_eq!(upstream_version("1:25.0.7-2"), "25.0.7");
        assert_eq!(strip_epoch("1:25.0.7-2"), "25.0.7-2");
        assert_eq!(upstream_version("25.0.7"), "25.0.7");
    }
}
