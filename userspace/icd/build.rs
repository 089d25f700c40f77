//! Writes the ICD manifest `extmem_icd.json` next to the library cargo is about to link,
//! so that `VK_DRIVER_FILES=<target>/<profile>/extmem_icd.json` works straight after
//! `cargo build` (and in the integration test, which uses exactly that file).
//!
//! The profile directory is three levels above `OUT_DIR`
//! (`<target>/<profile>/build/extmem-icd-<hash>/out`): cargo's layout, stable since 1.0.
//! The library path in the manifest is relative (`./libextmem_icd.so`), which the loader
//! resolves against the manifest's own directory, so the pair can be copied anywhere
//! together (the QEMU guest sees the host tree read-only at the same path anyway).

use std::env;
use std::fs;
use std::path::PathBuf;

/// The Vulkan version the ICD reports (`api_version` in the manifest); must match
/// `extmem_icd::API_VERSION`.
const API_VERSION: &str = "1.1.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return;
    };
    let library = match env::var("CARGO_CFG_TARGET_OS").as_deref() {
        Ok("windows") => "extmem_icd.dll",
        Ok("macos") => "libextmem_icd.dylib",
        _ => "libextmem_icd.so",
    };
    let manifest = format!(
        concat!(
            "{{\n",
            "    \"file_format_version\": \"1.0.0\",\n",
            "    \"ICD\": {{\n",
            "        \"library_path\": \"./{library}\",\n",
            "        \"api_version\": \"{api}\"\n",
            "    }}\n",
            "}}\n"
        ),
        library = library,
        api = API_VERSION
    );
    let path = profile_dir.join("extmem_icd.json");
    if fs::read_to_string(&path).ok().as_deref() != Some(manifest.as_str()) {
        if let Err(e) = fs::write(&path, manifest) {
            println!("cargo:warning=could not write {}: {e}", path.display());
        }
    }
}
