//! The extmem-vgpu backend: the full set (device memory, host-pointer pinning, host-mapped
//! foreign memory, PRIME, a GPU VM and the copy engine) over the driver's ioctls.

use alloc::sync::Arc;
use core::num::NonZeroU32;

use extmem_hw::{GpuVa, HostVa};
use extmem_uapi as uapi;
use rustix::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::ioctl::{ioctl, Opcode, Updater};

use crate::backend::{
    errno, Backend, BackendError, CopyEngine, CpuAccess, GemHandle, GpuVm, HostImport,
    ObjectOrigin, Op,
};
use crate::device_params::{DeviceParams, ParamError, RawParams};
use crate::exec::{self, Command, ExecError, Fault};
use crate::sync::{SyncPoint, Syncobjs};
use crate::syncobj::DrmSyncobjs;
use crate::{dma_buf, drm_core};

/// The DRM driver name extmem-vgpu registers: a render node of any other driver is not
/// this device (and its ioctl numbers mean something else).
pub const DRIVER_NAME: &str = uapi::DRIVER_NAME;

/// An open extmem-vgpu render node.
#[derive(Debug)]
pub struct Vgpu {
    fd: OwnedFd,
}

/// Runs one extmem-vgpu or DRM ioctl that reads and writes `arg`.
///
/// # Safety
/// `OPCODE` must be an ioctl whose argument is exactly a `T`.
unsafe fn call<const OPCODE: Opcode, T>(
    fd: BorrowedFd<'_>,
    arg: &mut T,
    op: Op,
) -> Result<(), BackendError> {
    // SAFETY: the caller guarantees the opcode's argument type is T; `arg` is a valid,
    // exclusive T for the duration of the call.
    unsafe { ioctl(fd, Updater::<OPCODE, T>::new(arg)) }.map_err(|e| BackendError {
        op,
        errno: e.raw_os_error(),
    })
}

fn handle(raw: u32, op: Op) -> Result<GemHandle, BackendError> {
    NonZeroU32::new(raw).map(GemHandle).ok_or(BackendError {
        op,
        errno: errno::EINVAL,
    })
}

impl Vgpu {
    /// Wraps an open render node after checking that it is extmem-vgpu's (a driver-specific
    /// ioctl on another driver's node would be another request: `ENODEV` instead) and that
    /// it speaks this API version (`EINVAL` if not).
    pub fn new(fd: OwnedFd) -> Result<Self, BackendError> {
        if !drm_core::driver_is(fd.as_fd(), DRIVER_NAME) {
            return Err(BackendError {
                op: Op::Info,
                errno: errno::ENODEV,
            });
        }
        let vgpu = Self { fd };
        let version = vgpu.param(uapi::Param::API_VERSION)?;
        if version != uapi::API_VERSION {
            return Err(BackendError {
                op: Op::Info,
                errno: errno::EINVAL,
            });
        }
        Ok(vgpu)
    }

    /// The render node.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `GET_PARAM`.
    pub fn param(&self, param: uapi::Param) -> Result<u64, BackendError> {
        let mut arg = uapi::GetParam {
            param,
            ..Default::default()
        };
        // SAFETY: IOCTL_GET_PARAM takes a GetParam.
        unsafe { call::<{ uapi::IOCTL_GET_PARAM as Opcode }, _>(self.fd(), &mut arg, Op::Info)? };
        Ok(arg.value)
    }

    /// `VM_QUERY`: (leaf size, read-only) of the mapping at `va`, `None` if unmapped.
    pub fn query(&self, va: GpuVa) -> Result<Option<(u64, bool)>, BackendError> {
        let mut arg = uapi::VmQuery {
            va: va.get(),
            ..Default::default()
        };
        // SAFETY: IOCTL_VM_QUERY takes a VmQuery.
        unsafe { call::<{ uapi::IOCTL_VM_QUERY as Opcode }, _>(self.fd(), &mut arg, Op::Info)? };
        Ok((arg.flags & uapi::QUERY_MAPPED != 0)
            .then_some((arg.page_size, arg.flags & uapi::QUERY_READ_ONLY != 0)))
    }

    fn gem_info(&self, handle: GemHandle) -> Result<uapi::GemInfo, BackendError> {
        let mut arg = uapi::GemInfo {
            handle: handle.0.get(),
            ..Default::default()
        };
        // SAFETY: IOCTL_GEM_INFO takes a GemInfo.
        unsafe { call::<{ uapi::IOCTL_GEM_INFO as Opcode }, _>(self.fd(), &mut arg, Op::Info)? };
        Ok(arg)
    }
}

impl CopyEngine for Vgpu {
    /// `EXEC`.
    fn exec(&mut self, cmds: &[Command]) -> Result<(), ExecError> {
        let (encoded, mut arg) = exec::encode(cmds)?;
        // SAFETY: IOCTL_EXEC takes an Exec; `arg.cmds` points at `encoded`, which stays
        // alive and unaliased for the call.
        let result =
            unsafe { call::<{ uapi::IOCTL_EXEC as Opcode }, _>(self.fd(), &mut arg, Op::Exec) };
        drop(encoded);
        Self::exec_result(result, &arg)
    }

    fn submit(
        &mut self,
        cmds: &[Command],
        waits: &[SyncPoint],
        signals: &[SyncPoint],
    ) -> Result<(), ExecError> {
        let (encoded, mut arg) = exec::encode_queued(cmds, 0)?;
        let (wait_syncs, wait_count) = exec::encode_syncs(waits)?;
        let (signal_syncs, signal_count) = exec::encode_syncs(signals)?;
        arg.waits = wait_syncs.as_ptr() as usize as u64;
        arg.wait_count = wait_count;
        arg.signals = signal_syncs.as_ptr() as usize as u64;
        arg.signal_count = signal_count;
        // SAFETY: IOCTL_EXEC takes an Exec; `arg.cmds`, `arg.waits` and `arg.signals`
        // point at `encoded`, `wait_syncs` and `signal_syncs`, which hold the counts given
        // and stay alive and unaliased for the call.
        let result =
            unsafe { call::<{ uapi::IOCTL_EXEC as Opcode }, _>(self.fd(), &mut arg, Op::Exec) };
        drop((encoded, wait_syncs, signal_syncs));
        Self::exec_result(result, &arg)
    }
}

impl Vgpu {
    /// What an `EXEC` returned, with the fault fields the kernel copied back on `EIO`.
    fn exec_result(result: Result<(), BackendError>, arg: &uapi::Exec) -> Result<(), ExecError> {
        match result {
            Ok(()) => Ok(()),
            // The kernel copies the argument back on error, fault fields filled in.
            Err(e) if e.errno == errno::EIO => Err(ExecError::Fault(Fault {
                cmd: arg.fault_cmd,
                va: GpuVa::new(arg.fault_va),
                kind: arg.fault_kind.into(),
            })),
            Err(e) => Err(ExecError::Kernel(e)),
        }
    }
}

impl GpuVm for Vgpu {
    fn bind(
        &mut self,
        handle: GemHandle,
        va: GpuVa,
        offset: u64,
        size: u64,
        read_only: bool,
    ) -> Result<(), BackendError> {
        let mut arg = uapi::VmBind {
            op: uapi::BindOp::MAP,
            flags: if read_only { uapi::FLAG_READ_ONLY } else { 0 },
            handle: handle.0.get(),
            va: va.get(),
            offset,
            size,
            ..Default::default()
        };
        // SAFETY: IOCTL_VM_BIND takes a VmBind.
        unsafe { call::<{ uapi::IOCTL_VM_BIND as Opcode }, _>(self.fd(), &mut arg, Op::Bind) }
    }

    fn unbind(&mut self, va: GpuVa, size: u64) -> Result<(), BackendError> {
        let mut arg = uapi::VmBind {
            op: uapi::BindOp::UNMAP,
            va: va.get(),
            size,
            ..Default::default()
        };
        // SAFETY: IOCTL_VM_BIND takes a VmBind.
        unsafe { call::<{ uapi::IOCTL_VM_BIND as Opcode }, _>(self.fd(), &mut arg, Op::Unbind) }
    }
}

impl Backend for Vgpu {
    fn create(&mut self, size: u64) -> Result<GemHandle, BackendError> {
        let mut arg = uapi::GemCreate {
            size,
            ..Default::default()
        };
        // SAFETY: IOCTL_GEM_CREATE takes a GemCreate.
        unsafe {
            call::<{ uapi::IOCTL_GEM_CREATE as Opcode }, _>(self.fd(), &mut arg, Op::Create)?
        };
        handle(arg.handle, Op::Create)
    }

    fn import_host(
        &mut self,
        ptr: HostVa,
        size: u64,
        read_only: bool,
        probe: bool,
    ) -> Result<Option<(GemHandle, HostImport)>, BackendError> {
        let mut flags = 0;
        if read_only {
            flags |= uapi::FLAG_READ_ONLY;
        }
        if probe {
            flags |= uapi::USERPTR_PROBE;
        }
        let mut arg = uapi::GemUserptr {
            ptr: ptr.get(),
            size,
            flags,
            ..Default::default()
        };
        // SAFETY: IOCTL_GEM_USERPTR takes a GemUserptr.
        unsafe {
            call::<{ uapi::IOCTL_GEM_USERPTR as Opcode }, _>(self.fd(), &mut arg, Op::ImportHost)?
        };
        if probe {
            return Ok(None);
        }
        let kind = if arg.kind == uapi::ObjectKind::FOREIGN {
            HostImport::Foreign
        } else {
            HostImport::Pinned
        };
        Ok(Some((handle(arg.handle, Op::ImportHost)?, kind)))
    }

    fn import_shared(&mut self, fd: BorrowedFd<'_>) -> Result<GemHandle, BackendError> {
        drm_core::prime_fd_to_handle(self.fd(), fd)
    }

    fn export_shared(&mut self, handle: GemHandle) -> Result<OwnedFd, BackendError> {
        drm_core::prime_handle_to_fd(self.fd(), handle)
    }

    fn info(&mut self, handle: GemHandle) -> Result<(u64, ObjectOrigin), BackendError> {
        let info = self.gem_info(handle)?;
        let origin = match info.kind {
            uapi::ObjectKind::SHMEM => ObjectOrigin::Native,
            uapi::ObjectKind::USERPTR => ObjectOrigin::Userptr,
            _ => ObjectOrigin::Imported,
        };
        Ok((info.size, origin))
    }

    fn close(&mut self, handle: GemHandle) {
        drm_core::gem_close(self.fd(), handle);
    }

    /// Device memory is mapped through the DRM file at its fake offset. An imported dma-buf
    /// has no such offset (the pages are the exporter's), so it is mapped through the
    /// dma-buf itself: `PRIME_HANDLE_TO_FD` of an import hands back the original dma-buf
    /// (`drm_gem_prime_handle_to_fd`), whose mapping outlives the fd closed here. The copy
    /// engine reads and writes those pages through the CPU, so the mapping is as coherent
    /// as the memory type the ICD reports without `DMA_BUF_IOCTL_SYNC` brackets (a device
    /// with its own caches would need them around every CPU access).
    ///
    /// An import whose dma-buf is read-only is mapped for reading only (`fcntl(F_GETFL)` on
    /// the re-exported fd gives the buffer's access mode); a read-write map of it is refused
    /// with `EACCES`.
    fn map(
        &mut self,
        handle: GemHandle,
        size: u64,
        access: CpuAccess,
    ) -> Result<HostVa, BackendError> {
        let info = self.gem_info(handle)?;
        let bad = BackendError {
            op: Op::Map,
            errno: errno::EINVAL,
        };
        if size > info.size {
            return Err(bad);
        }
        if info.mmap_offset != 0 {
            dma_buf::map(self.fd(), info.mmap_offset, size, access)
        } else if info.kind == uapi::ObjectKind::DMABUF {
            let imported =
                drm_core::prime_handle_to_fd(self.fd(), handle).map_err(|e| BackendError {
                    op: Op::Map,
                    errno: e.errno,
                })?;
            dma_buf::map(imported.as_fd(), 0, size, access)
        } else {
            Err(bad)
        }
    }

    fn unmap(&mut self, ptr: HostVa, size: u64) {
        dma_buf::unmap(ptr, size);
    }

    fn vm(&mut self) -> Option<&mut dyn GpuVm> {
        Some(self)
    }

    fn engine(&mut self) -> Option<&mut dyn CopyEngine> {
        Some(self)
    }

    /// The file's DRM syncobjs, on a duplicate of the node's descriptor (the same open
    /// file, so the same handles). `None` only if the process is out of descriptors.
    fn syncobjs(&self) -> Option<Arc<dyn Syncobjs>> {
        let fd = rustix::io::fcntl_dupfd_cloexec(self.fd(), 0).ok()?;
        Some(Arc::new(DrmSyncobjs::new(fd)))
    }

    fn device_params(&self) -> Result<DeviceParams, ParamError> {
        DeviceParams::from_raw(RawParams::read(|p| self.param(p))?)
    }
}

/// Opens the fd as an owned descriptor (the kernel just created it for us).
///
/// # Safety
/// `raw` is a new descriptor nothing else owns.
pub(crate) unsafe fn owned(raw: i32) -> OwnedFd {
    // SAFETY: the caller guarantees `raw` is fresh and unowned.
    unsafe { OwnedFd::from_raw_fd(raw) }
}
