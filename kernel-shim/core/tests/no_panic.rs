//! The kernel object: built the way it is linked into the extmem-vgpu module, reduced to
//! what the C entry points reach, and checked for what a kernel module must not contain.
//!
//! 1. `rustup run <NIGHTLY> cargo --config kernel-shim/kmod/kcore-mitigations.toml rustc
//!    -p extmem-kcore --profile kernel --target x86_64-unknown-none --features kernel
//!    --crate-type staticlib`: the pinned nightly of `qemu/src/rust_tools.rs` with the
//!    mitigation flags and the workspace's `.cargo/config.toml` flags for that target, as
//!    `qemu/src/kmod_build.rs` builds it, into its own target directory: invoking cargo on
//!    the default one from inside `cargo test` would wait forever on the build-directory
//!    lock.
//! 2. `ld -r --gc-sections --strip-debug -u <every extmem_kcore_* of the header>` over the
//!    archive's extmem-kcore member (the whole LTO unit: kcore, hw, uapi and the parts of
//!    core they use). compiler_builtins is left out, so any `mem*` call stays undefined
//!    for the kernel to provide rather than being pulled in. The linker script is the
//!    module build's, `kernel-shim/kmod/extmem_kcore.lds`.
//! 3. Checks on that object, each its own test below.
//!
//! The object is left at `$CARGO_TARGET_TMPDIR/kcore-kernel/extmem_kcore.o` (by default
//! `target/tmp/kcore-kernel/extmem_kcore.o`): that file is what the module links, as
//! `extmem_kcore.o_shipped`.
//!
//! Needs binutils (`ar`, `ld`, `nm`, `readelf`, `objdump`) and rustup with the pinned
//! nightly and its `rust-src` component (`cargo run -p extmem-qemu -- setup`, or the
//! first module build, installs them).

#![allow(
    clippy::expect_used,
    reason = "a test: a failed expect is a failed test"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const TARGET: &str = "x86_64-unknown-none";

/// Names (mangled or demangled) that only panic machinery has. Any of them in the object
/// means a panic is reachable from an entry point.
const PANIC_MARKERS: &[&str] = &[
    "core::panicking",
    "_ZN4core9panicking",
    "9panicking",
    "panic_bounds_check",
    "panic_fmt",
    "panic_nounwind",
    "panic_const",
    "slice_index_fail",
    "slice_start_index",
    "slice_end_index",
    "slice_index_order",
    "str_index_overflow",
    "unwrap_failed",
    "expect_failed",
    "rust_begin_unwind",
    "extmem_plat_panic",
    "core::fmt",
    "4core3fmt",
];

/// What the kernel provides besides the platform callbacks.
const KERNEL_SYMBOLS: &[&str] = &["memcpy", "memset", "memmove", "memcmp", "bcmp"];

/// The kernel's thunks: every indirect call goes through `__x86_indirect_thunk_<register>`
/// (retpoline) and every return through `__x86_return_thunk` (return thunk).
const KERNEL_THUNK_PREFIXES: &[&str] = &["__x86_indirect_thunk_", "__x86_return_thunk"];

/// The relocation types `apply_relocate_add` in arch/x86/kernel/module.c applies to a
/// module loaded in the top 2 GiB. Not R_X86_64_32 (module addresses do not fit zero-
/// extended) and not R_X86_64_GOTPCREL (modules have no GOT).
const MODULE_RELOCATIONS: &[&str] = &[
    "R_X86_64_NONE",
    "R_X86_64_64",
    "R_X86_64_32S",
    "R_X86_64_PC32",
    "R_X86_64_PLT32",
    "R_X86_64_PC64",
];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The dated nightly the runner pins (`pub const NIGHTLY` in `qemu/src/rust_tools.rs`, the
/// one place that names it), which takes the `-Z` mitigation flags.
fn pinned_nightly() -> String {
    let path = crate_dir().join("../../qemu/src/rust_tools.rs");
    let source = std::fs::read_to_string(&path).expect("qemu/src/rust_tools.rs");
    source
        .lines()
        .find_map(|line| line.trim().strip_prefix("pub const NIGHTLY: &str = \""))
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no `pub const NIGHTLY: &str = \"...\"` in {path:?}"))
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} (binutils installed?): {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Every `extmem_kcore_*` function the header declares.
fn header_entry_points() -> BTreeSet<String> {
    let header = std::fs::read_to_string(crate_dir().join("../kmod/extmem_kcore.h"))
        .expect("kernel-shim/kmod/extmem_kcore.h");
    let mut names = BTreeSet::new();
    for (i, _) in header.match_indices("extmem_kcore_") {
        let name: String = header[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let after = header[i + name.len()..].trim_start();
        if after.starts_with('(') {
            names.insert(name);
        }
    }
    assert!(names.len() > 10, "found only {names:?} in the header");
    names
}

/// Builds the staticlib and links the kernel object; once per test run.
fn kernel_object() -> &'static Path {
    static OBJECT: OnceLock<PathBuf> = OnceLock::new();
    OBJECT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kcore-kernel");
        let nightly = pinned_nightly();
        let mut build = Command::new("rustup");
        build
            .current_dir(crate_dir())
            .args(["run", &nightly, "cargo", "--config"])
            .arg(crate_dir().join("../kmod/kcore-mitigations.toml"))
            .args(["rustc", "-p", "extmem-kcore", "--profile", "kernel"])
            .args(["--target", TARGET, "--features", "kernel"])
            .args(["--crate-type", "staticlib", "--target-dir"])
            .arg(&dir);
        // The flags must be the workspace's, for every crate of the LTO unit, and the
        // toolchain the nightly, not the one running this test.
        for var in [
            "CARGO",
            "RUSTC",
            "RUSTDOC",
            "RUSTUP_TOOLCHAIN",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_TARGET_X86_64_UNKNOWN_NONE_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET_DIR",
        ] {
            build.env_remove(var);
        }
        let status = build.status().expect("run cargo");
        assert!(
            status.success(),
            "building the kernel staticlib with {nightly} failed (are it and its rust-src \
             installed? `rustup toolchain install {nightly} --component rust-src`)"
        );
        let archive = dir.join(TARGET).join("kernel").join("libextmem_kcore.a");

        let members_dir = dir.join("members");
        let _ = std::fs::remove_dir_all(&members_dir);
        std::fs::create_dir_all(&members_dir).expect("members dir");
        let members: Vec<String> = run(Command::new("ar").arg("t").arg(&archive))
            .lines()
            .filter(|m| m.starts_with("extmem_kcore-"))
            .map(str::to_owned)
            .collect();
        assert!(!members.is_empty(), "no extmem_kcore object in {archive:?}");
        run(Command::new("ar")
            .current_dir(&members_dir)
            .arg("x")
            .arg(&archive)
            .args(&members));

        let script = crate_dir().join("../kmod/extmem_kcore.lds");
        let object = dir.join("extmem_kcore.o");
        let mut link = Command::new("ld");
        link.args(["-r", "--gc-sections", "--strip-debug", "-T"])
            .arg(&script)
            .arg("-o")
            .arg(&object);
        for name in header_entry_points() {
            link.arg("-u").arg(name);
        }
        link.args(members.iter().map(|m| members_dir.join(m)));
        run(&mut link);
        eprintln!("kernel object: {}", object.display());
        object
    })
}

/// (type letter, name) of every symbol, raw and demangled.
fn symbols(demangle: bool) -> Vec<(char, String)> {
    let mut nm = Command::new("nm");
    if demangle {
        nm.arg("-C");
    }
    run(nm.arg(kernel_object()))
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().rev();
            let name = fields.next()?;
            let kind = fields.next()?.chars().next()?;
            Some((kind, name.to_owned()))
        })
        .collect()
}

#[test]
fn every_entry_point_of_the_header_is_defined() {
    let defined: BTreeSet<String> = symbols(false)
        .into_iter()
        .filter(|(kind, _)| *kind == 'T')
        .map(|(_, name)| name)
        .collect();
    let missing: Vec<_> = header_entry_points()
        .into_iter()
        .filter(|name| !defined.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "declared in extmem_kcore.h but not exported by the kernel object: {missing:?}"
    );
}

#[test]
fn no_panic_path_is_reachable_from_the_entry_points() {
    let mut found: Vec<String> = symbols(false)
        .into_iter()
        .chain(symbols(true))
        .map(|(_, name)| name)
        .filter(|name| PANIC_MARKERS.iter().any(|m| name.contains(m)))
        .collect();
    found.dedup();
    assert!(
        found.is_empty(),
        "the kernel object can panic: an index, unwrap, expect, division, slice or \
         `core::fmt` use that the optimiser cannot prove safe is reachable from an \
         extmem_kcore_* entry point. Symbols: {found:#?}\n\
         Find the caller with `objdump -dr {}` and replace the operation by a checked one \
         (`get`, `checked_*`, `try_from`).",
        kernel_object().display()
    );
}

#[test]
fn only_platform_callbacks_and_kernel_functions_are_undefined() {
    let unexpected: Vec<String> = symbols(false)
        .into_iter()
        .filter(|(kind, _)| *kind == 'U')
        .map(|(_, name)| name)
        .filter(|name| {
            !name.starts_with("extmem_plat_")
                && !KERNEL_SYMBOLS.contains(&name.as_str())
                && !KERNEL_THUNK_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "the kernel object needs symbols neither the C glue nor the kernel provides \
         (compiler_builtins is not linked in: 128-bit division or float code?): \
         {unexpected:?}"
    );
}

#[test]
fn relocations_are_ones_the_module_loader_applies() {
    let listing = run(Command::new("readelf").arg("-rW").arg(kernel_object()));
    let mut section = String::new();
    let mut bad = BTreeSet::new();
    for line in listing.lines() {
        if let Some(rest) = line.strip_prefix("Relocation section '") {
            section = rest.split('\'').next().unwrap_or_default().to_owned();
            continue;
        }
        let Some(kind) = line.split_whitespace().nth(2) else {
            continue;
        };
        if kind.starts_with("R_X86_64_") && !MODULE_RELOCATIONS.contains(&kind) {
            let symbol = line.split_whitespace().nth(4).unwrap_or_default();
            bad.insert(format!("{section}: {kind} against {symbol}"));
        }
    }
    assert!(
        bad.is_empty(),
        "relocations the kernel's module loader rejects: {bad:#?}\n\
         R_X86_64_GOTPCREL against mem* is a memset/memcpy that LLVM emitted for a large \
         or unaligned zeroing or copy (over 128 bytes): in the LTO unit, core's bitcode \
         makes such library calls go through a GOT, which a module does not have. Keep \
         such values small or build them piecewise (see selftest::Line)."
    );
}

#[test]
fn no_indirect_branch_and_no_return_bypasses_the_kernels_thunks() {
    // With -r, so that a call to an undefined thunk shows the thunk's name on the
    // relocation line below it.
    let listing = run(Command::new("objdump")
        .args(["-dr", "--no-show-raw-insn"])
        .arg(kernel_object()));
    let mut function = String::new();
    let mut bad = Vec::new();
    let mut thunk_calls = 0_usize;
    for line in listing.lines() {
        if let Some(name) = line.strip_suffix(">:").and_then(|l| l.split_once(" <")) {
            function = name.1.to_owned();
            continue;
        }
        if line.contains(": R_X86_64_") {
            thunk_calls += usize::from(line.contains("__x86_indirect_thunk_"));
            continue;
        }
        let Some(instruction) = line.split('\t').nth(1).map(str::trim) else {
            continue;
        };
        let mnemonic = instruction.split_whitespace().next().unwrap_or_default();
        let indirect = matches!(mnemonic, "jmp" | "call") && instruction.contains('*');
        let plain_return = matches!(mnemonic, "ret" | "retq" | "lret");
        if indirect || plain_return {
            bad.push(format!("{function}: {instruction}"));
        }
    }
    assert!(
        bad.is_empty(),
        "branches that skip the kernel's retpoline or return thunk (objtool rejects them \
         in a MITIGATION_RETPOLINE / MITIGATION_RETHUNK build; under CET-IBT a jump-table \
         target without ENDBR64 faults): {bad:#?}\n\
         Are the flags of kernel-shim/kmod/kcore-mitigations.toml applied? Jump tables are \
         disabled in .cargo/config.toml."
    );
    // The self-test's `emit` callback is the one indirect call: through the thunk.
    assert!(
        thunk_calls > 0,
        "no call through __x86_indirect_thunk_*: is -Zretpoline-external-thunk applied?"
    );
}
