//! extmem-kcore: the Rust core of the extmem-vgpu kernel module.
//!
//! The C glue (`kernel-shim/kmod`) owns everything Linux: the DRM device, GEM objects,
//! `pin_user_pages`, dma-buf attachments, the per-file VM mutex. This crate owns what is
//! policy and arithmetic, behind the C ABI of `kernel-shim/kmod/extmem_kcore.h`:
//!
//! - [`args`]: the checks on ioctl arguments that need no object or VM;
//! - [`params`]: `GET_PARAM` for the contract version and the profile's limits;
//! - [`vm`]: the GPU VM of one file, page tables plus [`bindings`];
//! - [`copy_engine`]: `EXEC`, every access translated through the page tables;
//! - [`pin_registry`]: the host ranges a file has pinned;
//! - [`errno`]: every error of the crate mapped to an errno;
//! - [`selftest`]: KTAP self-tests that run in the kernel, on the platform's memory;
//! - [`platform`]: what the core needs from its host, a trait so host tests use a fake.
//!
//! The `test-cases` feature (off by default) adds the hidden module `test_cases`: unit test
//! cases that `tests/cortex-m` also runs on a Cortex-M3, written once.
//!
//! `no_std`, no heap: the VM is a fixed-size value that C allocates (zeroed) and the
//! tables in it have fixed capacities. Nothing here may panic: the kernel object must not
//! contain a reachable panic path, and `tests/no_panic.rs` checks that it does not.
//!
//! # The kernel object
//!
//! With the `kernel` feature the crate also exports the `extmem_kcore_*` functions (module
//! `ffi`, the only one with `unsafe`) and, on bare-metal targets, a panic handler. The
//! object linked into the module is built with
//!
//! ```text
//! cargo rustc -p extmem-kcore --profile kernel --target x86_64-unknown-none \
//!     --features kernel --crate-type staticlib
//! ```
//!
//! (or `--target aarch64-unknown-none-softfloat` for arm64 kernels; `.cargo/config.toml`
//! holds the kernel code-generation flags for each target, the
//! workspace `Cargo.toml` the `kernel` profile: fat LTO, one codegen unit), then reduced to
//! one relocatable object holding only what the entry points reach:
//!
//! ```text
//! ld -r --gc-sections --strip-debug -u extmem_kcore_<each entry point> \
//!     -o extmem_kcore.o <the extmem_kcore-*.o member of libextmem_kcore.a>
//! ```
//!
//! `tests/no_panic.rs` does both and checks the result: no panic path, every entry point
//! defined, nothing undefined but `extmem_plat_*` (and `mem*`), only relocations the module
//! loader applies, no indirect jumps.
//!
//! One rule follows from the last two: no large (over 128 bytes) or unaligned zeroing or
//! copying of values. LLVM turns those into `memset` / `memcpy` calls, and in the LTO unit
//! (whose precompiled `core` bitcode asks for it) such calls go through a GOT, whose
//! `R_X86_64_GOTPCREL` relocations a kernel module cannot have. The VM itself is never
//! moved: C allocates it zeroed and `ffi` initialises it in place.
#![no_std]
#![deny(unsafe_code)]

#[cfg(any(test, feature = "fake-platform"))]
extern crate std;

pub mod args;
pub mod bindings;
pub mod copy_engine;
pub mod cpu_page;
pub mod errno;
pub mod params;
pub mod pin_registry;
pub mod platform;
pub mod selftest;
mod sorted_table;
#[cfg(any(test, feature = "test-cases"))]
#[doc(hidden)]
pub mod test_cases;
pub mod vm;

#[cfg(feature = "kernel")]
#[allow(
    unsafe_code,
    reason = "the C ABI: raw pointers from C and calls into C"
)]
mod ffi;

#[cfg(any(test, feature = "fake-platform"))]
pub mod fake_platform;

use extmem_hw::GpuProfile;

/// The profile of the extmem-vgpu virtual GPU, which the VM and the checks use.
pub const PROFILE: &GpuProfile = &extmem_hw::profile::VGPU;

pub use bindings::{Binding, BINDINGS_MAX};
pub use cpu_page::{CpuPage, CpuPageError};
pub use errno::ToErrno;
pub use platform::{MemoryFault, ObjectId, Platform, RunFault, Segment, SegmentError};
pub use vm::{BoundObject, Vm};
