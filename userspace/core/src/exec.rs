//! What a copy-engine submission (`EXEC`) reports when it fails: a GPU fault or a refusal.
//! OS-neutral, shared by the extmem-vgpu backend ([`crate::vgpu`], which re-exports it)
//! and the software device (extmem-softgpu), which also builds for Windows.

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
    /// The kernel refused the submission.
    Kernel(BackendError),
}
