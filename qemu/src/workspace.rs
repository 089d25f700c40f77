//! Where the workspace and its target directory are, from `cargo metadata` (so
//! `CARGO_TARGET_DIR` and `.cargo/config.toml` are honoured), and how to build guest programs.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::host_command::{self, CommandError};

/// A build for another architecture: cargo's `--target`, linked with the cross linker
/// `.cargo/config.toml` names, against the libraries of that architecture's root.
#[derive(Debug, Clone, Copy)]
pub struct CrossBuild<'a> {
    /// The Rust target, e.g. `aarch64-unknown-linux-gnu`.
    pub target: &'a str,
    /// The root whose libraries the programs link against (libgbm comes only from there).
    pub sysroot: &'a Path,
    /// Debian's multiarch directory name of those libraries, e.g. `aarch64-linux-gnu`.
    pub multiarch: &'a str,
}

impl CrossBuild<'_> {
    /// Adds `--target` and the linker's search paths to a `cargo build`.
    fn apply(&self, command: &mut Command) {
        command.args(["--target", self.target]);
        // -L finds the libraries named on the link line; -rpath-link the ones they need in
        // turn (libgbm's libdrm, libwayland-server, …), which ld checks but does not record.
        let flags: Vec<String> = ["usr/lib", "lib"]
            .iter()
            .map(|dir| self.sysroot.join(dir).join(self.multiarch))
            .flat_map(|dir| {
                [
                    format!("-Clink-arg=-L{}", dir.display()),
                    format!("-Clink-arg=-Wl,-rpath-link,{}", dir.display()),
                ]
            })
            .collect();
        let variable = format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            self.target.to_uppercase().replace('-', "_")
        );
        command.env(variable, flags.join(" "));
    }
}

/// The workspace this runner belongs to.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root (holds the top `Cargo.toml`).
    pub root: PathBuf,
    /// cargo's target directory.
    pub target_dir: PathBuf,
    /// The cargo executable to run (the one that ran us, when known).
    pub cargo: OsString,
}

/// Errors finding the workspace or building in it.
#[derive(Debug)]
pub enum WorkspaceError {
    /// A cargo command failed.
    Command(CommandError),
    /// cargo's JSON output was not what it documents.
    Json {
        /// The command whose output it was.
        command: String,
        /// What was wrong with it.
        problem: String,
    },
    /// A binary asked for was not among the build's artifacts.
    MissingBinary {
        /// Its name.
        name: String,
    },
}

impl fmt::Display for WorkspaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command(err) => write!(f, "{err}"),
            Self::Json { command, problem } => {
                write!(f, "unexpected output from `{command}`: {problem}")
            }
            Self::MissingBinary { name } => {
                write!(f, "the build produced no executable named {name}")
            }
        }
    }
}

impl std::error::Error for WorkspaceError {}

impl From<CommandError> for WorkspaceError {
    fn from(err: CommandError) -> Self {
        Self::Command(err)
    }
}

impl Workspace {
    /// Locates the workspace of this crate with `cargo metadata`.
    pub fn locate() -> Result<Self, WorkspaceError> {
        // `cargo run` sets CARGO to the cargo that runs us; a bare invocation falls back to PATH.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut command = Command::new(&cargo);
        command
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--manifest-path",
            ])
            .arg(&manifest);
        let text = host_command::stdout_text(&mut command)?;
        let json_error = |problem: &str| WorkspaceError::Json {
            command: host_command::describe(&command),
            problem: problem.to_owned(),
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| json_error(&e.to_string()))?;
        let path_field = |name: &str| {
            value
                .get(name)
                .and_then(serde_json::Value::as_str)
                .map(PathBuf::from)
                .ok_or_else(|| json_error(&format!("no string field {name:?}")))
        };
        Ok(Self {
            root: path_field("workspace_root")?,
            target_dir: path_field("target_directory")?,
            cargo,
        })
    }

    /// Builds the cdylib of `package` in release mode, for the host or `cross`.
    pub fn build_library(
        &self,
        package: &str,
        cross: Option<CrossBuild<'_>>,
    ) -> Result<(), WorkspaceError> {
        let mut command = self.cargo();
        command.args(["build", "--release", "--quiet", "--lib", "-p", package]);
        if let Some(cross) = cross {
            cross.apply(&mut command);
        }
        host_command::output(&mut command)?;
        Ok(())
    }

    /// A `cargo` command run from the workspace root.
    pub fn cargo(&self) -> Command {
        let mut command = Command::new(&self.cargo);
        command.current_dir(&self.root);
        command
    }

    /// Where this runner keeps what it generates (initramfs, console logs, step logs).
    pub fn output_dir(&self) -> PathBuf {
        self.target_dir.join("extmem-qemu")
    }

    /// Builds the binaries `names` of `package` in release mode, for the host or `cross`, and
    /// returns their paths, in the order asked for. Compiler messages go to our stderr as usual.
    pub fn build_binaries(
        &self,
        package: &str,
        names: &[&str],
        cross: Option<CrossBuild<'_>>,
    ) -> Result<Vec<PathBuf>, WorkspaceError> {
        let mut command = self.cargo();
        command.args([
            "build",
            "--release",
            "--quiet",
            "--message-format=json-render-diagnostics",
            "-p",
            package,
        ]);
        for name in names {
            command.args(["--bin", name]);
        }
        if let Some(cross) = cross {
            cross.apply(&mut command);
        }
        let text = host_command::stdout_text(&mut command)?;
        let executables = artifact_executables(&text).map_err(|problem| WorkspaceError::Json {
            command: host_command::describe(&command),
            problem,
        })?;
        names
            .iter()
            .map(|name| {
                executables
                    .iter()
                    .find(|(target, _)| target == name)
                    .map(|(_, path)| path.clone())
                    .ok_or_else(|| WorkspaceError::MissingBinary {
                        name: (*name).to_owned(),
                    })
            })
            .collect()
    }
}

/// `(target name, executable path)` of every `compiler-artifact` message with an executable.
fn artifact_executables(messages: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let mut found = Vec::new();
    for line in messages.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{e} in {line:?}"))?;
        if message.get("reason").and_then(serde_json::Value::as_str) != Some("compiler-artifact") {
            continue;
        }
        let executable = message
            .get("executable")
            .and_then(serde_json::Value::as_str);
        let name = message
            .get("target")
            .and_then(|t| t.get("name"))
            .and_then(serde_json::Value::as_str);
        if let (Some(executable), Some(name)) = (executable, name) {
            found.push((name.to_owned(), PathBuf::from(executable)));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cross_build_names_the_target_and_links_against_the_root() {
        let cross = CrossBuild {
            target: "aarch64-unknown-linux-gnu",
            sysroot: Path::new("/c/root"),
            multiarch: "aarch64-linux-gnu",
        };
        let mut command = Command::new("cargo");
        cross.apply(&mut command);
        assert_eq!(
            host_command::describe(&command),
            "cargo --target aarch64-unknown-linux-gnu"
        );
        let flags = command
            .get_envs()
            .find(|(name, _)| *name == "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS")
            .and_then(|(_, value)| value)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert_eq!(
            flags,
            "-Clink-arg=-L/c/root/usr/lib/aarch64-linux-gnu \
             -Clink-arg=-Wl,-rpath-link,/c/root/usr/lib/aarch64-linux-gnu \
             -Clink-arg=-L/c/root/lib/aarch64-linux-gnu \
             -Clink-arg=-Wl,-rpath-link,/c/root/lib/aarch64-linux-gnu"
        );
    }

    #[test]
    fn executables_come_from_compiler_artifact_messages() -> Result<(), String> {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"rustix"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"guest-env"},"executable":"/t/release/guest-env"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            artifact_executables(messages)?,
            [(
                "guest-env".to_owned(),
                PathBuf::from("/t/release/guest-env")
            )]
        );
        assert!(artifact_executables("{not json").is_err());
        Ok(())
    }
}
