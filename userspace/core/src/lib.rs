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
//! - [`exec`]: copy-engine commands and what a submission reports when it fails;
//! - [`sync`]: the synchronisation objects fences and semaphores stand on, and
//!   [`syncobj`], DRM syncobjs behind them;
//! - [`device_params`]: what a device says about itself (UUIDs, limits), checked;
//! - [`vgpu`]: the extmem-vgpu backend, the full set with a GPU VM;
//! - [`drm_prime`]: any DRM node over PRIME and dumb buffers (vgem, virtio-gpu);
//! - [`dma_buf_device`]: udmabuf and the system dma-heap, memory without a GPU;
//! - [`drm_core`] and [`dma_buf`]: the generic DRM ioctls and dma-buf fd operations;
//! - [`host_range`]: whether a host range may be imported, for devices that pin nothing;
//! - [`error`]: the error type and its `VkResult` mapping;
//! - [`os_handle`]: what carries memory between processes (an fd, a Windows `HANDLE`).
//!
//! On Windows only the portable half builds (the Linux backends are left out).
#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "std", windows))]
extern crate std;

pub mod alloc_info;
pub mod backend;
pub mod device_params;
// The Linux backends speak to Linux kernel drivers; on Windows the software device
// (extmem-softgpu) is the only backend, and shared memory is a section handle.
#[cfg(not(windows))]
pub mod dma_buf;
#[cfg(not(windows))]
pub mod dma_buf_device;
#[cfg(not(windows))]
pub mod dma_heap;
#[cfg(not(windows))]
pub mod drm_core;
#[cfg(not(windows))]
pub mod drm_prime;
pub mod error;
pub mod exec;
pub mod handle_types;
// The rule reads /proc/self/maps (Linux) or asks VirtualQuery (Windows): it needs std.
#[cfg(feature = "std")]
pub mod host_range;
pub mod memory;
pub mod os_handle;
pub mod sync;
#[cfg(not(windows))]
pub mod syncobj;
#[cfg(not(windows))]
pub mod udmabuf;
pub mod va_allocator;
#[cfg(not(windows))]
pub mod vgpu;

pub use error::{Cause, Error, HandleError, Vuid};

/// Some tests count this process's open fds, so every test that opens an fd holds this
/// lock: the count is only stable while no other test thread opens or closes one.
#[cfg(all(test, not(windows)))]
pub(crate) static FD_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
