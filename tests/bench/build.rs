//! Builds Mesa's `util_vma_heap` (`src/util/vma.c`) into the bench as its reference GPU VA
//! allocator, from the Mesa source tree `EXTMEM_MESA_SRC` names. `cargo bench-host` (the
//! runner) fetches Debian's `mesa` source package into the cache and sets the variable; the
//! source is never copied into this repository.
//!
//! Why a build script with the `cc` crate rather than the runner building a static library:
//! cargo then rebuilds the C when the tree or the shim changes, links it into this binary
//! alone, and the workspace's plain `cargo build`/`clippy` keep working without Mesa (the
//! bench is then built without the reference and says so when run).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(util_vma_heap)");
    println!("cargo:rerun-if-env-changed=EXTMEM_MESA_SRC");
    println!("cargo:rerun-if-changed=csrc/util_vma_heap_shim.c");
    let Some(tree) = env::var_os("EXTMEM_MESA_SRC").filter(|v| !v.is_empty()) else {
        return;
    };
    let tree = PathBuf::from(tree);
    let vma = tree.join("src/util/vma.c");
    if !vma.is_file() {
        // A build script reports a bad input by failing the build, with the reason.
        panic!(
            "EXTMEM_MESA_SRC={} is not a Mesa source tree: {} is missing",
            tree.display(),
            vma.display()
        );
    }
    println!("cargo:rerun-if-changed={}", vma.display());
    cc::Build::new()
        .file(&vma)
        .file("csrc/util_vma_heap_shim.c")
        .include(tree.join("src"))
        .include(tree.join("include"))
        // Mesa's release build: assertions off (Debian builds with -Db_ndebug=true), and
        // the endianness header meson finds on glibc.
        .define("NDEBUG", None)
        .define("HAVE_ENDIAN_H", None)
        // Every hole vma.c allocates or frees goes through the shim's counters, so the
        // bench can report util_vma_heap's metadata per live range.
        .define("calloc", "extmem_bench_vma_calloc")
        .define("free", "extmem_bench_vma_free_hole")
        // Debian's CFLAGS for its packages, so the reference runs as distributions ship it.
        .opt_level(2)
        .warnings(false)
        .compile("extmem_bench_util_vma_heap");
    println!("cargo:rustc-cfg=util_vma_heap");
}
