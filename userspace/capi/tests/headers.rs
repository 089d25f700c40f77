//! The checked-in C headers agree with the Rust code: `include/extmem.h` is exactly what
//! cbindgen generates from this crate, and every prototype of
//! `kernel-shim/kmod/extmem_kcore.h` has the types of kcore's `extern "C"` functions.

use std::path::PathBuf;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate_extmem_h() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap_or_else(|e| panic!("cbindgen wrote non-UTF-8: {e}"))
}

#[test]
fn extmem_h_is_what_cbindgen_generates() {
    let path = crate_dir().join("include/extmem.h");
    let generated = generate_extmem_h();
    if std::env::var_os("EXTMEM_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let checked_in =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if checked_in != generated {
        let first = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "{} differs from cbindgen's output from line {} on; regenerate with \
             EXTMEM_BLESS=1 cargo test -p extmem-capi --test headers",
            path.display(),
            first + 1
        );
    }
}

#[test]
fn extmem_h_speaks_vulkans_types() {
    let header = generate_extmem_h();
    for needle in [
        "#include <vulkan/vulkan.h>",
        "VkResult extmem_allocate_memory(extmem_device device,\n                                const VkMemoryAllocateInfo *info,",
        "VkExternalMemoryHandleTypeFlagBits handle_type",
        "typedef uint64_t extmem_device;",
        "extmem_error extmem_last_error(void);",
    ] {
        assert!(header.contains(needle), "extmem.h lacks {needle:?}:\n{header}");
    }
}

/// The uapi struct a Rust name stands for in the kernel's C: `VmBind` is
/// `struct drm_extmem_vm_bind` (the rule `extmem_vgpu_drm.h` names them by).
fn uapi_c_name(rust: &str) -> String {
    let mut snake = String::new();
    for (i, c) in rust.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    format!("struct drm_extmem_{snake}")
}

/// The `extern "C"` block of `ffi.rs` (the `extmem_plat_*` callbacks kcore imports)
/// rewritten as exported functions, so cbindgen, which prints only exported functions,
/// prints their C prototypes too.
fn imports_as_exports(ffi: &str) -> String {
    let start = ffi
        .find("extern \"C\" {")
        .unwrap_or_else(|| panic!("ffi.rs has no extern \"C\" block"));
    let body = &ffi[start + "extern \"C\" {".len()..];
    let end = body
        .find("\n}")
        .unwrap_or_else(|| panic!("ffi.rs: the extern \"C\" block does not end"));
    body[..end]
        .split(';')
        .map(|item| {
            item.lines()
                .filter(|line| !line.trim_start().starts_with("#["))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|item| item.contains("fn "))
        .map(|item| {
            let item = item.trim().replace("-> !", "");
            format!("#[no_mangle]\npub unsafe extern \"C\" {item} {{ loop {{}} }}\n")
        })
        .collect()
}

/// One token of a C prototype.
fn c_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// The prototypes of `extmem_kcore_*` and `extmem_plat_*` functions in C text, by name,
/// reduced to their types: parameter names dropped, fixed-width integers in the kernel's
/// spelling, attributes gone.
fn prototypes(c: &str) -> std::collections::BTreeMap<String, String> {
    let mut text = String::new();
    let mut rest = c;
    while let Some(open) = rest.find("/*") {
        text.push_str(&rest[..open]);
        rest = rest[open..]
            .find("*/")
            .map_or("", |close| &rest[open + close + 2..]);
    }
    text.push_str(rest);
    let text: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("__attribute__((noreturn))", "");
    let mut out = std::collections::BTreeMap::new();
    for decl in text.split([';', '{', '}']) {
        let tokens: Vec<String> = c_tokens(decl)
            .into_iter()
            .map(|t| match t.as_str() {
                "uint64_t" => "u64".to_string(),
                "uint32_t" => "u32".to_string(),
                _ => t,
            })
            .collect();
        let Some(paren) = tokens.iter().position(|t| t == "(") else {
            continue;
        };
        let Some(name) = paren.checked_sub(1).and_then(|i| tokens.get(i)) else {
            continue;
        };
        if !(name.starts_with("extmem_kcore_") || name.starts_with("extmem_plat_")) {
            continue;
        }
        let is_word = |t: &str| t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let kept: Vec<&str> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| {
                let next = tokens.get(i + 1).map(String::as_str);
                let prev = i
                    .checked_sub(1)
                    .and_then(|p| tokens.get(p))
                    .map(String::as_str);
                let names_a_parameter = *i > paren
                    && is_word(t)
                    && matches!(next, Some(",") | Some(")"))
                    && prev.is_some_and(|p| p == "*" || (is_word(p) && p != "const"));
                !names_a_parameter
            })
            .map(|(_, t)| t.as_str())
            .collect();
        out.insert(name.clone(), kept.join(" "));
    }
    out
}

#[test]
fn extmem_kcore_h_has_the_types_of_the_rust_abi() {
    let root = crate_dir().join("../..");
    let ffi_path = root.join("kernel-shim/core/src/ffi.rs");
    let ffi = std::fs::read_to_string(&ffi_path)
        .unwrap_or_else(|e| panic!("{}: {e}", ffi_path.display()));
    let scratch = std::env::temp_dir().join(format!("extmem-kcore-abi-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("{}: {e}", scratch.display()));
    let imports = scratch.join("imports.rs");
    std::fs::write(&imports, imports_as_exports(&ffi))
        .unwrap_or_else(|e| panic!("{}: {e}", imports.display()));
    let mut config = cbindgen::Config {
        language: cbindgen::Language::C,
        usize_is_size_t: true,
        ..Default::default()
    };
    for rust in [
        "GemCreate",
        "GemUserptr",
        "VmBind",
        "VmQuery",
        "GetParam",
        "Exec",
        "ExecSync",
        "Cmd",
    ] {
        config
            .export
            .rename
            .insert(rust.to_string(), uapi_c_name(rust));
    }
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(&ffi_path)
        .with_src(&imports)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen over {}: {e}", ffi_path.display()));
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let _ = std::fs::remove_dir_all(&scratch);
    let generated = String::from_utf8(generated).unwrap_or_else(|e| panic!("{e}"));
    let from_rust = prototypes(&generated);
    let header_path = root.join("kernel-shim/kmod/extmem_kcore.h");
    let header = std::fs::read_to_string(&header_path)
        .unwrap_or_else(|e| panic!("{}: {e}", header_path.display()));
    let from_header = prototypes(&header);
    assert!(
        from_rust.len() >= 25,
        "cbindgen found only {} functions:\n{generated}",
        from_rust.len()
    );
    let mut wrong = Vec::new();
    for (name, rust) in &from_rust {
        match from_header.get(name) {
            Some(c) if c == rust => {}
            Some(c) => wrong.push(format!("{name}: the header says `{c}`, Rust `{rust}`")),
            None => wrong.push(format!("{name}: in ffi.rs, not in the header (`{rust}`)")),
        }
    }
    for name in from_header.keys().filter(|n| !from_rust.contains_key(*n)) {
        wrong.push(format!("{name}: in the header, not in ffi.rs"));
    }
    assert!(
        wrong.is_empty(),
        "extmem_kcore.h vs ffi.rs:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_kcore_comparison_sees_types_not_only_names() {
    let a = prototypes("int extmem_plat_copy(void *plat, u64 dst_pa, u64 src_pa, u64 len);");
    let b = prototypes("int extmem_plat_copy(void *p, uint64_t d, uint64_t s, uint64_t n);");
    let c = prototypes("int extmem_plat_copy(void *plat, u64 dst_pa, u32 src_pa, u64 len);");
    assert_eq!(a, b, "parameter names and integer spellings do not matter");
    assert_ne!(a, c, "a parameter's type does");
    let f = prototypes("int extmem_kcore_selftest(void *plat, void (*emit)(const char *line));");
    assert_eq!(
        f.get("extmem_kcore_selftest").map(String::as_str),
        Some("int extmem_kcore_selftest ( void * , void ( * ) ( const char * ) )")
    );
}
