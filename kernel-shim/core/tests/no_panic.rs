//! The kernel objects, x86_64 and arm64: each built the way it is linked into the
//! extmem-vgpu module, reduced to what the C entry points reach, and checked for what a
//! kernel module must not contain.
//!
//! 1. `rustup run <NIGHTLY> cargo --config kernel-shim/kmod/kcore-mitigations-<arch>.toml
//!    rustc -p extmem-kcore --profile kernel --target <target> --features kernel
//!    --crate-type staticlib` (`x86_64-unknown-none`, `aarch64-unknown-none-softfloat`):
//!    the pinned nightly of `qemu/src/rust_tools.rs` with the mitigation flags and the
//!    workspace's `.cargo/config.toml` flags for that target, as `qemu/src/kmod_build.rs`
//!    builds it, into its own target directory: invoking cargo on the default one from
//!    inside `cargo test` would wait forever on the build-directory lock.
//! 2. `[aarch64-linux-gnu-]ld -r --gc-sections --strip-debug -u <every extmem_kcore_* of
//!    the header>` over the
//!    archive's extmem-kcore member (the whole LTO unit: kcore, hw, uapi and the parts of
//!    core they use). compiler_builtins is left out, so any `mem*` call stays undefined
//!    for the kernel to provide rather than being pulled in. The linker script is the
//!    module build's, `kernel-shim/kmod/extmem_kcore.lds`.
//! 3. Checks on that object, each its own test below.
//!
//! The objects are left at `$CARGO_TARGET_TMPDIR/kcore-kernel-<arch>/extmem_kcore.o` (by
//! default `target/tmp/kcore-kernel-x86_64/extmem_kcore.o`): that file is what the module
//! links, as `extmem_kcore.o_shipped`.
//!
//! Needs binutils (`ar`, `ld`, `nm`, `readelf`, `objdump`) and their aarch64 cross build
//! (`aarch64-linux-gnu-*`, Debian's binutils-aarch64-linux-gnu), and rustup with the pinned
//! nightly and its `rust-src` component (`cargo run -p extmem-qemu -- setup`, or the first
//! module build, installs them).

#![allow(
    clippy::expect_used,
    reason = "a test: a failed expect is a failed test"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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

/// One kernel object: its architecture's target, flags and binutils, and what that
/// architecture's module loader accepts.
struct KernelTarget {
    /// Short name, for the output directory.
    arch: &'static str,
    /// The Rust target.
    target: &'static str,
    /// The mitigation fragment in kernel-shim/kmod.
    mitigations: &'static str,
    /// The binutils prefix (empty for the host's x86_64 ones).
    tools: &'static str,
    /// The prefix of this architecture's relocation type names in `readelf -r` output.
    relocation_prefix: &'static str,
    /// The relocation types its module loader applies.
    relocations: &'static [&'static str],
    /// Undefined symbols the kernel provides for this architecture's code generation.
    thunk_prefixes: &'static [&'static str],
}

impl KernelTarget {
    fn tool(&self, name: &str) -> Command {
        Command::new(format!("{}{name}", self.tools))
    }
}

/// x86_64 (`code-model=kernel`, loaded in the top 2 GiB).
static X86_64: KernelTarget = KernelTarget {
    arch: "x86_64",
    target: "x86_64-unknown-none",
    mitigations: "kcore-mitigations-x86_64.toml",
    tools: "",
    relocation_prefix: "R_X86_64_",
    // What `apply_relocate_add` in arch/x86/kernel/module.c applies. Not R_X86_64_32
    // (module addresses do not fit zero-extended) and not R_X86_64_GOTPCREL (modules have
    // no GOT).
    relocations: &[
        "R_X86_64_NONE",
        "R_X86_64_64",
        "R_X86_64_32S",
        "R_X86_64_PC32",
        "R_X86_64_PLT32",
        "R_X86_64_PC64",
    ],
    // Every indirect call goes through `__x86_indirect_thunk_<register>` (retpoline) and
    // every return through `__x86_return_thunk` (return thunk).
    thunk_prefixes: &["__x86_indirect_thunk_", "__x86_return_thunk"],
};

/// arm64 (small code model, static relocations, pointer authentication and BTI).
static ARM64: KernelTarget = KernelTarget {
    arch: "aarch64",
    target: "aarch64-unknown-none-softfloat",
    mitigations: "kcore-mitigations-aarch64.toml",
    tools: "aarch64-linux-gnu-",
    relocation_prefix: "R_AARCH64_",
    // The static, small-code-model types among those `apply_relocate_add` in
    // arch/arm64/kernel/module.c applies: absolute and PC-relative data, ADRP/ADR/ADD and
    // the load/store page offsets, literal loads, and branches (out-of-range CALL26/JUMP26
    // go through the module's PLT). Not the GOT types (R_AARCH64_ADR_GOT_PAGE,
    // R_AARCH64_LD64_GOT_LO12_NC) of position-independent code: module.c rejects them.
    relocations: &[
        "R_AARCH64_NONE",
        "R_AARCH64_ABS64",
        "R_AARCH64_ABS32",
        "R_AARCH64_PREL64",
        "R_AARCH64_PREL32",
        "R_AARCH64_PREL16",
        "R_AARCH64_LD_PREL_LO19",
        "R_AARCH64_ADR_PREL_LO21",
        "R_AARCH64_ADR_PREL_PG_HI21",
        "R_AARCH64_ADR_PREL_PG_HI21_NC",
        "R_AARCH64_ADD_ABS_LO12_NC",
        "R_AARCH64_LDST8_ABS_LO12_NC",
        "R_AARCH64_LDST16_ABS_LO12_NC",
        "R_AARCH64_LDST32_ABS_LO12_NC",
        "R_AARCH64_LDST64_ABS_LO12_NC",
        "R_AARCH64_LDST128_ABS_LO12_NC",
        "R_AARCH64_TSTBR14",
        "R_AARCH64_CONDBR19",
        "R_AARCH64_JUMP26",
        "R_AARCH64_CALL26",
    ],
    thunk_prefixes: &[],
};

/// Both objects, for the checks that apply to each.
static TARGETS: [&KernelTarget; 2] = [&X86_64, &ARM64];

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
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {command:?} (binutils installed? the aarch64 ones come with \
             gcc-aarch64-linux-gnu): {e}"
        )
    });
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

/// Builds the staticlib and links the kernel object of `kernel`; once per test run.
fn kernel_object(kernel: &KernelTarget) -> &'static Path {
    static X86_64_OBJECT: OnceLock<PathBuf> = OnceLock::new();
    static ARM64_OBJECT: OnceLock<PathBuf> = OnceLock::new();
    let once = if std::ptr::eq(kernel, &ARM64) {
        &ARM64_OBJECT
    } else {
        &X86_64_OBJECT
    };
    once.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kcore-kernel-{}", kernel.arch));
        let nightly = pinned_nightly();
        let mut build = Command::new("rustup");
        build
            .current_dir(crate_dir())
            .args(["run", &nightly, "cargo", "--config"])
            .arg(crate_dir().join("../kmod").join(kernel.mitigations))
            .args(["rustc", "-p", "extmem-kcore", "--profile", "kernel"])
            .args(["--target", kernel.target, "--features", "kernel"])
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
            "CARGO_TARGET_AARCH64_UNKNOWN_NONE_SOFTFLOAT_RUSTFLAGS",
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
        let archive = dir
            .join(kernel.target)
            .join("kernel")
            .join("libextmem_kcore.a");

        let members_dir = dir.join("members");
        let _ = std::fs::remove_dir_all(&members_dir);
        std::fs::create_dir_all(&members_dir).expect("members dir");
        let members: Vec<String> = run(kernel.tool("ar").arg("t").arg(&archive))
            .lines()
            .filter(|m| m.starts_with("extmem_kcore-"))
            .map(str::to_owned)
            .collect();
        assert!(!members.is_empty(), "no extmem_kcore object in {archive:?}");
        run(kernel
            .tool("ar")
            .current_dir(&members_dir)
            .arg("x")
            .arg(&archive)
            .args(&members));

        let script = crate_dir().join("../kmod/extmem_kcore.lds");
        let object = dir.join("extmem_kcore.o");
        let mut link = kernel.tool("ld");
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

/// (type letter, name) of every symbol of `kernel`'s object, raw and demangled.
fn symbols(kernel: &KernelTarget, demangle: bool) -> Vec<(char, String)> {
    let mut nm = kernel.tool("nm");
    if demangle {
        nm.arg("-C");
    }
    run(nm.arg(kernel_object(kernel)))
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
    for kernel in TARGETS {
        let defined: BTreeSet<String> = symbols(kernel, false)
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
            "declared in extmem_kcore.h but not exported by the {} kernel object: {missing:?}",
            kernel.arch
        );
    }
}

#[test]
fn no_panic_path_is_reachable_from_the_entry_points() {
    for kernel in TARGETS {
        let mut found: Vec<String> = symbols(kernel, false)
            .into_iter()
            .chain(symbols(kernel, true))
            .map(|(_, name)| name)
            .filter(|name| PANIC_MARKERS.iter().any(|m| name.contains(m)))
            .collect();
        found.dedup();
        assert!(
            found.is_empty(),
            "the {} kernel object can panic: an index, unwrap, expect, division, slice or \
             `core::fmt` use that the optimiser cannot prove safe is reachable from an \
             extmem_kcore_* entry point. Symbols: {found:#?}\n\
             Find the caller with `{}objdump -dr {}` and replace the operation by a checked \
             one (`get`, `checked_*`, `try_from`).",
            kernel.arch,
            kernel.tools,
            kernel_object(kernel).display()
        );
    }
}

#[test]
fn only_platform_callbacks_and_kernel_functions_are_undefined() {
    for kernel in TARGETS {
        let unexpected: Vec<String> = symbols(kernel, false)
            .into_iter()
            .filter(|(kind, _)| *kind == 'U')
            .map(|(_, name)| name)
            .filter(|name| {
                !name.starts_with("extmem_plat_")
                    && !KERNEL_SYMBOLS.contains(&name.as_str())
                    && !kernel.thunk_prefixes.iter().any(|p| name.starts_with(p))
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "the {} kernel object needs symbols neither the C glue nor the kernel provides \
             (compiler_builtins is not linked in: 128-bit division or float code?): \
             {unexpected:?}",
            kernel.arch
        );
    }
}

#[test]
fn relocations_are_ones_the_module_loader_applies() {
    for kernel in TARGETS {
        let listing = run(kernel.tool("readelf").arg("-rW").arg(kernel_object(kernel)));
        let mut section = String::new();
        let mut bad = BTreeSet::new();
        let mut seen = 0_usize;
        for line in listing.lines() {
            if let Some(rest) = line.strip_prefix("Relocation section '") {
                section = rest.split('\'').next().unwrap_or_default().to_owned();
                continue;
            }
            let Some(kind) = line.split_whitespace().nth(2) else {
                continue;
            };
            if !kind.starts_with(kernel.relocation_prefix) {
                continue;
            }
            seen += 1;
            if !kernel.relocations.contains(&kind) {
                let symbol = line.split_whitespace().nth(4).unwrap_or_default();
                bad.insert(format!("{section}: {kind} against {symbol}"));
            }
        }
        assert!(
            seen > 0,
            "no {} relocation in {listing}",
            kernel.relocation_prefix
        );
        assert!(
            bad.is_empty(),
            "relocations the {} module loader rejects: {bad:#?}\n\
             A GOT relocation (R_X86_64_GOTPCREL, R_AARCH64_ADR_GOT_PAGE) against mem* is a \
             memset/memcpy that LLVM emitted for a large or unaligned zeroing or copy (over \
             128 bytes): in the LTO unit, core's bitcode makes such library calls go through \
             a GOT, which a module does not have. Keep such values small or build them \
             piecewise (see selftest::Line).",
            kernel.arch
        );
    }
}

/// `objdump <mode> --no-show-raw-insn` of `kernel`'s object.
fn disassembly(kernel: &KernelTarget, mode: &str) -> String {
    run(kernel
        .tool("objdump")
        .args([mode, "--no-show-raw-insn"])
        .arg(kernel_object(kernel)))
}

/// The function a `0000000000000000 <name>:` line of a disassembly starts.
fn function_label(line: &str) -> Option<String> {
    line.strip_suffix(">:")
        .and_then(|l| l.split_once(" <"))
        .map(|(_, name)| name.to_owned())
}

#[test]
fn no_indirect_branch_and_no_return_bypasses_the_kernels_thunks() {
    // With -r, so that a call to an undefined thunk shows the thunk's name on the
    // relocation line below it.
    let listing = disassembly(&X86_64, "-dr");
    let mut function = String::new();
    let mut bad = Vec::new();
    let mut thunk_calls = 0_usize;
    for line in listing.lines() {
        if let Some(name) = function_label(line) {
            function = name;
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
         Are the flags of kernel-shim/kmod/kcore-mitigations-x86_64.toml applied? Jump \
         tables are disabled in .cargo/config.toml."
    );
    // The self-test's `emit` callback is the one indirect call: through the thunk.
    assert!(
        thunk_calls > 0,
        "no call through __x86_indirect_thunk_*: is -Zretpoline-external-thunk applied?"
    );
}

/// Whether an AArch64 operand names an FP/SIMD register (`v3`, `q0`, `d1`, `s31`, `h2`,
/// `b7`, `v0.16b`), as opposed to a general one (`x0`, `w1`, `sp`, `xzr`).
fn is_fp_simd_register(operand: &str) -> bool {
    let operand = operand.trim_matches(|c: char| matches!(c, '[' | ']' | '{' | '}' | '!' | ' '));
    let name = operand.split('.').next().unwrap_or_default();
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let digits = chars.as_str();
    matches!(first, 'v' | 'q' | 'd' | 's' | 'h' | 'b')
        && !digits.is_empty()
        && digits.len() <= 2
        && digits.chars().all(|c| c.is_ascii_digit())
}

#[test]
fn fp_simd_registers_are_told_from_general_ones() {
    for fp in ["v0.16b", "q1", "d31", "s2", "[v3.2d]", "{v4.16b"] {
        assert!(is_fp_simd_register(fp), "{fp}");
    }
    for general in ["x0", "w30", "sp", "xzr", "#0x10", "lsl", "[x1, #8]", "sxtw"] {
        assert!(!is_fp_simd_register(general), "{general}");
    }
}

#[test]
fn arm64_object_uses_no_fp_or_simd_register() {
    // The kernel saves FP/SIMD state only inside kernel_neon_begin/end: any use elsewhere
    // corrupts the interrupted task's registers. The softfloat target must not emit any.
    let listing = disassembly(&ARM64, "-d");
    let mut function = String::new();
    let mut bad = Vec::new();
    for line in listing.lines() {
        if let Some(name) = function_label(line) {
            function = name;
            continue;
        }
        let mut fields = line.split('\t').skip(1);
        let (Some(_mnemonic), Some(operands)) = (fields.next(), fields.next()) else {
            continue;
        };
        let operands = operands.split("//").next().unwrap_or_default();
        if operands.split(',').any(is_fp_simd_register) {
            bad.push(format!("{function}: {}", line.trim()));
        }
    }
    assert!(
        bad.is_empty(),
        "FP/SIMD registers in the arm64 kernel object (is the target \
         aarch64-unknown-none-softfloat?): {bad:#?}"
    );
}

#[test]
fn arm64_object_signs_its_returns_and_has_landing_pads() {
    // -Zbranch-protection=bti,pac-ret (kernel-shim/kmod/kcore-mitigations-aarch64.toml):
    // the object says so in its GNU property note, and the code has the instructions.
    let notes = run(ARM64.tool("readelf").arg("-n").arg(kernel_object(&ARM64)));
    assert!(
        notes
            .lines()
            .any(|l| l.contains("AArch64 feature: BTI, PAC")),
        "no BTI and PAC property in the arm64 kernel object: is -Zbranch-protection applied \
         (and core rebuilt with it)?\n{notes}"
    );
    let listing = disassembly(&ARM64, "-d");
    let count = |mnemonic: &str| {
        listing
            .lines()
            .filter(|l| l.split('\t').nth(1).map(str::trim) == Some(mnemonic))
            .count()
    };
    let (sign, check) = (count("paciasp"), count("autiasp"));
    assert!(sign > 0 && check >= sign, "paciasp {sign}, autiasp {check}");
    assert!(
        listing.lines().any(|l| l.contains("\tbti\t")),
        "no BTI landing pad in the arm64 kernel object"
    );
}
