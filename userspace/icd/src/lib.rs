//! extmem-icd: a Vulkan ICD for extmem-vgpu that the Khronos loader loads.
//!
//! It exposes one physical device per extmem-vgpu render node, a transfer queue (copy,
//! fill, update) run by the vGPU's copy engine through real GPU page tables, and the
//! external-memory extensions: host pointers, opaque fds and dma-bufs, and the NV family
//! (answering, truthfully on Linux, that no NV handle type exists).
//!
//! - [`entry`]: the C entry points (the only `extern "system"` code), each a thin wrapper
//!   that catches panics and validates handles;
//! - [`proc_table`]: name → entry point for the `GetProcAddr`s;
//! - [`objects`]: the objects and what each command does, in plain Rust;
//! - [`commands`]: transfer commands translated into copy-engine commands;
//! - [`sync`]: fences and semaphores; [`queue`]: submissions, held back while what they
//!   wait for is not submitted yet, and the device-lost check after every wait;
//! - [`image`]: images (linear and optimal), their layout and the image-format answers;
//! - [`physical_device`]: discovery (extmem-vgpu nodes, else the software device) and the
//!   property tables;
//! - [`drm_node`]: a kernel device's DRM render and primary node numbers;
//! - [`device_backend`]: the kernel driver or the software device behind a `VkDevice`;
//! - `device_luid` (Windows): the software device's `deviceLUID`;
//! - [`handles`]: the registries of live handles, and the loader's dispatch word;
//! - [`error`]: the one error type, [`error::IcdError`], turned into a `VkResult` only at
//!   the C boundary;
//! - [`debug`]: `EXTMEM_DEBUG`, which prints every refusal and caught panic to stderr.
//!
//! The loader finds the library through the manifest `extmem_icd.json` that `build.rs`
//! writes next to it (`VK_DRIVER_FILES=<target>/<profile>/extmem_icd.json`).

pub mod commands;
pub mod debug;
pub mod device_backend;
#[cfg(windows)]
pub mod device_luid;
pub mod drm_node;
pub mod entry;
pub mod error;
pub mod handles;
mod host_memory;
pub mod image;
pub mod objects;
pub mod physical_device;
pub mod proc_table;
pub mod queue;
pub mod sync;

pub use entry::{
    vk_icdGetInstanceProcAddr, vk_icdGetPhysicalDeviceProcAddr,
    vk_icdNegotiateLoaderICDInterfaceVersion,
};
pub use physical_device::API_VERSION;
