//! Running host tools (apt-get, dpkg-deb, cargo, qemu, …) and turning their failures into
//! errors that name the command and carry its stderr.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::process::{Command, ExitStatus, Output};

/// A command that could not be started or did not exit 0.
#[derive(Debug)]
pub struct CommandError {
    /// The command line, for the message.
    pub command: String,
    /// What went wrong.
    pub failure: CommandFailure,
}

/// How a command failed.
#[derive(Debug)]
pub enum CommandFailure {
    /// It could not be started (usually: not installed).
    Spawn(io::Error),
    /// It ran and exited unsuccessfully.
    Exit {
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error (trimmed).
        stderr: String,
    },
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            CommandFailure::Spawn(err) => write!(f, "could not run `{}`: {err}", self.command),
            CommandFailure::Exit { status, stderr } if stderr.is_empty() => {
                write!(f, "`{}` failed ({status})", self.command)
            }
            CommandFailure::Exit { status, stderr } => {
                write!(
                    f,
                    "`{}` failed ({status}):\n{}",
                    self.command,
                    indent(stderr)
                )
            }
        }
    }
}

impl std::error::Error for CommandError {}

/// The command line of `command`, quoted where needed, for messages.
pub fn describe(command: &Command) -> String {
    let mut line = quote(command.get_program());
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Runs `command` to completion, capturing stdout and stderr; fails unless it exits 0.
pub fn output(command: &mut Command) -> Result<Output, CommandError> {
    let result = command.output();
    check(command, result)
}

/// Like [`output`], returning stdout as text.
pub fn stdout_text(command: &mut Command) -> Result<String, CommandError> {
    output(command).map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(command: &Command, result: io::Result<Output>) -> Result<Output, CommandError> {
    match result {
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => Err(CommandError {
            command: describe(command),
            failure: CommandFailure::Exit {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            },
        }),
        Err(err) => Err(CommandError {
            command: describe(command),
            failure: CommandFailure::Spawn(err),
        }),
    }
}

/// Whether `program` can be found on `PATH` (or is an existing path itself).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Indents every line of `text` by four spaces (for nesting output in messages and reports).
pub fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_quotes_only_what_needs_it() {
        let mut command = Command::new("apt-get");
        command.args([
            "install",
            "-y",
            "linux-headers-6.12.95+deb12-amd64",
            "a b",
            "it's",
        ]);
        assert_eq!(
            describe(&command),
            r"apt-get install -y linux-headers-6.12.95+deb12-amd64 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = output(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .err()
            .map(|e| e.to_string());
        let text = err.unwrap_or_default();
        assert!(
            text.starts_with("`sh -c 'echo oops >&2; exit 3'` failed"),
            "{text}"
        );
        assert!(text.ends_with("\n    oops"), "{text}");
    }

    #[test]
    fn a_missing_program_is_a_spawn_failure() {
        let err = output(&mut Command::new("extmem-no-such-program"));
        assert!(matches!(
            err,
            Err(CommandError {
                failure: CommandFailure::Spawn(_),
                ..
            })
        ));
        assert!(!on_path("extmem-no-such-program"));
        assert!(on_path("sh"));
    }
}
