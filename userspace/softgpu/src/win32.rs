//! `extmem`'s [`Win32Sharing`] for the software device on Windows: the memory manager's
//! `VK_KHR_external_memory_win32` over section objects ([`crate::shared_memory`]).
//!
//! Imports duplicate the application's handle into our own (never taking or closing
//! theirs) and go through the same trailer check as every import; the same memory
//! imported again while a handle names it gets that handle. Errors are Win32 errors as
//! errno ([`crate::win32_error`]).

use extmem::backend::{BackendError, GemHandle, Op, RawWin32Handle, Win32ExportInfo, Win32Sharing};

use crate::memory_failed;
use crate::shared_memory::SharedMemory;
use crate::SoftGpu;

impl Win32Sharing for SoftGpu {
    /// A section named as `export` asks, with its security descriptor; `EEXIST` if the
    /// name is taken.
    fn create_exportable(
        &mut self,
        size: u64,
        export: &Win32ExportInfo<'_>,
    ) -> Result<GemHandle, BackendError> {
        Ok(self.create_with(size, || {
            SharedMemory::create_exportable(size, export.security_descriptor, export.name)
        })?)
    }

    fn import_nt(&mut self, handle: RawWin32Handle) -> Result<GemHandle, BackendError> {
        let memory = SharedMemory::import_raw(handle).map_err(memory_failed(Op::ImportDmaBuf))?;
        Ok(self.adopt(memory, Op::ImportDmaBuf)?)
    }

    fn import_name(&mut self, name: &[u16]) -> Result<GemHandle, BackendError> {
        let memory = SharedMemory::open_name(name).map_err(memory_failed(Op::ImportDmaBuf))?;
        Ok(self.adopt(memory, Op::ImportDmaBuf)?)
    }

    fn import_global(&mut self, token: RawWin32Handle) -> Result<GemHandle, BackendError> {
        let memory = SharedMemory::import_token(token).map_err(memory_failed(Op::ImportDmaBuf))?;
        Ok(self.adopt(memory, Op::ImportDmaBuf)?)
    }

    fn export_nt(
        &mut self,
        handle: GemHandle,
        access: u32,
        inherit: bool,
    ) -> Result<RawWin32Handle, BackendError> {
        Ok(self.device_memory(handle, Op::ExportDmaBuf, |memory| {
            memory.export_nt(access, inherit)
        })?)
    }

    fn export_global(&mut self, handle: GemHandle) -> Result<RawWin32Handle, BackendError> {
        Ok(self.device_memory(handle, Op::ExportDmaBuf, SharedMemory::global_token)?)
    }
}
