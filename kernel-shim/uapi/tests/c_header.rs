//! The C header `kernel-shim/kmod/extmem_vgpu_drm.h` must agree with this crate: compile
//! the generated `_Static_assert`s against it with the system C compiler.

use std::path::Path;
use std::process::Command;

#[test]
fn c_header_matches_the_rust_contract() {
    let header_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kmod");
    let mut body = String::new();
    extmem_uapi::c_layout_asserts(&mut body).expect("formatting into a String");
    let source = format!("#include <stddef.h>\n#include \"extmem_vgpu_drm.h\"\n{body}");
    let dir = std::env::temp_dir().join(format!("extmem-uapi-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("check.c");
    std::fs::write(&file, source).expect("write check.c");
    let output = Command::new("cc")
        .args(["-std=c11", "-fsyntax-only", "-Werror", "-I"])
        .arg(&header_dir)
        .arg(&file)
        .output()
        .expect("run cc (gcc is part of the build environment)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "extmem_vgpu_drm.h disagrees with extmem-uapi:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn errno_values_match_the_c_library() {
    let mut source = String::from("#include <errno.h>\n");
    for (name, value) in extmem_uapi::errno::KNOWN {
        source.push_str(&format!(
            "_Static_assert({name} == {value}, \"value of {name}\");\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!("extmem-uapi-errno-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("errno.c");
    std::fs::write(&file, source).expect("write errno.c");
    let output = Command::new("cc")
        .args(["-std=c11", "-fsyntax-only", "-Werror"])
        .arg(&file)
        .output()
        .expect("run cc (gcc is part of the build environment)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "extmem_uapi::errno disagrees with <errno.h>:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
