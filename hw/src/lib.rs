//! The model of the open GPU that extmem drives.
//!
//! Everything here is plain data and pure functions, so the same code runs in host unit
//! tests, inside the Linux kernel (linked into the extmem-vgpu module through
//! `extmem-kcore`) and on bare-metal Cortex-M under `qemu-system-arm`:
//!
//! - [`addr`]: one newtype per address space ([`GpuVa`], [`PhysAddr`], [`HostVa`]) with
//!   checked arithmetic only, and [`Alignment`], a power of two by construction;
//! - [`page_size`]: the closed set of page and block sizes of the 4 KiB granule;
//! - [`profile`]: per-GPU limits as `const` tables;
//! - [`descriptor`]: the AArch64 stage-1 long-descriptor format, declared once as bit ranges;
//! - [`page_table`]: map / unmap / translate / iterate over any [`TableMemory`];
//! - [`table_pool`]: a fixed-size [`TableMemory`] for tests, fuzzing and bare metal.
//!
//! The `test-cases` feature (off by default) adds the hidden module `test_cases`: the unit
//! test cases that `tests/cortex-m` also runs on a Cortex-M3, written once.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod addr;
pub mod descriptor;
pub mod page_size;
pub mod page_table;
pub mod profile;
pub mod table_pool;
#[cfg(any(test, feature = "test-cases"))]
#[doc(hidden)]
pub mod test_cases;

pub use addr::{Alignment, GpuVa, HostVa, PhysAddr};
pub use descriptor::{Access, AttrIndex, Descriptor, Level, PageAttrs, Shareability};
pub use page_size::{PageSize, PageSizes};
pub use page_table::{
    Entries, Invalidate, LeafTable, MapError, MapFlags, MapRunsError, Mapping, PageTable, Run,
    TableIndex, TableMemory, TranslateError, Translation, UnmapError,
};
pub use profile::GpuProfile;
pub use table_pool::TablePool;
