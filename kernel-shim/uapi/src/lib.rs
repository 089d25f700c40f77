//! The ioctl contract of the extmem-vgpu DRM driver.
//!
//! This crate is the source of truth; `kernel-shim/kmod/extmem_vgpu_drm.h` mirrors it for
//! the C glue, and a test compiles `_Static_assert`s generated from [`c_layout_asserts`]
//! against that header, so the two cannot drift.
//!
//! Conventions, as in every upstream DRM uAPI: fixed-width fields, explicit padding that
//! must be zero, 64-bit pointers in `u64`, every struct a multiple of 8 bytes. The kernel
//! rejects unknown flag bits and non-zero padding with `EINVAL`, so new flags can be added
//! later without old kernels silently ignoring them.
//!
//! Error numbers (positive errno, the values in [`errno`]; the ioctl returns `-1` with
//! `errno` set):
//!
//! | errno | meaning |
//! |---|---|
//! | `EINVAL` | unknown flag or op, non-zero padding, zero size, misaligned address or size |
//! | `EOVERFLOW` | an address plus size wraps |
//! | `ERANGE` | a GPU VA range outside the VA space, or an object range outside the object |
//! | `ENOENT` | no object with that handle, or no binding at that VA |
//! | `EEXIST` | the VA range overlaps an existing binding |
//! | `EFAULT` | a user range that is not mapped (or not writable for a write pin), a bad pointer |
//! | `ENOMEM` | `RLIMIT_MEMLOCK` would be exceeded, or the kernel is out of memory |
//! | `ENOSPC` | a fixed-capacity table is full: 4,096 bindings per VM (`VM_BIND`), 1,024 pinned ranges per file (`GEM_USERPTR`); nothing is changed |
//! | `EACCES` | `VM_BIND` of a read-only object without `FLAG_READ_ONLY` |
//! | `EOPNOTSUPP` | PRIME export of a userptr or FOREIGN object; import of a dma-buf whose DMA addresses are not physical addresses |
//! | `EINTR` | a signal arrived while pinning or waiting for a lock; nothing was done, retry |
//! | `EIO` | `EXEC` with `EXEC_WAIT` hit a GPU fault; the fault fields say where (without it, the job's fence carries the error) |
//! | `ENOENT` (`EXEC`) | a wait or signal syncobj handle that names no syncobj of the file |
//! | `EINVAL` (`EXEC`) | unknown `EXEC` or sync flags, more than `MAX_EXEC_SYNCS` syncs, a wait for a syncobj or point that has no fence yet |
//!
//! The standard `PRIME_FD_TO_HANDLE` (DRM core) fails with `EBADF` for a number that is no
//! open descriptor and `EINVAL` for a descriptor that is not a dma-buf (a memfd, pipe,
//! eventfd, `/dev/null`); `GEM_CLOSE` of a handle that is not live fails with `EINVAL`.
#![no_std]
#![forbid(unsafe_code)]

pub mod errno;
pub mod ioctl;
pub mod layout;

pub use ioctl::*;
pub use layout::c_layout_asserts;
