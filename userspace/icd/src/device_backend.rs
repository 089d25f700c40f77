//! The backend behind one `VkDevice`: the extmem-vgpu kernel driver, or the software
//! device that hosts the same kcore in the process.

use extmem::backend::{
    Backend, BackendError, CopyEngine, CpuAccess, GemHandle, GpuVm, HostImport, ObjectOrigin, Op,
    Win32Sharing,
};
use std::sync::Arc;

use extmem::device_params::{DeviceParams, ParamError};
use extmem::os_handle::{BorrowedOsHandle, OwnedOsHandle};
use extmem::sync::Syncobjs;
#[cfg(not(windows))]
use extmem::vgpu::Vgpu;
use extmem_hw::HostVa;
use extmem_softgpu::SoftGpu;

#[cfg(not(windows))]
use crate::physical_device;
use crate::physical_device::{DeviceInfo, DeviceNode};

/// One device's kernel side.
#[derive(Debug)]
pub enum DeviceBackend {
    /// An open extmem-vgpu render node (its own GPU VM).
    #[cfg(not(windows))]
    Vgpu(Vgpu),
    /// A software device (its own GPU VM).
    Software(SoftGpu),
}

impl DeviceBackend {
    /// Opens the device `info` describes, with a GPU VM of its own. A failure says which
    /// call failed with which errno: opening the node (`open`), a node whose driver is not
    /// extmem-vgpu (`ENODEV`), or the software device's setup.
    pub fn open(info: &DeviceInfo) -> Result<Self, BackendError> {
        match &info.node {
            #[cfg(not(windows))]
            DeviceNode::Render(path) => {
                let fd = physical_device::open_node(path).map_err(|e| BackendError {
                    op: Op::Info,
                    errno: e.raw_os_error(),
                })?;
                Vgpu::new(fd).map(DeviceBackend::Vgpu)
            }
            // No render node is ever discovered on Windows.
            #[cfg(windows)]
            DeviceNode::Render(_) => Err(BackendError {
                op: Op::Info,
                errno: extmem::backend::errno::ENODEV,
            }),
            DeviceNode::Software => SoftGpu::new().map(DeviceBackend::Software),
        }
    }
}

/// Forwards each call to the backend in use.
macro_rules! forward {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            #[cfg(not(windows))]
            DeviceBackend::Vgpu($b) => $call,
            DeviceBackend::Software($b) => $call,
        }
    };
}

impl Backend for DeviceBackend {
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError> {
        forward!(self, b => b.create(size))
    }

    fn import_host(
        &mut self,
        ptr: HostVa,
        size: u64,
        read_only: bool,
        probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError> {
        forward!(self, b => b.import_host(ptr, size, read_only, probe))
    }

    fn import_shared(&mut self, os: BorrowedOsHandle<'_>) -> Result<GemHandle, BackendError> {
        forward!(self, b => b.import_shared(os))
    }

    fn export_shared(&mut self, handle: GemHandle) -> Result<OwnedOsHandle, BackendError> {
        forward!(self, b => b.export_shared(handle))
    }

    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError> {
        forward!(self, b => b.info(handle))
    }

    fn close(&mut self, handle: GemHandle) {
        forward!(self, b => b.close(handle));
    }

    fn map(
        &mut self,
        handle: GemHandle,
        size: u64,
        access: CpuAccess,
    ) -> Result<HostVa, BackendError> {
        forward!(self, b => b.map(handle, size, access))
    }

    fn unmap(&mut self, ptr: HostVa, size: u64) {
        forward!(self, b => b.unmap(ptr, size));
    }

    fn vm(&mut self) -> Option<&mut dyn GpuVm> {
        forward!(self, b => b.vm())
    }

    fn win32(&mut self) -> Option<&mut dyn Win32Sharing> {
        forward!(self, b => b.win32())
    }

    fn engine(&mut self) -> Option<&mut dyn CopyEngine> {
        forward!(self, b => b.engine())
    }

    fn syncobjs(&self) -> Option<Arc<dyn Syncobjs>> {
        forward!(self, b => b.syncobjs())
    }

    fn device_params(&self) -> Result<DeviceParams, ParamError> {
        forward!(self, b => b.device_params())
    }
}

#[cfg(all(test, not(windows)))]
mod tests {
    use std::path::PathBuf;

    use extmem::backend::errno;

    use super::*;
    use crate::physical_device::TEST_PARAMS;

    fn open_render(path: &str) -> Result<DeviceBackend, BackendError> {
        let info = DeviceInfo::new(
            DeviceNode::Render(PathBuf::from(path)),
            TEST_PARAMS,
            1 << 30,
        );
        DeviceBackend::open(&info)
    }

    #[test]
    fn a_device_that_cannot_be_opened_says_which_call_failed_and_why() {
        // A node that is not there: open(2)'s own errno.
        let missing = open_render("/nonexistent/renderD200").err();
        assert_eq!(
            missing,
            Some(BackendError {
                op: Op::Info,
                errno: errno::ENOENT
            })
        );
        // A node that opens but is not extmem-vgpu's (not a DRM node at all).
        let foreign = open_render("/dev/null").err();
        assert_eq!(
            foreign,
            Some(BackendError {
                op: Op::Info,
                errno: errno::ENODEV
            })
        );
    }

    #[test]
    fn the_software_device_opens() {
        let info = DeviceInfo::new(DeviceNode::Software, TEST_PARAMS, 1 << 30);
        assert!(matches!(
            DeviceBackend::open(&info),
            Ok(DeviceBackend::Software(_))
        ));
    }
}
