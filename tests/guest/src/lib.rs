//! Guest-side test programs for extmem and the small library they share.
//!
//! The QEMU runner (`extmem-qemu`) boots Debian's kernel with the host root mounted over 9p and
//! runs the binaries of this crate inside it, by their host paths. Each KTAP program prints one
//! KTAP document on stdout; the runner parses it (see `qemu/src/ktap.rs`).

pub mod child_process;
pub mod device_snapshot;
pub mod dma_buf;
pub mod dma_heap;
pub mod dri;
pub mod exporters;
pub mod fd_passing;
pub mod fd_table;
pub mod gbm_buffer;
pub mod host_memory;
pub mod host_ranges;
pub mod kernel_log;
pub mod ktap;
pub mod mapping;
pub mod memory_manager;
pub mod pattern;
pub mod sync;
pub mod udmabuf;
pub mod vgpu;
pub mod vulkan;
pub mod vulkan_sync;
