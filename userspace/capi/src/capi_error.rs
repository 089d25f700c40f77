//! What a libextmem call that failed says about it: the `VkResult`, and per thread the
//! detail a driver prints (`vk_errorf`-style): the VUID, the backend operation, the errno
//! and a sentence.

use core::cell::RefCell;
use core::ffi::{c_char, CStr};
use core::fmt;
use std::ffi::CString;
use std::sync::OnceLock;

use ash::vk;
use extmem::backend::Op;
use extmem::device_params::ParamError;
use extmem::Vuid;

use crate::handle_table::HandleLookupError;

/// Which kind of handle was refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum HandleKind {
    /// An `extmem_device`.
    Device,
    /// An `extmem_memory`.
    Memory,
}

/// What is wrong with a pointer argument.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PointerFault {
    /// It is NULL.
    Null,
    /// It is not aligned for its type.
    Misaligned,
}

/// Why an `extmem_backend` table was refused by `extmem_device_create`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BackendTableError {
    /// `version` is not `EXTMEM_BACKEND_VERSION`.
    Version {
        /// What the table says.
        got: u32,
    },
    /// `caps` has bits this version does not know.
    UnknownCaps {
        /// The unknown bits.
        bits: u32,
    },
    /// `memory_type_count` is 0 or over 32.
    MemoryTypeCount {
        /// What the table says.
        count: u32,
    },
    /// A memory-type mask names types past `memory_type_count`.
    TypesOutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        mask: u32,
    },
    /// A callback the capabilities need is NULL.
    MissingCallback {
        /// The callback.
        callback: &'static str,
        /// What needs it.
        needed_for: &'static str,
    },
    /// A device parameter is out of range.
    Param(ParamError),
}

/// Every way a libextmem call fails.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CapiError {
    /// The memory manager refused (a Valid Usage rule, a handle, the kernel).
    Memory(extmem::Error),
    /// A pointer argument cannot be used.
    Pointer {
        /// The argument's name.
        argument: &'static str,
        /// What is wrong with it.
        fault: PointerFault,
    },
    /// A handle argument names nothing.
    Handle {
        /// Which kind of handle.
        kind: HandleKind,
        /// Why.
        lookup: HandleLookupError,
    },
    /// The backend table given to `extmem_device_create` is not usable.
    BackendTable(BackendTableError),
    /// A handle table is full.
    TooManyHandles,
    /// An earlier call panicked while holding the device: its state is unknown.
    Poisoned,
    /// This call panicked inside libextmem (a bug); the panic was stopped at the boundary.
    Panic,
}

impl From<extmem::Error> for CapiError {
    fn from(e: extmem::Error) -> Self {
        CapiError::Memory(e)
    }
}

impl CapiError {
    /// The `VkResult` the call returns. Exhaustive, with no catch-all arm.
    pub fn result(self) -> vk::Result {
        match self {
            CapiError::Memory(e) => e.result(),
            // Passing NULL or a dead handle where Vulkan needs a valid one breaks the
            // implicit Valid Usage rules of every command.
            CapiError::Pointer { .. } | CapiError::Handle { .. } => {
                vk::Result::ERROR_VALIDATION_FAILED_EXT
            }
            CapiError::BackendTable(_) => vk::Result::ERROR_INITIALIZATION_FAILED,
            CapiError::TooManyHandles => vk::Result::ERROR_TOO_MANY_OBJECTS,
            CapiError::Poisoned => vk::Result::ERROR_DEVICE_LOST,
            CapiError::Panic => vk::Result::ERROR_UNKNOWN,
        }
    }

    fn cause(self) -> extmem::Cause {
        match self {
            CapiError::Memory(e) => e.cause(),
            CapiError::BackendTable(BackendTableError::Param(ParamError::Kernel(e))) => {
                extmem::Cause {
                    vuid: None,
                    op: Some(e.op),
                    errno: Some(e.errno),
                }
            }
            CapiError::Pointer { .. }
            | CapiError::Handle { .. }
            | CapiError::BackendTable(_)
            | CapiError::TooManyHandles
            | CapiError::Poisoned
            | CapiError::Panic => extmem::Cause::NONE,
        }
    }
}

impl fmt::Display for CapiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapiError::Memory(e) => write!(f, "{e}"),
            CapiError::Pointer {
                argument,
                fault: PointerFault::Null,
            } => write!(f, "{argument} is NULL"),
            CapiError::Pointer {
                argument,
                fault: PointerFault::Misaligned,
            } => write!(f, "{argument} is not aligned for its type"),
            CapiError::Handle {
                kind,
                lookup: HandleLookupError::Null,
            } => write!(f, "the {} handle is null", kind.name()),
            CapiError::Handle {
                kind,
                lookup: HandleLookupError::Stale { handle },
            } => write!(
                f,
                "{handle:#x} is not a live {} handle (never issued, already freed, or another device's)",
                kind.name()
            ),
            CapiError::BackendTable(e) => write!(f, "extmem_backend: {e}"),
            CapiError::TooManyHandles => write!(f, "the handle table is full"),
            CapiError::Poisoned => write!(
                f,
                "an earlier call panicked while using this device; its state is unknown"
            ),
            CapiError::Panic => write!(f, "libextmem panicked (a bug); the call did nothing known"),
        }
    }
}

impl HandleKind {
    fn name(self) -> &'static str {
        match self {
            HandleKind::Device => "extmem_device",
            HandleKind::Memory => "extmem_memory",
        }
    }
}

impl fmt::Display for BackendTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendTableError::Version { got } => write!(
                f,
                "version is {got}, this libextmem knows {}",
                crate::EXTMEM_BACKEND_VERSION
            ),
            BackendTableError::UnknownCaps { bits } => write!(f, "unknown caps bits {bits:#x}"),
            BackendTableError::MemoryTypeCount { count } => {
                write!(f, "memory_type_count {count} is not 1 to 32")
            }
            BackendTableError::TypesOutOfRange { field, mask } => {
                write!(f, "{field} {mask:#x} names types past memory_type_count")
            }
            BackendTableError::MissingCallback {
                callback,
                needed_for,
            } => write!(f, "{callback} is NULL but {needed_for} needs it"),
            BackendTableError::Param(e) => write!(f, "{e}"),
        }
    }
}

/// What `extmem_last_error` returns: the calling thread's most recent libextmem call.
/// The strings are static (valid for the life of the process, never freed by the caller).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExtmemError {
    /// What the call returned (`VK_SUCCESS` if it succeeded).
    pub result: vk::Result,
    /// The Valid Usage rule it broke (`"VUID-..."`), or NULL.
    pub vuid: *const c_char,
    /// The backend operation that failed (`"ImportHost"`, `"ImportDmaBuf"`, ...), or NULL.
    pub operation: *const c_char,
    /// The errno that operation answered (positive), or 0.
    pub error_number: i32,
}

thread_local! {
    static LAST: RefCell<Option<CapiError>> = const { RefCell::new(None) };
}

/// Records the outcome of this thread's latest call.
pub fn record(outcome: Option<CapiError>) {
    LAST.with(|last| *last.borrow_mut() = outcome);
}

/// This thread's latest outcome.
pub fn last() -> Option<CapiError> {
    LAST.with(|last| *last.borrow())
}

/// The NUL-terminated form of every VUID, made once and kept for the process.
fn vuid_cstr(vuid: Vuid) -> *const c_char {
    static TABLE: OnceLock<Vec<(Vuid, CString)>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        Vuid::ALL
            .iter()
            .filter_map(|v| CString::new(v.id()).ok().map(|c| (*v, c)))
            .collect()
    });
    table
        .iter()
        .find(|(v, _)| *v == vuid)
        .map_or(core::ptr::null(), |(_, c)| c.as_ptr())
}

fn op_cstr(op: Op) -> &'static CStr {
    match op {
        Op::Create => c"Create",
        Op::ImportHost => c"ImportHost",
        Op::ImportDmaBuf => c"ImportDmaBuf",
        Op::ExportDmaBuf => c"ExportDmaBuf",
        Op::Info => c"Info",
        Op::Bind => c"Bind",
        Op::Unbind => c"Unbind",
        Op::Exec => c"Exec",
        Op::Map => c"Map",
        Op::Sync => c"Sync",
        Op::ImportSync => c"ImportSync",
    }
}

impl ExtmemError {
    /// The C view of an outcome.
    pub fn of(outcome: Option<CapiError>) -> Self {
        let Some(e) = outcome else {
            return ExtmemError {
                result: vk::Result::SUCCESS,
                vuid: core::ptr::null(),
                operation: core::ptr::null(),
                error_number: 0,
            };
        };
        let cause = e.cause();
        ExtmemError {
            result: e.result(),
            vuid: cause.vuid.map_or(core::ptr::null(), vuid_cstr),
            operation: cause
                .op
                .map_or(core::ptr::null(), |op| op_cstr(op).as_ptr()),
            error_number: cause.errno.unwrap_or(0),
        }
    }
}
