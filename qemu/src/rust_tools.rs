//! Rust tools the suite needs beyond the pinned stable toolchain (`rust-toolchain.toml`),
//! provisioned idempotently: binaries `cargo install`ed into the tool cache
//! (`~/.cache/extmem/tools`), and one dated nightly toolchain with the components that Miri and
//! the sanitizers of cargo-fuzz need.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::host_command;
use crate::provision;
use crate::workspace::Workspace;

/// The toolchain that Miri and cargo-fuzz (`-Zsanitizer`) need, pinned to one date so that a
/// new nightly (a Miri that finds more, a changed `-Z` flag) cannot change the suite's result
/// between two runs of the same commit. This is the only place that names it; rustup installs
/// it on first use. Move it forward deliberately, to a date for which rustup has `miri`.
pub const NIGHTLY: &str = "nightly-2026-05-20";

/// A binary from crates.io, at a pinned version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CargoTool {
    /// The crate.
    pub krate: &'static str,
    /// A version requirement (`cargo install --version`).
    pub version: &'static str,
    /// The binary it installs.
    pub binary: &'static str,
}

/// cargo-fuzz, the libFuzzer driver of `tests/fuzz`.
pub const CARGO_FUZZ: CargoTool = CargoTool {
    krate: "cargo-fuzz",
    version: "=0.13.2",
    binary: "cargo-fuzz",
};

/// Where `cargo install --root` puts the tools.
pub fn tools_root() -> PathBuf {
    provision::cache_dir().join("tools")
}

/// The tool's binary, installed with `cargo install --locked` into the tool cache on first
/// use. Errors say which command failed and why.
pub fn ensure_installed(workspace: &Workspace, tool: CargoTool) -> Result<PathBuf, String> {
    let root = tools_root();
    let binary = root.join("bin").join(tool.binary);
    if binary.is_file() {
        return Ok(binary);
    }
    fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut command = Command::new(&workspace.cargo);
    // Run from the cache, outside any directory whose .cargo/config.toml sets a build target.
    command
        .current_dir(&root)
        .args(["install", "--quiet", "--locked", tool.krate, "--version"])
        .arg(tool.version)
        .arg("--root")
        .arg(&root);
    println!("suite: {} …", host_command::describe(&command));
    host_command::output(&mut command).map_err(|e| e.to_string())?;
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "`{}` succeeded but {} does not exist",
            host_command::describe(&command),
            binary.display()
        ))
    }
}

/// Makes sure the nightly toolchain is installed with `components`, installing what is
/// missing with rustup. Does nothing when everything is there.
pub fn ensure_nightly(components: &[&str]) -> Result<(), String> {
    if !host_command::on_path("rustup") {
        return Err("rustup is not on PATH: the nightly toolchain comes from rustup".into());
    }
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed", "--toolchain", NIGHTLY]);
    let installed = match host_command::stdout_text(&mut list) {
        Ok(text) => text,
        Err(_) => {
            let mut install = Command::new("rustup");
            install.args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]);
            for component in components {
                install.args(["--component", component]);
            }
            println!("suite: {} …", host_command::describe(&install));
            host_command::output(&mut install).map_err(|e| e.to_string())?;
            return Ok(());
        }
    };
    let missing = missing_components(&installed, components);
    if missing.is_empty() {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["component", "add", "--toolchain", NIGHTLY])
        .args(&missing);
    println!("suite: {} …", host_command::describe(&add));
    host_command::output(&mut add).map_err(|e| e.to_string())?;
    Ok(())
}

/// Which of `wanted` are not in `rustup component list --installed` output, whose lines
/// name components with their target (`miri-x86_64-unknown-linux-gnu`) or without
/// (`rust-src`).
fn missing_components<'a>(installed: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    let lines: BTreeSet<&str> = installed.lines().map(str::trim).collect();
    wanted
        .iter()
        .copied()
        .filter(|component| {
            !lines.iter().any(|line| {
                *line == *component
                    || line.strip_prefix(component).is_some_and(|rest| {
                        rest.starts_with("-x86_64") || rest.starts_with("-aarch64")
                    })
            })
        })
        .collect()
}

/// `rustup run <NIGHTLY> cargo`, from the workspace root, with the variables of the cargo that
/// runs us removed so they cannot pin the stable toolchain.
pub fn nightly_cargo(workspace: &Workspace) -> Command {
    let mut command = Command::new("rustup");
    command
        .current_dir(&workspace.root)
        .args(["run", NIGHTLY, "cargo"])
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_found_with_or_without_their_target() {
        let installed = "cargo-x86_64-unknown-linux-gnu\nmiri-x86_64-unknown-linux-gnu\nrust-src\n\
                         rustc-x86_64-unknown-linux-gnu\n";
        assert!(missing_components(installed, &["miri", "rust-src"]).is_empty());
        assert_eq!(
            missing_components("rustc-x86_64-unknown-linux-gnu\n", &["miri", "rust-src"]),
            ["miri", "rust-src"]
        );
        // A component whose name starts with another's is not that one.
        assert_eq!(
            missing_components(
                "rust-src-extra\nrust-std-x86_64-unknown-linux-gnu\n",
                &["rust-src", "rust"]
            ),
            ["rust-src", "rust"]
        );
    }

    #[test]
    fn nightly_cargo_runs_through_rustup_without_the_callers_toolchain() {
        let workspace = Workspace {
            root: PathBuf::from("/w"),
            target_dir: PathBuf::from("/w/target"),
            cargo: "cargo".into(),
        };
        let command = nightly_cargo(&workspace);
        assert_eq!(
            host_command::describe(&command),
            format!("rustup run {NIGHTLY} cargo")
        );
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        assert!(removed.contains(&"CARGO".to_owned()), "{removed:?}");
        assert!(
            removed.contains(&"RUSTUP_TOOLCHAIN".to_owned()),
            "{removed:?}"
        );
    }

    /// A file of the repository, for the tests that keep it and the code in agreement.
    fn repository_file(path: &str) -> String {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    #[test]
    fn the_toolchain_file_lists_the_targets_provisioning_installs() {
        let file = repository_file("rust-toolchain.toml");
        let targets: BTreeSet<&str> = file
            .lines()
            .find_map(|line| line.strip_prefix("targets = "))
            .map(|list| {
                list.trim_matches(['[', ']'])
                    .split(',')
                    .map(|t| t.trim().trim_matches('"'))
                    .collect()
            })
            .unwrap_or_default();
        let provisioned: BTreeSet<&str> = provision::RUST_TARGETS.iter().copied().collect();
        assert_eq!(targets, provisioned);
        assert!(
            file.contains("components = [\"rustfmt\", \"clippy\"]"),
            "{file}"
        );
    }

    #[test]
    fn the_testing_guide_names_the_pinned_nightly() {
        let guide = repository_file("docs/TESTING.md");
        assert!(
            guide.contains(NIGHTLY),
            "docs/TESTING.md does not name {NIGHTLY}"
        );
        let other_dates = guide
            .match_indices("nightly-20")
            .filter(|(at, _)| {
                !guide
                    .get(*at..)
                    .is_some_and(|rest| rest.starts_with(NIGHTLY))
            })
            .count();
        assert_eq!(other_dates, 0, "docs/TESTING.md names another nightly");
    }
}
