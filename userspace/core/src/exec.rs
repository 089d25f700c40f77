//! What running copy-engine commands can fail with, on any device that has a copy engine
//! (the extmem-vgpu kernel driver, the software device on Linux and Windows).

use extmem_hw::GpuVa;
use extmem_uapi as uapi;

use crate::backend::BackendError;

/// A GPU fault reported by `EXEC`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Fault {
    /// Index of the command that faulted.
    pub cmd: u32,
    /// The GPU VA it faulted at.
    pub va: GpuVa,
    /// Why.
    pub kind: uapi::FaultKind,
}

/// Why `EXEC` failed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ExecError {
    /// The GPU faulted; commands before `cmd` ran.
    Fault(Fault),
    /// The kernel (or the software device) refused the submission.
    Kernel(BackendError),
}
