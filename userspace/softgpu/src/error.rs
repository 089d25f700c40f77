//! What can go wrong in the software device, with the values that went wrong, and the one
//! place each failure becomes the memory manager's [`BackendError`] (an operation and the
//! errno the kernel device would have returned for it).

use std::fmt;

use extmem::backend::{BackendError, GemHandle, Op};
/// An OS call that failed: the memory manager's, which the host-range rule reports too.
pub use extmem::error::OsError;
use extmem::host_range::RangeRefusal;
use extmem_hw::HostVa;
use extmem_kcore::args::ArgError;
use extmem_kcore::copy_engine;
use extmem_kcore::vm::{BindError, InitError, QueryError};
use extmem_kcore::{CpuPageError, ToErrno};
use extmem_uapi::errno;

use crate::phys_allocator::PhysAllocError;
use crate::shared_memory::MemoryError;

/// Why a request to the software device failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Error {
    /// kcore refused the request's arguments, as the kernel device's ioctl would.
    Args {
        /// The request.
        op: Op,
        /// What kcore found wrong.
        error: ArgError,
    },
    /// kcore could not set up the GPU VM.
    Init(InitError),
    /// The host's page size is not one kcore supports.
    CpuPage(CpuPageError),
    /// `VM_BIND` refused a map ([`Op::Bind`]) or an unmap ([`Op::Unbind`]).
    Bind {
        /// Map or unmap.
        op: Op,
        /// What kcore found wrong.
        error: BindError,
    },
    /// `VM_QUERY` refused.
    Query(QueryError),
    /// `EXEC` refused the job (a GPU fault is reported as a fault, not as this).
    Exec(copy_engine::ExecError),
    /// No object has this handle.
    NoSuchHandle {
        /// The request.
        op: Op,
        /// The handle given.
        handle: GemHandle,
    },
    /// Every handle value of this device has been handed out.
    HandlesExhausted {
        /// The request that needed one.
        op: Op,
    },
    /// The device's physical address space has no room for the object.
    PhysSpace {
        /// The request.
        op: Op,
        /// What the allocator said.
        error: PhysAllocError,
    },
    /// A host range to import is one `GEM_USERPTR` refuses: a page not mapped, not
    /// readable, or not fit for a writable import.
    HostRangeRefused {
        /// The application's pointer.
        ptr: HostVa,
        /// The range's size.
        size: u64,
        /// Whether the import was read-only.
        read_only: bool,
        /// What is wrong, and where.
        why: RangeRefusal,
    },
    /// The object is a host import: it has no memory of its own to export or map.
    NotDeviceMemory {
        /// The request.
        op: Op,
        /// The host import's handle.
        handle: GemHandle,
    },
    /// Device memory could not be created, imported, exported or mapped.
    Memory {
        /// The request.
        op: Op,
        /// What failed.
        error: MemoryError,
    },
}

impl Error {
    /// The operation and errno the kernel device would have failed the request with.
    #[must_use]
    pub fn op_and_errno(&self) -> (Op, i32) {
        match *self {
            Error::Args { op, error } => (op, error.errno()),
            Error::Init(error) => (Op::Create, error.errno()),
            Error::CpuPage(error) => (Op::Create, error.errno()),
            Error::Bind { op, error } => (op, error.errno()),
            Error::Query(error) => (Op::Info, error.errno()),
            Error::Exec(error) => (Op::Exec, error.errno()),
            Error::NoSuchHandle { op, .. } => (op, errno::ENOENT),
            Error::HandlesExhausted { op } => (op, errno::ENOSPC),
            Error::PhysSpace { op, error } => (
                op,
                match error {
                    PhysAllocError::NotWholePages { .. } => errno::EINVAL,
                    // Device memory the device cannot place is device memory it lacks.
                    PhysAllocError::Exhausted { .. } => errno::ENOMEM,
                    // Only ever freed by the owner of the range: the state is corrupt.
                    PhysAllocError::NotAllocated { .. } => errno::EIO,
                },
            ),
            // What pin_user_pages answers for each of these (mm/gup.c check_vma_flags()).
            Error::HostRangeRefused { why, .. } => (
                Op::ImportHost,
                match why {
                    RangeRefusal::Unmapped { .. }
                    | RangeRefusal::NotReadable { .. }
                    | RangeRefusal::NotWritable { .. }
                    | RangeRefusal::SharedFileMapping { .. } => errno::EFAULT,
                    // The OS would not tell (no /proc): the range cannot be vouched for.
                    RangeRefusal::Os(_) => errno::EFAULT,
                },
            ),
            // Host imports are not exported (SPEC: importable only) nor mapped (the
            // application has its own pointer).
            Error::NotDeviceMemory { op, .. } => (op, errno::EINVAL),
            Error::Memory { op, error } => (op, error.errno()),
        }
    }
}

impl From<Error> for BackendError {
    fn from(error: Error) -> Self {
        let (op, errno) = error.op_and_errno();
        BackendError { op, errno }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Args { op, error } => write!(f, "{op:?}: arguments refused: {error:?}"),
            Error::Init(error) => write!(f, "GPU VM setup failed: {error:?}"),
            Error::CpuPage(error) => write!(f, "the host's page size: {error:?}"),
            Error::Bind { op, error } => write!(f, "{op:?} refused: {error:?}"),
            Error::Query(error) => write!(f, "VM query refused: {error:?}"),
            Error::Exec(error) => write!(f, "exec refused: {error:?}"),
            Error::NoSuchHandle { op, handle } => {
                write!(f, "{op:?}: no object has handle {}", handle.0)
            }
            Error::HandlesExhausted { op } => write!(f, "{op:?}: no handle values left"),
            Error::PhysSpace { op, error } => write!(f, "{op:?}: {error}"),
            Error::HostRangeRefused {
                ptr,
                size,
                read_only,
                why,
            } => {
                let kind = if *read_only { "read-only" } else { "writable" };
                write!(
                    f,
                    "{kind} import of host range {ptr}+{size:#x} refused: {why}"
                )
            }
            Error::NotDeviceMemory { op, handle } => {
                write!(f, "{op:?}: handle {} is a host import", handle.0)
            }
            Error::Memory { op, error } => write!(f, "{op:?}: {error}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::num::NonZeroU32;
    use extmem_hw::Alignment;

    #[test]
    fn each_failure_keeps_the_kernel_devices_errno() {
        let handle = GemHandle(NonZeroU32::MIN);
        let os = OsError {
            call: "msync",
            errno: errno::ENOMEM,
        };
        let cases = [
            (
                Error::NoSuchHandle {
                    op: Op::Bind,
                    handle,
                },
                (Op::Bind, errno::ENOENT),
            ),
            (
                Error::HandlesExhausted { op: Op::Create },
                (Op::Create, errno::ENOSPC),
            ),
            (
                Error::PhysSpace {
                    op: Op::Create,
                    error: PhysAllocError::Exhausted {
                        size: 4096,
                        alignment: Alignment::SIZE_4K,
                        free: 0,
                    },
                },
                (Op::Create, errno::ENOMEM),
            ),
            (
                Error::HostRangeRefused {
                    ptr: HostVa::new(0x1000),
                    size: 4096,
                    read_only: false,
                    why: RangeRefusal::NotWritable {
                        addr: HostVa::new(0x1000),
                    },
                },
                (Op::ImportHost, errno::EFAULT),
            ),
            (
                Error::NotDeviceMemory {
                    op: Op::Map,
                    handle,
                },
                (Op::Map, errno::EINVAL),
            ),
            (
                Error::Memory {
                    op: Op::Create,
                    error: MemoryError::Os(os),
                },
                (Op::Create, errno::ENOMEM),
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.op_and_errno(), want, "{error}");
            assert_eq!(
                BackendError::from(error),
                BackendError {
                    op: want.0,
                    errno: want.1
                }
            );
        }
    }

    #[test]
    fn messages_name_the_values() {
        let e = Error::HostRangeRefused {
            ptr: HostVa::new(0x7000),
            size: 0x2000,
            read_only: true,
            why: RangeRefusal::Unmapped {
                addr: HostVa::new(0x8000),
            },
        };
        assert_eq!(
            e.to_string(),
            "read-only import of host range 0x7000+0x2000 refused: nothing is mapped at 0x8000"
        );
    }
}
