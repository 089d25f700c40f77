//! extmem: the driver-side external-memory manager.
//!
//! What a Mesa-style Vulkan driver (and extmem's own ICD) calls to allocate, import,
//! export and bind memory, with the Vulkan rules in one place:
//! - [`handle_types`]: what the device answers for each external handle type;
//! - [`alloc_info`]: the `VkMemoryAllocateInfo` chain parsed once and checked against
//!   every Valid Usage rule, each error naming its VUID;
//! - [`va_allocator`]: the GPU virtual address space (userspace owns VA allocation);
//! - [`memory`]: `VkDeviceMemory` over a [`backend::Backend`], with the ownership rules
//!   of fd and host-pointer import and export;
//! - [`vgpu`] and [`drm_core`]: the extmem-vgpu backend and the generic DRM ioctls;
//! - [`error`]: the error type and its `VkResult` mapping.
#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod alloc_info;
pub mod backend;
pub mod drm_core;
pub mod error;
pub mod handle_types;
pub mod memory;
pub mod va_allocator;
pub mod vgpu;

pub use error::{Error, HandleError, Vuid};
