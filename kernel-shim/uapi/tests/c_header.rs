//! The C header `kernel-shim/kmod/extmem_vgpu_drm.h` must agree with this crate: compile
//! the generated `_Static_assert`s against it with the system C compiler.

use std::path::Path;
use std::process::Command;

/// Compiles `source` (as `<name>.c`, with `include` on the include path) with the system
/// C compiler, syntax only; the compiler's complaints (or why it did not run) on failure.
fn c_compiles(name: &str, source: &str, include: Option<&Path>) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("extmem-uapi-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join(format!("{name}.c"));
    std::fs::write(&file, source).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-fsyntax-only", "-Werror"]);
    if let Some(include) = include {
        cc.arg("-I").arg(include);
    }
    let output = cc
        .arg(&file)
        .output()
        .map_err(|e| format!("cc (gcc is part of the build environment): {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn c_header_matches_the_rust_contract() {
    let header_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kmod");
    let mut body = String::new();
    extmem_uapi::c_layout_asserts(&mut body).expect("formatting into a String");
    let source = format!("#include <stddef.h>\n#include \"extmem_vgpu_drm.h\"\n{body}");
    if let Err(complaints) = c_compiles("check", &source, Some(&header_dir)) {
        panic!("extmem_vgpu_drm.h disagrees with extmem-uapi:\n{complaints}");
    }
}

#[test]
fn errno_values_match_the_c_library() {
    let mut source = String::from("#include <errno.h>\n");
    for (name, value) in extmem_uapi::errno::KNOWN {
        source.push_str(&format!(
            "_Static_assert({name} == {value}, \"value of {name}\");\n"
        ));
    }
    if let Err(complaints) = c_compiles("errno", &source, None) {
        panic!("extmem_uapi::errno disagrees with <errno.h>:\n{complaints}");
    }
}
