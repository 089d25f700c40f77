//! A backend over any DRM node, by PRIME alone: vgem, virtio-gpu, or any other driver.
//!
//! - Allocation is a dumb buffer (`MODE_CREATE_DUMB`), the one allocation every KMS driver
//!   and vgem share. virtio-gpu's own `VIRTGPU_RESOURCE_CREATE` is not used: drm-rs does not
//!   carry it, and without virgl it creates no more than a dumb buffer does. Dumb buffers
//!   exist on primary nodes only; over a render node `create` fails with `EACCES`
//!   ([`crate::Error::NotSupported`]) and the backend imports and exports only.
//! - Import and export are `PRIME_FD_TO_HANDLE` / `PRIME_HANDLE_TO_FD` (close-on-exec,
//!   read-write). virtio-gpu refuses to import a dma-buf it did not export (`ENODEV`), which
//!   the memory manager reports as `VK_ERROR_INVALID_EXTERNAL_HANDLE`.
//! - An object's size is its dma-buf's (`lseek`); CPU mappings go through the dma-buf's
//!   own `mmap`, since DRM refuses `MAP_DUMB` on an imported object.
//! - There is no GPU VM: [`Backend::vm`] is `None`.

use alloc::collections::BTreeMap;

use extmem_hw::HostVa;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::backend::{
    errno, Backend, BackendError, CpuAccess, GemHandle, HostImport, ObjectOrigin, Op,
};
use crate::{dma_buf, drm_core};

/// An open DRM node used through PRIME.
#[derive(Debug)]
pub struct DrmPrime {
    fd: OwnedFd,
    /// Objects this backend created, with the size the kernel gave them.
    created: BTreeMap<GemHandle, u64>,
}

impl DrmPrime {
    /// Wraps an open DRM node (primary to allocate, render to share only).
    #[must_use]
    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            created: BTreeMap::new(),
        }
    }

    /// The node.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A new dma-buf fd of `handle`, for an operation other than export.
    fn dma_buf(&self, handle: GemHandle, op: Op) -> Result<OwnedFd, BackendError> {
        drm_core::prime_handle_to_fd(self.fd(), handle)
            .map_err(|e| BackendError { op, errno: e.errno })
    }
}

impl Backend for DrmPrime {
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError> {
        let (handle, allocated) = drm_core::create_dumb(self.fd(), size)?;
        self.created.insert(handle, allocated);
        Ok(handle)
    }

    /// PRIME nodes have no way to import a host range.
    fn import_host(
        &mut self,
        _ptr: HostVa,
        _size: u64,
        _read_only: bool,
        _probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError> {
        Err(BackendError {
            op: Op::ImportHost,
            errno: errno::EOPNOTSUPP,
        })
    }

    fn import_shared(&mut self, fd: BorrowedFd<'_>) -> Result<GemHandle, BackendError> {
        drm_core::prime_fd_to_handle(self.fd(), fd)
    }

    fn export_shared(&mut self, handle: GemHandle) -> Result<OwnedFd, BackendError> {
        drm_core::prime_handle_to_fd(self.fd(), handle)
    }

    /// Importing our own export gives back the object we created (the kernel's rule), so
    /// "created here" is exactly "native".
    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError> {
        if let Some(&size) = self.created.get(&handle) {
            return Ok((size, ObjectOrigin::Native));
        }
        let buf = self.dma_buf(handle, Op::Info)?;
        Ok((
            dma_buf::size(buf.as_fd(), Op::Info)?,
            ObjectOrigin::Imported,
        ))
    }

    fn close(&mut self, handle: GemHandle) {
        self.created.remove(&handle);
        drm_core::gem_close(self.fd(), handle);
    }

    fn map(
        &mut self,
        handle: GemHandle,
        size: u64,
        access: CpuAccess,
    ) -> Result<HostVa, BackendError> {
        let buf = self.dma_buf(handle, Op::Map)?;
        if size > dma_buf::size(buf.as_fd(), Op::Map)? {
            return Err(BackendError {
                op: Op::Map,
                errno: errno::EINVAL,
            });
        }
        // The mapping holds its own reference to the dma-buf; the fd can go.
        dma_buf::map(buf.as_fd(), 0, size, access)
    }

    fn unmap(&mut self, ptr: HostVa, size: u64) {
        dma_buf::unmap(ptr, size);
    }
}
